"""The shared captioner evaluation: error kinds on hand-made scenes, the
baselines against brute force, decoding helpers."""
import pytest
import torch

from clipdiff_mini.captioners.decoding import drop_consecutive_repeats, repeat_rate, trajectory_rows
from clipdiff_mini.captioners.evaluate import (accuracy_by_objects, caption_errors, evaluate_captions,
                                               most_frequent_caption, nearest_neighbour_captions)
from clipdiff_mini.captioners.features import SplitFeatures
from clipdiff_mini.config import get_config
from clipdiff_mini.data.splits import load_split
from clipdiff_mini.data.tokenizers import WordTokenizer


def _obj(shape, colour, size, x, y):
    return {"shape": shape, "colour": colour, "size": size, "x": x, "y": y, "r": 0.1, "rgb": [0, 0, 0], "angle": 0.0}


# a small red circle on the left, a large blue square on the right, dark background
SCENE = {"background": {"tone": "dark", "rgb": [50, 50, 50], "gradient": [0.0, 0.0]},
         "objects": [_obj("circle", "red", "small", 0.2, 0.5), _obj("square", "blue", "large", 0.8, 0.5)]}


@pytest.mark.parametrize("caption,kinds", [
    ("a red circle", []),
    ("a small red circle and a large blue square", []),
    ("a blue circle", ["colour-shape binding"]),         # blue and circle both present, not together
    ("a green circle", ["wrong colour"]),                 # no green at all
    ("a red triangle", ["wrong shape"]),
    ("a large red circle", ["wrong size"]),
    ("two red circles", ["wrong count"]),
    ("a red red circle", ["repeated word"]),
    ("a small red circle and a small red circle", ["repeated object"]),  # true of the scene, one object twice
    ("a red circle and a small red circle", ["repeated object"]),       # a near-repeat: the same one circle
    ("a red circle left of a blue square and a red circle", []),         # a list may restate a relation's end
    ("red of the and", ["no object named", "not well formed"]),
    ("a red circle on a light background", ["wrong background"]),
    ("a red circle right of the blue square", ["wrong relation"]),
])
def test_caption_errors_on_a_hand_made_scene(caption, kinds):
    got = caption_errors(caption, SCENE)
    for k in kinds:
        assert k in got, (caption, got)
    if not kinds:
        assert got == [], got


def _features(cfg, name, n, seed):
    split = load_split(cfg, name, progress=False).subset(n)
    tok = WordTokenizer.build(split.captions())
    owner, caps = split.caption_table()
    g = torch.Generator().manual_seed(seed)
    return SplitFeatures(name, split, torch.randn(n, 5, generator=g), torch.zeros(n, 0, 3), torch.zeros(len(caps), 5),
                         tok.batch_encode(caps, max_len=24), owner, tok)


def test_nearest_neighbour_matches_brute_force_cosine():
    cfg = get_config("ci")
    train, val = _features(cfg, "train", 50, 0), _features(cfg, "val", 20, 1)
    got = nearest_neighbour_captions(train, val, batch_size=7)  # batches must not matter
    for i, k in enumerate(val.image_ids):
        cos = [float(torch.dot(val.image[i], train.image[j]) / (val.image[i].norm() * train.image[j].norm()))
               for j in range(len(train))]
        best = max(range(len(train)), key=lambda j: cos[j])
        assert got[k] == train.split.records[best].captions[0]


def test_most_frequent_caption_counts_by_hand():
    cfg = get_config("ci")
    split = load_split(cfg, "train", progress=False)
    counts = {}
    for c in split.captions():
        counts[c] = counts.get(c, 0) + 1
    assert counts[most_frequent_caption(split)] == max(counts.values())


def test_accuracy_by_objects_groups_by_scene_size():
    cfg = get_config("ci")
    val = _features(cfg, "val", 30, 0)
    refs = {k: v[0] for k, v in val.references().items()}  # references are true: accuracy 1 in every group
    by_n = accuracy_by_objects(refs, val)
    sizes = {len(s["objects"]) for s in val.scenes().values()}
    assert set(by_n) == sizes and all(v == 1.0 for v in by_n.values())


