"""One evaluation for every captioner: COCO metrics, scene accuracy, object
recall, error types, accuracy by number of objects, and the two baselines
every table shows (the most frequent training caption; the caption of the
nearest training picture in CLIP space).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Mapping

import torch

from clipdiff_mini.captioners.features import SplitFeatures
from clipdiff_mini.data.scenes import Scene
from clipdiff_mini.evaluation.metrics import CaptionScorer
from clipdiff_mini.evaluation.scene_judge import judge_caption, scene_accuracy

HEADLINE = ("scene_accuracy", "object_recall", "repeated_object", "well_formed", "CIDEr", "BLEU-4", "METEOR", "ROUGE-L")


@torch.no_grad()
def generate_captions(model, caption_fn, split, batch_size: int = 250) -> dict[int, str]:
    """{image id: caption} for every picture of `split` (a `SplitFeatures`), in batches;
    `caption_fn(model, cond) -> list[str]` is the captioner's (e.g. `continuous_caption_fn`)."""
    out = {}
    for lo in range(0, len(split), batch_size):
        rows = torch.arange(lo, min(lo + batch_size, len(split)))
        caps = caption_fn(model, split.condition(rows))
        out.update({split.image_ids[int(r)]: c for r, c in zip(rows, caps)})
    return out


def evaluate_captions(predictions: Mapping[int, str], split, *, scorer: CaptionScorer | None = None,
                      coco: bool = True) -> dict[str, Any]:
    """Every number of the course's tables for one caption per picture of `split` (a `SplitFeatures`
    or `CaptionSplit`). `coco=False` skips the Java metrics (quick checks)."""
    refs = split.references()
    preds = {k: predictions[k] for k in refs if k in predictions}
    if len(preds) != len(refs):
        raise ValueError(f"captions for {len(preds)} of the {len(refs)} pictures of the split; caption all of them")
    acc = scene_accuracy(preds, split.scenes())
    out: dict[str, Any] = {"scene_accuracy": acc["caption_all_true"], "object_recall": acc["object_recall"],
                           "repeated_object": acc["repeated_object"], "well_formed": acc["well_formed"],
                           "claim_precision": acc["claim_precision"],
                           "relations_per_caption": acc["relations_per_caption"], "n_images": len(preds)}
    if coco:
        own = scorer is None
        scorer = scorer or CaptionScorer()
        try:
            m = scorer.score(preds, refs)
        finally:
            if own:
                scorer.close()
        out.update({k: m[k] for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")})
    return out


# ---- what goes wrong ------------------------------------------------------------------------
ERROR_KINDS = ("not well formed", "no object named", "repeated word", "repeated object", "colour-shape binding", "wrong colour",
               "wrong shape", "wrong size", "wrong count", "wrong relation", "wrong background")


def caption_errors(caption: str, scene) -> list[str]:
    """The error kinds of one caption (empty: every claim true). A false mention is a
    *binding* error when its colour and its shape are both in the picture but on different
    objects; else it is blamed on the attribute whose removal makes it true."""
    scene = Scene.from_dict(scene)
    j = judge_caption(caption, scene)
    errs = []
    words = caption.split()
    if any(a == b for a, b in zip(words, words[1:])):
        errs.append("repeated word")
    if not j.parsed.mentions:
        errs.append("no object named")
    if j.names_an_object_twice:  # its list names one object twice: each mention true, no distinct referents
        errs.append("repeated object")
    if not j.well_formed:
        errs.append("not well formed")
    objs = scene.objects
    for m, claim in zip(j.parsed.mentions, j.claims):
        if claim.true:
            continue
        if m.count is not None and m.match(objs):
            errs.append("wrong count")
            continue
        if m.colour and m.shape and any(o.colour == m.colour for o in objs) and any(o.shape == m.shape for o in objs):
            if not any(o.colour == m.colour and o.shape == m.shape for o in objs):
                errs.append("colour-shape binding")
                continue
        for attr, kind in (("colour", "wrong colour"), ("shape", "wrong shape"), ("size", "wrong size")):
            if getattr(m, attr) is not None and dataclasses.replace(m, **{attr: None}).match(objs):
                errs.append(kind)
                break
        else:
            errs.append("wrong colour" if m.colour else "wrong shape")
    kinds = [c.kind for c in j.claims if not c.true]
    if "relation" in kinds:
        errs.append("wrong relation")
    if "background" in kinds:
        errs.append("wrong background")
    return errs


def error_profile(predictions: Mapping[int, str], split) -> dict[str, float]:
    """Fraction of captions showing each error kind (a caption can show several)."""
    scenes = split.scenes()
    counts: Counter = Counter()
    for k, cap in predictions.items():
        counts.update(set(caption_errors(cap, scenes[k])))
    n = max(len(predictions), 1)
    return {kind: counts[kind] / n for kind in ERROR_KINDS}


def accuracy_by_objects(predictions: Mapping[int, str], split) -> dict[int, float]:
    """Scene accuracy of the captions of pictures with 1, 2, ... objects."""
    scenes = split.scenes()
    groups: dict[int, list[bool]] = {}
    for k, cap in predictions.items():
        n = len(Scene.from_dict(scenes[k]).objects)
        groups.setdefault(n, []).append(judge_caption(cap, scenes[k]).all_true)
    return {n: sum(v) / len(v) for n, v in sorted(groups.items())}


# ---- baselines ----------------------------------------------------------------------------
def most_frequent_caption(train) -> str:
    """The caption written most often in the training split (ties: the first seen)."""
    split = train.split if isinstance(train, SplitFeatures) else train  # a SplitFeatures or a CaptionSplit
    return Counter(split.captions()).most_common(1)[0][0]


def trivial_captions(train, split) -> dict[int, str]:
    cap = most_frequent_caption(train)
    return {k: cap for k in split.image_ids}


@torch.no_grad()
def nearest_neighbour_captions(train, split, batch_size: int = 1024) -> dict[int, str]:
    """The first caption of the training picture whose pooled CLIP feature is closest (cosine)."""
    bank = torch.nn.functional.normalize(train.image, dim=-1)  # (N, D)
    firsts = [r.captions[0] for r in train.split.records]
    out = {}
    ids = split.image_ids
    for lo in range(0, len(split), batch_size):
        q = torch.nn.functional.normalize(split.image[lo:lo + batch_size], dim=-1)  # (b, D)
        best = (q @ bank.t()).argmax(-1)  # (b,)
        out.update({ids[lo + i]: firsts[int(j)] for i, j in enumerate(best)})
    return out
