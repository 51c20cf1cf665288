"""DDCap decoding speed, before and after issue 22, side by side in one run.

    .venv/bin/python tools/bench_ddcap_decoding.py                   # 1 thread, batches 1 and 64
    .venv/bin/python tools/bench_ddcap_decoding.py --threads 2 --repeats 9

Three variants of the same random-init laptop-size DDCap (captioner width 96, 3 layers, 4 heads; the
memory is the pooled CLIP vector (512) and the 4x4 fine grid of the laptop CLIP (256 channels)), all
holding the same weights:

* ``before``: ddcap.py as of `--before` (default: the commit before issue 22's change), read from git:
  attention by hand, the memory and its keys and values recomputed at every network pass;
* ``sdpa``: the current code with ``cache_memory=False`` (scaled_dot_product_attention only);
* ``after``: the current code as the course runs it (SDPA, the memory's keys and values once per call).

Decoding is the course's default (best-first, one token per pass, guidance 1.17: two passes per step)
on a canvas of 12 [MASK]s (the laptop captions' mean length with [BOS]/[EOS]) followed by [PAD]s, so
every caption takes 24 passes whatever the random length head would say. Random weights are fine for
speed: the work per pass does not depend on them. Each variant is warmed up, then timed in rounds
(`clipdiff_mini.captioners.benchmark.side_by_side`); the median of the timed runs is reported.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipdiff_mini.captioners.benchmark import machine, side_by_side  # noqa: E402
from clipdiff_mini.captioners.ddcap import DDCapCaptioner  # noqa: E402
from clipdiff_mini.config import get_config  # noqa: E402
from clipdiff_mini.data.tokenizers import MASK, PAD, WORD_SPECIALS  # noqa: E402

BEFORE = "2c71d67^"  # the parent of the change: attention by hand, the memory recomputed every pass
VOCAB = 55  # the laptop word tokenizer's vocabulary (5 specials and the words of the shapes captions)
IMAGE_DIM, GRID_TOKENS, GRID_DIM = 512, 16, 256  # laptop CLIP: embed_dim, 4x4 fine grid, third ResNet stage
CAPTION_TOKENS = 12  # positions to fill per caption ([BOS] ... [EOS])


def module_at(rev: str, path: str = "clipdiff_mini/captioners/ddcap.py") -> types.ModuleType:
    """The module `path` as it was at git revision `rev` (imports resolve to the current library)."""
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    mod = types.ModuleType(f"ddcap_at_{rev}")
    exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def build(cls, cfg) -> DDCapCaptioner:
    c = cfg.captioner
    return cls(VOCAB, cfg.data.max_caption_len, IMAGE_DIM, GRID_DIM, GRID_TOKENS, cfg.ddcap,
               pad_id=WORD_SPECIALS.index(PAD), mask_id=WORD_SPECIALS.index(MASK), width=c.width,
               layers=c.layers, heads=c.heads, dropout=c.dropout).eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' ddcap.py")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_config("laptop")
    torch.manual_seed(0)
    after = build(DDCapCaptioner, cfg)
    before = build(module_at(args.before).DDCapCaptioner, cfg)
    before.load_state_dict(after.state_dict())  # strict: the state_dict keys are unchanged
    L = cfg.data.max_caption_len
    print(f"DDCap decoding, {machine()}; width {cfg.captioner.width}, {cfg.captioner.layers} layers, "
          f"{cfg.captioner.heads} heads, memory 1 + {GRID_TOKENS} tokens; {cfg.ddcap.order}, "
          f"{cfg.ddcap.tokens_per_step} token/pass, guidance {cfg.ddcap.guidance_scale}; "
          f"{CAPTION_TOKENS} of {L} positions to fill; median of {args.repeats} after {args.warmup} warm-up")
    rows = []
    for B in args.batches:
        g = torch.Generator().manual_seed(B)
        cond = {"image": torch.nn.functional.normalize(torch.randn(B, IMAGE_DIM, generator=g), dim=-1),
                "grid": torch.randn(B, GRID_TOKENS, GRID_DIM, generator=g).abs()}
        init = torch.full((B, L), after.pad_id)
        init[:, :CAPTION_TOKENS] = after.mask_id

        def run(model, **kw):
            return lambda: model.sample(cond, init_ids=init, **kw)

        outs = {name: fn() for name, fn in
                (("before", run(before)), ("sdpa", run(after, cache_memory=False)), ("after", run(after)))}
        same = {name: float((o["ids"] == outs["before"]["ids"]).all(-1).float().mean()) for name, o in outs.items()}
        t = side_by_side({"before": run(before), "sdpa": run(after, cache_memory=False), "after": run(after)},
                         B, warmup=args.warmup, repeats=args.repeats)
        rows.append((B, outs["after"]["passes"], t, same))
    print()
    print("| batch | passes/caption | before (captions/s) | SDPA only | SDPA + memory K/V once | speed-up |"
          " captions equal to before |")
    print("|---|---|---|---|---|---|---|")
    for B, passes, t, same in rows:
        print(f"| {B} | {passes:.0f} | {t['before']['captions_per_s']:.1f} | {t['sdpa']['captions_per_s']:.1f} | "
              f"{t['after']['captions_per_s']:.1f} | "
              f"{t['after']['captions_per_s'] / t['before']['captions_per_s']:.2f}x | "
              f"{same['sdpa']:.0%} / {same['after']:.0%} |")
    print()
    for B, _, t, _ in rows:
        print(f"batch {B} seconds per call: " + "; ".join(
            f"{name} " + " ".join(f"{s:.4f}" for s in v["times_s"]) for name, v in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
