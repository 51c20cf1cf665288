"""What a masked captioner can predict, measured on the references (notebook 07's diagnosis).

A masked model is trained to fill *any* subset of hidden positions; an autoregressive decoder only ever
predicts the next word with every earlier word visible. Teacher-forced accuracy makes the difference
visible on the same references:

    masked_token_accuracy(ddcap, split, ratios)   # {ratio: accuracy on the hidden positions}
    next_token_accuracy(ar, split)                 # accuracy of the next word, the prefix given

At a high mask ratio the masked model must guess a position from the picture alone, where five
references disagree (notebook 07, section 11); its accuracy there is what decoding starts from.
"""
from __future__ import annotations

from typing import Sequence

import torch

from clipdiff_mini.captioners.features import SplitFeatures


@torch.no_grad()
def masked_token_accuracy(model, split: SplitFeatures, ratios: Sequence[float], *, n_captions: int = 2000,
                          seed: int = 0, batch_size: int = 500) -> dict[float, float]:
    """For each mask ratio r: hide each caption token ([BOS] .. [EOS], not the [PAD]s) with probability r,
    let the model predict the hidden ones (without guidance; DDCap's timestep t = ceil(r T)), and return
    the fraction of hidden tokens whose argmax is the reference's. The first `n_captions` caption rows."""
    gen = torch.Generator().manual_seed(seed)
    ids = split.ids[:n_captions]  # (M, L)
    owner = split.owner[:n_captions]
    out = {}
    T = model.sched.T
    for r in ratios:
        right = total = 0
        for lo in range(0, ids.shape[0], batch_size):
            x0 = ids[lo:lo + batch_size]
            rows = owner[lo:lo + batch_size]
            hide = (torch.rand(x0.shape, generator=gen) < r) & (x0 != model.pad_id)  # (B, L)
            x_t = torch.where(hide, torch.full_like(x0, model.mask_id), x0)
            t = torch.full((x0.shape[0],), max(1, min(T, int(-(-r * T // 1)))))  # ceil(r T) in 1..T
            logits = model(x_t, t, split.image[rows], split.grid[rows])  # (B, L, V)
            logits[..., model.mask_id] = float("-inf")
            right += int((logits.argmax(-1) == x0)[hide].sum())
            total += int(hide.sum())
        out[float(r)] = right / max(total, 1)
    return out


@torch.no_grad()
def next_token_accuracy(model, split: SplitFeatures, *, n_captions: int = 2000, batch_size: int = 500) -> float:
    """The autoregressive decoder's teacher-forced accuracy: the fraction of caption tokens after [BOS]
    (up to and including [EOS]) that are the argmax of p(w_i | w_<i, picture). The first `n_captions` rows."""
    right = total = 0
    for lo in range(0, min(n_captions, split.ids.shape[0]), batch_size):
        ids = split.ids[lo:min(lo + batch_size, n_captions)]  # (B, L)
        rows = split.owner[lo:lo + ids.shape[0]]
        logits = model(ids[:, :-1], split.image[rows], split.grid[rows])  # (B, L-1, V)
        target = ids[:, 1:]
        keep = target != model.pad_id
        right += int((logits.argmax(-1) == target)[keep].sum())
        total += int(keep.sum())
    return right / max(total, 1)
