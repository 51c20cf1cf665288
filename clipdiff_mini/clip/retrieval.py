"""Image-text retrieval recall, the standard check of a CLIP model.

Given N images and M captions (caption j belongs to image ``owner[j]``,
several captions per image):

* image -> text R@k: the fraction of images for which at least one of their
  own captions is among the k captions most similar to the image;
* text -> image R@k: the fraction of captions whose image is among the k
  images most similar to the caption.

Chance (a random ranking): text -> image R@k = k / N; image -> text R@k =
1 - C(M - c, k) / C(M, k) for an image with c captions (the chance that k
random captions include one of its own), averaged over images.
"""
from __future__ import annotations

from math import comb
from typing import Sequence

import torch


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor,
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k both ways. image_emb (N, D), text_emb (M, D) unit rows; owner (M,) image row of each caption."""
    sims = image_emb.float() @ text_emb.float().T  # (N, M)
    n, m = sims.shape
    out: dict[str, float] = {}
    # image -> text: rank of the best-ranked own caption
    own = owner.view(1, m) == torch.arange(n).view(n, 1)  # (N, M)
    best_own = sims.masked_fill(~own, float("-inf")).max(1).values  # (N,)
    rank_i2t = (sims > best_own.view(n, 1)).sum(1)  # captions strictly better than the best own one
    # text -> image: rank of the caption's own image
    own_sim = sims[owner, torch.arange(m)]  # (M,)
    rank_t2i = (sims > own_sim.view(1, m)).sum(0)  # (M,)
    counts = torch.bincount(owner, minlength=n)
    for k in ks:
        out[f"i2t_R@{k}"] = (rank_i2t < k).float().mean().item()
        out[f"t2i_R@{k}"] = (rank_t2i < k).float().mean().item()
        values, freq = torch.unique(counts, return_counts=True)
        out[f"i2t_R@{k}_chance"] = sum(int(f) * (1 - comb(m - int(c), k) / comb(m, k)) for c, f in zip(values, freq)) / n
        out[f"t2i_R@{k}_chance"] = min(1.0, k / n)
    return out
