"""CLIP features of a dataset split, computed once and cached on disk.

    feats = extract_features(cfg, "train")
    feats["image"]    # (N, D)    pooled image embeddings, unit length
    feats["patches"]  # (N, P, W) patch tokens (ViT) / final spatial grid (conv tower)
    feats["grid_fine"]  # (N, P', W') the finer grid of the stage before (conv tower; ViT: = patches)
    feats["text"]     # (M, D)    caption embeddings, unit length
    feats["text_owner"]  # (M,)   row in "image" of each caption's image
    feats["image_ids"], feats["captions"]

The cache file is keyed by the model (a scratch checkpoint's SHA-256, or a
pretrained name/tag), the dataset split (its image ids, files and captions,
plus the embedded dataset's manifest hash) and the feature format. When all
match, the file is read back (``feats["reused"] is True``); when any of them
changes, the features are rebuilt and the stale file of the same profile,
split and source is removed. Files are written atomically. Patch tokens are
stored in float16 (half the disk; they feed cross-attention, where fp16
rounding does not matter) and returned as float32.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from clipdiff_mini.atomic_io import torch_save

FEATURE_FORMAT = 2  # 2: adds grid_fine


def dataset_identity(split) -> str:
    """SHA-256 of what a split is: source, split name, manifest hash (embedded
    dataset), image ids, file names and captions."""
    h = hashlib.sha256()
    h.update(json.dumps({"source": split.source, "split": split.split, "tag": getattr(split, "cache_tag", None),
                         "size": getattr(split, "default_size", None)}, sort_keys=True).encode())
    for r in split.records:
        h.update(json.dumps([r.image_id, r.filename, list(r.captions)]).encode())
    return h.hexdigest()


def feature_key(bundle, split) -> dict[str, Any]:
    return {"format": FEATURE_FORMAT, "model": bundle.identity, "image_size": bundle.image_size,
            "dataset": dataset_identity(split)}


def feature_cache_path(cfg, split_name: str, source: str, key: dict[str, Any], dataset: str = "shapes") -> Path:
    """``<cache_dir>/clip_features/<profile>-[<dataset>-]<split>-<clip source>-<digest>.pt``: the dataset
    (other than the embedded one) is in the name, so that switching datasets does not evict the other's files."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cfg.path("cache_dir") / "clip_features" / f"{_stem(cfg, split_name, source, dataset)}-{digest}.pt"


def _stem(cfg, split_name: str, source: str, dataset: str) -> str:
    tag = "" if dataset == "shapes" else f"{dataset}-"
    return f"{cfg.profile}-{tag}{split_name}-{source}"


def compute_features(bundle, images: torch.Tensor, captions: list[str], *, batch_size: int = 256,
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """Encode uint8 images (N, 3, H, W) and a list of captions in batches."""
    from tqdm.auto import tqdm

    pooled, tokens, fine, text = [], [], [], []
    for i in tqdm(range(0, len(images), batch_size), desc="CLIP image features", disable=not progress):
        p, t = bundle.encode_images(images[i:i + batch_size])  # (b, D), (b, P, W)
        pooled.append(p)
        tokens.append(t.half())
        fine.append(bundle.encode_fine_grid(images[i:i + batch_size]).half())  # (b, P', W')
    for i in tqdm(range(0, len(captions), batch_size * 4), desc="CLIP text features", disable=not progress):
        text.append(bundle.encode_texts(captions[i:i + batch_size * 4]))  # (b, D)
    d = bundle.embed_dim
    return {"image": torch.cat(pooled) if pooled else torch.zeros(0, d),
            "patches": torch.cat(tokens) if tokens else torch.zeros(0, 0, 0, dtype=torch.half),
            "grid_fine": torch.cat(fine) if fine else torch.zeros(0, 0, 0, dtype=torch.half),
            "text": torch.cat(text) if text else torch.zeros(0, d)}


def extract_features(cfg, split, *, bundle=None, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Cached CLIP features of `split` (a split name or a `CaptionSplit`).

    `bundle` defaults to ``load_clip(cfg)`` (which trains the small CLIP when
    its checkpoint is missing). `force` recomputes even when a cache matches.
    """
    from clipdiff_mini.data.splits import load_split

    if isinstance(split, str):
        split = load_split(cfg, split, progress=progress)
    if bundle is None:
        from clipdiff_mini.clip.training import load_clip

        bundle = load_clip(cfg, progress=progress)
    key = feature_key(bundle, split)
    path = feature_cache_path(cfg, split.split, bundle.source, key, split.source)
    t0 = time.perf_counter()
    if path.exists() and not force:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # unreadable (for example a file from an older torch): rebuild
            stored = None
        if stored is not None and stored.get("key") == key:
            return _unpack(stored, reused=True, seconds=time.perf_counter() - t0, path=path)
    images = split.load_images(progress=progress)  # (N, 3, H, W) uint8
    owner, captions = split.caption_table()  # (M,), M strings
    feats = compute_features(bundle, images, captions, batch_size=cfg.clip.feature_batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    stored = {"key": key, **feats, "text_owner": owner, "image_ids": split.image_ids(), "captions": captions,
              "model_name": bundle.name, "seconds": seconds}
    torch_save(stored, path)
    for old in path.parent.glob(f"{_stem(cfg, split.split, bundle.source, split.source)}-*.pt"):
        if old != path:  # features of an older checkpoint or dataset: never valid again
            old.unlink(missing_ok=True)
    return _unpack(stored, reused=False, seconds=seconds, path=path)


def _unpack(stored: dict[str, Any], *, reused: bool, seconds: float, path: Path) -> dict[str, Any]:
    out = dict(stored)
    out["patches"] = stored["patches"].float()
    out["grid_fine"] = stored["grid_fine"].float()
    out.update({"reused": reused, "seconds": seconds, "path": path, "build_seconds": stored.get("seconds")})
    return out
