"""The embedded "shapes" dataset: generate it once, reuse it afterwards.

``build_shapes_dataset(cfg)`` returns a folder ``<data_dir>/shapes-<key>``::

    shapes-64px-10000-1000-1000-s0-1a2b3c4d/
        dataset_shapes.json   # Karpathy split format + the scene of every image
        images/*.png          # 64 x 64 RGB pictures
        manifest.json         # generator version, parameters, counts, sha256 of the JSON

The JSON has the layout of Karpathy's ``dataset_coco.json`` /
``dataset_flickr8k.json``, so one loader reads it and the real datasets::

    {"dataset": "shapes",
     "images": [{"filename": "shapes_train_000000.png", "imgid": 0, "split": "train",
                 "sentences": [{"raw": "...", "tokens": [...], "imgid": 0, "sentid": 0}, ...],
                 "sentids": [0, 1, 2, 3, 4],
                 "scene": {"background": {...}, "objects": [...]}}, ...]}

Splits are disjoint by construction: every picture is drawn from its own
random generator seeded with ``(seed, split, index)``. That makes the result
independent of the order (or process) in which pictures are made, and a
split's first pictures stay the same when other splits change size (the ci
validation set is the beginning of the laptop one).

The same parameters give byte-identical files: scenes are rounded before use,
drawing draws no random numbers, PNGs are written with a fixed compression
level and no timestamp, JSON with a fixed key order, and the manifest records
no time or machine path. The folder is reused when its manifest matches the
parameters and the JSON's sha256; otherwise it is rebuilt in a temporary
folder and renamed into place, so an interrupted build never leaves a
half-written dataset behind.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from clipdiff_mini.data.caption_grammar import MAX_WORDS, caption_tokens, captions_for_scene
from clipdiff_mini.data.render import render_scene
from clipdiff_mini.data.scenes import sample_scene

GENERATOR_VERSION = "2"  # bump whenever the generated files change
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
JSON_NAME = "dataset_shapes.json"
IMAGE_DIR = "images"
MANIFEST_NAME = "manifest.json"
MAX_OBJECTS_LIMIT = 6  # more large objects do not fit a picture without overlap
PNG_COMPRESS_LEVEL = 6

build_count = 0  # how many times this process generated a dataset (tests read it)


def generation_params(cfg) -> dict[str, Any]:
    """Everything that determines the generated files."""
    d = cfg.data
    return {"generator_version": GENERATOR_VERSION, "n_train": d.n_train, "n_val": d.n_val, "n_test": d.n_test,
            "image_size": d.image_size, "max_objects": d.max_objects, "captions_per_image": d.captions_per_image,
            "max_words": MAX_WORDS, "seed": d.seed}


def _check(params: dict[str, Any]) -> None:
    if not 1 <= params["max_objects"] <= MAX_OBJECTS_LIMIT:
        raise ValueError(f"data.max_objects={params['max_objects']} must be between 1 and {MAX_OBJECTS_LIMIT}")
    if params["image_size"] < 16:
        raise ValueError(f"data.image_size={params['image_size']} is too small; use 16 or more (64 is the default)")
    if params["captions_per_image"] < 1:
        raise ValueError("data.captions_per_image must be at least 1")
    if params["n_train"] + params["n_val"] + params["n_test"] < 1:
        raise ValueError("the dataset would be empty: set data.n_train / n_val / n_test")


def dataset_key(params: dict[str, Any]) -> str:
    """A readable folder name plus a hash of all parameters."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return (f"shapes-{params['image_size']}px-{params['n_train']}-{params['n_val']}-{params['n_test']}"
            f"-s{params['seed']}-{digest}")


def shapes_dataset_dir(cfg) -> Path:
    """Where `build_shapes_dataset` puts (or finds) the dataset of ``cfg``."""
    return cfg.path("data_dir") / dataset_key(generation_params(cfg))


