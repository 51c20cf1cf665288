# %% [markdown]
# # 04 · CLIP: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 04. This notebook
# stands on its own: it rebuilds what it needs with the library (the small
# CLIP is loaded from the checkpoint notebook 04 wrote, or trained when there
# is none, and the validation features are read from their cache), then
# answers each exercise with the derivation, the code, and the same check as
# the exercise cell.

# %%
import os
from math import comb

import numpy as np
import torch
import torch.nn.functional as F

from clipdiff_mini.clip import extract_features, retrieval_recall, train_clip
from clipdiff_mini.config import get_config
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
VISION_TOWER = None  # as in notebook 04: None is the profile's choice
TRAIN_STEPS = None  # as in notebook 04: None is the profile's number of training steps

# %%
cfg = get_config(PROFILE, {"clip.vision_tower": VISION_TOWER, "clip.train_steps": TRAIN_STEPS})
set_seed(cfg.seed)
scfg = cfg.replace({"clip.source": "scratch"})  # notebook 04's small CLIP
bundle = train_clip(scfg)  # loads the checkpoint when notebook 04 has run
fv = extract_features(scfg, "val", bundle=bundle)  # read from the cache when notebook 04 has run
rec = retrieval_recall(fv["image"], fv["text"], fv["text_owner"])
print(f"profile {cfg.profile}: {bundle.name}, {bundle.info['steps']} training steps; val: "
      f"{len(fv['image'])} pictures, {len(fv['text'])} captions")

# the random features and the two functions of notebook 04, section 1
rng = np.random.default_rng(0)
B, D = 16, 8
u = rng.normal(size=(B, D)); u /= np.linalg.norm(u, axis=1, keepdims=True)
s0 = 1.7


def infonce_by_hand(u, v, s):
    logits = np.exp(s) * u @ v.T  # (B, B)
    log_p_rows = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # image -> text
    log_p_cols = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))  # text -> image
    loss = 0.5 * (-np.mean(np.diag(log_p_rows)) - np.mean(np.diag(log_p_cols)))
    sims, p_r, p_c = u @ v.T, np.exp(log_p_rows), np.exp(log_p_cols)
    grad_s = np.exp(s) / 2 * (np.mean((p_r * sims).sum(1) - np.diag(sims)) + np.mean((p_c * sims).sum(0) - np.diag(sims)))
    return loss, grad_s


def infonce_estimate(rho, d, B, n_batches, gen):
    est = []
    for _ in range(n_batches):
        x = torch.randn(B, d, generator=gen, dtype=torch.float64)
        y = rho * x + (1 - rho**2) ** 0.5 * torch.randn(B, d, generator=gen, dtype=torch.float64)
        log_cond = -((y[None, :, :] - rho * x[:, None, :]) ** 2).sum(-1) / (2 * (1 - rho**2))  # (B, B)
        log_marg = -(y**2).sum(-1) / 2  # (B,)
        loss = F.cross_entropy(log_cond - log_marg[None, :], torch.arange(B))
        est.append(np.log(B) - loss.item())
    return np.mean(est), np.std(est) / np.sqrt(n_batches)

# %% [markdown]
# ## Exercise 4.1: the temperature gradient for unrelated pairs
#
# *Question:* with captions drawn independently of their pictures, does
# training raise or lower $s$?
#
# **Answer: lower.** Each bracket of $\partial\mathcal L/\partial s$ is
# $\mathbb E_{k\sim p_{i\to\cdot}}[u_i^\top v_k] - u_i^\top v_i$. For unrelated
# pairs the right caption is just one more random caption, so on average
# $u_i^\top v_i$ equals the *plain* mean of the row's similarities. The softmax
# average weights each similarity by $e^{\ell_{ik}}$, which favours the larger
# ones, so it lies above the plain mean (strictly, unless the row is constant):
# the bracket is positive on average, $\partial\mathcal L/\partial s > 0$, and
# gradient descent lowers $s$: the softmax gets softer, towards the loss of
# guessing, $\log B$, the best a model can do when nothing links the pairs.

# %%
prediction_4_1 = "lower"

rng_ex = np.random.default_rng(1)
grads_unrelated = []
for _ in range(200):
    v_unrelated = rng_ex.normal(size=u.shape)
    v_unrelated /= np.linalg.norm(v_unrelated, axis=1, keepdims=True)
    grads_unrelated.append(infonce_by_hand(u, v_unrelated, s0)[1])
mean_grad = float(np.mean(grads_unrelated))
assert prediction_4_1 == ("raise" if mean_grad < 0 else "lower")
print(f"dL/ds = {mean_grad:+.3f} on average over unrelated batches; positive in "
      f"{np.mean(np.array(grads_unrelated) > 0):.0%} of them")

# %% [markdown]
# ## Exercise 4.2: the batch size caps the estimate
#
# *Question:* when the mutual information exceeds $\log B$, does the InfoNCE
# estimate rise as $B$ doubles, and what ceiling can it never pass?
#
# **Answer.** The ceiling is $\log B$: the loss is a cross-entropy, so
# $\mathcal L \ge 0$ and $\log B - \mathcal L \le \log B$. With the best critic and
# $I \gg \log B$ the true partner wins its row almost always, $\mathcal L$ is
# close to zero and the estimate sits just below $\log B$. So it rises with $B$,
# by about $\log 2$ per doubling, however large $I$ is: measuring a mutual
# information of $I$ nats needs batches of about $e^I$ pairs.

