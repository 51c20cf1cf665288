"""The front door to the data: one split of a captioning dataset.

    from clipdiff_mini.data.splits import load_split
    val = load_split(cfg, "val")        # cfg.data.source: "shapes" or "karpathy"
    len(val), val.records[0].captions
    refs = val.references()             # {image_id: [caption, ...]}  (for the metrics)
    scenes = val.scenes()               # {image_id: scene dict}      (shapes only)
    images = val.load_images()          # torch.uint8 (N, 3, H, W)

``data.source="shapes"`` generates the embedded dataset on first use
(`clipdiff_mini.data.shapes_dataset.build_shapes_dataset`) and reuses it after;
``"karpathy"`` reads a real dataset in the Karpathy split format from
``data.karpathy_json`` and ``data.image_dir`` (`clipdiff_mini.data.karpathy`).

Images: decoding thousands of PNGs costs seconds every time a notebook
starts, so for the embedded dataset the decoded uint8 array of a split is
cached as a ``.npy`` file in a folder next to the dataset
(``<data_dir>/<dataset>.cache/``). The file name carries a hash of the
dataset's manifest, so a regenerated (different) dataset never reuses an old
array; it is written atomically. Real datasets are decoded each time, each
image resized (shorter side) and centre-cropped to a square with PIL.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from clipdiff_mini.atomic_io import write_with
from clipdiff_mini.data.karpathy import SPLITS, DatasetNotFoundError, ImageRecord, load_karpathy, read_karpathy_json

__all__ = ["CaptionSplit", "ImageRecord", "load_split", "decode_image", "SPLITS"]


@dataclass
class CaptionSplit:
    """The images of one split with their captions (and scenes, on the embedded dataset)."""

    split: str
    records: list[ImageRecord]
    source: str  # "shapes" or "karpathy"
    root: Path | None = None  # dataset folder (shapes) or image folder (karpathy)
    default_size: int | None = None  # side of load_images(size=None); None = the files' own size
    cache_dir: Path | None = None  # where decoded image arrays are cached (None: no caching)
    cache_tag: str | None = None  # manifest hash that keys the cache
    _rows: list[int] | None = field(default=None, repr=False)  # positions in the full split (subsets)
    _all_records: list[ImageRecord] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"CaptionSplit({self.source} {self.split}: {len(self)} images, {len(self.captions())} captions)"

    # ---- text ------------------------------------------------------------
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    def captions(self) -> list[str]:
        """Every caption of the split, image by image (flat list)."""
        return [c for r in self.records for c in r.captions]

    def caption_table(self) -> tuple[torch.Tensor, list[str]]:
        """One row per caption: (row of its image in this split, LongTensor (M,); captions, M strings)."""
        rows = [i for i, r in enumerate(self.records) for _ in r.captions]
        return torch.tensor(rows, dtype=torch.long), self.captions()

    def references(self) -> dict[int, list[str]]:
        """{image_id: reference captions}, the `references` argument of the metrics."""
        return {r.image_id: list(r.captions) for r in self.records}

    def scenes(self) -> dict[int, dict]:
        """{image_id: scene dict}: the ground truth of the embedded dataset."""
        if any(r.scene is None for r in self.records):
            raise ValueError(f"this {self.source} split has no scenes: scenes (and scene accuracy) exist only on "
                             f"the embedded dataset, data.source='shapes'")
        return {r.image_id: r.scene for r in self.records}

    def subset(self, which: int | Sequence[int]) -> "CaptionSplit":
        """The first `which` images (an int) or the images at the given positions."""
        rows = list(range(min(which, len(self)))) if isinstance(which, int) else [int(i) for i in which]
        for i in rows:
            if not 0 <= i < len(self):
                raise IndexError(f"position {i} outside the split (size {len(self)})")
        base = self._rows or list(range(len(self)))
        return replace(self, records=[self.records[i] for i in rows], _rows=[base[i] for i in rows],
                       _all_records=self._all_records or self.records)

    # ---- images ----------------------------------------------------------
    def load_images(self, size: int | None = None, progress: bool = True) -> torch.Tensor:
        """All images of the split, a torch.uint8 tensor (N, 3, H, W).

        `size` resizes (shorter side) and centre-crops every image to
        ``size x size``; None means `default_size` (the embedded dataset's
        own size; ``data.image_size`` for real datasets).
        """
        size = size or self.default_size
        if self.cache_dir is None or self.cache_tag is None:
            return _stack([r.path for r in self.records], size, progress)
        all_records = self._all_records or self.records
        path = self.cache_dir / f"{self.split}-{size or 'native'}px-{len(all_records)}-{self.cache_tag}.npy"
        array = _read_cache(path, len(all_records))
        if array is None:
            decoded = _stack([r.path for r in all_records], size, progress)  # (N, 3, H, W)
            write_with(path, lambda tmp: _save_npy(tmp, decoded.numpy()))
            if self._rows is None:
                return decoded
            array = decoded.numpy()
        if self._rows is not None:
            array = array[self._rows]  # rows of a memory-mapped file: only those are read
        return torch.from_numpy(np.array(array))  # a writable copy, (N, 3, H, W)


# ---- loading --------------------------------------------------------------------
def load_split(cfg, split: str, progress: bool = True) -> CaptionSplit:
    """Split `split` ("train", "val" or "test") of the dataset `cfg.data.source` names.

    ``"shapes"``: builds the embedded dataset if it is missing (seconds in
    the ci profile, about a minute at laptop size), then reads it.
    ``"karpathy"``: reads ``cfg.data.karpathy_json`` / ``cfg.data.image_dir``
    (``restval`` images count as train).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    source = cfg.data.source
    if source == "shapes":
        from clipdiff_mini.data import shapes_dataset as sd

        root = sd.build_shapes_dataset(cfg, progress=progress)
        json_path = root / sd.JSON_NAME
        records = load_karpathy(json_path, root / sd.IMAGE_DIR, splits=split, data=_parsed_json(json_path))
        tag = hashlib.sha256((root / sd.MANIFEST_NAME).read_bytes()).hexdigest()[:12]
        return CaptionSplit(split=split, records=records, source=source, root=root,
                            default_size=cfg.data.image_size,  # the size the pictures were drawn at
                            cache_dir=root.parent / f"{root.name}.cache", cache_tag=tag)
    if source == "karpathy":
        json_path, image_dir = cfg.resolve(cfg.data.karpathy_json), cfg.resolve(cfg.data.image_dir)
        if not json_path.is_file():  # checked here too, so the message names the config keys before parsing
            read_karpathy_json(json_path)
        records = load_karpathy(json_path, image_dir, splits=split, data=_parsed_json(json_path))
        if not records:
            raise ValueError(f"{json_path} has no images in split {split!r}")
        return CaptionSplit(split=split, records=records, source=source, root=image_dir,
                            default_size=cfg.data.image_size)
    raise ValueError(f"data.source={source!r} is not known; allowed: 'shapes', 'karpathy'")


