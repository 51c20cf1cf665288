import re

import numpy as np
import pytest

from clipdiff_mini.data.caption_grammar import PLURAL, captions_for_scene, parse_caption
from clipdiff_mini.evaluation.caption_perturb import (
    KINDS,
    NoPerturbation,
    perturb_any,
    perturb_caption,
    random_words,
    shuffle_words,
)
from clipdiff_mini.evaluation.scene_judge import judge_caption
from clipdiff_mini.data.scenes import Scene, SceneObject, Background, sample_scene


def words(text):
    return re.findall(r"[a-z]+", text.lower())


def make_scene(*objects):
    bg = Background("light", (200, 200, 200), (0.0, 0.0))
    return Scene(bg, tuple(SceneObject(s, c, z, x, y, 0.085, (0, 0, 0)) for s, c, z, x, y in objects))


def test_hand_made_cases():
    scene = make_scene(("circle", "red", "small", 0.2, 0.5), ("square", "blue", "large", 0.8, 0.5),
                       ("square", "blue", "small", 0.5, 0.2))
    rng = np.random.default_rng(0)
    p = perturb_caption("a red circle, and two blue squares.", scene, rng, kinds=["colour"])
    assert p.kind == "colour" and p.old in ("red", "blue")
    assert p.new not in ("red", "blue")  # only colours absent from the scene
    p = perturb_caption("two blue squares", scene, rng, kinds=["count"])
    assert p.text == "three blue squares"  # "one" would break the plural
    p = perturb_caption("the red circle is to the left of the large square", scene, rng, kinds=["relation"])
    assert p.text == "the red circle is to the right of the large square"
    p = perturb_caption("a red circle", scene, rng, kinds=["shape"])
    assert p.new in ("triangle", "cross", "diamond") and p.text == f"a red {p.new}"
    p = perturb_caption("a blue square", make_scene(("square", "blue", "small", 0.5, 0.5)), rng, kinds=["colour"])
    assert p.text.startswith("an orange") if p.new == "orange" else p.text.startswith("a ")
    with pytest.raises(NoPerturbation):
        perturb_caption("three shapes", scene, rng, kinds=["colour", "shape"])
    with pytest.raises(ValueError, match="allowed"):
        perturb_caption("a red circle", scene, rng, kinds=["size"])


def test_perturbed_references_are_false_but_well_formed():
    rng = np.random.default_rng(1)
    seen = {k: 0 for k in KINDS}
    for _ in range(150):
        scene = sample_scene(rng, max_objects=4)
        for cap in captions_for_scene(scene, rng, n=5):
            assert judge_caption(cap, scene).all_true  # the originals are true
            try:
                p = perturb_caption(cap, scene, rng)
            except NoPerturbation:
                continue
            seen[p.kind] += 1
            before, after = words(cap), words(p.text)
            diff = [(a, b) for a, b in zip(before, after) if a != b]
            assert len(before) == len(after) and 1 <= len(diff) <= 2, (cap, p.text)
            assert (p.old.lower(), p.new) in diff
            if len(diff) == 2:  # only the article may change besides the word
                assert set(diff[0]) == {"a", "an"}
            if p.kind == "colour":  # checked on the scene itself, not through the judge
                assert p.new not in {o.colour for o in scene.objects}
            if p.kind == "shape":
                singular = {plural: shape for shape, plural in PLURAL.items()}.get(p.new, p.new)
                assert singular not in {o.shape for o in scene.objects}
            parsed = parse_caption(p.text)
            assert parsed.well_formed, p.text
            assert not judge_caption(p.text, scene).all_true, (cap, p.text, scene)
    assert all(n > 20 for n in seen.values()), seen


def test_perturb_any_and_garbage():
    rng = np.random.default_rng(2)
    scene = make_scene(("circle", "red", "small", 0.2, 0.5))
    p = perturb_any(["one shape", "a red circle"], scene, rng, kinds=["colour"])
    assert p.original == "a red circle"
    with pytest.raises(NoPerturbation):
        perturb_any(["one shape"], scene, rng, kinds=["colour"])
    s = shuffle_words("a red circle left of a blue square", rng)
    assert sorted(s.split()) == sorted("a red circle left of a blue square".split())
    r = random_words(["x", "y"], 6, rng)
    assert len(r.split()) == 6 and set(r.split()) <= {"x", "y"}
