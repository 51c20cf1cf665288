"""One training loop for every captioner (notebooks 05, 07, 08, 09), in one process or several.

A captioner is an `nn.Module` with the interface of `captioners.base.Captioner`:
``loss(batch, generator) -> (loss tensor, logs dict)`` trains it, and validation
captions through ``caption_fn(model, cond) -> list[str]`` (the registry's, around
the model's ``sample``).

`train_captioner` draws random caption rows, steps AdamW under a warm-up
plus linear/cosine learning-rate schedule, clips gradients, shows a progress
bar, checks the captions on validation pictures every ``eval_every`` steps
and keeps the best weights (chosen on **val**, never on test), stops at
``train_steps``, after ``patience`` checks without a better validation score
(a plateau), or after ``train_minutes`` of wall-clock time (a safety cap: the
learning rates depend on the step alone, so a run the clock did not stop is
the same on every machine, and one it did stop is the only kind that is
not), and writes an
atomic, resumable checkpoint every ``checkpoint_every`` steps: model,
optimizer, step, history, best weights and random states. A run started
again with the same settings continues where the last one stopped; a
finished run is loaded instead of retrained. What the checkpoint holds, and
how a trained captioner is loaded back, is `clipdiff_mini.captioners.checkpoints`.

**Several processes** (``torchrun --nproc_per_node N``; see
`clipdiff_mini.captioners.distributed`): the model is wrapped in PyTorch's
DistributedDataParallel, which averages the gradients over the processes
during ``backward``. The global batch stays ``captioner.batch_size`` whatever
N is: every process draws the *same* B caption rows from the shared
data-order generator (the one a single process uses) and trains on its own
contiguous slice of them (about B/N rows), so the rows of every step do not
depend on N. ``captioner.grad_accum`` = A splits each process's slice further
into A micro-batches whose gradients add up before the step (for memory;
same global batch). Each micro-batch's mean loss is weighted by its share of
the global batch, so the step's gradient is that of the mean loss over all B
rows. The diffusion noise of each row comes from its process's own random
stream (process r > 0 is seeded from (seed, r)), so runs with different N
agree in distribution, not bit for bit. Validation, the progress bar and
checkpoints are process 0's; the others wait at a barrier, and at the end
every process holds the weights process 0 chose.

Mixed precision: on CUDA, ``cfg.precision`` "bf16" or "fp16" runs the loss
under autocast (fp16 with a gradient scaler); on the CPU training is fp32.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from clipdiff_mini.atomic_io import torch_save
from clipdiff_mini.captioners import distributed as D
from clipdiff_mini.captioners.checkpoints import (CHECKPOINT_FORMAT, CheckpointMismatch, dict_differences,
                                                  mismatch_message, run_identity, run_key, tokenizer_differences,
                                                  tokenizer_state)
from clipdiff_mini.captioners.evaluate import generate_captions
from clipdiff_mini.clip.training import peak_rss_mb
from clipdiff_mini.evaluation.scene_judge import scene_accuracy

__all__ = ["train_captioner", "lr_factor", "run_key", "run_identity", "run_options", "checkpoint_path", "validate",
           "architecture", "CHECKPOINT_FORMAT", "CheckpointMismatch"]


def lr_factor(step: int, total: int, warmup: int, schedule: str, final_ratio: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based): linear warm-up, then constant, linear or
    cosine decay from 1 to `final_ratio` at `total` steps. A function of the step alone, never of the clock:
    two runs of the same steps and seeds take the same steps on any machine, and a resumed run continues
    exactly (a wall-clock cap may stop a run, it does not bend its schedule)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - final_ratio) * p
    if schedule == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    raise ValueError(f"captioner.lr_schedule={schedule!r}; allowed: 'constant', 'linear', 'cosine'")


def plateaued(val_history: list[dict], patience: int) -> bool:
    """Whether the last `patience` validation checks all failed to beat the best one before them (the
    early stopping of transformers' ``EarlyStoppingCallback``; 0 = never). Decided from the recorded
    scores alone, so a resumed run stops at the same step as one that never stopped."""
    if patience <= 0 or len(val_history) <= patience:
        return False
    before = max(selection_score(v) for v in val_history[:-patience])
    return all(selection_score(v) <= before for v in val_history[-patience:])


def captioner_seed(cfg) -> int:
    """The seed of a captioner's random draws: the run's seed, moved by ``captioner.repeat`` (0: unchanged)."""
    return cfg.seed + 1_000 * cfg.captioner.repeat


def checkpoint_path(cfg, name: str, key: str) -> Path:
    return cfg.path("checkpoint_dir") / "captioners" / f"{cfg.profile}-{name}-{key}.pt"


def make_batch(data, rows: torch.Tensor, device) -> dict[str, torch.Tensor]:
    """The training batch of caption rows `rows` of a `SplitFeatures`."""
    owner = data.owner[rows]
    return {"ids": data.ids[rows].to(device), "image": data.image[owner].to(device),
            "grid": data.grid[owner].to(device), "text": data.text[rows].to(device)}


def has_scenes(split) -> bool:
    """Whether a split carries ground-truth scenes (the embedded dataset) or only reference captions."""
    return all(r.scene is not None for r in split.split.records)


@torch.no_grad()
def validate(model, caption_fn: Callable, val, n_images: int, batch_size: int = 250) -> dict[str, float]:
    """Captions for the first `n_images` validation pictures, scored: scene accuracy and object recall on
    the embedded dataset; on a real dataset (no scenes) CIDEr-D and BLEU-4 against all references
    (pycocoevalcap's scorers on lower-cased words, no Java: a quick check, not the reported numbers)."""
    was = model.training
    model.eval()
    sub = val.subset(n_images)
    preds = generate_captions(model, caption_fn, sub, batch_size)
    model.train(was)
    if not has_scenes(sub):
        from clipdiff_mini.evaluation.metrics import quick_caption_scores

        return quick_caption_scores(preds, sub.references())
    acc = scene_accuracy(preds, sub.scenes())
    return {"scene_accuracy": acc["caption_all_true"], "object_recall": acc["object_recall"],
            "well_formed": acc["well_formed"]}


def selection_score(scores: dict[str, float]) -> tuple[float, float]:
    """What "best on val" means: (scene accuracy, object recall) on the embedded dataset, else (CIDEr, BLEU-4)."""
    if "scene_accuracy" in scores:
        return scores["scene_accuracy"], scores["object_recall"]
    return scores["CIDEr"], scores["BLEU-4"]


# ---- options of the scale path (set by clipdiff_mini.train) ----------------------------------
@dataclass
class RunOptions:
    """Options a caller sets around `trainer.train` (whose signature stays the captioners' own):

    ``checkpoint``: write and resume this file instead of the default path (e.g. on Google Drive); a
    file there of another model, config or vocabulary is refused with the differences listed.
    ``stop_at``: stop after this global step, with a checkpoint, without finishing (a planned
    interruption: the next run resumes). ``meta``: stored in the checkpoint (the model's registry
    name, which CLIP made the features), what `load_trained` needs.
    """

    checkpoint: Path | None = None
    stop_at: int | None = None
    meta: dict = field(default_factory=dict)


_RUN_OPTIONS: contextvars.ContextVar[RunOptions] = contextvars.ContextVar("clipdiff_run_options", default=RunOptions())


@contextlib.contextmanager
def run_options(**kw):
    """``with run_options(checkpoint=..., stop_at=..., meta=...): trainer.train("clip_diffusionlm", cfg, data)``."""
    token = _RUN_OPTIONS.set(RunOptions(**kw))
    try:
        yield
    finally:
        _RUN_OPTIONS.reset(token)


class LossForward(torch.nn.Module):
    """``forward(batch) = captioner.loss(batch)``: DistributedDataParallel synchronises the gradients of
    what runs through its wrapper's forward, and a captioner's training forward is its ``loss``."""

    def __init__(self, captioner: torch.nn.Module):
        super().__init__()
        self.captioner = captioner

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.captioner.loss(batch, generator=None)


def autocast_for(device: torch.device, precision: str):
    """Autocast context and gradient scaler for ``cfg.precision`` (CUDA only; the CPU trains in fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if device.type == "cuda" else None
    if dtype is None:
        return contextlib.nullcontext, None
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _rng_state(device: torch.device) -> dict[str, Any]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(d: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(d["cpu"])
    if device.type == "cuda" and d.get("cuda") is not None:
        torch.cuda.set_rng_state(d["cuda"], device)


def train_captioner(model, train, val, cfg, *, name: str, caption_fn: Callable, key_extra: dict | None = None,
                    progress: bool = True, resume: bool = True, save: bool = True,
                    checkpoint: str | Path | None = None, stop_at: int | None = None,
                    meta: dict | None = None, lr_scale: float = 1.0, plateau_stop: bool = True) -> dict[str, Any]:
    """Train `model` on `train` (a `SplitFeatures`), choose the best weights on `val`.

    The peak learning rate is ``captioner.lr * lr_scale`` (a captioner's own factor, part of its config
    section and so of the run key); the schedule still ends at ``captioner.lr_final``. With `plateau_stop`
    False (a captioner's own switch, part of its config section) no validation plateau ends the run.

    Returns a dict with ``history`` (per-step losses and the validation
    curve), ``best`` (step and validation scores of the kept weights),
    ``train_seconds``, ``steps``, ``steps_per_second``, ``peak_rss_mb``,
    ``path`` (checkpoint), ``resumed``, ``finished`` and ``world_size``. The
    model holds the best weights when it returns (the last step's when
    stopped early by `stop_at`). `checkpoint`, `stop_at` and `meta` default
    to the surrounding `run_options` (see `RunOptions`).
    """
    opts = _RUN_OPTIONS.get()
    run = _Run(model, train, val, cfg, name=name, caption_fn=caption_fn, key_extra=key_extra, save=save,
               checkpoint=checkpoint if checkpoint is not None else opts.checkpoint,
               stop_at=stop_at if stop_at is not None else opts.stop_at, meta={**opts.meta, **(meta or {})},
               lr_scale=lr_scale)
    run.resume(resume)  # 1. a stored run of the same settings continues where it stopped
    run.train(plateau_stop, progress)  # 2. steps, validation checks and snapshots until a stop
    return run.finish()  # 3. the last check and checkpoint; the best weights go back into the model


class _Run:
    """What the steps of one `train_captioner` run share: the model, the optimiser, the data order and
    the run's state (step, clock, history, best weights), and where its checkpoint lives."""

    def __init__(self, model, train, val, cfg, *, name: str, caption_fn: Callable, key_extra: dict | None,
                 save: bool, checkpoint: str | Path | None, stop_at: int | None, meta: dict, lr_scale: float):
        if "clip" not in meta:  # which CLIP made the features, so the caption command can rebuild the pipeline
            from clipdiff_mini.captioners.checkpoints import clip_meta

            meta["clip"] = clip_meta(cfg)
        self.model, self.train_split, self.val, self.cfg, self.name = model, train, val, cfg, name
        self.caption_fn, self.save, self.checkpoint, self.stop_at, self.meta = caption_fn, save, checkpoint, stop_at, meta
        c = self.c = cfg.captioner
        self.grad_accum = getattr(c, "grad_accum", 1)
        world = self.world = D.init_distributed(cfg.torch_device().type)
        device = self.device = D.device_for(world, cfg.torch_device())
        if c.batch_size < world.size * self.grad_accum:
            raise ValueError(f"captioner.batch_size={c.batch_size} cannot be split over {world.size} processes x "
                             f"captioner.grad_accum={self.grad_accum} micro-batches; use a batch of at least "
                             f"{world.size * self.grad_accum} or fewer micro-batches")
        if world.rank > 0:  # each process its own noise; process 0 keeps the single-process stream
            torch.manual_seed(captioner_seed(cfg) * 1_000_003 + world.rank)
        model.to(device)
        self.identity = run_identity(cfg, name, key_extra)
        self.key = run_key(cfg, name, key_extra)
        self.path = Path(checkpoint) if checkpoint is not None else checkpoint_path(cfg, name, self.key)
        self.vocab = tokenizer_state(train.tokenizer)
        self.shapes = {"image": int(train.image.shape[1]), "grid": [int(train.grid.shape[1]), int(train.grid.shape[2])],
                       "text": int(train.text.shape[1]), "length": int(train.ids.shape[1])}
        self.params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        # fused: one kernel updates every parameter (torch's default on the CPU is a Python loop over them;
        # a captioner's step is about 5% faster on 2 cores; same update rule)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=c.lr * lr_scale,
                                     fused=device.type in ("cpu", "cuda"))
        self.peak = c.lr * lr_scale
        self.autocast, self.scaler = autocast_for(device, cfg.precision)
        self.gen = torch.Generator().manual_seed(captioner_seed(cfg))  # the data order
        self.state = {"step": 0, "seconds": 0.0, "history": {"step": [], "loss": [], "logs": [], "val": []},
                      "best": None, "best_state": None, "done": False}
        self.resumed = False

    # ---- 1. resume ---------------------------------------------------------------------------
    def resume(self, resume: bool) -> None:
        """Load the checkpoint of this run when one exists (weights, optimiser, data order, random states,
        history); refuse a file the caller named that belongs to another run."""
        path, world, device, model = self.path, self.world, self.device, self.model
        if not (path.exists() and (resume or self.checkpoint is not None)):
            return
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: {exc}); "
                             "delete it or use another checkpoint path") from exc
        same_run = ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("key") == self.key
        if self.checkpoint is not None and not same_run:  # a file the caller named: never silently overwritten
            diffs = (dict_differences(ckpt["run"], self.identity) if "run" in ckpt
                     else dict_differences(ckpt.get("config"), self.cfg.to_dict()))
            diffs += tokenizer_differences(ckpt.get("tokenizer"), self.train_split.tokenizer)
            if ckpt.get("meta", {}).get("model") not in (None, self.meta.get("model")):
                diffs.insert(0, f"model: checkpoint {ckpt['meta']['model']!r}, now {self.meta.get('model')!r}")
            raise CheckpointMismatch(mismatch_message(path, diffs or ["checkpoint format or key"],
                                                      "Use another checkpoint path for this run, or delete the file."))
        if not (same_run and resume):
            return
        vocab_diffs = tokenizer_differences(ckpt.get("tokenizer"), self.train_split.tokenizer)
        if vocab_diffs:
            raise CheckpointMismatch(mismatch_message(path, vocab_diffs, "The data gave another vocabulary than "
                                                      "the one this run started with; use another checkpoint path."))
        model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.gen.set_state(ckpt["generator"])
        ranks = ckpt.get("rank_rng")
        if world.rank == 0:
            torch.set_rng_state(ckpt["torch_rng"])
            if device.type == "cuda" and ranks and ranks[0].get("cuda") is not None:
                torch.cuda.set_rng_state(ranks[0]["cuda"], device)
        elif ranks and len(ranks) == world.size:
            _set_rng_state(ranks[world.rank], device)
        if ranks and len(ranks) != world.size and world.main:
            print(f"[train] resuming a run of {len(ranks)} processes with {world.size}: the data order is "
                  "the same, the diffusion noise of processes > 0 is new")
        if self.scaler is not None and ckpt.get("grad_scaler"):
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        if hasattr(model, "rounding_weight") and ckpt.get("rounding_weight"):
            model.rounding_weight.load_state_dict(ckpt["rounding_weight"])
        self.state = ckpt["state"]
        self.resumed = True

    # ---- 2. train: steps, validation checks, snapshots ---------------------------------------------
    def train(self, plateau_stop: bool, progress: bool) -> None:
        """Steps until the step budget, `stop_at`, a validation plateau or the clock (a safety cap)."""
        c, world, state = self.c, self.world, self.state
        # With several processes the gradients are averaged inside backward (DDP); parameters that a step
        # does not use (a null image vector never dropped in) are allowed (find_unused_parameters).
        self.trainer = LossForward(self.model)
        if world.distributed:
            self.trainer = torch.nn.parallel.DistributedDataParallel(
                self.trainer, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        budget = c.train_minutes * 60 if c.train_minutes > 0 else float("inf")
        last_step = c.train_steps if self.stop_at is None else min(c.train_steps, self.stop_at)
        self.model.train()
        bar = tqdm(total=c.train_steps, initial=state["step"], desc=f"train {self.name}",
                   disable=not progress or not world.main)
        self.t0 = time.perf_counter() - state["seconds"]
        while not state["done"] and state["step"] < last_step:
            # process 0's clock decides for all, so every process stops at the same step with the same learning rate
            elapsed = D.broadcast_float(time.perf_counter() - self.t0, world, self.device)
            if elapsed >= budget:  # a safety cap: the run ends here, with the learning rate of this step
                state["stopped_by"] = "minutes"
                break
            step = state["step"]
            step_loss, logs = self.step(step)
            state["step"] = step + 1
            state["seconds"] = time.perf_counter() - self.t0
            h = state["history"]
            h["step"].append(step + 1)
            h["loss"].append(step_loss)
            h["logs"].append(logs)
            bar.update(1)
            if (step + 1) % 10 == 0:
                bar.set_postfix(loss=f"{step_loss:.3f}",
                                best=round(selection_score(state["best"])[0], 3) if state["best"] else None)
            if (step + 1) % c.eval_every == 0:
                self.check(step + 1)
                state["seconds"] = time.perf_counter() - self.t0  # validation time counts: it is part of training
                # process 0 validated; every process stops on its word
                if plateau_stop and D.broadcast_object(plateaued(state["history"]["val"], c.patience), world):
                    state["stopped_by"] = "plateau"
                    break
            if (step + 1) % c.checkpoint_every == 0 or state["step"] == self.stop_at:
                self.snapshot()
        bar.close()

    def step(self, step: int) -> tuple[float, dict]:
        """One optimiser step at `step` (0-based): its learning rate, the global batch of caption rows (this
        process's share, in ``grad_accum`` micro-batches), clipped gradients. Returns the mean loss over the
        global batch and the last micro-batch's logs."""
        c, world, opt, scaler = self.c, self.world, self.opt, self.scaler
        for g in opt.param_groups:
            g["lr"] = self.peak * lr_factor(step, c.train_steps, c.warmup_steps, c.lr_schedule, c.lr_final / self.peak)
        rows = torch.randint(0, self.train_split.ids.shape[0], (c.batch_size,), generator=self.gen)  # (B,) on every process
        micro = torch.tensor_split(D.shard_rows(rows, world), self.grad_accum)  # this process's share, in A parts
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for i, part in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if last or not world.distributed else self.trainer.no_sync()
            with sync:
                with self.autocast():
                    loss, logs = self.trainer(make_batch(self.train_split, part, self.device))
                # weight: this micro-batch's share of the global batch (DDP divides the sum by N again)
                weight = world.size * len(part) / c.batch_size
                scaled = loss if weight == 1.0 else loss * weight
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            step_loss += len(part) / c.batch_size * float(loss.item())
        step_loss = D.sum_float(step_loss, world, self.device)  # the mean loss over the global batch
        if scaler is not None:
            scaler.unscale_(opt)
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return step_loss, logs

    def check(self, step: int) -> None:
        """Validate (process 0) and keep the weights when they beat the best so far."""
        state = self.state
        if self.world.main:
            scores = validate(self.model, self.caption_fn, self.val, self.c.eval_images)
            state["history"]["val"].append({"step": step, **scores})
            if state["best"] is None or selection_score(scores) > selection_score(state["best"]):
                state["best"] = {"step": step, **scores}
                state["best_state"] = copy.deepcopy({k: v.cpu() for k, v in self.model.state_dict().items()})
        D.barrier(self.world)

    def snapshot(self) -> None:
        """The resumable checkpoint (atomic; process 0 writes it, every process takes part in the gather)."""
        world, model = self.world, self.model
        rngs = D.gather_objects(_rng_state(self.device), world)  # collective: every process takes part
        if self.save and world.main:
            torch_save({"format": CHECKPOINT_FORMAT, "key": self.key, "name": self.name, "run": self.identity,
                        "model": model.state_dict(), "optimizer": self.opt.state_dict(),
                        "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(), "rank_rng": rngs,
                        "world_size": world.size,
                        "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
                        "rounding_weight": model.rounding_weight.state_dict() if hasattr(model, "rounding_weight")
                        else None, "state": self.state, "config": self.cfg.to_dict(), "tokenizer": self.vocab,
                        "shapes": self.shapes, "meta": self.meta}, self.path)
        D.barrier(world)

    # ---- 3. finish -----------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """A run cut off by `stop_at` stays unfinished (to be resumed); any other ends with a last check and
        checkpoint, and the model gets the best weights on val. Returns the training record."""
        c, world, state, model = self.c, self.world, self.state, self.model
        stopped_early = self.stop_at is not None and state["step"] >= self.stop_at and state["step"] < c.train_steps \
            and not state["done"] and "stopped_by" not in state
        if not state["done"] and not stopped_early:
            checked = bool(state["history"]["val"]) and state["history"]["val"][-1]["step"] == state["step"]
            if not D.broadcast_object(checked, world):  # process 0 holds the validation history
                self.check(state["step"])
            state["done"] = True
            state.setdefault("stopped_by", "steps")
            state["seconds"] = time.perf_counter() - self.t0
            self.snapshot()
        if world.distributed:  # process 0 validated: its history and choice of weights go to every process
            shared = D.broadcast_object({k: state[k] for k in ("history", "best", "done")}, world)
            state.update(shared)
        if not stopped_early and world.main and state["best_state"] is not None:
            model.load_state_dict(state["best_state"])
        if not stopped_early:
            D.broadcast_module(model, world)
        model.eval()
        return {"history": state["history"], "best": state["best"], "train_seconds": state["seconds"],
                "steps": state["step"], "steps_per_second": state["step"] / max(state["seconds"], 1e-9),
                "peak_rss_mb": peak_rss_mb(), "path": self.path, "resumed": self.resumed, "key": self.key,
                "finished": bool(state["done"]), "world_size": world.size,
                "stopped_by": state.get("stopped_by") if state["done"] else "stop_at"}


def architecture(model) -> str:
    """A hash of the model's parameter names and shapes, for the run key: a checkpoint written by
    another version of a model's code (a layer added or resized) is then not loaded into it."""
    shapes = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12]