def _parsed_json(path: Path) -> dict:
    """The parsed split file, reused while the file is unchanged (train, val and test read the same file)."""
    st = Path(path).stat()
    return _parsed_json_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=2)
def _parsed_json_cached(path: str, mtime_ns: int, size: int) -> dict:
    return read_karpathy_json(path)


# ---- images ---------------------------------------------------------------------
def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """One image as uint8 (3, H, W) RGB; with `size`, the shorter side is
    resized to `size` (bicubic) and the centre ``size x size`` square kept."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()  # (H, W, 3) -> (3, H, W)


def _stack(paths: list[Path], size: int | None, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    if not paths:
        side = size or 0
        return torch.zeros((0, 3, side, side), dtype=torch.uint8)
    missing = [p for p in paths[:1] if not Path(p).is_file()]
    if missing:
        raise DatasetNotFoundError(f"image file not found: {missing[0]}")
    # PIL releases the GIL while decoding, so a few threads help
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(tqdm(pool.map(lambda p: decode_image(p, size), paths), total=len(paths),
                           desc="decoding images", unit="img", disable=not progress or len(paths) < 500))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)[:3]}...; pass load_images(size=...)")
    return torch.from_numpy(np.stack(arrays))  # (N, 3, H, W) uint8


def _save_npy(tmp: Path, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array)


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    """The cached array if it is there and whole, else None."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] != n or array.shape[1] != 3:
        return None
    return array
