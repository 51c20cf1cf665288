"""Infilling (notebook 08): a reference caption with one span hidden, filled by each captioner.

The task where a bidirectional model should win (DDCap reports infilling
CIDEr 230.3 against 203.5 for its autoregressive twin): the words on *both*
sides of the gap are given. Three kinds of span, found in the caption's words:

* ``"colour"`` -- the first colour word ("a [red] circle");
* ``"shape"``  -- the first shape noun, singular or plural ("two red [circles]");
* ``"relation"`` -- the middle of a relation, its whole surface phrase
  ("a red circle [to the left of] a blue square").

    items = infill_items(test, ("colour", "shape", "relation"), n_per_kind=100)
    enc = encode_items(items, tokenizer, max_len)   # ids, masked ids, span mask, prefix lengths
    filled = fill_ddcap(ddcap, enc, cond)           # (N, L): its [MASK] positions filled
    filled = fill_continuous(cdlm, enc, cond)       # the replacement method (ContinuousCaptioner.sample)
    filled = fill_ar_prefix(ar, enc, cond)          # left context only: greedy continuation of the prefix
    filled = fill_ar_ranked(ar, enc, items, tokenizer, cond)  # both sides: the candidate fill of highest log p
    score_fills(filled, enc, items, tokenizer, scenes)        # exact fill, scene accuracy of the filled captions

Every model knows how many tokens the gap has (the diffusion models fill a
fixed number of positions; the prefix-only decoder writes that many tokens
and the rest of the caption is the given suffix; the ranked decoder chooses
among the fills of that many tokens). `candidate_fills` lists the fills of
a kind: the seven colours, the five shapes in the same number, the relation
phrases of the same length -- so "above" and "over" are different fills
although both are true: exact fill counts only the reference's words, scene
accuracy counts whether the filled caption is true of the picture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from clipdiff_mini.data.caption_grammar import PLURAL, RELATION_PHRASES
from clipdiff_mini.data.scenes import COLOURS, SHAPES
from clipdiff_mini.data.tokenizers import simple_tokenize
from clipdiff_mini.evaluation.scene_judge import judge_caption

Tensor = torch.Tensor
SPAN_KINDS = ("colour", "shape", "relation")
_PHRASES = sorted((tuple(p.split()) for ps in RELATION_PHRASES.values() for p in ps), key=len, reverse=True)


@dataclass(frozen=True)
class InfillItem:
    """One masked reference: picture `row` of the split (`image_id`), its caption's words, the span [start, end)."""

    row: int
    image_id: int
    kind: str
    words: tuple[str, ...]
    start: int
    end: int

    @property
    def span(self) -> tuple[str, ...]:
        return self.words[self.start:self.end]

    def masked_text(self, mask: str = "___") -> str:
        return " ".join(self.words[:self.start] + (mask,) + self.words[self.end:])


def find_span(words: Sequence[str], kind: str) -> tuple[int, int] | None:
    """Word span [start, end) of the first `kind` span in `words`, or None."""
    words = list(words)
    if kind == "colour":
        hits = [i for i, w in enumerate(words) if w in COLOURS]
        return (hits[0], hits[0] + 1) if hits else None
    if kind == "shape":
        nouns = set(SHAPES) | set(PLURAL.values())
        hits = [i for i, w in enumerate(words) if w in nouns]
        return (hits[0], hits[0] + 1) if hits else None
    if kind == "relation":
        for i in range(len(words)):
            for p in _PHRASES:  # longest first: "to the left of" before "left of"
                if tuple(words[i:i + len(p)]) == p:
                    return i, i + len(p)
        return None
    raise ValueError(f"span kind {kind!r}; allowed: {SPAN_KINDS}")


def candidate_fills(kind: str, span: Sequence[str]) -> list[tuple[str, ...]]:
    """The fills of a `kind` span with as many words as `span` (the reference's fill is one of them)."""
    if kind == "colour":
        return [(c,) for c in COLOURS]
    if kind == "shape":
        plural = span[0] in PLURAL.values()
        return [(PLURAL[s] if plural else s,) for s in SHAPES]
    if kind == "relation":
        return [p for p in sorted(_PHRASES) if len(p) == len(span)]
    raise ValueError(f"span kind {kind!r}; allowed: {SPAN_KINDS}")


