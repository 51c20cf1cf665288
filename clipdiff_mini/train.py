"""One training command for every captioner, in one process or several.

    python -m clipdiff_mini.train --model clip_diffusionlm --profile ci
    python -m clipdiff_mini.train --model clip_diffusionlm --profile colab --preset paper_clip_diffusionlm \
        paths.checkpoint_dir=/content/drive/MyDrive/clipdiff/checkpoints
    torchrun --nproc_per_node 4 -m clipdiff_mini.train --model ddcap --profile colab --preset paper_ddcap
    python -m clipdiff_mini.train --model clip_diffusionlm --profile ci captioner.train_steps=100 --stop-at 50

``key=value`` arguments are dotted config overrides (`clipdiff_mini.config`);
values are read as Python/JSON literals (``4``, ``1e-4``, ``true``), anything
else as a string. A notebook calls the same function, `train_model`.

What it does: loads the data (`data.source`: the embedded dataset or a
Karpathy-format real one) and its CLIP features (cached), builds and trains
the model through `clipdiff_mini.captioners.trainer.train` (the one entry
point; its loop, `training.train_captioner`, resumes an interrupted run
from its checkpoint), then captions val and test with the
weights chosen on val and scores them: scene accuracy on the embedded
dataset; on a real dataset the COCO caption metrics against all references
(``--metrics coco``, Java) or the quick Python BLEU-4/CIDEr-D. Process 0
prints where the checkpoint is and the scores.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from clipdiff_mini.captioners import distributed as D
from clipdiff_mini.captioners.evaluate import evaluate_captions, generate_captions
from clipdiff_mini.captioners.features import load_captioning_data
from clipdiff_mini.captioners.registry import CAPTIONERS, get_spec
from clipdiff_mini.captioners.trainer import train
from clipdiff_mini.captioners.training import has_scenes, run_options
from clipdiff_mini.config import PROFILES, ConfigError, get_config
from clipdiff_mini.presets import preset_overrides


COLAB_DRIVE = "/content/drive"  # where Colab mounts Google Drive


def colab_drive(folder: str = "clipdiff") -> Path | None:
    """On Colab: mount Google Drive (it asks for permission once) and return ``MyDrive/<folder>``, created
    if missing, for data and checkpoints that survive a disconnect. Elsewhere: None (nothing to mount)."""
    try:
        from google.colab import drive  # only exists on Colab
    except ImportError:
        return None
    drive.mount(COLAB_DRIVE)
    path = Path(COLAB_DRIVE) / "MyDrive" / folder
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """["captioner.lr=1e-4", "data.source=karpathy"] -> {"captioner.lr": 0.0001, "data.source": "karpathy"}."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value (e.g. captioner.lr=1e-4)")
        key, text = item.split("=", 1)
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value: Any = lowered == "true"
        elif lowered in ("none", "null"):
            value = None
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        out[key.strip()] = value
    return out


def evaluate_split(preds: dict[int, str], split, metrics: str = "coco", scorer=None) -> dict[str, Any]:
    """Scores of one caption per picture of `split` (a `SplitFeatures`): on the embedded dataset scene
    accuracy, object recall (and with ``metrics="coco"`` the COCO metrics); on a real dataset the COCO
    metrics against all references (``"coco"``, Java) or the quick Python BLEU-4 / CIDEr-D (``"quick"``).
    `scorer`: an open `CaptionScorer` to reuse (METEOR's Java process takes seconds to start)."""
    if metrics not in ("coco", "quick"):
        raise ValueError(f"metrics={metrics!r}; allowed: 'coco', 'quick'")
    if has_scenes(split):
        return evaluate_captions(preds, split, coco=metrics == "coco", scorer=scorer)
    refs = split.references()
    if metrics == "coco":
        from clipdiff_mini.evaluation.metrics import CaptionScorer

        if scorer is not None:
            return scorer.score(preds, refs)
        with CaptionScorer() as own:
            return own.score(preds, refs)
    from clipdiff_mini.evaluation.metrics import quick_caption_scores

    return quick_caption_scores(preds, refs)


_STOPS = {"steps": "the step budget", "plateau": "a validation plateau (captioner.patience)",
          "minutes": "the wall-clock cap (captioner.train_minutes; this result depends on the machine's speed)"}


