"""Training steps per second of each captioner at laptop size, before and after issue 20, side by side.

    .venv/bin/python tools/bench_train_steps.py                       # 2 threads, 5 rounds of 20 steps
    .venv/bin/python tools/bench_train_steps.py --before 2150b9e --rounds 7 --threads 1

Issue 20 moved the captioners onto one transformer block (`captioners/backbone.py`, attention through
`F.scaled_dot_product_attention`) and one training entry point. Whether a step got faster cannot be read
from two course runs: the shared machine's speed varies more than the change. So the two versions run at
once, here, each in its own process (they are two versions of one package):

* ``before``: the library at `--before` (default: 2150b9e, the last commit before issue 20's work:
  attention written by hand in DDCap and the decoder), checked out into a temporary git worktree;
* ``after``: the library of this checkout.

Each process builds every captioner of the laptop profile (``captioner.width/layers/heads``, its own
section's defaults, the laptop batch size) on the laptop word tokenizer's captions and random CLIP
features of the laptop CLIP's shapes (a step's work does not depend on the feature values), and takes
warm-up steps. Then the rounds: in each, every (captioner, version) pair times `--steps` steps in turn,
so that a change of the machine's load falls on both versions alike (as `benchmark.side_by_side` does
within one process). A step is the training loop's: zero the gradients, ``loss(batch)``, backward,
gradient clipping, AdamW. Reported: the median steps/s over the rounds, and after/before.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "2150b9e"  # the last commit before issue 20's changes to the captioners
IMAGE_DIM, GRID_TOKENS, GRID_DIM = 512, 16, 256  # laptop CLIP: embed_dim, 4x4 fine grid, third ResNet stage
# row -> (builder module, builder function, overrides "before", overrides "after"); None: not in that version.
# A like-for-like row builds the same network at both versions: issue 20 also changed two defaults, DDCap's
# conditioning (cross-attention to prefix tokens, without the concentrated mask) and CLIP-DiffusionLM's
# backbone (DistilBERT to the course's block); those rows are timed at "after" alone.
CAPTIONERS = {
    "CLIP-DiffusionLM, DistilBERT": ("continuous", "build_continuous_captioner", {},
                                     {"continuous.backbone": "distilbert"}),
    "CLIP-DiffusionLM, the course's block (default now)": ("continuous", "build_continuous_captioner", None,
                                                          {"continuous.backbone": "course"}),
    "DDCap, cross-attention, concentrated mask": ("ddcap", "build_ddcap_captioner", {},
                                                  {"ddcap.conditioning": "cross", "ddcap.concentrated_mask": True}),
    "DDCap, prefix tokens (default now)": ("ddcap", "build_ddcap_captioner", None, {}),
    "autoregressive": ("autoregressive", "build_ar_captioner", {}, {}),
}


# ---- the worker: one version of the library, in its own process ---------------------------------------
def worker(root: str, version: str, data_dir: str, threads: int) -> None:
    """Build the captioners with the library under `root`, then answer "NAME STEPS" lines with seconds."""
    sys.path.insert(0, root)
    import importlib

    import torch

    from clipdiff_mini.config import get_config
    from clipdiff_mini.data.splits import load_split
    from clipdiff_mini.data.tokenizers import build_tokenizer

    torch.set_num_threads(threads)
    models = {}
    for name, (module, builder, *overrides) in CAPTIONERS.items():
        own = overrides[version == "after"]
        if own is None:
            continue
        cfg = get_config("laptop", {"paths.data_dir": data_dir, **own})
        torch.manual_seed(0)
        split = load_split(cfg, "train", progress=False)
        tok = build_tokenizer(cfg, split)
        _, captions = split.caption_table()
        ids = tok.batch_encode(captions, max_len=cfg.data.max_caption_len)  # (M, L)
        n_img = len(split)
        train = type("Split", (), {})()  # the fields the builders read of a SplitFeatures
        train.tokenizer, train.ids = tok, ids
        train.image = torch.randn(n_img, IMAGE_DIM)  # (N, Di)
        train.grid = torch.randn(n_img, GRID_TOKENS, GRID_DIM)  # (N, P, Dg)
        model = getattr(importlib.import_module(f"clipdiff_mini.captioners.{module}"), builder)(cfg, train).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.captioner.lr, weight_decay=cfg.captioner.weight_decay)
        gen = torch.Generator().manual_seed(0)
        owner = torch.arange(ids.shape[0]) * n_img // ids.shape[0]  # any caption -> picture map will do
        text = torch.randn(ids.shape[0], IMAGE_DIM)  # (M, Dt): the CLIP text feature some losses read

        def step(model=model, opt=opt, gen=gen, c=cfg.captioner, ids=ids, train=train, owner=owner, text=text):
            rows = torch.randint(0, ids.shape[0], (c.batch_size,), generator=gen)  # (B,)
            batch = {"ids": ids[rows], "image": train.image[owner[rows]], "grid": train.grid[owner[rows]],
                     "text": text[rows]}
            opt.zero_grad(set_to_none=True)
            loss, _ = model.loss(batch, gen)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
            opt.step()

        for _ in range(5):  # warm-up: allocation, kernel choice
            step()
        models[name] = step
        print(json.dumps({"name": name, "params": sum(p.numel() for p in model.parameters()),
                          "batch": cfg.captioner.batch_size}), flush=True)
    import clipdiff_mini

    if not Path(clipdiff_mini.__file__).resolve().is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"imported {clipdiff_mini.__file__}, not the library under {root}")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name, steps = line.rsplit(" ", 1)
        t0 = time.perf_counter()
        for _ in range(int(steps)):
            models[name]()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


# ---- the driver ---------------------------------------------------------------------------------------
class Worker:
    def __init__(self, version: str, label: str, root: Path, threads: int):
        self.label = label
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(root), "--version", version,
                                      "--data-dir",
                                      str(ROOT / "data"), "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
        self.info: dict[str, dict] = {}

    def start(self) -> None:
        """Read the build lines up to "ready"."""
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("ready"):
                return
            self.info[msg["name"]] = msg
        raise RuntimeError(f"the {self.label} worker ended before it was ready (see its error above)")

    def time(self, name: str, steps: int) -> float:
        self.proc.stdin.write(f"{name} {steps}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' library")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="steps timed per captioner, version and round")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each worker (the course uses 2)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--version", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.version, args.data_dir, args.threads)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        before_root = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before_root), args.before], cwd=ROOT,
                       check=True)
        try:
            workers = [Worker("before", f"before ({args.before})", before_root, args.threads),
                       Worker("after", "after (this checkout)", ROOT, args.threads)]
            for w in workers:  # one after the other: building is not timed
                w.start()
            names = [n for n in CAPTIONERS if any(n in w.info for w in workers)]
            times = {(n, w.label): [] for n in names for w in workers if n in w.info}
            for r in range(args.rounds):
                for n in names:
                    for w in workers:
                        if n in w.info:
                            times[n, w.label].append(w.time(n, args.steps))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            for w in workers:
                w.close()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_root)], cwd=ROOT, check=False)
    import torch  # only for the machine line

    print(f"{args.threads} torch threads per worker, {torch.get_num_threads()} available to torch here; "
          f"{args.rounds} rounds of {args.steps} steps; median steps/s")
    print(f"| captioner | parameters | batch | {workers[0].label} | {workers[1].label} | after/before |")
    print("|---|---|---|---|---|---|")
    for n in names:
        rate = [args.steps / statistics.median(times[n, w.label]) if n in w.info else None for w in workers]
        params = "/".join(str(w.info[n]["params"]) if n in w.info else "-" for w in workers)
        cells = [f"{r:.1f}" if r else "-" for r in rate]
        ratio = f"{rate[1] / rate[0]:.2f}" if all(rate) else "-"
        print(f"| {n} | {params} | {workers[1].info[n]['batch']} | {cells[0]} | {cells[1]} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
