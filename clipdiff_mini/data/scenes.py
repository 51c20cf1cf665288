"""Scenes of the embedded "shapes" dataset: what is in a picture, as data.

A scene is a background plus one to ``max_objects`` objects. Every object has
three attributes, each from a small closed vocabulary chosen so that the
values stay easy to tell apart in a 64 x 64 picture:

* ``shape``  - circle, square, triangle, cross, diamond (``SHAPES``)
* ``colour`` - seven saturated colours (``COLOURS``); backgrounds are near-grey,
  so an object's colour is never confusable with the background
* ``size``   - small or large (``SIZES``: the radius of the object's bounding
  circle as a fraction of the image width; the large radius is about twice
  the small one)

Coordinates are fractions of the image side, ``x`` growing to the right and
``y`` growing *downwards* (image convention), so "above" means a smaller ``y``.
Each object occupies the disc of radius ``r`` around its centre ``(x, y)``: the
drawn shape lies inside that disc, discs of different objects do not touch
(with a gap) and every disc lies inside the image.

Spatial relations (``RELATIONS``) are defined on the centres with a margin
``RELATION_MARGIN`` so that they are never a matter of a pixel::

    left_of(a, b)  <=>  b.x - a.x >  RELATION_MARGIN
    right_of(a, b) <=>  a.x - b.x >  RELATION_MARGIN
    above(a, b)    <=>  b.y - a.y >  RELATION_MARGIN
    below(a, b)    <=>  a.y - b.y >  RELATION_MARGIN

These are the truth conditions the scorer uses. Two relations on different
axes may hold at once ("left of" and "above"). The caption generator is
stricter: it only *states* a relation along the dominant axis of a pair and
only when the centres differ by at least ``CLEAR_MARGIN`` (see
`clear_relations`), so every reference caption is true with room to spare.

A scene is a frozen dataclass; `Scene.to_dict` / `Scene.from_dict` give the
JSON-safe dictionary stored next to each image in the dataset file. All
floats are rounded (to ``DECIMALS`` places) *before* anything else uses them,
so the stored dictionary is exactly the scene that was drawn and captioned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
# Saturated colours, far from each other and from every grey (RGB, 0-255).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 25),
    "green": (35, 170, 55),
    "cyan": (25, 200, 215),
    "blue": (35, 70, 225),
    "purple": (150, 45, 205),
}
# Bounding-circle radius as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.085, "large": 0.165}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
BACKGROUND_TONES: dict[str, tuple[int, int]] = {"light": (170, 225), "dark": (30, 85)}  # grey level ranges

RELATION_MARGIN = 0.05  # truth: centres must differ by more than this (fraction of the image side)
CLEAR_MARGIN = 0.15  # generation: only state relations at least this clear
GAP = 0.02  # minimum free space between two objects' discs
DECIMALS = 4


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    x: float  # centre, fraction of the width, grows to the right
    y: float  # centre, fraction of the height, grows downwards
    r: float  # radius of the bounding disc, fraction of the side
    rgb: tuple[int, int, int]  # the exact fill colour (the named colour, slightly jittered)
    angle: float = 0.0  # small rotation in degrees (drawing only; does not change the shape's name)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "x": self.x, "y": self.y,
                "r": self.r, "rgb": list(self.rgb), "angle": self.angle}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SceneObject":
        return cls(shape=d["shape"], colour=d["colour"], size=d["size"], x=float(d["x"]), y=float(d["y"]),
                   r=float(d["r"]), rgb=tuple(int(c) for c in d["rgb"]), angle=float(d.get("angle", 0.0)))


@dataclass(frozen=True)
class Background:
    tone: str  # "light" or "dark" (named in some captions)
    rgb: tuple[int, int, int]  # base colour: a grey with a faint tint
    gradient: tuple[float, float]  # change of brightness across the image along (x, y), in grey levels
    texture: str = "plain"  # "plain", "stripes" or "checks": faint, low-contrast patterns
    texture_period: float = 0.25  # pattern period, fraction of the side
    texture_amplitude: float = 0.0  # grey levels

    def to_dict(self) -> dict[str, Any]:
        return {"tone": self.tone, "rgb": list(self.rgb), "gradient": list(self.gradient), "texture": self.texture,
                "texture_period": self.texture_period, "texture_amplitude": self.texture_amplitude}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Background":
        return cls(tone=d["tone"], rgb=tuple(int(c) for c in d["rgb"]), gradient=tuple(float(g) for g in d["gradient"]),
                   texture=d.get("texture", "plain"), texture_period=float(d.get("texture_period", 0.25)),
                   texture_amplitude=float(d.get("texture_amplitude", 0.0)))


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background.to_dict(), "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: "Mapping[str, Any] | Scene") -> "Scene":
        if isinstance(d, Scene):
            return d
        return cls(background=Background.from_dict(d["background"]),
                   objects=tuple(SceneObject.from_dict(o) for o in d["objects"]))


# ---- relations -----------------------------------------------------------------
def holds(relation: str, a: SceneObject, b: SceneObject, margin: float = RELATION_MARGIN) -> bool:
    """Truth of ``a <relation> b`` (see the module docstring)."""
    if relation == "left of":
        return b.x - a.x > margin
    if relation == "right of":
        return a.x - b.x > margin
    if relation == "above":
        return b.y - a.y > margin
    if relation == "below":
        return a.y - b.y > margin
    raise ValueError(f"unknown relation {relation!r}; allowed: {', '.join(RELATIONS)}")


def clear_relations(a: SceneObject, b: SceneObject) -> list[str]:
    """The relations the generator may state for ``a <rel> b``: along the axis
    where the centres differ most, and only if they differ by ``CLEAR_MARGIN``."""
    dx, dy = b.x - a.x, b.y - a.y
    if max(abs(dx), abs(dy)) < CLEAR_MARGIN:
        return []
    if abs(dx) >= abs(dy):
        return ["left of" if dx > 0 else "right of"]
    return ["above" if dy > 0 else "below"]


# ---- sampling -----------------------------------------------------------------
def discs_overlap(a: SceneObject, b: SceneObject, gap: float = 0.0) -> bool:
    return math.hypot(a.x - b.x, a.y - b.y) < a.r + b.r + gap


def sample_scene(rng: np.random.Generator, max_objects: int = 4, min_objects: int = 1) -> Scene:
    """A random scene: background, then objects placed by rejection sampling.

    The number of objects is uniform on ``min_objects..max_objects``. Each
    object is placed uniformly where its disc fits inside the image and keeps
    a gap of ``GAP`` to every earlier disc; if an object finds no place in 200
    tries it is re-drawn as small, and dropped if it still does not fit (never
    happens with the default sizes and up to six objects).
    """
    if max_objects < 1 or min_objects < 1 or min_objects > max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    background = _sample_background(rng)
    n = int(rng.integers(min_objects, max_objects + 1))
    objects: list[SceneObject] = []
    colour_names = list(COLOURS)
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = colour_names[int(rng.integers(len(colour_names)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        base = COLOURS[colour]
        jitter = rng.integers(-12, 13, size=3)
        rgb = tuple(min(255, max(0, int(c + j))) for c, j in zip(base, jitter))
        angle = round(float(rng.uniform(-10.0, 10.0)), 1) if shape != "circle" else 0.0
        placed = None
        for try_size in (size, "small"):
            r = SIZES[try_size]
            for _attempt in range(200):
                x = round(float(rng.uniform(r + 0.01, 1 - r - 0.01)), DECIMALS)
                y = round(float(rng.uniform(r + 0.01, 1 - r - 0.01)), DECIMALS)
                cand = SceneObject(shape, colour, try_size, x, y, r, rgb, angle)
                if not any(discs_overlap(cand, o, GAP) for o in objects):
                    placed = cand
                    break
            if placed is not None:
                break
        if placed is not None:
            objects.append(placed)
    return Scene(background=background, objects=tuple(objects))


def _sample_background(rng: np.random.Generator) -> Background:
    tone = "light" if rng.random() < 0.5 else "dark"
    lo, hi = BACKGROUND_TONES[tone]
    grey = int(rng.integers(lo, hi + 1))
    tint = rng.integers(-6, 7, size=3)  # a faint tint keeps it a grey (saturation stays tiny)
    rgb = tuple(min(255, max(0, grey + int(t))) for t in tint)
    gradient = (round(float(rng.uniform(-18, 18)), 2), round(float(rng.uniform(-18, 18)), 2))
    texture = ("plain", "plain", "stripes", "checks")[int(rng.integers(4))]
    period = round(float(rng.uniform(0.12, 0.35)), 3)
    amplitude = round(float(rng.uniform(3.0, 7.0)), 2) if texture != "plain" else 0.0
    return Background(tone, rgb, gradient, texture, period, amplitude)


def describe(scene: "Scene | Mapping[str, Any]") -> str:
    """A plain listing of a scene, for printing next to a picture."""
    scene = Scene.from_dict(scene)
    lines = [f"{scene.background.tone} background"]
    for i, o in enumerate(scene.objects):
        lines.append(f"{i}: {o.size} {o.colour} {o.shape} at x={o.x:.2f}, y={o.y:.2f}")
    return "\n".join(lines)