def train_model(model_name: str, cfg, *, data=None, progress: bool = True, resume: bool = True,
                checkpoint: str | Path | None = None, stop_at: int | None = None, evaluate: bool = True,
                splits: Sequence[str] = ("val", "test"), metrics: str = "coco", verbose: bool = True) -> dict[str, Any]:
    """Train captioner `model_name` (a name of `clipdiff_mini.captioners.registry.CAPTIONERS`) as `cfg`
    says, in this process or, under torchrun, in all of them; then caption and score `splits`.

    `data` may pass already loaded `load_captioning_data(cfg)`. `checkpoint` writes/resumes that file
    instead of the default path (a file of another run there is refused); `stop_at` stops after that
    global step with a checkpoint, unfinished (the next call resumes). Returns {"model", "record",
    "path", "scores" {split: numbers}, "captions" {split: {image id: caption}}, "data", "world_size"}.
    Only process 0 scores and prints; every process returns the same weights.
    """
    spec = get_spec(model_name)
    world = D.init_distributed(cfg.torch_device().type)
    say = print if (verbose and world.main) else (lambda *a, **k: None)
    t0 = time.perf_counter()
    if data is None:
        # process 0 first: it may train the small CLIP or extract features; the others then read its caches
        if world.main:
            data = load_captioning_data(cfg, progress=progress)
        D.barrier(world)
        if not world.main:
            data = load_captioning_data(cfg, progress=False)
    meta = {"model": model_name}  # train_captioner adds which CLIP made the features
    with run_options(checkpoint=checkpoint, stop_at=stop_at, meta=meta):
        model, record = train(model_name, cfg, data, progress=progress and world.main, resume=resume)
    out: dict[str, Any] = {"model": model, "record": record, "path": record["path"], "scores": {}, "captions": {},
                           "data": data, "world_size": world.size}
    say(f"[train] {model_name}: {record['steps']} steps in {record['train_seconds']:.1f} s "
        f"({'resumed, ' if record['resumed'] else ''}"
        f"{'finished: ' + _STOPS.get(record.get('stopped_by'), 'done') if record.get('finished', True) else 'cut off'}"
        f", {world.size} process{'es' if world.size > 1 else ''})")
    say(f"[train] checkpoint: {record['path']}")
    if record.get("best"):
        say(f"[train] best on val at step {record['best']['step']}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in record["best"].items() if k != "step" and isinstance(v, float)))
    if evaluate and record.get("finished", True) and world.main:
        fn = spec.caption_function(data["train"].tokenizer, cfg)
        with contextlib.ExitStack() as stack:
            scorer = None
            if metrics == "coco":
                from clipdiff_mini.evaluation.metrics import CaptionScorer

                scorer = stack.enter_context(CaptionScorer())  # one METEOR process for every split
            for name in splits:
                torch.manual_seed(cfg.seed)  # the same captions every time for the same weights
                preds = generate_captions(model, fn, data[name])
                out["captions"][name] = preds
                out["scores"][name] = evaluate_split(preds, data[name], metrics, scorer)
                say(f"[train] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in out["scores"][name].items()
                                                      if isinstance(v, float)))
    D.barrier(world)
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipdiff_mini.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(CAPTIONERS), help="which captioner")
    parser.add_argument("--profile", default="laptop", choices=PROFILES, help="sizes (default: laptop)")
    parser.add_argument("--preset", default=None, help="a named set of overrides, e.g. paper_clip_diffusionlm")
    parser.add_argument("--checkpoint", default=None, help="write/resume this checkpoint file (e.g. on Drive)")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step, resumable")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    parser.add_argument("--no-eval", action="store_true", help="skip captioning and scoring val/test")
    parser.add_argument("--metrics", default="coco", choices=("coco", "quick"),
                        help="coco: the COCO caption metrics (Java); quick: Python BLEU-4/CIDEr-D only")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, key=value")
    args = parser.parse_args(argv)
    try:
        over = {**(preset_overrides(args.preset) if args.preset else {}), **parse_overrides(args.overrides)}
        cfg = get_config(args.profile, over)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_model(args.model, cfg, progress=sys.stderr.isatty(), resume=not args.no_resume,
                checkpoint=args.checkpoint, stop_at=args.stop_at, evaluate=not args.no_eval, metrics=args.metrics)
    if D.current_world().distributed:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
