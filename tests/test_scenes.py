"""Scenes and their pictures: placement, relations, drawing."""
import math

import numpy as np
import pytest

from clipdiff_mini.data.render import object_mask, render_scene
from clipdiff_mini.data.scenes import (CLEAR_MARGIN, COLOURS, RELATION_MARGIN, RELATIONS, SHAPES, SIZES, Background, Scene,
                                  SceneObject, clear_relations, holds, sample_scene)

SCENES = [sample_scene(np.random.default_rng(i), max_objects=4) for i in range(200)]


def test_objects_inside_and_apart():
    counts = set()
    for s in SCENES:
        counts.add(len(s.objects))
        for o in s.objects:
            assert o.r <= o.x <= 1 - o.r and o.r <= o.y <= 1 - o.r, "disc leaves the image"
            assert o.shape in SHAPES and o.colour in COLOURS and o.size in SIZES and o.r == SIZES[o.size]
        for a, b in ((a, b) for i, a in enumerate(s.objects) for b in s.objects[i + 1:]):
            assert math.dist((a.x, a.y), (b.x, b.y)) >= a.r + b.r, "discs overlap"
    assert counts == {1, 2, 3, 4}, "every object count from 1 to max_objects occurs"


def test_rendered_objects_do_not_overlap_and_stay_in_their_disc():
    size = 64
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    for s in SCENES[:60]:
        masks = [object_mask(o, size) for o in s.objects]
        total = np.sum(masks, axis=0) if masks else np.zeros((size, size))
        assert total.max() <= 1, "two objects share a pixel"
        for o, m in zip(s.objects, masks):
            d = np.hypot(xx - o.x * size, yy - o.y * size)
            assert d[m].max() <= o.r * size + 1.0, "a shape leaves its bounding disc"


def test_object_colours_at_centres_and_grey_background():
    for s in SCENES[:60]:
        img = np.asarray(render_scene(s, 64)).astype(int)  # (64, 64, 3)
        assert img.shape == (64, 64, 3)
        for o in s.objects:
            px = img[int(o.y * 64), int(o.x * 64)]
            assert np.abs(px - np.array(o.rgb)).max() <= 2, (o, px)
        covered = np.any([object_mask(o, 64) for o in s.objects], axis=0)
        bg = img[~covered]
        # backgrounds are greys: channel spread small, far from any saturated object colour
        assert (bg.max(axis=1) - bg.min(axis=1)).max() <= 20
        for o in s.objects:
            assert (np.array(o.rgb).max() - np.array(o.rgb).min()) >= 100


@pytest.mark.parametrize("shape,area", [
    ("circle", math.pi), ("square", 2.0), ("triangle", 3 * math.sqrt(3) / 4), ("diamond", 2 * 0.78),
    ("cross", 4 * 0.94 * 0.34 * 2 - (2 * 0.34) ** 2)])
def test_drawn_area_matches_the_shape(shape, area):
    """Filled pixels against the analytic area (in units of r^2), large object on a 128 px canvas."""
    o = SceneObject(shape, "red", "large", 0.5, 0.5, 0.3, (220, 30, 30), 0.0)
    side = 128
    frac = object_mask(o, side).sum() / (o.r * side) ** 2
    # the mask counts partly covered edge pixels, so it is a little larger
    assert area <= frac <= area * 1.15, (shape, frac, area)


def test_relations_by_coordinates():
    bg = Background("light", (200, 200, 200), (0.0, 0.0))
    a = SceneObject("circle", "red", "small", 0.2, 0.3, 0.085, (220, 30, 30))
    b = SceneObject("square", "blue", "small", 0.6, 0.32, 0.085, (35, 70, 225))
    assert holds("left of", a, b) and holds("right of", b, a)
    assert not holds("right of", a, b) and not holds("above", a, b) and not holds("below", a, b)  # dy = 0.02 < margin
    assert clear_relations(a, b) == ["left of"] and clear_relations(b, a) == ["right of"]
    c = SceneObject("cross", "green", "small", 0.22, 0.9, 0.085, (35, 170, 55))
    assert clear_relations(a, c) == ["above"] and holds("below", c, a)
    close = SceneObject("cross", "green", "small", 0.2 + RELATION_MARGIN / 2, 0.6, 0.085, (35, 170, 55))
    assert not holds("left of", a, close) and not holds("right of", close, a)
    with pytest.raises(ValueError, match="allowed"):
        holds("near", a, b)
    Scene(bg, (a, b, c))  # constructible


def test_clear_relations_are_true_with_margin():
    for s in SCENES:
        for a in s.objects:
            for b in s.objects:
                for rel in clear_relations(a, b):
                    assert rel in RELATIONS and holds(rel, a, b, margin=CLEAR_MARGIN - 1e-9)


def test_dict_round_trip_and_pure_rendering():
    for s in SCENES[:20]:
        d = s.to_dict()
        assert Scene.from_dict(d) == s
        assert render_scene(d, 64).tobytes() == render_scene(s, 64).tobytes()


def test_sampling_is_seeded():
    a = sample_scene(np.random.default_rng(123))
    b = sample_scene(np.random.default_rng(123))
    assert a == b
    with pytest.raises(ValueError):
        sample_scene(np.random.default_rng(0), max_objects=0)
