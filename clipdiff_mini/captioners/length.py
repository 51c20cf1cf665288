"""Caption length from the picture: the length head of DDCap (notebook 07), also a switch of
CLIP-DiffusionLM (notebook 05).

A non-autoregressive captioner writes every position at once, so something must decide where the
caption ends. The head is a classifier on the pooled CLIP feature over n = 0..L, the number of
non-padding tokens ([BOS] and [EOS] included); the sampler then fills only the first n positions.
"""
from __future__ import annotations

import torch
import torch.nn as nn

Tensor = torch.Tensor


def caption_lengths(ids: Tensor, pad_id: int) -> Tensor:
    """n (B,): the non-padding tokens of each caption (B, L), [BOS] and [EOS] included."""
    return (ids != pad_id).sum(-1)


class LengthHead(nn.Sequential):
    """MLP on the pooled CLIP feature (B, Di) -> logits (B, L + 1) over n (DDCap: 512 -> 384 -> 20)."""

    def __init__(self, image_dim: int, hidden: int, max_len: int):
        super().__init__(nn.LayerNorm(image_dim), nn.Linear(image_dim, hidden), nn.GELU(),
                         nn.Linear(hidden, max_len + 1))

    def allowed_logits(self, image: Tensor) -> Tensor:
        """Logits (B, L + 1) over n with n < 2 ruled out: a caption holds at least [BOS] [EOS]."""
        logits = self(image)
        logits[:, :2] = float("-inf")
        return logits

    @torch.no_grad()
    def choose(self, image: Tensor, how: str = "argmax", generator: torch.Generator | None = None) -> Tensor:
        """n (B,), at least 2 ([BOS] [EOS]): the most likely length ("argmax") or a draw ("sample")."""
        logits = self.allowed_logits(image)  # (B, L + 1)
        if how == "sample":
            return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
        if how != "argmax":
            raise ValueError(f"length choice {how!r}; allowed: 'argmax', 'sample'")
        return logits.argmax(-1)

    @torch.no_grad()
    def most_likely(self, image: Tensor, k: int) -> Tensor:
        """(B, k') the k' = min(k, L - 1) most likely lengths of each picture, most likely first."""
        logits = self.allowed_logits(image)
        return logits.topk(min(k, logits.shape[1] - 2), -1).indices


def length_canvas(lengths: Tensor, max_len: int, mask_id: int, pad_id: int) -> Tensor:
    """The starting canvas (B, L) of a masked sampler for given lengths n (B,): n [MASK]s, then [PAD]s.
    With the lengths of reference captions it is the *oracle length* of notebook 07's diagnosis: what the
    captioner writes when the length is not its problem (``sample(cond, init_ids=canvas)``)."""
    pos = torch.arange(max_len, device=lengths.device)[None]  # (1, L)
    return torch.where(pos < lengths[:, None], mask_id, pad_id).long()  # (B, L)


def reference_length_canvas(split, mask_id: int, pad_id: int) -> Tensor:
    """The oracle-length canvas (N, L) of a `SplitFeatures`: for each picture, as many [MASK]s as its first
    reference has tokens (caption rows are stored picture by picture, so the first is found by bisection)."""
    first = torch.searchsorted(split.owner, torch.arange(len(split)))  # (N,) row of each picture's first caption
    return length_canvas(caption_lengths(split.ids[first], pad_id), split.ids.shape[1], mask_id, pad_id)
