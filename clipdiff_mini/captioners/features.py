"""What every captioner trains and is judged on: one split's CLIP features,
its captions as token ids, and its references and scenes.

    data = load_captioning_data(cfg)             # {"train": ..., "val": ..., "test": ...}
    train = data["train"]
    train.image   # (N, D)    pooled CLIP image embeddings, unit length
    train.grid    # (N, P, W) CLIP spatial grid chosen by captioner.grid (extra tokens / cross-attention)
    train.text    # (M, D)    CLIP embeddings of the captions (CLIP-DiffusionLM trains with them)
    train.ids     # (M, L)    caption token ids, [BOS] w.. [EOS] [PAD].., L = data.max_caption_len
    train.owner   # (M,)      row in `image` of each caption's picture

One tokenizer for all splits, built from the training captions. Features
come from `clipdiff_mini.clip.feature_cache` (computed once, cached).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clipdiff_mini.clip.feature_cache import extract_features
from clipdiff_mini.clip.training import load_clip
from clipdiff_mini.data.splits import CaptionSplit, load_split
from clipdiff_mini.data.tokenizers import CaptionTokenizer, build_tokenizer

Tensor = torch.Tensor


@dataclass
class SplitFeatures:
    """A split as the captioners see it (see the module docstring for shapes)."""

    name: str
    split: CaptionSplit
    image: Tensor  # (N, D)
    grid: Tensor  # (N, P, W)
    text: Tensor  # (M, D)
    ids: Tensor  # (M, L)
    owner: Tensor  # (M,)
    tokenizer: CaptionTokenizer

    def __len__(self) -> int:
        return self.image.shape[0]

    @property
    def image_ids(self) -> list[int]:
        return self.split.image_ids()

    def references(self) -> dict[int, list[str]]:
        return self.split.references()

    def scenes(self) -> dict[int, dict]:
        return self.split.scenes()

    def subset(self, n: int) -> "SplitFeatures":
        """The first `n` pictures with their captions (for quick validation)."""
        n = min(n, len(self))
        keep = self.owner < n
        return SplitFeatures(self.name, self.split.subset(n), self.image[:n], self.grid[:n], self.text[keep],
                             self.ids[keep], self.owner[keep], self.tokenizer)

    def condition(self, rows: Tensor | None = None) -> dict[str, Tensor]:
        """The image conditioning of pictures `rows` (default all): pooled (B, D) and grid (B, P, W)."""
        if rows is None:
            return {"image": self.image, "grid": self.grid}
        return {"image": self.image[rows], "grid": self.grid[rows]}


def load_captioning_data(cfg, splits=("train", "val", "test"), *, tokenizer: CaptionTokenizer | None = None,
                         progress: bool = True) -> dict[str, SplitFeatures]:
    """The splits with CLIP features (the CLIP is loaded, or trained when missing) and token ids."""
    raw = {s: load_split(cfg, s, progress=progress) for s in splits}
    if tokenizer is None:
        train = raw["train"] if "train" in raw else load_split(cfg, "train", progress=progress)
        tokenizer = build_tokenizer(cfg, train)
    bundle = load_clip(cfg, progress=progress)  # loaded once for all splits (trained first if missing)
    out = {}
    for name, split in raw.items():
        feats = extract_features(cfg, split, bundle=bundle, progress=progress)
        out[name] = from_features(name, split, feats, tokenizer, cfg.data.max_caption_len, cfg.captioner.grid)
    return out


def from_features(name: str, split: CaptionSplit, feats: dict[str, Any], tokenizer: CaptionTokenizer,
                  max_len: int, grid: str = "fine") -> SplitFeatures:
    """`grid`: which CLIP grid the captioners see: "fine" (`grid_fine`), "coarse" (the last stage's
    `patches`) or "none" (an empty grid (N, 0, W): the pooled vector alone)."""
    owner, captions = split.caption_table()
    if feats["image"].shape[0] != len(split) or feats["text"].shape[0] != len(captions):
        raise ValueError(f"features of {feats['image'].shape[0]} images / {feats['text'].shape[0]} captions do not "
                         f"match the {name} split ({len(split)} / {len(captions)}); extract them again (force=True)")
    ids = tokenizer.batch_encode(captions, max_len=max_len)  # (M, L)
    g = select_grid(feats, grid)
    return SplitFeatures(name, split, feats["image"].float(), g, feats["text"].float(), ids, owner, tokenizer)


def select_grid(feats: dict[str, Any], grid: str) -> Tensor:
    """The grid (N, P, W) a captioner with ``captioner.grid = grid`` sees (see `from_features`)."""
    if grid not in ("fine", "coarse", "none"):
        raise ValueError(f"captioner.grid={grid!r}; allowed: 'fine', 'coarse', 'none'")
    g = feats["grid_fine" if grid == "fine" else "patches"].float()  # (N, P, W)
    return g[:, :0] if grid == "none" else g  # "none": (N, 0, W)
