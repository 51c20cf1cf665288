"""Sequence-level knowledge distillation: a parallel captioner trained on a teacher's captions.

Why (notebook 07): each training picture has five references that differ in word order, wording and
which objects they name. A model that predicts every position at once learns, at each position, a
*mixture* of those templates; decoded position by position, the most salient phrase can win at
several positions (a repeated object) while another object is never named. This is the
multi-modality problem of non-autoregressive generation (Gu et al. 2018). Its standard remedy
(Kim and Rush 2016; Zhou, Gu and Neubig 2020) is to train on an autoregressive teacher's output
instead: one caption per picture, decoded greedily, so each input has one mode.

``captioner.targets = "autoregressive"`` switches it on for DDCap and CLIP-DiffusionLM. The teacher
is the course's autoregressive decoder (notebook 08) of the same width and depth, reading the CLIP
grid ``captioner.teacher_grid`` as prefix tokens; it is trained first when its checkpoint does not
exist (the same checkpoint notebook 08 trains and loads), and its captions of the training pictures
are cached beside its checkpoint. Validation and test still score against the scenes and references:
distillation changes only what the student is trained to write. A row trained this way is reported
as "with an autoregressive teacher": it uses a second model.

The steps that train the teacher and swap the targets (`with_training_targets`, `teacher_captions`)
are in `captioners.trainer`, beside the one training entry point they call for the teacher.
"""
from __future__ import annotations

from typing import Mapping

import torch

from clipdiff_mini.captioners.features import SplitFeatures

TARGETS = ("references", "autoregressive")


def distilled_split(split: SplitFeatures, captions: Mapping[int, str]) -> SplitFeatures:
    """`split` with one training caption per picture, `captions[image_id]`, in place of its references.

    The pictures, their features and the tokenizer are unchanged; ``ids`` (N, L) holds the captions in
    picture order and ``owner`` is 0..N-1. ``text`` (the CLIP text features of the references, which
    only CLIP-DiffusionLM's ``text_feature`` switch reads) is zero: the teacher's captions have none."""
    ids_order = split.image_ids
    missing = [i for i in ids_order if i not in captions]
    if missing:
        raise ValueError(f"no teacher caption for {len(missing)} of the {len(ids_order)} pictures "
                         f"(first: image {missing[0]}); caption every picture of the split")
    texts = [captions[i] for i in ids_order]
    ids = split.tokenizer.batch_encode(texts, max_len=split.ids.shape[1])  # (N, L)
    owner = torch.arange(len(ids_order))  # (N,)
    text = torch.zeros(len(ids_order), split.text.shape[1], dtype=split.text.dtype)  # (N, D)
    return SplitFeatures(split.name, split.split, split.image, split.grid, text, ids, owner, split.tokenizer)


def teacher_config(cfg):
    """The teacher's config: the student's sizes and optimiser, trained on the references, reading
    ``captioner.teacher_grid``, for ``captioner.train_steps`` (the student's own budget,
    ``captioner.student_steps``, does not change the teacher)."""
    return cfg.replace({"captioner.targets": "references", "captioner.grid": cfg.captioner.teacher_grid,
                        "captioner.student_steps": 0})


def student_config(cfg):
    """The config a captioner trains with: with an autoregressive teacher, ``captioner.student_steps`` steps
    and a peak learning rate of ``captioner.student_lr`` where they are set (0: the captioner's own)."""
    c = cfg.captioner
    if c.targets == "references":
        return cfg
    over = {}
    if c.student_steps:
        over["captioner.train_steps"] = c.student_steps
    if c.student_lr:
        over["captioner.lr"] = c.student_lr
    return cfg.replace(over) if over else cfg


def references_config(cfg):
    """The run a student with ``captioner.student_init = "references"`` starts from: the same captioner,
    trained on the references (the model of the notebook's first training)."""
    return cfg.replace({"captioner.targets": "references", "captioner.student_steps": 0,
                        "captioner.student_init": "scratch"})


def start_from_references(cfg, model: torch.nn.Module, train_fn, data, *, progress: bool = True) -> bool:
    """With an autoregressive teacher and ``captioner.student_init = "references"``, copy into `model` the
    weights (the best on val) of the same captioner trained on the references, ``train_fn(references_config(cfg),
    data)`` (loaded from its checkpoint, or trained first). Returns whether it did.

    Why: the model trained on the references already reads the picture and writes well-formed captions; what
    it lacks is one mode per picture. Fine-tuning it on the teacher's captions spends the student's steps on
    that, instead of learning the language again from random weights."""
    c = cfg.captioner
    if c.targets == "references" or c.student_init == "scratch":
        return False
    if c.student_init != "references":
        raise ValueError(f"captioner.student_init={c.student_init!r}; allowed: 'scratch', 'references'")
    start, _ = train_fn(references_config(cfg), data, progress=progress)
    model.load_state_dict(start.state_dict())
    return True


def reference_disagreement(ids: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """(L,): at each position, the fraction of pictures whose references do not all hold the same token
    there (padding included, so references of different lengths disagree where one has ended).

    `ids` (M, L) caption rows and `owner` (M,) their picture, as in `SplitFeatures`; pictures with a single
    caption are left out. This is what a position-wise model is asked to fit: where the references of one
    picture disagree, its target at that position is a mixture (the multi-modality of notebook 07)."""
    n_pic = int(owner.max()) + 1
    first = torch.full((n_pic, ids.shape[1]), -1, dtype=ids.dtype)  # (N, L) the first reference's tokens
    seen = torch.zeros(n_pic, dtype=torch.long)
    differs = torch.zeros(n_pic, ids.shape[1], dtype=torch.bool)  # (N, L)
    for row in range(ids.shape[0]):  # M is at most a few tens of thousands: a plain loop is clear and fast enough
        p = int(owner[row])
        if seen[p] == 0:
            first[p] = ids[row]
        else:
            differs[p] |= ids[row] != first[p]
        seen[p] += 1
    keep = seen > 1
    return differs[keep].float().mean(0)
