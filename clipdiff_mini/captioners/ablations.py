"""Ablation tables rerun on the embedded dataset, one trained model per row.

    python -m clipdiff_mini.captioners.ablations clip_diffusionlm --profile laptop
    python -m clipdiff_mini.captioners.ablations clip_diffusionlm --profile ci --rows paper 5.1-add
    python -m clipdiff_mini.captioners.ablations ddcap --profile laptop

Each row is a set of config overrides on top of the profile (and of the
table's base settings); rows that differ only in sampling settings reuse
the trained model of the row they name. Every row is scored on **val**
(the papers' ablations are on validation data) with the COCO metrics, scene
accuracy and object recall, beside the paper's number and the two baselines.
Results go to ``outputs/<profile>/ablations/<table>.json`` and ``.md``
(atomically, row by row, so an interrupted run keeps its finished rows and
a rerun skips them; trained models are checkpointed and reused too).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from clipdiff_mini.atomic_io import write_json, write_text


@dataclass(frozen=True)
class Row:
    name: str
    section: str  # the paper's section or "course" for the course's own levers
    train: dict[str, Any] = field(default_factory=dict)  # overrides that change the trained model
    sample: dict[str, Any] = field(default_factory=dict)  # overrides used only at sampling
    paper: str = ""  # the paper's number for this setting (Flickr8k BLEU-4 for CLIP-DiffusionLM)
    note: str = ""


# The paper's own recipe (docs/references.md): regression on x0 with the certainty term, frozen pretrained word
# vectors, no timestep input, L1, concat fusion with the caption's CLIP text feature in training, cosine
# T = 1000, lambda 0.3, five feed-back passes.
PAPER_RECIPE = {"continuous.output": "regress", "continuous.loss": "l1", "continuous.timestep_input": False,
                "continuous.self_condition": False, "continuous.certainty_weight": 0.3, "continuous.fusion": "concat",
                "continuous.target": "x0", "captioner.grid": "none", "continuous.embeddings": "pretrained",
                "continuous.text_feature": True,
                # the course's later levers, off
                "continuous.length_prediction": False, "continuous.cond_norm": False, "continuous.lr_scale": 1.0,
                "continuous.cond_dropout": 0.0, "continuous.t_min_frac": 0.0}
PAPER_SAMPLING = {"continuous.sampler": "feedback", "continuous.sample_steps": 5}

# the course's defaults with the 4x4 grid, trained as the course trains now (the base pins how older rows ran)
_COURSE_FINE = {"captioner.grid": "fine", "captioner.patience": 0, "autoregressive.train_steps": 4_500}
_FINE_STUDENT = {**_COURSE_FINE, "captioner.targets": "autoregressive", "captioner.student_steps": 6_000,
                 "captioner.student_init": "references"}
# settled words in training and the commit sampler in validation (a sampling switch, here part of the run so
# that its checks choose the weights with the sampler the row is scored with)
_SETTLED = {**_COURSE_FINE, "continuous.settled_words": True, "continuous.sampler": "commit",
            "continuous.sample_steps": 10, "continuous.length_beam": 1}
_SETTLED_STUDENT = {**_SETTLED, "captioner.targets": "autoregressive", "captioner.student_steps": 6_000,
                    "captioner.student_init": "references"}
CLIP_DIFFUSIONLM_ROWS: tuple[Row, ...] = (
    Row("paper", "final", PAPER_RECIPE, PAPER_SAMPLING, "0.1549", "the paper's final setting"),
    Row("5.1-add", "5.1", {**PAPER_RECIPE, "continuous.fusion": "add"}, PAPER_SAMPLING, "0.1033",
        "CLIP feature added to every position instead of extra tokens"),
    Row("5.2-lambda1.0", "5.2", {**PAPER_RECIPE, "continuous.certainty_weight": 1.0}, PAPER_SAMPLING, "0.1599"),
    Row("5.2-lambda0.5", "5.2", {**PAPER_RECIPE, "continuous.certainty_weight": 0.5}, PAPER_SAMPLING, "0.1614"),
    Row("5.2-lambda0.2", "5.2", {**PAPER_RECIPE, "continuous.certainty_weight": 0.2}, PAPER_SAMPLING, "0.1550"),
    Row("5.2-adaptive", "5.2", {**PAPER_RECIPE, "continuous.adaptive_certainty": True}, PAPER_SAMPLING,
        "not reported", "lambda 0.3 rescaled by the adaptive ratio (notebook 03)"),
    Row("5.3-guidance-w0.3", "5.3", {**PAPER_RECIPE, "continuous.cond_dropout": 0.1},
        {**PAPER_SAMPLING, "continuous.guidance_scale": 1.3}, "0.1539", "w = s - 1"),
    Row("5.3-guidance-w1.0", "5.3", {**PAPER_RECIPE, "continuous.cond_dropout": 0.1},
        {**PAPER_SAMPLING, "continuous.guidance_scale": 2.0}, "0.1558", "same model as w0.3"),
    Row("5.4-lr-constant", "5.4", {**PAPER_RECIPE, "captioner.lr_schedule": "constant"}, PAPER_SAMPLING,
        "not reported", "no decay (the course's default decays linearly to lr_final)"),
    Row("5.4-lr-1e-4", "5.4", {**PAPER_RECIPE, "captioner.lr": 1e-4, "captioner.lr_final": 5e-5}, PAPER_SAMPLING,
        "not reported", "the paper's 1e-4 decaying to 5e-5"),
    Row("5.5-x_t-100", "5.5", {**PAPER_RECIPE, "continuous.target": "x_t-n", "continuous.target_n": 100},
        {"continuous.sampler": "feedback"}, "0.1474", "predict x_{t-100}; sampling jumps 100 steps per pass (10)"),
    Row("5.6-passes1", "5.6", PAPER_RECIPE, {**PAPER_SAMPLING, "continuous.sample_steps": 1}, "not reported"),
    Row("5.6-passes10", "5.6", PAPER_RECIPE, {**PAPER_SAMPLING, "continuous.sample_steps": 10}, "not reported"),
    Row("5.6-ddim10-clamp", "5.6", PAPER_RECIPE, {"continuous.sampler": "ddim", "continuous.sample_steps": 10,
                                                  "continuous.clamp": True}, "not reported"),
    # the course's levers, added one at a time to the paper's recipe, then the course's recipe
    Row("+timestep", "course", {**PAPER_RECIPE, "continuous.timestep_input": True}, PAPER_SAMPLING),
    Row("+logits", "course", {**PAPER_RECIPE, "continuous.output": "logits"}, PAPER_SAMPLING,
        note="word logits trained by cross-entropy, x0 = E[softmax] (CDCD)"),
    Row("+self-cond", "course", {**PAPER_RECIPE, "continuous.self_condition": True}, PAPER_SAMPLING),
    Row("+fine-grid", "course", {**PAPER_RECIPE, "captioner.grid": "fine"}, PAPER_SAMPLING),
    Row("-text-feature", "course", {**PAPER_RECIPE, "continuous.text_feature": False}, PAPER_SAMPLING,
        note="no caption CLIP feature in training (at sampling the image stands in for it)"),
    # run while CLIP-DiffusionLM stopped on a validation plateau (continuous.plateau_stop): pinned as they ran
    Row("course", "course", {"continuous.plateau_stop": True}, {},
        note="the profile's defaults, stopped on a plateau: the recipe notebook 05 trained then"),
    Row("course, AR teacher", "course", {"captioner.targets": "autoregressive", "captioner.student_steps": 0,
                                         "captioner.student_init": "scratch", "continuous.plateau_stop": True}, {},
        note="with an autoregressive teacher: the course's recipe trained on its captions, the same step budget"),
    Row("course, AR teacher, from refs", "course", {"captioner.targets": "autoregressive", "captioner.student_steps": 0,
                                                    "continuous.plateau_stop": True}, {},
        note="with an autoregressive teacher: row 'course' trained on to the teacher's captions, as many steps again"),
    # the 4x4 grid with the teacher that reads it: trained to the step budget (no plateau stop), beside the
    # decoder's own 4,500 steps; DDCap's lever table found the grid paid only with the teacher's captions
    Row("course, fine grid", "course", _COURSE_FINE, {}, note="the profile's defaults with the 4x4 grid as tokens"),
    Row("course, fine grid, AR teacher, from refs", "course", _FINE_STUDENT, {},
        note="with an autoregressive teacher: row 'course, fine grid' trained on to the teacher's captions"),
    Row("course, fine grid, AR teacher, from refs, renoise 20", "course", _FINE_STUDENT,
        {"continuous.sampler": "renoise", "continuous.sample_steps": 20, "continuous.length_beam": 1},
        note="model of the row above: re-noised to the training inputs at every step, 20 passes"),
    Row("course, fine grid, AR teacher, from refs, 5 passes", "course", _FINE_STUDENT,
        {"continuous.sample_steps": 5, "continuous.length_beam": 1}, note="model of the row above: 5 feed-back passes"),
    Row("course, fine grid, AR teacher, from refs, commit 24", "course", _FINE_STUDENT,
        {"continuous.sampler": "commit", "continuous.sample_steps": 24, "continuous.length_beam": 1},
        note="model of 'course, fine grid, AR teacher, from refs': the surest word fixed at each pass"),
    # the same two trainings on DDCap's pre-LN block instead of DistilBERT: the network, or the continuous formulation?
    Row("course, fine grid, course block", "course", {**_COURSE_FINE, "continuous.backbone": "course"}, {},
        note="DDCap's pre-LN block (captioners/backbone.py) instead of DistilBERT"),
    Row("course, fine grid, course block, AR teacher, from refs", "course",
        {**_FINE_STUDENT, "continuous.backbone": "course"}, {},
        note="with an autoregressive teacher: the row above trained on to the teacher's captions"),
    # a hypothesis those rows left: training never mixed settled words with noisy ones (design log: it was not it)
    Row("course, fine grid, settled words, commit 10", "course", _SETTLED, {},
        note="a share of each caption's words given clean in training; 10 passes that fix the surest words"),
    Row("course, fine grid, settled words, commit 10, AR teacher, from refs", "course", _SETTLED_STUDENT, {},
        note="with an autoregressive teacher: the row above trained on to the teacher's captions"),
    Row("course, fine grid, settled words, commit 24, AR teacher, from refs", "course", _SETTLED_STUDENT,
        {"continuous.sample_steps": 24},
        note="model of 'course, fine grid, settled words, commit 10, AR teacher, from refs': one word a pass"),
    Row("course, fine grid, settled words, feedback, AR teacher, from refs", "course", _SETTLED_STUDENT,
        {"continuous.sampler": "feedback", "continuous.sample_steps": 10, "continuous.length_beam": 5},
        note="model of 'course, fine grid, settled words, commit 10, AR teacher, from refs': the course's sampler"),
)

# What limits the continuous captioner in a laptop budget: the runs that chose the course's defaults
# (docs/design_log.md), each rerunnable. Scale 1.0 was the earlier default.
_OLD = {"continuous.embed_scale": 1.0}
_DDIM10 = {"continuous.sampler": "ddim", "continuous.sample_steps": 10}
_FEEDBACK5 = {"continuous.sampler": "feedback", "continuous.sample_steps": 5}
BUDGET_ROWS: tuple[Row, ...] = (
    Row("w128x4-fine-s1.0", "budget", {**_OLD, "captioner.width": 128, "captioner.layers": 4, "captioner.grid": "fine"},
        _DDIM10),
    Row("w128x4-s1.0", "budget", {**_OLD, "captioner.width": 128, "captioner.layers": 4}, _DDIM10),
    Row("w128x4-s1.0-feedback", "budget", {**_OLD, "captioner.width": 128, "captioner.layers": 4}, _FEEDBACK5),
    Row("w96x3-s1.0", "budget", _OLD, _DDIM10),
    Row("w96x3-s1.0-feedback", "budget", _OLD, _FEEDBACK5),
    Row("w96x3-s0.25-ddim", "budget", {}, _DDIM10),
    Row("w96x3-s0.25", "budget", {}, _FEEDBACK5, note="the course's defaults"),
    Row("w96x3-s0.25-fine", "budget", {"captioner.grid": "fine"}, _FEEDBACK5),
    Row("w96x3-s0.25-20min", "budget", {"captioner.train_minutes": 20}, _FEEDBACK5, note="where the curve goes"),
)

# How the course's recipe got past the plain one (docs/design_log.md): one lever added per row, each
# row trained for the same 3000 steps (not minutes, so a busy machine does not change the rows), scored
# with five feed-back passes unless the row says otherwise. Every row spells out all its switches, so the
# table does not move when the course's defaults do.
_R0 = {"continuous.length_prediction": False, "continuous.t_min_frac": 0.0, "continuous.cond_dropout": 0.0,
       "captioner.lr": 1e-3, "continuous.lr_scale": 1.0, "continuous.cond_norm": False, "captioner.grid": "none"}
_R1 = {**_R0, "continuous.length_prediction": True, "continuous.t_min_frac": 0.15, "continuous.cond_dropout": 0.1}
_R2 = {**_R1, "continuous.lr_scale": 2.0}
_R3 = {**_R2, "continuous.cond_norm": True}
_NO_BEAM = {**_FEEDBACK5, "continuous.length_beam": 1, "continuous.guidance_scale": 1.0}
RECIPE_ROWS: tuple[Row, ...] = (
    Row("word logits + self-cond", "recipe", _R0, _NO_BEAM, note="the course's recipe before this table"),
    Row("+ length head", "recipe", _R1, _NO_BEAM, note="+ t >= 0.15 T, p_uncond 0.1"),
    Row("+ coarse grid", "recipe", {**_R1, "captioner.grid": "coarse"}, _NO_BEAM),
    Row("+ lr 2e-3", "recipe", _R2, _NO_BEAM),
    Row("+ lr 2e-3, guidance 2", "recipe", _R2, {**_NO_BEAM, "continuous.guidance_scale": 2.0}),
    Row("+ condition LayerNorm", "recipe", _R3, _NO_BEAM),
    Row("+ condition LayerNorm, fine grid", "recipe", {**_R3, "captioner.grid": "fine"}, _NO_BEAM),
    Row("+ length beam 5", "recipe", _R3, {**_FEEDBACK5, "continuous.length_beam": 5}, note="25 passes"),
    Row("+ length beam 5, 10 passes", "recipe", _R3, {"continuous.sampler": "feedback", "continuous.sample_steps": 10,
                                                       "continuous.length_beam": 5}, note="50 passes"),
    Row("+ length beam 5, repeat 1", "recipe", {**_R3, "captioner.repeat": 1},
        {**_FEEDBACK5, "continuous.length_beam": 5}, note="row '+ length beam 5' with other random draws (the spread)"),
    Row("+ AR teacher, length beam 5", "recipe", {**_R3, "captioner.targets": "autoregressive"},
        {**_FEEDBACK5, "continuous.length_beam": 5},
        note="with an autoregressive teacher: trained on its captions (sequence-level distillation)"),
)

# DDCap's Table 1 (the note's ablation, COCO val, no image-free training unless stated). Rows that differ
# only in the sampler share a trained model: a and c, b and e. The paper's number is its COCO CIDEr.
_OFF = {"ddcap.length_prediction": False, "ddcap.concentrated_mask": False, "ddcap.image_free_p": 0.0,
        "ddcap.conditioning": "cross"}
_RANDOM = {"ddcap.order": "random", "ddcap.guidance_scale": 1.0}
_BEST = {"ddcap.order": "best_first", "ddcap.guidance_scale": 1.0}
_G = {"ddcap.length_prediction": True, "ddcap.concentrated_mask": True, "ddcap.image_free_p": 0.2,
      "ddcap.conditioning": "cross"}
_G_SAMPLE = {"ddcap.order": "best_first", "ddcap.guidance_scale": 1.17}
DDCAP_ROWS: tuple[Row, ...] = (
    Row("a", "Table 1", _OFF, _RANDOM, "20.6", "no trick: ancestral sampling in random order"),
    Row("b", "Table 1", {**_OFF, "ddcap.concentrated_mask": True}, _RANDOM, "43.6", "CAM"),
    Row("c", "Table 1", _OFF, _BEST, "45.2", "best-first (same model as a)"),
    Row("d", "Table 1", {**_OFF, "ddcap.length_prediction": True}, _BEST, "92.6", "best-first + length"),
    Row("e", "Table 1", {**_OFF, "ddcap.concentrated_mask": True}, _BEST, "97.5", "best-first + CAM (model of b)"),
    Row("f", "Table 1", {**_OFF, "ddcap.length_prediction": True, "ddcap.concentrated_mask": True}, _BEST, "116.7",
        "best-first + CAM + length"),
    Row("g", "Table 1", _G, _G_SAMPLE, "117.8", "all four: + image-free training p 0.2, guidance s 1.17"),
    # the course's questions, each one change to row g
    Row("g, s=1", "course", _G, {**_G_SAMPLE, "ddcap.guidance_scale": 1.0}, note="model g without guidance (1 pass/step)"),
    Row("g, K=2", "course", _G, {**_G_SAMPLE, "ddcap.tokens_per_step": 2}, note="two tokens committed per call"),
    Row("g, pooled only", "course", {**_G, "captioner.grid": "none"}, _G_SAMPLE, note="no spatial grid"),
    Row("g, 2x2 grid", "course", {**_G, "captioner.grid": "coarse"}, _G_SAMPLE, note="the CLIP's last stage"),
    Row("g, 1/t weights", "course", {**_G, "ddcap.loss_weighting": "elbo"}, _G_SAMPLE, note="MDLM's bound"),
    Row("g, AR teacher", "course", {**_G, "captioner.targets": "autoregressive"}, _G_SAMPLE,
        note="with an autoregressive teacher: trained on its captions (sequence-level distillation)"),
    Row("g, prefix", "course", {**_G, "ddcap.conditioning": "prefix"}, _G_SAMPLE,
        note="the memory as prefix tokens in self-attention (the course's default)"),
)

# Issue of the course: what closes DDCap's gap to the autoregressive decoder (notebook 07, section 12). Each
# row changes one thing of row g, trained on the references; the same steps for every row.
_P = {**_G, "ddcap.conditioning": "prefix"}
_P_CALIBRATED = {**_P, "ddcap.concentrated_mask": False, "ddcap.timestep_input": False}
_FROM_REFS = {**_P, "ddcap.concentrated_mask": False, "captioner.targets": "autoregressive",
              "captioner.student_steps": 6_000, "captioner.student_init": "references"}  # the course's student
DDCAP_LEVER_ROWS: tuple[Row, ...] = (
    Row("g", "lever", _G, _G_SAMPLE, note="DDCap's recipe: cross-attention to [pooled, 4x4 grid]"),
    Row("g, prefix", "lever", _P, _G_SAMPLE, note="the grid as prefix tokens in self-attention"),
    Row("g, prefix, no CAM", "lever", {**_P, "ddcap.concentrated_mask": False}, _G_SAMPLE),
    Row("g, prefix, no CAM, no t", "lever", _P_CALIBRATED, _G_SAMPLE, note="no timestep input either"),
    Row("g, prefix, loss on all", "lever", {**_P, "ddcap.loss_positions": "all"}, _G_SAMPLE,
        note="cross-entropy on every caption token, not the hidden ones only"),
    Row("g, prefix, p_uncond 0", "lever", {**_P, "ddcap.image_free_p": 0.0}, {**_G_SAMPLE, "ddcap.guidance_scale": 1.0}),
    Row("g, prefix, s=1", "lever", _P, {**_G_SAMPLE, "ddcap.guidance_scale": 1.0}, note="model of 'g, prefix'"),
    Row("g, prefix, s=1.5", "lever", _P, {**_G_SAMPLE, "ddcap.guidance_scale": 1.5}, note="model of 'g, prefix'"),
    Row("g, prefix, sampled length", "lever", _P, {**_G_SAMPLE, "ddcap.length_choice": "sample"},
        note="model of 'g, prefix'"),
    Row("g, prefix, mask-predict", "lever", _P, {**_G_SAMPLE, "ddcap.order": "mask_predict"},
        note="model of 'g, prefix': write all, re-mask the least confident, 10 iterations"),
    Row("g, prefix, blocks of 4", "lever", _P, {**_G_SAMPLE, "ddcap.order": "blocks"},
        note="model of 'g, prefix': semi-autoregressive blocks"),
    Row("g, prefix, AR teacher", "lever", {**_P, "captioner.targets": "autoregressive", "captioner.student_steps": 0,
                                           "captioner.student_init": "scratch"},
        _G_SAMPLE,
        note="with an autoregressive teacher: trained on its captions (sequence-level distillation)"),
    Row("g, prefix, no CAM, no t, AR teacher", "lever", {**_P_CALIBRATED, "captioner.targets": "autoregressive",
                                                         "captioner.student_steps": 0, "captioner.student_init": "scratch"},
        _G_SAMPLE, note="with an autoregressive teacher"),
    Row("g, prefix, AR teacher, 12000 steps", "lever", {**_P, "captioner.targets": "autoregressive",
                                                        "captioner.student_steps": 12_000, "captioner.student_init": "scratch"},
        _G_SAMPLE, note="with an autoregressive teacher; twice the step budget"),
    Row("g, prefix, no CAM, AR teacher, 12000 steps", "lever",
        {**_P, "ddcap.concentrated_mask": False, "captioner.targets": "autoregressive", "captioner.student_steps": 12_000,
         "captioner.student_init": "scratch"},
        _G_SAMPLE, note="with an autoregressive teacher; twice the step budget, no concentrated mask"),
    Row("g, prefix, no CAM, AR teacher, from refs", "lever", _FROM_REFS, _G_SAMPLE,
        note="with an autoregressive teacher; starts from row 'g, prefix, no CAM' (6000 + 6000 steps)"),
    # the spread: the same two rows with other random draws (initial weights, batches, noise; the teacher's too)
    Row("g, prefix, no CAM, AR teacher, from refs, repeat 1", "lever", {**_FROM_REFS, "captioner.repeat": 1},
        _G_SAMPLE, note="the row above, repeated with other random draws (its teacher and start too)"),
    Row("g, prefix, no CAM, repeat 1", "lever", {**_P, "ddcap.concentrated_mask": False, "captioner.repeat": 1},
        _G_SAMPLE, note="row 'g, prefix, no CAM', repeated with other random draws"),
)

# The comparisons notebook 07 prints from the lever table: (row a, row b, what b changes of a).
LEVER_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("g", "g, prefix", "reading the grid as prefix tokens instead of by cross-attention"),
    ("g, prefix", "g, prefix, no CAM", "dropping the concentrated mask"),
    ("g, prefix", "g, prefix, loss on all", "scoring every token, not only the hidden ones"),
    ("g, prefix", "g, prefix, s=1", "guidance off at sampling (half the passes)"),
    ("g, prefix", "g, prefix, sampled length", "sampling the length"),
    ("g, prefix", "g, prefix, mask-predict", "Mask-Predict's re-masking"),
    ("g, prefix", "g, prefix, blocks of 4", "blocks of four, left to right"),
    ("g, prefix", "g, prefix, AR teacher", "the autoregressive teacher's captions as targets"),
    ("g, prefix, AR teacher", "g, prefix, no CAM, no t, AR teacher", "with the teacher: no mask, no timestep"),
    ("g, prefix, AR teacher", "g, prefix, AR teacher, 12000 steps", "with the teacher: twice the steps"),
    ("g, prefix, AR teacher, 12000 steps", "g, prefix, no CAM, AR teacher, 12000 steps",
     "with the teacher and twice the steps: dropping the concentrated mask"),
    ("g, prefix, no CAM, AR teacher, 12000 steps", "g, prefix, no CAM, AR teacher, from refs",
     "with the teacher: 6000 steps from the model trained on the references, not 12000 from random weights"),
    ("g, prefix, no CAM", "g, prefix, no CAM, repeat 1", "the same row with other random draws (the spread)"),
    ("g, prefix, no CAM, AR teacher, from refs", "g, prefix, no CAM, AR teacher, from refs, repeat 1",
     "the same row with other random draws (the spread)"),
)


# The comparisons notebook 07 prints under DDCap's Table 1: each course row against row g.
DDCAP_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("a", "g", "all four tricks against none"),
    ("g", "g, s=1", "no guidance at sampling (the same model)"),
    ("g", "g, K=2", "two tokens committed per call (the same model)"),
    ("g", "g, pooled only", "the pooled vector alone, no spatial grid"),
    ("g", "g, 2x2 grid", "the coarse 2x2 grid instead of the 4x4 one"),
    ("g", "g, 1/t weights", "MDLM's 1/t-weighted bound instead of the plain cross-entropy"),
    ("g", "g, prefix", "the memory as prefix tokens instead of cross-attention"),
    ("g", "g, AR teacher", "trained on the autoregressive teacher's captions"),
)

# The comparisons notebook 05 prints from CLIP-DiffusionLM's table.
CLIP_DIFFUSIONLM_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("paper", "course", "the course's recipe instead of the paper's"),
    ("course", "course, fine grid", "the 4x4 grid beside the pooled vector (the grid rows train without the plateau stop)"),
    ("course, fine grid", "course, fine grid, AR teacher, from refs", "with the grid: the autoregressive teacher's captions"),
    ("course, fine grid, AR teacher, from refs", "course, fine grid, AR teacher, from refs, renoise 20",
     "the distilled model: re-noising, 20 passes, instead of 10 feed-back passes x a length beam of 5"),
    ("course, fine grid, AR teacher, from refs", "course, fine grid, AR teacher, from refs, 5 passes",
     "the distilled model: 5 feed-back passes, no length beam"),
    ("course, fine grid, AR teacher, from refs", "course, fine grid, AR teacher, from refs, commit 24",
     "the distilled model: fixing the surest word at each pass instead of feed-back"),
    ("course, fine grid", "course, fine grid, course block", "DDCap's pre-LN block instead of DistilBERT"),
    ("course, fine grid, AR teacher, from refs", "course, fine grid, course block, AR teacher, from refs",
     "with the teacher: DDCap's pre-LN block instead of DistilBERT"),
    ("course, fine grid", "course, fine grid, settled words, commit 10",
     "settled words in training and the commit sampler (10 passes, no length beam)"),
    ("course, fine grid, AR teacher, from refs", "course, fine grid, settled words, commit 10, AR teacher, from refs",
     "with the teacher: settled words and the commit sampler"),
    ("course, fine grid, settled words, commit 10, AR teacher, from refs",
     "course, fine grid, settled words, commit 24, AR teacher, from refs", "that model: one word a pass"),
    ("course, fine grid, settled words, commit 10, AR teacher, from refs",
     "course, fine grid, settled words, feedback, AR teacher, from refs",
     "that model: feed-back sampling (10 passes x a length beam of 5) instead of committing"),
)


def row_differences(rows: dict[str, dict], pairs=LEVER_PAIRS) -> list[str]:
    """One line per pair (a, b, what) whose two rows are both in `rows` ({row name: result}): scene
    accuracy, object recall and the repeated-object rate of a and of b, and the change of scene accuracy."""
    lines = []
    for a, b, what in pairs:
        if a not in rows or b not in rows:
            continue
        ra, rb = rows[a], rows[b]
        lines.append(f"- {what}: scene accuracy {ra['scene_accuracy']:.3f} -> {rb['scene_accuracy']:.3f} "
                     f"({rb['scene_accuracy'] - ra['scene_accuracy']:+.3f}), object recall "
                     f"{ra['object_recall']:.3f} -> {rb['object_recall']:.3f}, repeated object "
                     f"{ra['repeated_object']:.1%} -> {rb['repeated_object']:.1%}")
    return lines


TABLES = {"clip_diffusionlm": CLIP_DIFFUSIONLM_ROWS, "clip_diffusionlm_budget": BUDGET_ROWS,
          "clip_diffusionlm_recipe": RECIPE_ROWS, "ddcap": DDCAP_ROWS,
          "ddcap_levers": DDCAP_LEVER_ROWS}
PAPER_METRIC = {"clip_diffusionlm": "Flickr8k BLEU-4", "clip_diffusionlm_budget": "-", "clip_diffusionlm_recipe": "-",
                "ddcap": "COCO CIDEr", "ddcap_levers": "-"}
# Settings every row of a table starts from (on top of the profile): DDCap cross-attends to the 4x4 grid.
_BEFORE_RECIPE = {"continuous.backbone": "distilbert", "continuous.length_prediction": False, "continuous.cond_norm": False, "continuous.lr_scale": 1.0,
                  "continuous.cond_dropout": 0.0, "continuous.t_min_frac": 0.0, "continuous.length_beam": 1}
# The budget table is the one table of equal *minutes*: its rows are stopped by the clock (8 minutes, no
# plateau stop), so they depend on the machine's speed; every other table trains by steps.
# The lever table and CLIP-DiffusionLM's table ran with a plateau stop of 4 checks (the profiles' setting then),
# and their autoregressive teachers with the captioners' step budget (before autoregressive.train_steps).
_AS_RUN = {"captioner.patience": 4, "autoregressive.train_steps": 0}
# CLIP-DiffusionLM's rows ran on DistilBERT, the default until the course's block won its row
_DISTILBERT = {"continuous.backbone": "distilbert"}
TABLE_BASE = {"ddcap": {"captioner.grid": "fine"}, "ddcap_levers": {"captioner.grid": "fine", **_AS_RUN},
              "clip_diffusionlm": {**_AS_RUN, **_DISTILBERT},
              "clip_diffusionlm_budget": {**_BEFORE_RECIPE, "captioner.train_minutes": 8.0, "captioner.patience": 0},
              "clip_diffusionlm_recipe": {**_DISTILBERT, "captioner.train_minutes": 0, "captioner.train_steps": 3000,
                                          "captioner.student_steps": 0, "captioner.patience": 0}}


# The registered captioner (captioners/registry.py) each table trains.
TABLE_CAPTIONER = {"clip_diffusionlm": "clip_diffusionlm", "clip_diffusionlm_budget": "clip_diffusionlm",
                   "clip_diffusionlm_recipe": "clip_diffusionlm", "ddcap": "ddcap", "ddcap_levers": "ddcap"}


def run_rows(table: str, profile: str, rows: list[str] | None = None, *, extra: dict | None = None,
             progress: bool = True, out_dir=None) -> list[dict[str, Any]]:
    """Train (or reuse) and score the rows of `table`; returns one result dict per row."""
    from clipdiff_mini.captioners.evaluate import (evaluate_captions, generate_captions, nearest_neighbour_captions,
                                                   trivial_captions)
    from clipdiff_mini.captioners.features import load_captioning_data
    from clipdiff_mini.captioners.registry import get_spec
    from clipdiff_mini.captioners.trainer import train
    from clipdiff_mini.config import ConfigError, get_config
    from clipdiff_mini.evaluation.metrics import CaptionScorer

    spec = TABLES[table]
    chosen = [r for r in spec if rows is None or r.name in rows]
    unknown = set(rows or []) - {r.name for r in spec}
    if unknown:
        raise ConfigError(f"unknown rows {sorted(unknown)} of table {table!r}; rows: {[r.name for r in spec]}")
    extra = {**TABLE_BASE.get(table, {}), **(extra or {})}
    captioner = get_spec(TABLE_CAPTIONER[table])
    base = get_config(profile, extra)
    out_dir = out_dir or base.path("output_dir") / profile / "ablations"
    json_path = out_dir / f"{table}.json"
    done = _read_done(json_path)
    code = run_info(table, profile, "", extra)  # the code this process loaded: its commit now, not at a row's end
    data = load_captioning_data(base, ("train", "val"), progress=progress)
    val = data["val"]
    results = []
    with CaptionScorer() as scorer:
        for label, preds in (("most frequent caption", trivial_captions(data["train"], val)),
                             ("nearest neighbour (CLIP)", nearest_neighbour_captions(data["train"], val))):
            results.append({"row": label, "section": "baseline", "paper": "", "note": "no training",
                            **evaluate_captions(preds, val, scorer=scorer)})
        for row in chosen:
            if row.name in done:
                results.append(done[row.name])
                continue
            started = {**run_info(table, profile, row.name, extra), "commit": code["commit"]}
            cfg = get_config(profile, {**(extra or {}), **row.train})
            if cfg.captioner.grid != base.captioner.grid:  # another CLIP grid: the features differ
                row_data = load_captioning_data(cfg, ("train", "val"), progress=progress)
            else:
                row_data = data
            val = row_data["val"]
            model, record = train(captioner.name, cfg, row_data, progress=progress)
            scfg = get_config(profile, {**(extra or {}), **row.train, **row.sample})
            captioner.with_sampling(model, scfg)  # sampling-only switches
            fn = captioner.caption_function(val.tokenizer, scfg)
            t0 = time.perf_counter()
            preds = generate_captions(model, fn, val)
            seconds = time.perf_counter() - t0
            caps = list(preds.values())
            passes = model.sample({k: v[:50] for k, v in val.condition().items()})["passes"]
            res = {"row": row.name, "section": row.section, "paper": row.paper, "note": row.note,
                   **evaluate_captions(preds, val, scorer=scorer), "train_seconds": round(record["train_seconds"], 1),
                   "steps": record["steps"], "best_step": record["best"]["step"], "passes": round(passes, 1),
                   "ms_per_caption": round(1000 * seconds / len(caps), 2), "example": caps[0],
                   "overrides": {**row.train, **row.sample}, "run": started}
            results.append(res)
            done[row.name] = res
            write_json(json_path, {"table": table, "profile": profile, "rows": list(done.values())})
            if progress:
                print(f"[ablation] {row.name}: scene accuracy {res['scene_accuracy']:.3f}, "
                      f"object recall {res['object_recall']:.3f}, BLEU-4 {res['BLEU-4']:.3f}", flush=True)
    # the files keep every finished row of the table (in the table's order), this call's and earlier ones'
    baselines = [r for r in results if r["section"] == "baseline"]
    every = baselines + [done[r.name] for r in spec if r.name in done]
    write_json(json_path, {"table": table, "profile": profile, "rows": every})
    write_text(out_dir / f"{table}.md", format_table(table, every))
    return results


RESULTS_DIR = "results"  # the committed reference runs, relative to the project root


def table_for_reader(table: str, output_dir) -> tuple[str, str, dict[str, dict]] | None:
    """(where from, markdown, {row name: result}) of `table` at laptop size: the reader's own run under
    `output_dir`/laptop/ablations when it exists, else the repository's committed reference run
    (results/<table>.md and .json), else None."""
    import json
    from pathlib import Path

    from clipdiff_mini.config import project_root

    own = Path(output_dir) / "laptop" / "ablations" / f"{table}.md"
    ref = project_root() / RESULTS_DIR / f"{table}.md"
    if own.exists():
        label, md = f"your laptop run ({own})", own
    elif ref.exists():
        label, md = f"the reference run committed in {RESULTS_DIR}/{table}.md (its .json: commit, machine, command)", ref
    else:
        return None
    rows = {r["row"]: r for r in json.loads(md.with_suffix(".json").read_text())["rows"]}
    return label, md.read_text(), rows


def run_info(table: str, profile: str, row: str, extra: dict | None = None) -> dict[str, Any]:
    """Where and how a row was run: the commit (with "+dirty" when the working tree had changes), the date,
    the machine, torch's threads and the command that reruns the row."""
    import datetime
    import os
    import platform
    import shlex
    import subprocess

    import torch

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=os.path.dirname(__file__)).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    sets = "".join(f" {k}={v}" for k, v in (extra or {}).items() if k not in TABLE_BASE.get(table, {}))
    command = (f"python -m clipdiff_mini.captioners.ablations {table} --profile {profile} --rows {shlex.quote(row)}"
               + (f" --set{sets}" if sets else ""))
    return {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "threads": torch.get_num_threads(),
            "command": command}


