"""Drawing a scene (`clipdiff_mini.data.scenes`) as a small RGB picture.

The picture is drawn ``SUPERSAMPLE`` times larger and shrunk with a box
filter, which anti-aliases the edges (a 10-pixel triangle drawn straight at
64 x 64 would look like a staircase). Drawing is a pure function of the scene
dictionary: no random numbers are drawn here, so the same scene always gives
the same pixels, and with a fixed PNG compression level the same bytes.

Every shape is drawn inside the disc of radius ``r`` around its centre (see
`shape_polygon`), so the non-overlap of the discs in the scene guarantees that
objects do not overlap in the picture.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

from clipdiff_mini.data.scenes import Scene, SceneObject

SUPERSAMPLE = 4


def shape_polygon(obj: SceneObject, side: float) -> list[tuple[float, float]] | None:
    """Vertices (pixels, on a canvas of ``side`` pixels) of a non-circle shape;
    ``None`` for a circle. All vertices lie within the object's disc."""
    cx, cy, r = obj.x * side, obj.y * side, obj.r * side
    if obj.shape == "square":  # corners on the disc: half-side r / sqrt(2)
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(px * r / math.sqrt(2), py * r / math.sqrt(2)) for px, py in pts]
    elif obj.shape == "diamond":  # a square standing on a corner, a little narrower than tall
        pts = [(0, -r), (0.78 * r, 0), (0, r), (-0.78 * r, 0)]
    elif obj.shape == "triangle":  # equilateral, pointing up, inscribed in the disc
        pts = [(0.0, -r), (r * math.sqrt(3) / 2, r / 2), (-r * math.sqrt(3) / 2, r / 2)]
    elif obj.shape == "cross":  # a plus sign; arm corners at distance 1.0 r
        a, w = 0.94 * r, 0.34 * r
        pts = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
    elif obj.shape == "circle":
        return None
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    t = math.radians(obj.angle)
    c, s = math.cos(t), math.sin(t)
    return [(cx + c * px - s * py, cy + s * px + c * py) for px, py in pts]


def background_array(scene: Scene, side: int) -> np.ndarray:
    """The background as a (side, side, 3) uint8 array: base grey, a linear
    brightness gradient, and an optional faint texture."""
    bg = scene.background
    u = (np.arange(side, dtype=np.float64) + 0.5) / side  # pixel centres in [0, 1]
    xx, yy = u[None, :], u[:, None]  # (1, side) and (side, 1): broadcast to (side, side)
    shade = bg.gradient[0] * (xx - 0.5) + bg.gradient[1] * (yy - 0.5)
    if bg.texture == "stripes":
        shade = shade + bg.texture_amplitude * np.sign(np.sin(2 * np.pi * (xx + yy) / bg.texture_period))
    elif bg.texture == "checks":
        cells = np.floor(xx / bg.texture_period) + np.floor(yy / bg.texture_period)
        shade = shade + bg.texture_amplitude * (2 * (cells % 2) - 1)
    shade = np.broadcast_to(shade, (side, side))
    img = np.asarray(bg.rgb, dtype=np.float64)[None, None, :] + shade[:, :, None]  # (side, side, 3)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_scene(scene: "Scene | Mapping[str, Any]", image_size: int = 64) -> Image.Image:
    """The scene as an RGB ``PIL.Image`` of ``image_size`` x ``image_size`` pixels."""
    scene = Scene.from_dict(scene)
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    big = image_size * SUPERSAMPLE
    # the background is smooth: compute it at the final size and enlarge it by
    # pixel repetition, so the box filter below gives it back unchanged
    canvas = Image.fromarray(background_array(scene, image_size), mode="RGB").resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        poly = shape_polygon(obj, big)
        if poly is None:
            cx, cy, r = obj.x * big, obj.y * big, obj.r * big
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(obj.rgb))
        else:
            draw.polygon(poly, fill=tuple(obj.rgb))
    return canvas.reduce(SUPERSAMPLE)  # box filter: anti-aliased edges


def object_mask(obj: SceneObject, image_size: int) -> np.ndarray:
    """Boolean (image_size, image_size) mask of the pixels an object touches
    (any coverage after anti-aliasing). Used by tests and plots."""
    big = image_size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    poly = shape_polygon(obj, big)
    if poly is None:
        cx, cy, r = obj.x * big, obj.y * big, obj.r * big
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return np.asarray(canvas.reduce(SUPERSAMPLE)) > 0
