"""Probe labels from scenes, the linear probe, zero-shot scoring and retrieval recall."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from clipdiff_mini.clip.probes import (_fit_logistic, class_names, linear_probe, principal_axes, probe_attributes,
                                       probe_labels, relation_label, zero_shot_accuracy, zero_shot_templates)
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


def gaussian_classes(n, means, mix, g):
    """Rows of K Gaussian classes with identity covariance around `means` (K, F), equal priors,
    seen through the invertible linear map `mix` (F, F). Returns features, labels and the labels
    of the Bayes rule (the nearest true mean, before the map)."""
    y = torch.randint(0, len(means), (n,), generator=g)
    clean = means[y] + torch.randn(n, means.shape[1], generator=g)  # (n, F)
    bayes = torch.cdist(clean, means).argmin(1)
    return clean @ mix, y, bayes


def correlated_mix(f, g, condition=30.0):
    """A random (F, F) map with singular values from 1 down to 1/condition: correlated features
    (much more ill-conditioned, and the L2 penalty, fixed on standardised features, starts to
    hide the weakest directions: the probe reads less than the Bayes rule)."""
    q1, _ = torch.linalg.qr(torch.randn(f, f, generator=g))
    q2, _ = torch.linalg.qr(torch.randn(f, f, generator=g))
    return q1 @ torch.diag(torch.logspace(0, -math.log10(condition), f)) @ q2


def test_linear_probe_reaches_the_bayes_accuracy_on_correlated_features():
    g = torch.Generator().manual_seed(5)
    # two classes, means 2 apart: Bayes accuracy Phi(1) in closed form
    means = torch.zeros(2, 20)
    means[1, 0] = 2.0
    mix = correlated_mix(20, g)
    x, y, bayes = gaussian_classes(8000, means, mix, g)
    res = linear_probe(x[:3000], y[:3000], x[3000:], y[3000:])
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert abs((bayes[3000:] == y[3000:]).float().mean().item() - phi1) < 0.015  # the sample agrees with the formula
    assert abs(res["accuracy"] - phi1) < 0.02
    # four classes: the Bayes rule's accuracy on the same validation rows; far apart, they are separable
    for scale, lo, hi in ((0.3, 0.6, 0.95), (1.2, 0.999, 1.0)):
        means = torch.randn(4, 30, generator=g) * scale
        x, y, bayes = gaussian_classes(8000, means, correlated_mix(30, g), g)
        res = linear_probe(x[:4000], y[:4000], x[4000:], y[4000:])
        bayes_acc = (bayes[4000:] == y[4000:]).float().mean().item()
        assert lo <= bayes_acc <= hi and abs(res["accuracy"] - bayes_acc) < 0.02


def test_linear_probe_minimises_the_same_objective_as_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(6)
    means = torch.randn(3, 12, generator=g) * 0.6
    x, y, _ = gaussian_classes(1500, means, correlated_mix(12, g, condition=100.0), g)
    xt, yt, xv, yv = x[:1000], y[:1000], x[1000:], y[1000:]
    wd = 1e-3
    res = linear_probe(xt, yt, xv, yv, weight_decay=wd)
    # independent optimiser: mean CE + wd |W|^2 on the standardised features is C * sum CE + |W|^2 / 2
    mu, sigma = xt.mean(0), xt.std(0, unbiased=False)
    ref = LogisticRegression(C=1 / (2 * wd * len(yt)), tol=1e-10, max_iter=10_000)
    ref.fit(((xt - mu) / sigma).double().numpy(), yt.numpy())
    assert abs(res["accuracy"] - ref.score(((xv - mu) / sigma).double().numpy(), yv.numpy())) <= 1 / len(yv) + 1e-9
    assert abs(res["train_accuracy"] - ref.score(((xt - mu) / sigma).double().numpy(), yt.numpy())) <= 1 / len(yt) + 1e-9


def test_preconditioned_fit_reaches_the_optimum_in_a_few_dozen_steps():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(6)
    means = torch.randn(3, 12, generator=g) * 0.6
    x, y, _ = gaussian_classes(1000, means, correlated_mix(12, g, condition=100.0), g)
    s = ((x - x.mean(0)) / x.std(0, unbiased=False)).double()  # (N, F) standardised
    (r,), variance = principal_axes(x)

    def objective(z, w, b, wd):
        return (F.cross_entropy(z.double() @ w.double() + b.double(), y) + wd * (w.double() ** 2).sum()).item()

    for wd in (1e-3, 1e-5):
        # the optimum, from scikit-learn run to a tight tolerance
        ref = LogisticRegression(C=1 / (2 * wd * len(y)), tol=1e-12, max_iter=100_000).fit(s.numpy(), y.numpy())
        best = objective(s, torch.from_numpy(ref.coef_.T), torch.from_numpy(ref.intercept_), wd)
        w, b = _fit_logistic(r, y, 3, wd, variance, max_iter=25)  # (F, K), (K,)
        # (without the preconditioner, 25 steps left the objective 3e-4 and 3e-2 above the optimum)
        assert -1e-6 < objective(r, w, b, wd) - best < 1e-6


def test_principal_axes_rotate_the_standardised_features():
    g = torch.Generator().manual_seed(7)
    mix = torch.randn(6, 6, generator=g)

    def rows(n):  # six correlated features, then a duplicated and a constant one
        x = torch.randn(n, 6, generator=g) @ mix
        return torch.cat([x, x[:, :1], torch.full((n, 1), 3.0)], 1)

    x, v = rows(300), rows(40)
    (rt, rv), variance = principal_axes(x, v)
    assert rt.shape == (300, 6) and rv.shape == (40, 6) and variance.shape == (6,)  # two axes without variance
    # uncorrelated, with the returned variances
    cov = torch.cov(rt.double().T)
    assert torch.allclose(cov, torch.diag(variance.double()), atol=1e-4)
    # a rotation of the standardised features: distances between rows are kept
    mu, sigma = x.mean(0), x.std(0, unbiased=False)
    sigma[sigma < 1e-6] = 1.0  # scikit-learn leaves constant features unscaled
    s = (torch.cat([x, v]) - mu) / sigma
    r = torch.cat([rt, rv]).double()
    assert torch.allclose(torch.cdist(s.double(), s.double()), torch.cdist(r, r), atol=1e-4)


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
    with pytest.raises(ValueError, match="labelled"):
        linear_probe(xt, torch.full_like(yt, -1), xv, yv)


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