# %%
rises_4_2 = True
ceiling_4_2 = np.log

RHO_EX, D_EX, B_EX = 0.99, 4, (32, 64, 128)
gen_ex = torch.Generator().manual_seed(1)
true_mi_ex = -D_EX / 2 * np.log(1 - RHO_EX**2)
est_ex = [infonce_estimate(RHO_EX, D_EX, B=b, n_batches=10, gen=gen_ex)[0] for b in B_EX]
assert rises_4_2 == all(b > a for a, b in zip(est_ex, est_ex[1:]))
for b, e in zip(B_EX, est_ex):
    assert e <= ceiling_4_2(b) + 1e-9 and ceiling_4_2(b) - e < 0.3
print(f"I = {true_mi_ex:.2f} nats; B = {B_EX}: estimates {np.round(est_ex, 3)}, log B {np.round(np.log(B_EX), 3)}; "
      f"rise per doubling {np.round(np.diff(est_ex), 3)} against log 2 = {np.log(2):.3f}")

# %% [markdown]
# ## Exercise 4.3: the chance level of image-to-text retrieval
#
# *Question:* the R@k of a random ranking, averaged over pictures.
#
# **Answer.** A random ranking puts a uniformly random $k$-subset of the $M$
# captions on top. A picture with $c$ captions misses when all $k$ come from the
# other $M - c$: there are $\binom{M-c}{k}$ such subsets out of $\binom{M}{k}$. So
#
# $$P(\text{hit}) = 1 - \binom{M-c}{k}\Big/\binom{M}{k},$$
#
# averaged over the pictures. For $k = 1$ this is $c/M$; with five captions per
# picture and $N$ pictures, $M = 5N$ and the chance of R@1 is $1/N$, the same as
# text to image.

# %%
def i2t_chance(counts, M, k):
    """Chance image-to-text R@k of a random ranking; counts (N,) captions per picture, M captions in all."""
    return float(np.mean([1 - comb(M - int(c), k) / comb(M, k) for c in counts]))


counts_val = torch.bincount(fv["text_owner"], minlength=len(fv["image"]))  # (N,)
M_val = len(fv["text"])
for k in (1, 5, 10):
    assert abs(i2t_chance(counts_val, M_val, k) - rec[f"i2t_R@{k}_chance"]) < 1e-9
print("chance: " + ", ".join(f"R@{k} {i2t_chance(counts_val, M_val, k):.4f}" for k in (1, 5, 10)) +
      f"; 1/N = {1 / len(fv['image']):.4f}")

# %% [markdown]
# An independent check of the formula, by Monte Carlo: rank the captions at
# random many times and count the hits.

# %%
g_mc = torch.Generator().manual_seed(cfg.seed)
n_rank, k_mc = 2000, 5
top = torch.rand(n_rank, M_val, generator=g_mc).topk(k_mc, dim=1).indices  # (n_rank, k) random top-k sets
owners_top = fv["text_owner"][top]  # (n_rank, k) the pictures of those captions
hits = torch.zeros(len(fv["image"]))
for row in owners_top:
    hits[row.unique()] += 1
mc_chance = float(hits.mean()) / n_rank
se = (mc_chance * (1 - mc_chance) / n_rank) ** 0.5  # a generous error: hits of different pictures are correlated
print(f"R@{k_mc} chance: formula {i2t_chance(counts_val, M_val, k_mc):.4f}, Monte Carlo {mc_chance:.4f}")
assert abs(mc_chance - i2t_chance(counts_val, M_val, k_mc)) < 5 * se

# %% [markdown]
# ## Exercise 4.4: image-to-text R@1 by hand
#
# *Question:* the fraction of pictures whose most similar caption is their own.
#
# **Answer.** The embeddings are unit vectors, so the similarity matrix is one
# product; the best caption of each row is its argmax, and its owner must be the
# row's picture. (`retrieval_recall` counts the captions strictly better than
# the best own one instead; the two differ only on an exact tie.)

# %%
def i2t_recall_at_1(image_emb, text_emb, owner):
    """Fraction of pictures whose most similar caption belongs to them. image_emb (N, D), text_emb (M, D)."""
    sims = image_emb.float() @ text_emb.float().T  # (N, M)
    best = sims.argmax(1)  # (N,)
    return float((owner[best] == torch.arange(len(image_emb))).float().mean())


r1_mine = i2t_recall_at_1(fv["image"], fv["text"], fv["text_owner"])
assert abs(r1_mine - rec["i2t_R@1"]) <= 1 / len(fv["image"]) + 1e-9
print(f"image-to-text R@1: by hand {r1_mine:.4f}, retrieval_recall {rec['i2t_R@1']:.4f} "
      f"(chance {rec['i2t_R@1_chance']:.4f})")
