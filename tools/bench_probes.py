"""Notebook 04's linear probes, before and after issue 22, side by side in one run.

    .venv/bin/python tools/bench_probes.py                    # laptop data, untrained network, both versions
    .venv/bin/python tools/bench_probes.py --features trained # notebook 04's 21 probes (needs its CLIP)
    .venv/bin/python tools/bench_probes.py --profile ci
    .venv/bin/python tools/bench_probes.py --skip-before      # the current probe only
    .venv/bin/python tools/bench_probes.py --threads 1        # both on one thread (the current one always is)

Features (`--features`), on the profile's training and validation pictures:

* ``untrained`` (default): the *untrained* small CLIP of the profile's architecture (seed `cfg.seed`):
  its pooled embedding (512 wide at laptop size; notebook 04's "untrained" control, the same numbers)
  and its patch tokens concatenated (4 x 512 = 2048 wide, stored as float16 like the feature cache),
  the shapes of notebook 04's "pooled" and "patches" sets. Needs no trained CLIP.
* ``trained``: notebook 04's three sets: the pooled embedding and the patch tokens of the profile's
  trained small CLIP, from the feature cache, and the untrained control. Needs notebook 04's
  checkpoint; this script never trains one.

Versions:

* ``before``: probes.py as of `--before` (default: the commit before issue 22's change), read from
  git: L-BFGS on the standardised features, no preconditioner;
* ``after``: the current `linear_probe`, the principal axes computed once per feature set (their time
  is its own row, as `probe_attributes` does).

Each probe's wall time and validation accuracy are printed, then the totals.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipdiff_mini.clip import compute_features, extract_features, load_clip  # noqa: E402
from clipdiff_mini.clip.model import ClipBundle, build_scratch_model, scratch_architecture  # noqa: E402
from clipdiff_mini.clip.probes import (PROBE_TARGETS, linear_probe, principal_axes, probe_labels,  # noqa: E402
                                       probe_target_name)
from clipdiff_mini.config import get_config  # noqa: E402
from clipdiff_mini.data import load_split  # noqa: E402

BEFORE = "9ddaa9c^"  # the parent of the change: the unpreconditioned L-BFGS probe


def module_at(commit: str, path: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType(f"before_{Path(path).stem}")
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


def probe_features(cfg, which: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list, list]:
    train, val = load_split(cfg, "train", progress=False), load_split(cfg, "val", progress=False)
    arch = scratch_architecture(cfg, vocab_size=64)  # the text tower is not used
    torch.manual_seed(cfg.seed)
    bundle = ClipBundle(model=build_scratch_model(arch).eval(), tokenize=None, image_size=arch["vision_cfg"]["image_size"],
                        source="scratch", name="untrained", identity="untrained", arch=arch)
    ft = compute_features(bundle, train.load_images(), [], batch_size=cfg.clip.feature_batch_size, progress=False)
    fv = compute_features(bundle, val.load_images(), [], batch_size=cfg.clip.feature_batch_size, progress=False)
    if which == "untrained":
        feats = {"pooled (untrained)": (ft["image"], fv["image"]),
                 "patches (untrained)": (ft["patches"].float(), fv["patches"].float())}  # (N, P, W) float16 as cached
    else:
        scfg = cfg.replace({"clip.source": "scratch"})
        trained = load_clip(scfg, train_if_missing=False, progress=False)
        tt, tv = (extract_features(scfg, split, bundle=trained, progress=False) for split in (train, val))
        feats = {"pooled": (tt["image"], tv["image"]), "patches": (tt["patches"], tv["patches"]),
                 "untrained": (ft["image"], fv["image"])}
    return feats, list(train.scenes().values()), list(val.scenes().values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="laptop")
    ap.add_argument("--before", default=BEFORE, help="commit whose probes.py is the 'before' (default %(default)s)")
    ap.add_argument("--features", choices=("untrained", "trained"), default="untrained")
    ap.add_argument("--skip-before", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); the 'before' "
                    "probe then uses at most this many (it used all of them for inputs of 2 million numbers or more)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_config(args.profile)
    feats, train_scenes, val_scenes = probe_features(cfg, args.features)
    labels = {t: (probe_labels(train_scenes, cfg.data.max_objects, t), probe_labels(val_scenes, cfg.data.max_objects, t))
              for t in ("exclude", "leftmost")}
    before = None if args.skip_before else module_at(args.before, "clipdiff_mini/clip/probes.py")
    print(f"profile {args.profile}, {len(train_scenes)} training / {len(val_scenes)} validation pictures, "
          f"torch threads {torch.get_num_threads()}, before = {args.before}")
    print(f"{'features':20s} {'target':24s} {'before':>8s} {'after':>8s} {'s before':>9s} {'s after':>8s}")
    totals = {"before": 0.0, "after": 0.0}
    for name, (xt, xv) in feats.items():
        t0 = time.perf_counter()
        (rt, rv), variance = principal_axes(xt, xv)
        dt = time.perf_counter() - t0
        totals["after"] += dt
        print(f"{name:20s} {'(principal axes)':24s} {'':8s} {'':8s} {'':9s} {dt:8.1f}   "
              f"{xt.flatten(1).shape[1]} features -> {rt.shape[1]} axes", flush=True)
        for attr, ties in PROBE_TARGETS:
            (lt, lv) = labels[ties]
            row = {}
            if before is not None:
                t0 = time.perf_counter()
                row["before"] = (before.linear_probe(xt, lt[attr], xv, lv[attr])["accuracy"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            row["after"] = (linear_probe(rt, lt[attr], rv, lv[attr], variance=variance)["accuracy"],
                            time.perf_counter() - t0)
            for k, (_, s) in row.items():
                totals[k] += s
            acc_b, s_b = (f"{row['before'][0]:8.3f}", f"{row['before'][1]:9.1f}") if "before" in row else ("", "")
            print(f"{name:20s} {probe_target_name(attr, ties):24s} {acc_b:>8s} {row['after'][0]:8.3f} {s_b:>9s} "
                  f"{row['after'][1]:8.1f}", flush=True)
    print(f"total seconds: before {totals['before']:.1f}, after {totals['after']:.1f} (principal axes included)")


if __name__ == "__main__":
    main()