def test_decoding_helpers():
    assert drop_consecutive_repeats("a a red red circle a".split()) == ["a", "red", "circle", "a"]
    assert repeat_rate(["a red circle", "a a circle", "two circles circles"]) == pytest.approx(2 / 3)
    tok = WordTokenizer.build(["a red circle"])
    traj = [(t, tok.batch_encode(["a red circle"], max_len=6)) for t in (100, 80, 60, 40, 20, 1)]
    rows = trajectory_rows(traj, tok, 0, n_rows=3)
    assert [t for t, _ in rows] == [100, 40, 1] or [t for t, _ in rows][0::2] == [100, 1]
    assert rows[0][1].startswith("[BOS] a red circle [EOS]")


@pytest.mark.parametrize("grid,shape", [("fine", (6, 16, 4)), ("coarse", (6, 4, 8)), ("none", (6, 0, 8))])
def test_from_features_picks_the_grid_and_encodes_captions(grid, shape):
    from clipdiff_mini.captioners.features import from_features

    cfg = get_config("ci")
    split = load_split(cfg, "val", progress=False).subset(6)
    tok = WordTokenizer.build(split.captions())
    owner, caps = split.caption_table()
    feats = {"image": torch.randn(6, 5), "patches": torch.randn(6, 4, 8), "grid_fine": torch.randn(6, 16, 4),
             "text": torch.randn(len(caps), 5)}
    sf = from_features("val", split, feats, tok, 24, grid)
    assert tuple(sf.grid.shape) == shape
    assert sf.ids.shape == (len(caps), 24) and tok.decode(sf.ids[7]) == caps[7].lower().rstrip(".")
    assert sf.owner.tolist() == [i for i in range(6) for _ in split.records[i].captions]
    with pytest.raises(ValueError, match="do not match"):
        from_features("val", split, {**feats, "text": feats["text"][:-1]}, tok, 24, grid)


def test_scene_accuracy_counts_an_object_named_twice_as_false():
    split = load_split(get_config("ci"), "val", progress=False).subset(20)
    refs = {k: v[0] for k, v in split.references().items()}
    base = evaluate_captions(refs, split, coco=False)
    assert base["scene_accuracy"] == 1.0 and base["repeated_object"] == 0.0  # references never repeat an object
    assert "scene_accuracy_distinct" not in base

    def looks(o):
        return o["colour"], o["shape"]

    # a picture with an object whose colour and shape no other object of it has
    k, obj = next((k, o) for k, sc in split.scenes().items() for o in sc["objects"]
                  if [looks(p) for p in sc["objects"]].count(looks(o)) == 1)
    doubled = dict(refs)
    doubled[k] = f"a {obj['colour']} {obj['shape']} and a {obj['colour']} {obj['shape']}"
    got = evaluate_captions(doubled, split, coco=False)
    assert got["scene_accuracy"] == pytest.approx(1 - 1 / 20)  # each mention alone is true, not both
    assert got["repeated_object"] == pytest.approx(1 / 20)


def test_plot_errors_draws_one_bar_per_kind_and_per_scene_size():
    from clipdiff_mini.captioners.display import plot_errors

    errors, by_n = {"wrong colour": 0.25, "repeated object": 0.5}, {1: 1.0, 2: 0.4, 3: 0.1}
    fig = plot_errors(errors, by_n)
    kinds, sizes = fig.axes
    assert [p.get_width() for p in kinds.patches] == [0.25, 0.5]
    assert [p.get_height() for p in sizes.patches] == [1.0, 0.4, 0.1]


def test_plot_token_accuracy_draws_each_curve_and_the_next_word_line(capsys):
    import matplotlib

    matplotlib.use("Agg")
    from clipdiff_mini.captioners.display import plot_token_accuracy

    curves = {"a": {1.0: 0.2, 0.1: 0.9, 0.5: 0.5}, "b": {0.5: 0.6, 0.1: 0.95, 1.0: 0.3}}
    ax = plot_token_accuracy(curves, 0.8)
    lines = ax.get_lines()
    assert [list(line.get_xdata()) for line in lines[:2]] == [[0.1, 0.5, 1.0]] * 2  # ratios in order
    assert [list(line.get_ydata()) for line in lines[:2]] == [[0.9, 0.5, 0.2], [0.95, 0.6, 0.3]]
    assert list(lines[2].get_ydata()) == [0.8, 0.8]  # the decoder's horizontal line
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[-3:] == ["0.900", "0.500", "0.200"] and out[-1].endswith("0.800")
