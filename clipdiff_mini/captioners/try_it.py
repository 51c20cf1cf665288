"""Try it yourself (notebook 08): a scene a student describes -> the picture -> its CLIP features ->
a caption from every captioner.

    scene = make_scene([{"shape": "circle", "colour": "red", "size": "large", "x": 0.3, "y": 0.5},
                        {"shape": "square", "colour": "blue", "size": "small", "x": 0.75, "y": 0.5}],
                       background="light")
    out = caption_scene(scene, bundle, {"DDCap": (model, caption_fn, "fine"), ...}, image_size=64)
    out["picture"]   # (3, H, W) uint8, drawn by `clipdiff_mini.data.render.render_scene`
    out["captions"]  # {"DDCap": "a large red circle left of a small blue square", ...}
    out["cond"]      # {"DDCap": {"image" (1, D), "grid" (1, P, W)}, ...}: for trajectories

The features are computed exactly as the feature cache computes a dataset's
(`ClipBundle.encode_images` and `encode_fine_grid` on the uint8 picture), so
a scene of the dataset gives back its cached features; each captioner sees
the grid its ``captioner.grid`` names (`features.select_grid`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from clipdiff_mini.captioners.features import select_grid
from clipdiff_mini.data.render import render_scene
from clipdiff_mini.data.scenes import (BACKGROUND_TONES, COLOURS, GAP, SHAPES, SIZES, Background, Scene,
                                       SceneObject, discs_overlap)

Tensor = torch.Tensor


def make_scene(objects: Sequence[Mapping[str, Any]], background: str = "light") -> Scene:
    """A `Scene` of objects {"shape", "colour", "size", "x", "y"} (x, y: the centre as fractions of the side,
    y downwards) on a plain grey background of tone `background` ("light" or "dark"). The exact named colour
    and the size's radius are used; an object that leaves the picture or touches another is refused."""
    if background not in BACKGROUND_TONES:
        raise ValueError(f"background={background!r}; allowed: {sorted(BACKGROUND_TONES)}")
    if not 1 <= len(objects) <= 6:
        raise ValueError(f"a scene has 1 to 6 objects, got {len(objects)}")
    placed: list[SceneObject] = []
    for i, o in enumerate(objects):
        for key, allowed in (("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", tuple(SIZES))):
            if o.get(key) not in allowed:
                raise ValueError(f"object {i}: {key}={o.get(key)!r}; allowed: {', '.join(allowed)}")
        r = SIZES[o["size"]]
        x, y = round(float(o["x"]), 4), round(float(o["y"]), 4)
        if not (r <= x <= 1 - r and r <= y <= 1 - r):
            raise ValueError(f"object {i} ({o['size']} {o['colour']} {o['shape']}) leaves the picture: "
                             f"x and y must lie in [{r:.3f}, {1 - r:.3f}]")
        obj = SceneObject(o["shape"], o["colour"], o["size"], x, y, r, COLOURS[o["colour"]], 0.0)
        for j, other in enumerate(placed):
            if discs_overlap(obj, other, GAP):
                raise ValueError(f"objects {j} and {i} overlap: move them apart")
        placed.append(obj)
    grey = int(np.mean(BACKGROUND_TONES[background]))
    return Scene(Background(background, (grey, grey, grey), (0.0, 0.0)), tuple(placed))


def scene_picture(scene: "Scene | Mapping[str, Any]", image_size: int) -> Tensor:
    """The rendered scene as a uint8 tensor (3, H, W), the layout of `CaptionSplit.load_images`."""
    return torch.from_numpy(np.array(render_scene(scene, image_size))).permute(2, 0, 1).contiguous()


def scene_features(bundle, picture: Tensor) -> dict[str, Tensor]:
    """CLIP features of one picture (3, H, W) uint8, as `clip.feature_cache.compute_features` makes them:
    {"image" (1, D) unit length, "patches" (1, P, W), "grid_fine" (1, P', W')}."""
    pooled, tokens = bundle.encode_images(picture[None])
    fine = bundle.encode_fine_grid(picture[None])
    return {"image": pooled.float(), "patches": tokens.float(), "grid_fine": fine.float()}


def caption_scene(scene: "Scene | Mapping[str, Any]", bundle,
                  captioners: Mapping[str, tuple[Any, Callable, str]], image_size: int) -> dict[str, Any]:
    """Render `scene`, extract its CLIP features once, and caption it with every captioner
    {name: (model, caption_fn(model, cond) -> [str], grid)}; see the module docstring."""
    picture = scene_picture(scene, image_size)
    feats = scene_features(bundle, picture)
    out: dict[str, Any] = {"picture": picture, "features": feats, "captions": {}, "cond": {}}
    for name, (model, caption_fn, grid) in captioners.items():
        cond = {"image": feats["image"], "grid": select_grid(feats, grid)}
        out["cond"][name] = cond
        out["captions"][name] = caption_fn(model, cond)[0]
    return out
