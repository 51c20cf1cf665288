"""Training a captioner by its registry name: the one entry point every captioner trains through.

    from clipdiff_mini.captioners.trainer import train
    model, record = train("ddcap", cfg, data)     # data = load_captioning_data(cfg)

`train` runs the steps a reader can follow top to bottom: the captioner's own config checks; the
training targets (the references, or with ``captioner.targets = "autoregressive"`` the decoder's
greedy captions, `with_training_targets`, which trains or loads that decoder through `train` itself);
the seed; the model (the registry's ``build``); a distilled student's start from the same captioner
trained on the references; then the loop, `training.train_captioner` (resume, steps, validation,
checkpoints). The registry says where each captioner's code is; this module is what uses it.
"""
from __future__ import annotations

import json
import time
from typing import Any

import torch

from clipdiff_mini.atomic_io import write_json
from clipdiff_mini.captioners.distillation import (TARGETS, distilled_split, start_from_references, student_config,
                                                   teacher_config)
from clipdiff_mini.captioners.evaluate import generate_captions
from clipdiff_mini.captioners.features import SplitFeatures, load_captioning_data
from clipdiff_mini.captioners.registry import get_spec
from clipdiff_mini.captioners.training import architecture, captioner_seed, train_captioner


def train(captioner: str, cfg, data, *, progress: bool = True, resume: bool = True, name: str | None = None):
    """Build captioner `captioner` and train it on data["train"], choosing its weights on data["val"].

    The steps, in order: the captioner's own config checks (`training_config`); with
    ``captioner.targets = "autoregressive"`` the decoder's captions replace the references and the
    student's budget applies (`captioners.distillation`); the seed; the model; a student's start from the
    same captioner trained on the references; then the one training loop, `train_captioner`, whose run
    key holds the captioner's own section and its parameter shapes. `name` is the run's name (default:
    `captioner`), part of its key. Returns (model, training record).
    """
    spec = get_spec(captioner)
    if spec.training_config:
        cfg = spec.load("training_config")(cfg)
    references, given, teacher = data, cfg, {}
    if spec.distills:
        data, teacher = with_training_targets(cfg, data, progress=progress)
        cfg = student_config(cfg)
    torch.manual_seed(captioner_seed(cfg))
    model = spec.load("build")(cfg, data["train"])
    if spec.distills and start_from_references(given, model, lambda c, d, **kw: train(captioner, c, d, **kw),
                                               references, progress=progress):
        torch.manual_seed(captioner_seed(cfg))  # the same noise whether the starting model was loaded or trained
    record = train_captioner(model, data["train"], data["val"], cfg, name=name or captioner,
                             caption_fn=spec.caption_function(data["train"].tokenizer, cfg),
                             key_extra={**spec.run_settings(cfg), "architecture": architecture(model), **teacher},
                             progress=progress, resume=resume, meta={"model": captioner}, **spec.train_kw(cfg))
    return model, record


def teacher_captions(cfg, *, progress: bool = True) -> dict[str, Any]:
    """The autoregressive teacher's greedy captions of the training pictures of `cfg`'s data.

    Returns {"captions": {image id: caption}, "key": the teacher's run key, "val": its best validation
    scores, "seconds": time spent here}. Trains the teacher when its checkpoint is missing; the
    captions are cached (atomically) beside the checkpoint and reused while it is unchanged."""
    t0 = time.perf_counter()
    tcfg = teacher_config(cfg)
    tdata = load_captioning_data(tcfg, progress=progress)
    model, record = train("autoregressive", tcfg, tdata, progress=progress)
    cache = record["path"].with_name(record["path"].stem + ".train-captions.json")
    stamp = {"key": record["key"], "step": record["best"]["step"], "n": len(tdata["train"])}
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("stamp") == stamp:
            captions = {int(k): v for k, v in stored["captions"].items()}
            return {"captions": captions, "key": record["key"], "val": record["best"],
                    "seconds": time.perf_counter() - t0}
    model.eval()
    captions = generate_captions(model, get_spec("autoregressive").caption_function(tdata["train"].tokenizer, tcfg),
                                 tdata["train"])
    write_json(cache, {"stamp": stamp, "captions": {str(k): v for k, v in captions.items()}})
    return {"captions": captions, "key": record["key"], "val": record["best"], "seconds": time.perf_counter() - t0}


def with_training_targets(cfg, data: dict[str, SplitFeatures], *, progress: bool = True
                          ) -> tuple[dict[str, SplitFeatures], dict[str, Any]]:
    """`data` with the training split `captioner.targets` asks for, and what a run key must hold of it
    ({} for the references; {"teacher": the teacher's run key} for distillation)."""
    targets = cfg.captioner.targets
    if targets == "references":
        return data, {}
    if targets != "autoregressive":
        raise ValueError(f"captioner.targets={targets!r}; allowed: {', '.join(map(repr, TARGETS))}")
    teacher = teacher_captions(cfg, progress=progress)
    if progress:
        print(f"[distill] training on the autoregressive teacher's captions of {len(teacher['captions'])} pictures "
              f"(teacher {teacher['key']}, val scene accuracy {teacher['val'].get('scene_accuracy', float('nan')):.3f}; "
              f"{teacher['seconds']:.0f} s)")
    return {**data, "train": distilled_split(data["train"], teacher["captions"])}, {"teacher": teacher["key"]}
