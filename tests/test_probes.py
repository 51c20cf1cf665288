"""Probe labels from scenes, the linear probe, zero-shot scoring and retrieval recall."""
import itertools

import pytest
import torch

from clipdiff_mini.clip.probes import (class_names, linear_probe, probe_attributes, probe_labels, relation_label,
                                  zero_shot_accuracy,
                                  zero_shot_templates)
from clipdiff_mini.clip.retrieval import retrieval_recall
from clipdiff_mini.data.scenes import COLOURS, RELATIONS, SHAPES, SIZES


def obj(shape, colour, size, x, y):
    return {"shape": shape, "colour": colour, "size": size, "x": x, "y": y, "r": SIZES[size], "rgb": [0, 0, 0]}


def scene(*objects):
    return {"background": {"tone": "light", "rgb": [200, 200, 200], "gradient": [0, 0]}, "objects": list(objects)}


def test_labels_of_hand_made_scenes():
    scenes = [
        # one large red circle on the right of a small blue square: first = the large one
        scene(obj("circle", "red", "large", 0.7, 0.5), obj("square", "blue", "small", 0.2, 0.45)),
        # two large objects: no unique largest one; the leftmost is the green cross
        scene(obj("triangle", "yellow", "large", 0.75, 0.3), obj("cross", "green", "large", 0.25, 0.7),
              obj("diamond", "purple", "small", 0.5, 0.1)),
        # same size: the first is the one whose colour comes first (red before blue); red is above
        scene(obj("square", "blue", "small", 0.5, 0.8), obj("square", "red", "small", 0.52, 0.2)),
        # a single small object
        scene(obj("diamond", "cyan", "small", 0.5, 0.5)),
        # two objects too close along both axes for a clear relation
        scene(obj("circle", "red", "large", 0.3, 0.3), obj("circle", "blue", "small", 0.4, 0.35)),
    ]
    lab = probe_labels(scenes)
    c, s = list(COLOURS), list(SHAPES)
    # scenes 1 and 2 have no unique largest object
    assert lab["colour"].tolist() == [c.index("red"), -1, -1, c.index("cyan"), c.index("red")]
    assert lab["shape"].tolist() == [s.index("circle"), -1, -1, s.index("diamond"), s.index("circle")]
    assert lab["size"].tolist() == [1, 1, 0, 0, 1]  # SIZES order: small, large
    assert lab["count"].tolist() == [1, 2, 1, 0, 1]  # n - 1
    assert lab["relation"].tolist() == [RELATIONS.index("right of"), -1, RELATIONS.index("above"), -1, -1]
    left = probe_labels(scenes, ties="leftmost")
    assert left["colour"][1].item() == c.index("green") and left["shape"][1].item() == s.index("cross")
    assert left["colour"][2].item() == c.index("blue")  # x = 0.5 is left of x = 0.52
    with pytest.raises(ValueError, match="exclude"):
        probe_labels(scenes, ties="random")


def test_relation_needs_objects_that_look_different():
    twins = scene(obj("circle", "red", "small", 0.2, 0.5), obj("circle", "red", "small", 0.8, 0.5))
    assert relation_label(twins) == -1
    assert class_names("count", 4) == ["1", "2", "3", "4"]


def test_linear_probe_reads_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 20, generator=g) * 3
    y = torch.randint(0, 4, (600,), generator=g)
    x = means[y] + torch.randn(600, 20, generator=g)
    res = linear_probe(x[:400], y[:400], x[400:], y[400:])
    # independent reference: nearest class mean on the same split
    mu = torch.stack([x[:400][y[:400] == k].mean(0) for k in range(4)])
    ncm = (torch.cdist(x[400:], mu).argmin(1) == y[400:]).float().mean().item()
    assert ncm > 0.95 and res["accuracy"] >= ncm - 0.03
    assert res["chance"] == 0.25 and res["n_train"] == 400 and res["n_val"] == 200
    # labels independent of the features: validation accuracy stays near the best constant guess
    y_noise = torch.randint(0, 4, (600,), generator=g)
    noise = linear_probe(x[:400], y_noise[:400], x[400:], y_noise[400:])
    assert noise["accuracy"] < noise["majority"] + 0.1
    # rows labelled -1 are left out
    y_missing = y.clone()
    y_missing[:100] = -1
    assert linear_probe(x[:400], y_missing[:400], x[400:], y[400:])["n_train"] == 300