def make_example(seed: int, split: str, index: int, image_size: int = 64, max_objects: int = 4,
                 captions_per_image: int = 5) -> tuple[dict, list[str], bytes]:
    """One picture: (scene dict, captions, PNG bytes), a pure function of its arguments."""
    ss = np.random.SeedSequence([seed, _SPLIT_CODE[split], index])
    scene_ss, caption_ss = ss.spawn(2)
    scene = sample_scene(np.random.default_rng(scene_ss), max_objects=max_objects)
    captions = captions_for_scene(scene, np.random.default_rng(caption_ss), n=captions_per_image)
    buf = io.BytesIO()
    render_scene(scene, image_size).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return scene.to_dict(), captions, buf.getvalue()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_valid(folder: Path, params: dict[str, Any]) -> bool:
    """True when ``folder`` holds a complete dataset made with ``params``."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        if manifest.get("params") != params:
            return False
        if _sha256(folder / JSON_NAME) != manifest["json_sha256"]:
            return False
        n_png = sum(1 for e in os.scandir(folder / IMAGE_DIR) if e.name.endswith(".png"))
        return n_png == manifest["counts"]["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _generate(folder: Path, params: dict[str, Any], progress: bool) -> None:
    from tqdm.auto import tqdm

    (folder / IMAGE_DIR).mkdir(parents=True)
    images = []
    image_hash = hashlib.sha256()
    imgid = sentid = 0
    total = params["n_train"] + params["n_val"] + params["n_test"]
    with tqdm(total=total, desc="generating shapes", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            for index in range(params[f"n_{split}"]):
                scene, captions, png = make_example(params["seed"], split, index, params["image_size"],
                                                    params["max_objects"], params["captions_per_image"])
                filename = f"shapes_{split}_{index:06d}.png"
                (folder / IMAGE_DIR / filename).write_bytes(png)
                image_hash.update(hashlib.sha256(png).digest())
                sentences = []
                for raw in captions:
                    sentences.append({"raw": raw, "tokens": caption_tokens(raw), "imgid": imgid, "sentid": sentid})
                    sentid += 1
                images.append({"filename": filename, "imgid": imgid, "split": split, "sentences": sentences,
                               "sentids": [s["sentid"] for s in sentences], "scene": scene})
                imgid += 1
                bar.update(1)
    text = json.dumps({"dataset": "shapes", "images": images}, separators=(",", ":"))
    (folder / JSON_NAME).write_text(text + "\n", encoding="utf-8")
    counts = {s: params[f"n_{s}"] for s in SPLITS}
    counts.update(images=imgid, sentences=sentid)
    manifest = {"dataset": "shapes", "generator": "clipdiff_mini.data.shapes_dataset", "generator_version": GENERATOR_VERSION,
                "params": params, "counts": counts, "json_file": JSON_NAME,
                "json_sha256": _sha256(folder / JSON_NAME), "images_sha256": image_hash.hexdigest()}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def build_shapes_dataset(cfg, *, force: bool = False, progress: bool = True) -> Path:
    """Generate (or reuse) the shapes dataset of ``cfg.data``; returns its folder.

    Reuses the folder when it is complete and matches the parameters; with
    ``force=True`` (or when it does not match) it is rebuilt atomically.
    """
    global build_count
    params = generation_params(cfg)
    _check(params)
    final = cfg.path("data_dir") / dataset_key(params)
    if not force and is_valid(final, params):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        _generate(tmp, params, progress)
        build_count += 1
        if final.exists():  # stale or forced: move it aside first (a rename is atomic, a delete is not)
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not is_valid(final, params):  # someone else finished first, with a good copy, or it is a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"shapes dataset: {params['n_train']}/{params['n_val']}/{params['n_test']} images "
              f"generated in {time.perf_counter() - start:.1f} s -> {final.name}")
    return final


def load_shapes_json(folder: Path) -> dict[str, Any]:
    """The Karpathy-format dictionary of a built dataset folder."""
    return json.loads((Path(folder) / JSON_NAME).read_text(encoding="utf-8"))