def infill_items(split, kinds: Sequence[str] = SPAN_KINDS, n_per_kind: int | None = None) -> list[InfillItem]:
    """For each kind, pictures of `split` (a `SplitFeatures` or `CaptionSplit`) in order, each with its first
    reference caption that has such a span; at most `n_per_kind` per kind."""
    split = getattr(split, "split", split)
    items = []
    for kind in kinds:
        found = 0
        for row, rec in enumerate(split.records):
            if n_per_kind is not None and found >= n_per_kind:
                break
            for cap in rec.captions:
                words = tuple(simple_tokenize(cap))
                span = find_span(words, kind)
                if span is not None:
                    items.append(InfillItem(row, rec.image_id, kind, words, *span))
                    found += 1
                    break
    return items


def encode_items(items: Sequence[InfillItem], tokenizer, max_len: int) -> dict[str, Tensor]:
    """{"ids" (N, L): [BOS] prefix span suffix [EOS] [PAD].., "masked" (N, L): the span's tokens [MASK],
    "span" (N, L) bool, "prefix_len" (N,): tokens before the span ([BOS] included), "span_len" (N,)}."""
    ids = torch.full((len(items), max_len), tokenizer.pad_id, dtype=torch.long)
    span = torch.zeros(len(items), max_len, dtype=torch.bool)
    prefix_len, span_len = [], []
    for i, it in enumerate(items):
        pre = tokenizer.encode(" ".join(it.words[:it.start]), add_special=False)
        mid = tokenizer.encode(" ".join(it.span), add_special=False)
        post = tokenizer.encode(" ".join(it.words[it.end:]), add_special=False)
        row = [tokenizer.bos_id, *pre, *mid, *post, tokenizer.eos_id]
        if len(row) > max_len:
            raise ValueError(f"caption of {len(row)} tokens does not fit max_len={max_len}: {' '.join(it.words)}")
        ids[i, :len(row)] = torch.tensor(row)
        span[i, 1 + len(pre):1 + len(pre) + len(mid)] = True
        prefix_len.append(1 + len(pre))
        span_len.append(len(mid))
    masked = torch.where(span, torch.full_like(ids, tokenizer.mask_id), ids)
    return {"ids": ids, "masked": masked, "span": span, "prefix_len": torch.tensor(prefix_len),
            "span_len": torch.tensor(span_len)}


def condition_of(split, items: Sequence[InfillItem]) -> dict[str, Tensor]:
    """The image conditioning (pooled, grid) of each item's picture in `split` (a `SplitFeatures`)."""
    return split.condition(torch.tensor([it.row for it in items], dtype=torch.long))


# ---- the fillers ----------------------------------------------------------------------------
def _on(model, cond):
    dev = next(model.parameters()).device
    return {k: v.to(dev) for k, v in cond.items()}


@torch.no_grad()
def fill_ddcap(model, enc: dict, cond: dict, **sample_kw) -> Tensor:
    """DDCap starts from the masked caption: only its [MASK] positions are filled (best-first)."""
    return model.sample(_on(model, cond), init_ids=enc["masked"], **sample_kw)["ids"].cpu()


@torch.no_grad()
def fill_continuous(model, enc: dict, cond: dict, **sample_kw) -> Tensor:
    """CLIP-DiffusionLM with every position but the span given (the replacement method)."""
    return model.sample(_on(model, cond), known_ids=enc["ids"], known=~enc["span"], **sample_kw)["ids"].cpu()