def test_linear_probe_chooses_its_weight_decay_on_training_rows_only():
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 40, generator=g) * 0.4  # weak signal spread over many features
    y = torch.randint(0, 3, (900,), generator=g)
    x = means[y] + torch.randn(900, 40, generator=g)
    xt, yt, xv, yv = x[:600], y[:600], x[600:], y[600:]
    strong = linear_probe(xt, yt, xv, yv, weight_decay=10.0)  # shrinks W to ~0: a near-constant guess
    weak = linear_probe(xt, yt, xv, yv, weight_decay=1e-4)
    assert weak["accuracy"] > strong["accuracy"] + 0.2
    chosen = linear_probe(xt, yt, xv, yv, weight_decay=(10.0, 1e-4))
    assert chosen["weight_decay"] == 1e-4 and abs(chosen["accuracy"] - weak["accuracy"]) < 1e-6
    assert set(chosen["held_out_accuracy"]) == {1e-4, 10.0}
    assert chosen["held_out_accuracy"][1e-4] > chosen["held_out_accuracy"][10.0]
    # the validation labels never take part in the choice
    shuffled = linear_probe(xt, yt, xv, yv[torch.randperm(300, generator=g)], weight_decay=(10.0, 1e-4))
    assert shuffled["weight_decay"] == 1e-4 and shuffled["held_out_accuracy"] == chosen["held_out_accuracy"]
    with pytest.raises(ValueError, match="weight_decay"):
        linear_probe(xt, yt, xv, yv, weight_decay=())
    with pytest.raises(ValueError, match="holdout"):
        linear_probe(xt, yt, xv, yv, holdout=1.5)


def test_probe_attributes_runs_every_target_on_every_feature_set():
    import numpy as np

    from clipdiff_mini.data.scenes import sample_scene

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng).to_dict() for _ in range(240)]
    lab = probe_labels(scenes)
    # features that spell out the largest object's colour and the count (one-hot), plus noise
    g = torch.Generator().manual_seed(4)
    onehot = torch.nn.functional.one_hot(lab["colour"].clamp_min(0), len(COLOURS)).float()
    count = torch.nn.functional.one_hot(lab["count"], 4).float()
    x = torch.cat([onehot, count, torch.randn(240, 6, generator=g)], 1)  # (N, F)
    noise = torch.randn(240, 10, generator=g)
    res = probe_attributes({"good": (x[:160], x[160:]), "noise": (noise[:160], noise[160:])},
                           scenes[:160], scenes[160:], progress=False)
    names = ["colour", "shape", "size", "count", "relation", "colour (ties: leftmost)", "shape (ties: leftmost)"]
    assert set(res) == {(f, n) for f in ("good", "noise") for n in names}
    assert res["good", "colour"]["accuracy"] == 1.0 and res["good", "count"]["accuracy"] == 1.0
    assert res["noise", "colour"]["accuracy"] < 0.5
    left = probe_labels(scenes, ties="leftmost")
    assert res["good", "shape (ties: leftmost)"]["n_val"] == int((left["shape"][160:] >= 0).sum())


def test_zero_shot_accuracy_against_a_loop():
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    w = torch.nn.functional.normalize(torch.randn(8, 3, generator=g), dim=0)
    labels = torch.randint(-1, 3, (50,), generator=g)
    hits = [max(range(3), key=lambda k: float(img[i] @ w[:, k])) == labels[i] for i in range(50) if labels[i] >= 0]
    assert abs(zero_shot_accuracy(img, w, labels) - sum(hits) / len(hits)) < 1e-6
    assert zero_shot_templates("count")[0]("1") == "one shape" and zero_shot_templates("count")[1]("3") == "three objects"


def test_retrieval_recall_against_brute_force():
    g = torch.Generator().manual_seed(2)
    n, per = 6, 2
    img = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    owner = torch.arange(n).repeat_interleave(per)
    txt = torch.nn.functional.normalize(img[owner] + 0.8 * torch.randn(n * per, 4, generator=g), dim=-1)
    r = retrieval_recall(img, txt, owner, ks=(1, 3))
    sims = (img @ txt.T).tolist()
    for k in (1, 3):
        i2t = sum(any(owner[j] == i for j in sorted(range(n * per), key=lambda j: -sims[i][j])[:k]) for i in range(n)) / n
        t2i = sum(owner[j] in sorted(range(n), key=lambda i: -sims[i][j])[:k] for j in range(n * per)) / (n * per)
        assert abs(r[f"i2t_R@{k}"] - i2t) < 1e-6 and abs(r[f"t2i_R@{k}"] - t2i) < 1e-6
        # chance: exact enumeration of which k captions a random ranking puts first
        subsets = list(itertools.combinations(range(n * per), k))
        chance = sum(any(owner[j] == 0 for j in sub) for sub in subsets) / len(subsets)
        assert abs(r[f"i2t_R@{k}_chance"] - chance) < 1e-9 and abs(r[f"t2i_R@{k}_chance"] - k / n) < 1e-9
