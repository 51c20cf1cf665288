# %% [markdown]
# # 07 · DDCap: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 07. The notebook
# recomputes what it needs: the trained DDCap is loaded from the checkpoint
# notebook 07 left (or trained, in seconds at the `ci` size), and the
# quantities of notebook 07 that an exercise checks against are recomputed
# with the library.

# %%
import os

import torch

from clipdiff_mini.captioners import load_captioning_data, train_ddcap
from clipdiff_mini.captioners.ddcap import concentrated_attention_mask
from clipdiff_mini.captioners.distillation import reference_disagreement
from clipdiff_mini.captioners.length import reference_length_canvas
from clipdiff_mini.config import get_config
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
GRID = "fine"  # as in notebook 07: the model it trains reads the 4x4 grid

# %%
cfg = get_config(PROFILE, {"captioner.grid": GRID})
set_seed(cfg.seed)
data = load_captioning_data(cfg, progress=False)
train, val, test = data["train"], data["val"], data["test"]
tok = train.tokenizer
model, record = train_ddcap(cfg, data, progress=False)  # notebook 07's model: loaded from its checkpoint
model.eval()
print(f"DDCap: {record['steps']} steps{' (loaded)' if record['resumed'] else ''}; "
      f"length prediction {model.dcfg.length_prediction}, trained guidance scale {model.dcfg.guidance_scale}")

# %% [markdown]
# ## Exercise 7.1: how many pairs the concentrated mask allows
#
# Query $q$ may attend to key $k$ when $k$ is not `[MASK]`, or when $k = q$.
# Every one of the $n$ queries sees the $n - m$ real keys: $n(n - m)$
# pairs. A real query's own key is among them already; a masked query adds
# its own position, once for each of the $m$ masks. So
#
# $$\#\text{allowed}(n, m) = n(n - m) + m.$$
#
# With no mask ($m = 0$) that is $n^2$, full attention; with every position
# masked ($m = n$) it is $n$, the diagonal alone. The difference is
# $n^2 - n = n(n - 1)$ pairs: at the first call of best-first decoding the
# positions cannot see each other at all, and each must be guessed from
# the picture alone.

# %%
def cam_allowed(n, m):
    """Allowed (query, key) pairs of the concentrated mask for n positions, m of them [MASK]."""
    return n * (n - m) + m


g = torch.Generator().manual_seed(0)
L = train.ids.shape[1]
batch = train.ids[:256].clone()
batch[torch.rand(batch.shape, generator=g) < torch.rand(len(batch), 1, generator=g)] = tok.mask_id  # every mask ratio
counts = concentrated_attention_mask(batch, tok.mask_id).sum((1, 2))  # (256,)
mine = torch.tensor([cam_allowed(L, int((row == tok.mask_id).sum())) for row in batch])
assert torch.equal(counts, mine), "the formula disagrees with the mask"
assert cam_allowed(L, 0) == L * L and cam_allowed(L, L) == L
print(f"{len(batch)} captions of {L} positions: the formula matches the mask for every count of masks; "
      f"no mask: {cam_allowed(L, 0)} pairs, all masks: {cam_allowed(L, L)}")

# %% [markdown]
# ## Exercise 7.2: network passes of best-first inference
#
# A caption whose canvas holds $n_i$ masks needs $\lceil n_i / K\rceil$
# calls when each call commits $K$ of them (the last call may commit fewer).
# With guidance ($s \ne 1$) each call runs the network twice. The mean over
# the pictures is
#
# $$\text{passes}(K, s) = c(s)\,\frac{1}{B}\sum_i \left\lceil \frac{n_i}{K} \right\rceil,\qquad
#   c(s) = \begin{cases} 1 & s = 1\\ 2 & s \ne 1.\end{cases}$$
#
# **The prediction.** Doubling $K$ divides the passes by *at most* two:
# $\lceil n/(2K)\rceil \ge \tfrac12 \lceil n/K \rceil$, with equality only
# when $\lceil n/K\rceil$ is even. A caption of 9 masks needs 9 calls at
# $K = 1$ and 5 at $K = 2$. Guidance doubles the passes exactly.

# %%
def predicted_passes(lengths, K, s):
    """Mean network passes per caption of best-first with K tokens per call and guidance scale s."""
    calls = torch.div(lengths + K - 1, K, rounding_mode="floor").float()  # ceil(n / K), in integers
    return (1 if s == 1.0 else 2) * calls.mean().item()


few = val.subset(16).condition()
measured = {}
for K, s in ((1, 1.0), (2, 1.0), (3, 1.0), (3, 2.0), (4, model.dcfg.guidance_scale)):
    out = model.sample(few, order="best_first", tokens_per_step=K, guidance_scale=s,
                       generator=torch.Generator().manual_seed(0))
    mine = predicted_passes(out["lengths"], K, s)
    assert abs(mine - out["passes"]) < 1e-6, (K, s, mine, out["passes"])
    measured[K, s] = out["passes"]
    print(f"K={K}, s={s:g}: {out['passes']:.2f} passes per caption (predicted {mine:.2f})")
ratio = measured[1, 1.0] / measured[2, 1.0]
assert ratio <= 2 + 1e-9 and abs(measured[3, 2.0] - 2 * measured[3, 1.0]) < 1e-6
print(f"doubling K from 1 to 2 divides the passes by {ratio:.3f}, at most two; guidance doubles them")

# %% [markdown]
# ## Exercise 7.3: where the references disagree
#
# The rows of `train.ids` hold the five references of picture 0, then the
# five of picture 1, and so on, so `ids.view(N, 5, L)` lines them up. At a
# position, a picture's references all agree when each equals the first;
# the curve is the fraction of pictures where some reference differs.

# %%
N, L = len(train), train.ids.shape[1]
assert torch.equal(train.owner, torch.arange(N).repeat_interleave(train.ids.shape[0] // N)), "rows picture by picture"
refs = train.ids.view(N, -1, L)  # (N, 5, L)
my_disagree = (refs != refs[:, :1]).any(1).float().mean(0)  # (L,)
disagree = reference_disagreement(train.ids, train.owner)
assert torch.allclose(my_disagree, disagree, atol=1e-6)
print("references differ, position by position:", " ".join(f"{v:.2f}" for v in my_disagree.tolist()))

# %% [markdown]
# ## Exercise 7.4: the oracle-length canvas
#
# The first reference of each test picture is row 0 of its block of five;
# its length $n$ counts its non-`[PAD]` tokens (`[BOS]` and `[EOS]`
# included). The canvas puts `[MASK]` at positions $0..n-1$ and `[PAD]`
# after.
#
# **The prediction.** The mean number of masks is the mean length of the
# *first* reference of each picture, one of its five: it need not equal the
# mean over all five references. The first is no more typical than any
# other, so the two means are close on many pictures but equal only by
# chance; the printed values show this split's.

# %%
N, L = len(test), test.ids.shape[1]
first = test.ids.view(N, -1, L)[:, 0]  # (N, L) the first reference of each picture
n_first = (first != tok.pad_id).sum(-1)  # (N,)
my_canvas = torch.where(torch.arange(L)[None] < n_first[:, None], tok.mask_id, tok.pad_id).long()  # (N, L)
canvas = reference_length_canvas(test, tok.mask_id, tok.pad_id)
assert torch.equal(my_canvas, canvas.long())
n_all = (test.ids != tok.pad_id).sum(-1).float()
print(f"mean masks of the canvas {n_first.float().mean():.3f}; mean length of all five references "
      f"{n_all.mean():.3f}")
