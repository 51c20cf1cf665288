"""One training loop for every captioner (notebooks 05, 07, 08).

A captioner is an `nn.Module` with

* ``loss(batch, generator) -> (loss tensor, logs dict)`` on a batch
  ``{"ids" (B, L), "image" (B, D), "grid" (B, P, W), "text" (B, D)}``;
* ``caption(cond, generator) -> list[str]`` wrapped by the caller as
  ``caption_fn(model, cond) -> list[str]`` for validation.

`train_captioner` draws random caption rows, steps AdamW under a warm-up
plus linear/cosine learning-rate schedule, clips gradients, shows a progress
bar, checks scene accuracy on validation pictures every ``eval_every`` steps
and keeps the best weights (chosen on **val**, never on test), stops at
``train_steps`` or after ``train_minutes`` of wall-clock time, and writes an
atomic, resumable checkpoint every ``checkpoint_every`` steps: model,
optimizer, step, history, best weights and random states. A run started
again with the same settings continues where the last one stopped; a
finished run is loaded instead of retrained.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from clipdiff_mini.atomic_io import torch_save
from clipdiff_mini.captioners.evaluate import generate_captions
from clipdiff_mini.clip.training import peak_rss_mb
from clipdiff_mini.evaluation.scene_judge import scene_accuracy

CHECKPOINT_FORMAT = 1


def lr_factor(step: int, total: int, warmup: int, schedule: str, final_ratio: float,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at `step` (0-based): linear warm-up, then
    constant, linear or cosine decay from 1 to `final_ratio` at `total` steps, or earlier
    when `time_fraction` (elapsed / wall-clock budget) is further along: a run stopped by
    its time budget still ends with a decayed learning rate."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    p = min(1.0, max((step - warmup) / max(1, total - warmup), time_fraction))
    if schedule == "linear":
        return 1.0 - (1.0 - final_ratio) * p
    if schedule == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    raise ValueError(f"captioner.lr_schedule={schedule!r}; allowed: 'constant', 'linear', 'cosine'")


def run_key(cfg, name: str, extra: dict | None = None) -> str:
    """Hash of everything that defines a training run: the captioner settings, the CLIP and the data."""
    keep = {"name": name, "seed": cfg.seed, "captioner": asdict(cfg.captioner), "data": asdict(cfg.data),
            "clip": asdict(cfg.clip), **(extra or {})}
    keep["captioner"].pop("eval_images", None)
    keep["captioner"].pop("checkpoint_every", None)
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_path(cfg, name: str, key: str) -> Path:
    return cfg.path("checkpoint_dir") / "captioners" / f"{cfg.profile}-{name}-{key}.pt"


def make_batch(data, rows: torch.Tensor, device) -> dict[str, torch.Tensor]:
    """The training batch of caption rows `rows` of a `SplitFeatures`."""
    owner = data.owner[rows]
    return {"ids": data.ids[rows].to(device), "image": data.image[owner].to(device),
            "grid": data.grid[owner].to(device), "text": data.text[rows].to(device)}


@torch.no_grad()
def validate(model, caption_fn: Callable, val, n_images: int, batch_size: int = 250) -> dict[str, float]:
    """Scene accuracy and object recall of captions for the first `n_images` validation pictures."""
    was = model.training
    model.eval()
    sub = val.subset(n_images)
    preds = generate_captions(model, caption_fn, sub, batch_size)
    model.train(was)
    acc = scene_accuracy(preds, sub.scenes())
    return {"scene_accuracy": acc["caption_all_true"], "object_recall": acc["object_recall"],
            "well_formed": acc["well_formed"]}


def train_captioner(model, train, val, cfg, *, name: str, caption_fn: Callable, key_extra: dict | None = None,
                    progress: bool = True, resume: bool = True, save: bool = True) -> dict[str, Any]:
    """Train `model` on `train` (a `SplitFeatures`), choose the best weights on `val`.

    Returns a dict with ``history`` (per-step losses and the validation
    curve), ``best`` (step and validation scores of the kept weights),
    ``train_seconds``, ``steps``, ``steps_per_second``, ``peak_rss_mb``,
    ``path`` (checkpoint) and ``resumed``. The model holds the best weights
    when it returns.
    """
    c = cfg.captioner
    device = cfg.torch_device()
    model.to(device)
    key = run_key(cfg, name, key_extra)
    path = checkpoint_path(cfg, name, key)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=c.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = {"step": 0, "seconds": 0.0, "history": {"step": [], "loss": [], "logs": [], "val": []},
             "best": None, "best_state": None, "done": False}
    resumed = False
    if resume and path.exists():
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("key") == key:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            if hasattr(model, "rounding_weight") and ckpt.get("rounding_weight"):
                model.rounding_weight.load_state_dict(ckpt["rounding_weight"])
            state = ckpt["state"]
            resumed = True

    def snapshot():
        if not save:
            return
        torch_save({"format": CHECKPOINT_FORMAT, "key": key, "name": name, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "rounding_weight": model.rounding_weight.state_dict() if hasattr(model, "rounding_weight")
                    else None, "state": state, "config": cfg.to_dict()}, path)

    def check(step):
        scores = validate(model, caption_fn, val, c.eval_images)
        state["history"]["val"].append({"step": step, **scores})
        score = (scores["scene_accuracy"], scores["object_recall"])
        if state["best"] is None or score > (state["best"]["scene_accuracy"], state["best"]["object_recall"]):
            state["best"] = {"step": step, **scores}
            state["best_state"] = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
        return scores

    budget = c.train_minutes * 60 if c.train_minutes > 0 else float("inf")
    n_rows = train.ids.shape[0]
    model.train()
    bar = tqdm(total=c.train_steps, initial=state["step"], desc=f"train {name}", disable=not progress)
    t0 = time.perf_counter() - state["seconds"]
    while not state["done"] and state["step"] < c.train_steps and time.perf_counter() - t0 < budget:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = c.lr * lr_factor(step, c.train_steps, c.warmup_steps, c.lr_schedule, c.lr_final / c.lr,
                                       (time.perf_counter() - t0) / budget)
        rows = torch.randint(0, n_rows, (c.batch_size,), generator=gen)
        loss, logs = model.loss(make_batch(train, rows, device), generator=None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        opt.step()
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - t0
        h = state["history"]
        h["step"].append(step + 1)
        h["loss"].append(float(loss.item()))
        h["logs"].append(logs)
        bar.update(1)
        if (step + 1) % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", best=(state["best"] or {}).get("scene_accuracy"))
        if (step + 1) % c.eval_every == 0:
            check(step + 1)
            state["seconds"] = time.perf_counter() - t0  # validation time counts: it is part of training
        if (step + 1) % c.checkpoint_every == 0:
            snapshot()
    bar.close()
    if not state["done"]:
        if not state["history"]["val"] or state["history"]["val"][-1]["step"] != state["step"]:
            check(state["step"])
        state["done"] = True
        state["seconds"] = time.perf_counter() - t0
        snapshot()
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    return {"history": state["history"], "best": state["best"], "train_seconds": state["seconds"],
            "steps": state["step"], "steps_per_second": state["step"] / max(state["seconds"], 1e-9),
            "peak_rss_mb": peak_rss_mb(), "path": path, "resumed": resumed, "key": key}


def architecture(model) -> str:
    """A hash of the model's parameter names and shapes, for the run key: a checkpoint written by
    another version of a model's code (a layer added or resized) is then not loaded into it."""
    shapes = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12]
