# %% [markdown]
# # 09 · The scale path: solutions to the exercises
#
# Worked answers to the exercises of notebook 09. The notebook replays
# notebook 09's offline path on the fixture (the Karpathy-format copy of
# the embedded dataset, read with notebook 04's CLIP) at the `ci` or
# `laptop` sizes, and loads the two trained runs notebook 09 left: the one
# cut off and resumed, and the uninterrupted one (trained here, in seconds
# at the `ci` size, when they are missing).

# %%
import json
import os

import torch

from clipdiff_mini.captioners.distributed import World, shard_rows
from clipdiff_mini.captioners.features import load_captioning_data
from clipdiff_mini.clip.model import scratch_checkpoint_path
from clipdiff_mini.clip.training import train_clip
from clipdiff_mini.config import get_config
from clipdiff_mini.data.karpathy_fixture import write_karpathy_fixture
from clipdiff_mini.seeding import set_seed
from clipdiff_mini.train import train_model

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab" (colab: the laptop sizes)
MODEL = "clip_diffusionlm"  # as in notebook 09

# %%
size_profile = "ci" if PROFILE == "ci" else "laptop"  # notebook 09's offline path; no GPU sizes here
steps = {"ci": 160, "laptop": 600}[size_profile]
where = {"captioner.train_steps": steps, "captioner.eval_every": steps // 4}
if size_profile == "ci":  # notebook 09 keeps the laptop profile's stops in ci
    laptop = get_config("laptop").captioner
    where.update({"captioner.train_minutes": laptop.train_minutes, "captioner.patience": laptop.patience})
cfg = get_config(size_profile, where)
set_seed(cfg.seed)
sizes = (40, 10, 10) if size_profile == "ci" else (2000, 200, 200)
base = get_config(size_profile)
json_path, image_dir = write_karpathy_fixture(
    base, cfg.path("data_dir") / f"flickr8k-fixture-{size_profile}-{'-'.join(map(str, sizes))}", sizes=sizes)
clip_file = scratch_checkpoint_path(base)
if not clip_file.exists():
    train_clip(base)
cfg = cfg.replace({"data.source": "karpathy", "data.karpathy_json": str(json_path), "data.image_dir": str(image_dir),
                   "data.image_size": base.data.image_size, "clip.checkpoint": str(clip_file)})
data = load_captioning_data(cfg, progress=False)
run = train_model(MODEL, cfg, data=data, evaluate=False, verbose=False, progress=False)  # the resumed run, from its checkpoint
whole = train_model(MODEL, cfg, data=data, evaluate=False, verbose=False, progress=False,
                    checkpoint=run["path"].with_name(run["path"].stem + "-uninterrupted.pt"))
print({name: len(s) for name, s in data.items()}, f"; runs of {run['record']['steps']} and "
      f"{whole['record']['steps']} steps")

# %% [markdown]
# ## Exercise 9.1: counting the pictures of a Karpathy split file
#
# The file is a JSON object whose list `images` holds one entry per picture
# with its `split` and its `sentences` (each with the `raw` text and the
# `tokens`); Karpathy's `restval` pictures are training pictures, and a
# picture none of whose sentences has any text is not loaded.

# %%
def split_sizes(json_path):
    """{"train": pictures, "val": ..., "test": ...} of a Karpathy split file."""
    counts = {}
    for image in json.loads(open(json_path, encoding="utf-8").read())["images"]:
        texts = [s.get("raw") or " ".join(s.get("tokens") or []) for s in image.get("sentences", [])]
        if not any(t.strip() for t in texts):
            continue
        split = "train" if image["split"] == "restval" else image["split"]
        counts[split] = counts.get(split, 0) + 1
    return counts


mine = split_sizes(cfg.resolve(cfg.data.karpathy_json))
for name, s in data.items():
    assert mine.get(name) == len(s), (name, mine.get(name), len(s))
print("pictures per split:", mine)

# %% [markdown]
# ## Exercise 9.2: the global batch under `torchrun`, and the loss weights
#
# Splitting $B$ rows into $N$ consecutive parts of sizes that differ by at
# most one, the larger first, gives the first $B \bmod N$ parts
# $\lfloor B/N\rfloor + 1$ rows and the others $\lfloor B/N\rfloor$; the
# micro-batches split a process's share the same way.
#
# **The weights.** Process $r$'s micro-batch $b$ contributes the gradient of
# $\frac{N |b|}{B}\,\bar\ell_b$, where $\bar\ell_b$ is its mean loss, i.e.
# of $\frac{N}{B}\sum_{i\in b}\ell_i$. Accumulation sums these over the
# micro-batches, and the data-parallel wrapper averages over the $N$
# processes, dividing by $N$: the result is the gradient of
# $\frac1B\sum_{i=1}^{B}\ell_i$, the mean over the global batch, exactly as
# one process with the whole batch would compute it. The weights divided by
# $N$ add up to $\sum_b |b| / B = 1$.

# %%
def micro_sizes(B, N, rank, A):
    """Sizes of the A micro-batches of process `rank` among N, for a global batch of B rows."""
    def split(n, parts):
        return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    return split(split(B, N)[rank], A)


weights_sum = 1.0

for B in (cfg.captioner.batch_size, 512, 10, 7):
    for N in range(1, 9):
        for A in (1, 3, 4):
            total = 0.0
            for rank in range(N):
                parts = torch.tensor_split(shard_rows(torch.arange(B), World(rank, N, rank)), A)
                assert micro_sizes(B, N, rank, A) == [len(p) for p in parts], (B, N, rank, A)
                total += sum(N * len(p) / B for p in parts) / N
            assert abs(total - weights_sum) < 1e-9, (B, N, A, total)
print(f"a batch of {cfg.captioner.batch_size} on 3 processes: "
      f"{[micro_sizes(cfg.captioner.batch_size, 3, r, 1)[0] for r in range(3)]} rows")

# %% [markdown]
# ## Exercise 9.3: bit-identical, and what `allclose` would miss
#
# `torch.equal` is True only for the same shape and the same values, bit
# for bit. **The prediction:** `torch.allclose` does not notice a weight
# moved to the next float. It accepts $|a - b| \le 10^{-8} + 10^{-5}|b|$,
# and one float step is about $2^{-23}|b|$ in single precision, far
# inside the tolerance. A check of bit-identity needs `torch.equal`.

# %%
def same_weights(a, b):
    """True when state dicts a and b hold the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


allclose_notices = False

a, b = whole["model"].state_dict(), run["model"].state_dict()
assert same_weights(a, b)
key = next(k for k, v in a.items() if v.is_floating_point() and v.numel())
moved = {k: v.clone().contiguous() for k, v in a.items()}
flat = moved[key].view(-1)
flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
assert not same_weights(a, moved)
assert torch.allclose(a[key], moved[key]) == (not allclose_notices)
print(f"{len(a)} tensors bit-identical between the resumed and the uninterrupted run; one float step in "
      f"{key!r}: allclose {torch.allclose(a[key], moved[key])}, same_weights {same_weights(a, moved)}")

# %% [markdown]
# ## Exercise 9.4: what a real disconnect costs
#
# The last snapshot at or before step $k$ is at $c\lfloor k/c\rfloor$, so
# the resumed run trains again `steps_redone(k, c)` steps:
#
# $$k - c\lfloor k/c \rfloor = k \bmod c,$$
#
# at most $c - 1$. **The prediction:** yes, still bit-identical. The
# snapshot holds everything a step depends on (weights, optimiser moments,
# the data-order generator, every random state), so the redone steps are
# the same steps again. Only a run ended by the wall-clock cap is
# machine-dependent.

# %%
def steps_redone(k, c):
    """Steps trained again after a disconnect right after step k, with snapshots every c steps."""
    return k % c


for c in (cfg.captioner.checkpoint_every, 3, 7):
    saved = 0
    for k in range(1, 5 * c + 1):
        if k % c == 0:
            saved = k
        assert steps_redone(k, c) == k - saved
print(f"snapshots every {cfg.captioner.checkpoint_every} steps: a disconnect costs at most "
      f"{max(steps_redone(k, cfg.captioner.checkpoint_every) for k in range(1, 1000))} steps")