def _read_done(path) -> dict[str, dict]:
    import json

    if not path.exists():
        return {}
    return {r["row"]: r for r in json.loads(path.read_text())["rows"] if r.get("section") != "baseline"}


def format_table(table: str, results: list[dict[str, Any]]) -> str:
    """A markdown table of the rows (numbers on val)."""
    head = (f"| row | section | scene acc. | object recall | repeated obj. | well formed | BLEU-4 | CIDEr | METEOR | "
            f"ROUGE-L | passes | steps | train s | paper ({PAPER_METRIC[table]}) |")
    lines = [head, "|" + "---|" * 14]
    for r in results:
        def f(k, d=3):
            v = r.get(k)
            return "" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
        lines.append(f"| {r['row']} | {r['section']} | {f('scene_accuracy')} | {f('object_recall')} | "
                     f"{f('repeated_object')} | {f('well_formed')} | {f('BLEU-4')} | {f('CIDEr')} | {f('METEOR')} | "
                     f"{f('ROUGE-L')} | {r.get('passes', '')} | {r.get('steps', '')} | {f('train_seconds', 0)} | "
                     f"{r.get('paper', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from clipdiff_mini.config import PROFILES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--profile", default="laptop", choices=PROFILES)
    parser.add_argument("--rows", nargs="*", help="row names (default: all)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every row, e.g. captioner.train_minutes=4")
    args = parser.parse_args(argv)
    extra = dict(_parse_override(s) for s in args.set)
    results = run_rows(args.table, args.profile, args.rows, extra=extra)
    print(format_table(args.table, results))
    return 0


def _parse_override(text: str) -> tuple[str, Any]:
    import json

    if "=" not in text:
        raise SystemExit(f"--set expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    sys.exit(main())
