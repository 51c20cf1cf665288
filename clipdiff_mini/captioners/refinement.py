"""Reading a diffusion trajectory (notebook 08): in which order a caption's words were decided, and
the failures counted rather than shown.

A trajectory is the list ``[(t, ids (B, L))]`` a sampler returns with
``trajectory=True``: DDCap's ids after each network call (a committed
position never changes again), CLIP-DiffusionLM's rounded x0 estimate at
each call (any position may change at any call).

* `settle_steps` -- for each position, the trajectory entry from which on
  its word never changes again (0: it never changed, e.g. a given word).
  For DDCap this is the call that committed it.
* `order_inversions` -- how far from left to right the words were decided:
  the fraction of pairs of positions i < j, decided at different calls,
  where j was decided first. 0 is strictly left to right (an autoregressive
  decoder), 0.5 a random order, 1 right to left. A word decided after a
  later one is an earlier word written *from* later ones.
* `same_call_repeats` -- adjacent positions holding the same word that were
  decided at the same call: the signature of parallel decoding, where two
  positions, each unaware of the other's choice, pick the same likely word.
* `length_mismatch` -- captions whose length (tokens) is none of the
  picture's reference lengths.
"""
from __future__ import annotations

from typing import Sequence

import torch

Tensor = torch.Tensor


def settle_steps(trajectory: Sequence[tuple[int, Tensor]]) -> Tensor:
    """(B, L) long: for each position the index k of the trajectory entry from which on its id equals the
    final one (0 if it never changed). DDCap's entry 0 is the all-[MASK] start, so k is the network call
    that committed the position; CLIP-DiffusionLM's entry 0 is the first call's estimate, so k + 1 is the
    call after which the word stayed. Only the order of the k matters to `order_inversions`."""
    stack = torch.stack([ids for _, ids in trajectory])  # (K+1, B, L)
    final = stack[-1]
    differs = stack != final[None]  # (K+1, B, L)
    k = torch.arange(stack.shape[0])[:, None, None].expand_as(differs)
    last_diff = torch.where(differs, k, torch.full_like(k, -1)).amax(0)  # (B, L): last entry that differed
    return last_diff + 1


def order_inversions(steps: Tensor, keep: Tensor) -> Tensor:
    """(B,) fraction of pairs i < j of kept positions (`keep` (B, L) bool), decided at different calls
    (`steps` (B, L) from `settle_steps`), where j was decided before i; nan for a caption with no such pair."""
    si, sj = steps[:, :, None], steps[:, None, :]  # (B, L, 1), (B, 1, L)
    L = steps.shape[1]
    upper = torch.ones(L, L, dtype=torch.bool).triu(1)[None]  # i < j
    pair = upper & keep[:, :, None] & keep[:, None, :] & (si != sj)  # (B, L, L)
    inverted = pair & (sj < si)
    n = pair.sum((1, 2)).float()
    return torch.where(n > 0, inverted.sum((1, 2)).float() / n.clamp_min(1), torch.full_like(n, float("nan")))


def same_call_repeats(ids: Tensor, steps: Tensor, special: Sequence[int]) -> Tensor:
    """(B,) bool: the final ids (B, L) hold one word at two adjacent positions decided at the same call."""
    word = ~torch.isin(ids, torch.tensor(list(special), dtype=ids.dtype))  # (B, L)
    rep = (ids[:, 1:] == ids[:, :-1]) & word[:, 1:] & word[:, :-1] & (steps[:, 1:] == steps[:, :-1])
    return rep.any(-1)


def length_mismatch(ids: Tensor, reference_ids: Tensor, pad_id: int, eos_id: int) -> Tensor:
    """(B,) bool: the caption's length ([BOS] .. [EOS], cut at the first [EOS]) is none of its picture's
    reference lengths; reference_ids (B, R, L) are the picture's R references."""
    pos = torch.arange(ids.shape[1])
    is_eos = ids == eos_id
    first_eos = torch.where(is_eos.any(-1), torch.where(is_eos, pos, ids.shape[1]).amin(-1),
                            (ids != pad_id).sum(-1) - 1)  # (B,)
    n = first_eos + 1
    ref_n = (reference_ids != pad_id).sum(-1)  # (B, R)
    return ~(ref_n == n[:, None]).any(-1)