@torch.no_grad()
def fill_ar_prefix(model, enc: dict, cond: dict, batch_size: int = 256) -> Tensor:
    """The autoregressive decoder given the left context only: greedy continuation of [BOS] prefix, its
    next `span_len` tokens put in the gap (the suffix stays the reference's)."""
    cond = _on(model, cond)
    out = enc["ids"].clone()
    for p in enc["prefix_len"].unique().tolist():  # one prompt length per call
        rows = (enc["prefix_len"] == p).nonzero().squeeze(-1)
        for lo in range(0, len(rows), batch_size):
            r = rows[lo:lo + batch_size]
            n = int(enc["span_len"][r].max())
            gen = model.sample({k: v[r.to(v.device)] for k, v in cond.items()}, beam=1, prompt=enc["ids"][r, :p],
                               max_len=min(model.max_len, p + n))["ids"].cpu()  # (b, p + n)
            for j, row in enumerate(r.tolist()):
                k = int(enc["span_len"][row])
                out[row, p:p + k] = gen[j, p:p + k]
    return out


@torch.no_grad()
def fill_ar_ranked(model, enc: dict, items: Sequence[InfillItem], tokenizer, cond: dict,
                   batch_size: int = 512) -> Tensor:
    """The autoregressive decoder scoring whole captions: of the `candidate_fills` of each gap, the one whose
    filled caption has the highest log p(w | c) (`ARCaptioner.sequence_logprob`): both sides are read."""
    cond = _on(model, cond)
    L = enc["ids"].shape[1]
    rows, cands, texts = [], [], []
    for i, it in enumerate(items):
        for fill in candidate_fills(it.kind, it.span):
            rows.append(i)
            cands.append(fill)
            texts.append(" ".join(it.words[:it.start] + fill + it.words[it.end:]))
    ids = tokenizer.batch_encode(texts, max_len=L)  # (C, L)
    rows_t = torch.tensor(rows)
    scores = torch.empty(len(rows))
    for lo in range(0, len(rows), batch_size):
        r = rows_t[lo:lo + batch_size]
        c = {k: v[r.to(v.device)] for k, v in cond.items()}
        scores[lo:lo + batch_size] = model.sequence_logprob(ids[lo:lo + batch_size].to(c["image"].device), c).cpu()
    out = enc["ids"].clone()
    for i in range(len(items)):
        mine = (rows_t == i).nonzero().squeeze(-1)
        best = int(mine[scores[mine].argmax()])
        out[i] = ids[best]
    return out


# ---- scoring --------------------------------------------------------------------------------
def score_fills(filled: Tensor, enc: dict, items: Sequence[InfillItem], tokenizer, scenes) -> dict:
    """Exact fill (every span token equals the reference's, and nothing else changed), scene accuracy of
    the filled captions, and "no_word": gaps filled with a special token ([PAD], [EOS], ...), overall and
    per kind; also the filled captions. A gap with no word in it is never counted true: a caption with its
    colour dropped ("a small ___ diamond" -> "a small diamond") or cut at an [EOS] written in the gap
    would often be true, and say less."""
    same_span = ((filled == enc["ids"]) | ~enc["span"]).all(-1)  # (N,)
    same_rest = ((filled == enc["ids"]) | enc["span"]).all(-1)
    exact = same_span & same_rest
    specials = torch.tensor(sorted(set(tokenizer.special_ids.values()) - {tokenizer.unk_id}))
    no_word = (torch.isin(filled, specials) & enc["span"]).any(-1)  # (N,)
    caps = tokenizer.batch_decode(filled)
    judged = torch.tensor([judge_caption(c, scenes[it.image_id]).all_true for c, it in zip(caps, items)])
    true = judged & ~no_word
    out = {"exact_fill": exact.float().mean().item(), "scene_accuracy": true.float().mean().item(),
           "no_word": no_word.float().mean().item(), "n": len(items), "captions": caps, "per_kind": {}}
    for kind in dict.fromkeys(it.kind for it in items):
        k = torch.tensor([it.kind == kind for it in items])
        out["per_kind"][kind] = {"exact_fill": exact[k].float().mean().item(),
                                 "scene_accuracy": true[k].float().mean().item(),
                                 "no_word": no_word[k].float().mean().item(), "n": int(k.sum())}
    return out
