"""From token ids to caption strings, shared by every captioner, and the
denoising trajectory display (notebooks 05 and 07).
"""
from __future__ import annotations

from typing import Sequence

import torch


def drop_consecutive_repeats(words: Sequence[str]) -> list[str]:
    """"a a red red circle" -> "a red circle" (CLIP-DiffusionLM's post-processing)."""
    out: list[str] = []
    for w in words:
        if not out or out[-1] != w:
            out.append(w)
    return out


def decode_captions(ids: torch.Tensor, tokenizer, *, drop_repeats: bool = False) -> list[str]:
    """Caption strings of ids (B, L): specials removed, cut at the first [EOS]."""
    caps = tokenizer.batch_decode(ids.cpu())
    if drop_repeats:
        caps = [" ".join(drop_consecutive_repeats(c.split())) for c in caps]
    return caps


def repeat_rate(captions: Sequence[str]) -> float:
    """Fraction of captions with a word written twice in a row ("a red red circle")."""
    if not captions:
        return float("nan")
    return sum(any(a == b for a, b in zip(c.split(), c.split()[1:])) for c in captions) / len(captions)


def trajectory_rows(trajectory: Sequence[tuple[int, torch.Tensor]], tokenizer, picture: int,
                    n_rows: int | None = None, *, skip_special: bool = False) -> list[tuple[int, str]]:
    """[(t, text)] of one picture's prediction at each network call, at most `n_rows` evenly spaced
    (first and last always kept). Specials are shown when `skip_special` is False, so a student sees
    the model write [EOS] and [PAD]."""
    idx = list(range(len(trajectory)))
    if n_rows is not None and len(idx) > n_rows:
        step = (len(idx) - 1) / (n_rows - 1)
        idx = sorted({round(i * step) for i in range(n_rows)})
    rows = []
    for i in idx:
        t, ids = trajectory[i]
        text = tokenizer.decode(ids[picture], skip_special=skip_special, stop_at_eos=False)
        rows.append((t, text))
    return rows


def print_trajectory(trajectory, tokenizer, pictures: Sequence[int], references=None, n_rows: int = 8) -> None:
    """Print the caption as it condenses (diffusion: rounded x0 estimate; masked: tokens filled) per picture."""
    for p in pictures:
        ref = f"   (reference: {references[p]})" if references is not None else ""
        print(f"picture {p}{ref}")
        for t, text in trajectory_rows(trajectory, tokenizer, p, n_rows):
            print(f"  t={t:>5}  {text}")
        print()


def sampling_caption_fn(tokenizer, drop_repeats: bool = False, **sample_kw):
    """caption_fn(model, cond) -> captions for any captioner with ``sample(cond, **kw) -> {"ids": (B, L)}``:
    moves `cond` to the model's device, samples with `sample_kw`, decodes. Used by the training loop's
    validation and by every evaluation (`continuous_caption_fn`, `ddcap_caption_fn`, `ar_caption_fn`)."""

    def caption(model, cond):
        dev = next(model.parameters()).device
        cond = {k: v.to(dev) for k, v in cond.items()}
        return decode_captions(model.sample(cond, **sample_kw)["ids"], tokenizer, drop_repeats=drop_repeats)

    return caption
