# %% [markdown]
# # 03 · Text as vectors: embeddings, the rounding term, collapse and clamping
#
# Notebooks 01 and 02 diffused points of $\mathbb{R}^n$. A caption is not a
# point: it is a sequence of words from a finite vocabulary. Diffusion-LM
# (Li et al., 2022), on which CLIP-DiffusionLM builds, bridges the gap with
# two extra steps at the clean end of the chain:
#
# $$
# \underbrace{w}_{\text{words}}
# \;\xrightarrow{\;q_\phi(x_0\mid w)\;}\; x_0
# \;\xrightarrow{\;q(x_1\mid x_0)\;}\; x_1 \;\to\;\cdots\;\to\; x_T ,
# \qquad
# x_0 \;\xrightarrow{\;p_\theta(w\mid x_0)\;}\; w .
# $$
#
# * **embedding**: each word $w_i$ of a caption becomes a vector $e_{w_i}$ (a
#   row of a *learned* table $E \in \mathbb{R}^{V\times D}$), and
#   $x_0 \sim \mathcal N(\mathrm{EMB}(w), \sigma_0^2 I)$;
# * **rounding**: a distribution $p_\theta(w \mid x_0)$ reads words back out
#   of a vector.
#
# This notebook
#
# 1. writes down the bound with these two steps and derives the **rounding
#    term** $-\log p_\theta(w\mid x_0)$, with a closed form we check;
# 2. shows why it is *needed*: without it, training the embeddings jointly
#    with the denoiser lets them **collapse** (we measure it, with and
#    without the term);
# 3. looks at the rounding weight $\lambda$ and an **adaptive ratio** that
#    rescales it during training (the CLIP-DiffusionLM draft's "adaptive
#    ratio adjustment");
# 4. samples captions from a small text-only Diffusion-LM, with and without
#    the **clamping trick**, and measures what clamping changes.
#
# No pictures yet: the model learns the captions of the embedded dataset on
# their own. The library code is in `clipdiff_mini/diffusion/text_embedding.py`
# (embedding, rounding, clamping) and `clipdiff_mini/diffusion/text_diffusion.py`
# (denoiser, objective, trainer).

# %% [markdown]
# After this notebook you can:
#
# * write the bound of a text diffusion model with an embedding step and a
#   rounding step, and derive the rounding term as a softmax over negative
#   squared distances to the embedding rows;
# * compute how far apart two word vectors must be for a blurred word to
#   round back to itself;
# * explain why embeddings learned jointly with the denoiser collapse without
#   the rounding term, and measure the collapse in training;
# * say what the rounding weight and the adaptive ratio do to the rounding
#   term's share of the loss;
# * sample captions from a small text-only Diffusion-LM with and without the
#   clamping trick, and say what clamping can and cannot change.

# %%
import hashlib
import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.data import build_tokenizer, load_split, parse_caption
from clipdiff_mini.diffusion import (TextDiffusionTrainer, clamp_to_embeddings, decode_samples,
                                     default_temperature, embed_tokens, exact_row_fraction, make_schedule,
                                     nearest_tokens, q_sample, repeated_word_rate, rounding_nll,
                                     roundtrip_accuracy, sample_x0)
from clipdiff_mini.diffusion.text_diffusion import checkpoint_path
from clipdiff_mini.course.results import ResultLog
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
ROUNDING_WEIGHT = 1.0  # lambda on the rounding term; 0 switches it off
ADAPTIVE = False  # the adaptive ratio (section 4) for the main model
CLAMP = True  # clamping trick in the first sampling cell
PAPER_INIT_STD = 1.0  # Diffusion-LM starts the embeddings at N(0, 1)
CLOSE_INIT_STD = 0.1  # a start a few sigma0 from collapse, to watch the end-game in a short run
N_SAMPLES = None  # captions sampled per setting; None: 32 in ci, 200 otherwise

# %%
cfg = get_config(PROFILE, {"diffusion.rounding_weight": ROUNDING_WEIGHT, "diffusion.adaptive_rounding": ADAPTIVE,
                           "diffusion.embed_init_std": PAPER_INIT_STD})
set_seed(cfg.seed)
if cfg.torch_device().type == "cpu":
    # The models here are tiny. On a shared 2-core machine one thread trained them 2 to 40 times
    # faster than two (the second thread keeps waiting for a busy core); use more on a bigger CPU.
    torch.set_num_threads(1)
log = ResultLog(cfg, "03_embeddings_and_rounding")
t_start = time.perf_counter()
d = cfg.diffusion
n_samples = N_SAMPLES or (32 if cfg.profile == "ci" else 200)
sigma0, tau = d.sigma0, default_temperature(d.sigma0)
print(f"profile {cfg.profile}: embed_dim D={d.embed_dim}, sigma0={sigma0}, schedule {d.schedule} T={d.timesteps}, "
      f"{d.train_steps} training steps, denoiser width {d.denoiser_width} x {d.denoiser_layers} layers")

# %% [markdown]
# ## The captions as token ids
#
# The word tokenizer of notebook 00 turns each training caption into
# `[BOS] w1 ... wn [EOS]` and pads it with `[PAD]` to a fixed length $L$.
# A continuous diffusion model generates all $L$ positions at once, so the
# padding is part of what it generates: a sampled caption ends where the
# model writes `[EOS]` and padding after it. Padding is therefore a "word"
# with its own embedding like any other.

# %%
train = load_split(cfg, "train")
tok = build_tokenizer(cfg, train)
captions = train.captions()
L = cfg.data.max_caption_len
ids = tok.batch_encode(captions, max_len=L)  # (N, L)
V = tok.vocab_size
data_tag = hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:12]  # names the data in checkpoint files
print(f"{len(captions)} training captions, vocabulary V={V}, length L={L}")
print(captions[0], "->", ids[0].tolist())
print("back:", tok.decode(ids[0]))
assert tok.decode(ids[0]) == " ".join(tok.tokenize(captions[0]))
log.add("vocabulary size", V)
log.add("training captions", len(captions))

# %% [markdown]
# ## 1 · The bound with an embedding step and a rounding step
#
# With the extra latent $x_0$, the joint model is
# $p_\theta(w, x_{0:T}) = p(x_T)\prod_{t=1}^T p_\theta(x_{t-1}\mid x_t)\; p_\theta(w\mid x_0)$
# and the inference chain is $q(x_{0:T}\mid w) = q_\phi(x_0\mid w)\,q(x_{1:T}\mid x_0)$.
# Jensen's inequality gives, exactly as in notebook 02,
#
# $$
# -\log p_\theta(w) \;\le\;
# \mathbb E_{q}\Big[\underbrace{\log\frac{q(x_{1:T}\mid x_0)}{p_\theta(x_{0:T})}}_{\text{notebook 02's bound on } -\log p(x_0)}
# \;+\; \underbrace{\log q_\phi(x_0\mid w)}_{\text{embedding}}
# \;\underbrace{-\,\log p_\theta(w\mid x_0)}_{\text{rounding}}\Big].
# $$
#
# The first part is the familiar bound, now on the embedded caption: the
# prior term $L_T$, the denoising terms $L_{t-1}$ and the decoder at $t=1$.
# In the $x_0$-parameterisation with the simplified weights of notebook 02
# it becomes Diffusion-LM's training loss
#
# $$
# \mathcal L_{\text{reg}} = \mathbb E_{t}\Big[\,\|f_\theta(x_t,t)-x_0\|^2\ (t\ge 2),\quad
# \|f_\theta(x_1,1)-\mathrm{EMB}(w)\|^2\ (t=1)\Big] + \|\sqrt{\bar\alpha_T}\,x_0\|^2 .
# $$
#
# The embedding term is minus the entropy of a Gaussian. Its expectation
# does not depend on $E$ at all:
# $\mathbb E\,\log q_\phi(x_0\mid w) = -\tfrac{LD}{2}\log(2\pi e\,\sigma_0^2)$,
# a constant once $\sigma_0$ is fixed, so training can drop it. Check by sampling:

# %%
E0 = torch.randn(V, d.embed_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
mean = embed_tokens(ids[:2000], E0)  # (N, L, D) EMB(w)
x0 = sample_x0(mean, sigma0, generator=torch.Generator().manual_seed(1))  # (N, L, D)
log_q = (-0.5 * math.log(2 * math.pi * sigma0 ** 2) - (x0 - mean) ** 2 / (2 * sigma0 ** 2)).sum((1, 2))  # (N,)
closed = -L * d.embed_dim / 2 * math.log(2 * math.pi * math.e * sigma0 ** 2)
print(f"E log q(x0|w): sampled {log_q.mean():.2f}, closed form {closed:.2f}")
assert abs(log_q.mean().item() - closed) < 0.01 * abs(closed)  # tolerance 1 %; the std error is ~0.1 %

# %% [markdown]
# ## 2 · The rounding term
#
# What should $p_\theta(w_i\mid x_{0,i})$ be? The embedding step already
# answers it. If a word is drawn uniformly and then blurred,
# $x \sim \mathcal N(e_w, \sigma_0^2 I)$, Bayes' rule gives
#
# $$
# p(w\mid x) = \frac{\mathcal N(x; e_w,\sigma_0^2 I)}{\sum_{v}\mathcal N(x; e_v,\sigma_0^2 I)}
# = \frac{\exp\!\big(-\|x-e_w\|^2/2\sigma_0^2\big)}{\sum_{v=1}^{V}\exp\!\big(-\|x-e_v\|^2/2\sigma_0^2\big)}
# = \operatorname{softmax}_v\!\Big(\tfrac{-\|x-e_v\|^2}{\tau}\Big)_w,\qquad \tau = 2\sigma_0^2 ,
# $$
#
# because the Gaussians' normalising constants are equal and cancel. So the
# rounding logits are **negative squared distances to the embedding rows**
# (tied to $E$, no extra parameters), and over a caption
# $-\log p(w\mid x_0) = -\sum_i \log p(w_i\mid x_{0,i})$. Two things follow:
#
# * the most probable word is the **nearest row**, so reading a vector as a
#   word (rounding), the clamping trick of section 5 and the loss all agree;
# * $\mathbb E_q[-\log p(w\mid x_0)]$ is small when the rows are many
#   $\sigma_0$ apart and grows as they crowd together.
#
# Diffusion-LM's code reads words with a linear language-model head; with
# its weights tied to $E$ the logits are $x\cdot e_v$. Expanding the square,
# ours are $(2x\cdot e_v - \|e_v\|^2)/\tau$ plus a term that is the same
# for every $v$. The extra $-\|e_v\|^2$ is what makes the
# argmax the nearest row even when rows have different norms.
#
# Check: the library's rounding loss against Bayes' rule written with
# `torch.distributions.Normal`, at $\sigma_0$ and at a larger blur where the
# posterior is far from one-hot.

# %%
normal = torch.distributions.Normal
for s in (sigma0, 1.0):
    x = sample_x0(embed_tokens(ids[:8], E0), s, generator=torch.Generator().manual_seed(2))  # (8, L, D)
    log_lik = normal(E0[None, None], s).log_prob(x[:, :, None, :]).sum(-1)  # (8, L, V): log N(x_i; e_v, s^2 I)
    bayes = -(log_lik.gather(-1, ids[:8, :, None])[..., 0] - torch.logsumexp(log_lik, -1)).sum(-1)  # (8,)
    ours = rounding_nll(x, ids[:8], E0, temperature=default_temperature(s))  # (8,)
    print(f"blur {s}: -log p(w|x0) per caption, ours {ours[:3].numpy().round(4)}, Bayes {bayes[:3].numpy().round(4)}")
    assert torch.allclose(ours, bayes, rtol=1e-9, atol=1e-9)

# %% [markdown]
# **How far apart must two words be?** For two rows $e_a, e_b$ at distance
# $d$, $x = e_a + \sigma_0 z$ is rounded to $a$ exactly when the component
# of $\sigma_0 z$ along $e_b - e_a$ is below $d/2$; that component is
# $\mathcal N(0,\sigma_0^2)$, so
#
# $$
# P(\text{round back to } a) = \Phi\!\Big(\frac{d}{2\sigma_0}\Big).
# $$
#
# Rows $2\sigma_0$ apart come back right only 84 % of the time; $6\sigma_0$
# apart, 99.9 %. Sampling check:

# %%
for ratio in (1.0, 2.0, 4.0, 6.0):
    E2 = torch.zeros(2, d.embed_dim, dtype=torch.float64)
    E2[1, 0] = ratio * sigma0  # two rows at distance d = ratio * sigma0
    mc = roundtrip_accuracy(E2, sigma0, n_per_word=20_000, generator=torch.Generator().manual_seed(3))
    exact = normal(0.0, 1.0).cdf(torch.tensor(ratio / 2)).item()
    print(f"d = {ratio:.0f} sigma0: sampled {mc:.4f}, Phi(d / 2 sigma0) = {exact:.4f}")
    assert abs(mc - exact) < 0.01  # 40,000 draws: std error <= 0.0025

# %% [markdown]
# ## 3 · Why the rounding term is needed: collapse
#
# Diffusion-LM trains $E$ together with the denoiser. Apart from the
# rounding term, $E$ enters the loss only through $x_0$ in
# $\mathcal L_{\text{reg}}$, and that loss *rewards* embeddings that carry
# little signal. A one-line way to see it: take the best denoiser of the
# simplest form, $f(x_t) = k\,x_t$ per coordinate, on a coordinate of $x_0$
# with mean 0 and variance $s$. With $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$,
# minimising $\mathbb E(k x_t - x_0)^2$ over $k$ gives
#
# $$
# k^* = \frac{\sqrt{\bar\alpha_t}\, s}{\bar\alpha_t s + 1-\bar\alpha_t},\qquad
# \min_k \mathbb E(kx_t-x_0)^2 = \frac{s\,(1-\bar\alpha_t)}{\bar\alpha_t s + 1-\bar\alpha_t},\qquad
# \frac{\partial}{\partial s}\Big(\cdot\Big) = \frac{(1-\bar\alpha_t)^2}{(\bar\alpha_t s + 1 - \bar\alpha_t)^2} > 0 .
# $$
#
# The error grows with the spread $s$ of the embeddings at every $t$, and the
# prior term $\bar\alpha_T\|x_0\|^2$ grows with their norm. Gradient descent
# on $E$ therefore pulls the rows together and towards zero, down to
# $s \approx \sigma_0^2$ where the words can no longer be told apart
# (section 2). Nothing in $\mathcal L_{\text{reg}}$ resists; the rounding
# term does, because $-\log p(w\mid x_0)$ grows as the rows come within a
# few $\sigma_0$ of each other.
#
# Check of the closed form: fit $k$ by least squares on samples, at three
# steps of the course's schedule.

# %%
sched = make_schedule(d.schedule, d.timesteps)
g = torch.Generator().manual_seed(4)
for t in (1, d.timesteps // 10, d.timesteps // 2):
    ab = sched.alpha_bar[t].item()
    for s in (0.05, 1.0):
        x0c = math.sqrt(s) * torch.randn(200_000, generator=g, dtype=torch.float64)
        xt = q_sample(sched, x0c, t, generator=g)
        k_fit = (xt * x0c).sum() / (xt * xt).sum()
        err_fit = ((k_fit * xt - x0c) ** 2).mean().item()
        err_closed = s * (1 - ab) / (ab * s + 1 - ab)
        assert abs(err_fit - err_closed) < 0.02 * err_closed, (t, s, err_fit, err_closed)  # 200k draws: ~0.5 % error
    print(f"t={t:5d} abar={ab:.3f}: best linear error {err_closed:.4f} at s=1 vs "
          f"{0.05 * (1 - ab) / (ab * 0.05 + 1 - ab):.4f} at s=0.05")

# %% [markdown]
# ### The experiment
#
# A small text-only Diffusion-LM (`TextDiffusionTrainer`): a randomly
# initialised DistilBERT of two layers between an up- and a down-projection,
# told the timestep by a sinusoidal embedding, predicting $x_0$; the
# embedding table is learned jointly. Loss
# $\mathcal L_{\text{reg}} + \lambda\,\overline{-\log p(w\mid x_0)}$ (the
# rounding term averaged over positions). Every few steps the trainer logs
# the embedding norms, the mean and smallest pairwise distance between rows
# of the words that occur, and the **round-trip accuracy**: the fraction of
# $x_0\sim\mathcal N(e_w,\sigma_0^2 I)$ that round back to $w$ (1 means the
# words survive the embedding step, $1/V$ that the table has collapsed).
#
# Two starting points, each trained with and without the rounding term:
#
# * **A, Diffusion-LM's start**: $E \sim \mathcal N(0,1)$. The rows are
#   about $\sqrt{2D}$ apart (5.7 for $D=16$), more than fifty $\sigma_0$: the
#   rounding term is essentially 0 at first (users of Diffusion-LM report a
#   rounding loss "stuck at 0"), and the regression terms slowly shrink the
#   table. Whether it gets anywhere near collapse depends on how long we
#   train.
# * **B, a close start**: $E \sim \mathcal N(0, 0.1^2)$, rows a few
#   $\sigma_0$ apart: the end-game of the collapse, in a short run.
#
# Checkpoints are written atomically while training and named after the
# settings, so rerunning the notebook resumes (or reuses) them.

# %%
def make_trainer(tag, **overrides):
    """A trainer for cfg with `overrides`, resuming from its checkpoint if there is one."""
    run_cfg = cfg.replace({f"diffusion.{k}": v for k, v in overrides.items()})
    path = checkpoint_path(run_cfg, V, L, tag, data_tag)
    return TextDiffusionTrainer(run_cfg, V, L, ckpt_path=path, data_tag=data_tag)


def train_run(tag, steps, **overrides):
    t0 = time.perf_counter()
    trainer = make_trainer(tag, **overrides)
    resumed_at = trainer.step
    trainer.train(ids, steps, log_every=max(steps // 40, 5))
    secs = time.perf_counter() - t0
    print(f"{tag}: {steps} steps in {secs:.1f} s" + (f" (resumed at step {resumed_at})" if resumed_at else ""))
    return trainer


def curves(trainer, key):
    rows = [r for r in trainer.history if key in r]  # the row at step 0 has no loss terms yet
    return [r["step"] for r in rows], [r[key] for r in rows]


steps_a = d.train_steps
steps_b = max(60, d.train_steps // 5)
runs_a = {
    "A: no rounding": train_run("A_lam0", steps_a, rounding_weight=0.0, adaptive_rounding=False),
    f"A: lambda={ROUNDING_WEIGHT}" + (" adaptive" if ADAPTIVE else ""):
        train_run("A_main", steps_a),  # the notebook's main model (the parameters cell's settings)
}
runs_b = {
    "B: no rounding": train_run("B_lam0", steps_b, rounding_weight=0.0, adaptive_rounding=False,
                                embed_init_std=CLOSE_INIT_STD),
    f"B: lambda={ROUNDING_WEIGHT}": train_run("B_fixed", steps_b, adaptive_rounding=False,
                                              embed_init_std=CLOSE_INIT_STD),
    f"B: lambda={ROUNDING_WEIGHT} adaptive": train_run("B_adaptive", steps_b, adaptive_rounding=True,
                                                       embed_init_std=CLOSE_INIT_STD),
}
main = runs_a[list(runs_a)[1]]
print(f"training so far: {time.perf_counter() - t_start:.0f} s")


# %%
def plot_runs(runs, title):
    keys = [("mean_norm", "mean row norm"), ("mean_dist", "mean pairwise distance"),
            ("min_dist", "smallest pairwise distance"), ("roundtrip_acc", "round-trip accuracy at sigma0")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6))
    for ax, (key, label) in zip(axes, keys):
        for name, trainer in runs.items():
            ax.plot(*curves(trainer, key), label=name)
        ax.set(xlabel="training step", title=label)
        if key == "min_dist":
            ax.axhline(2 * sigma0, color="grey", ls=":", lw=1)
            ax.text(0, 2 * sigma0, " 2 sigma0", color="grey", fontsize=8, va="bottom")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


plot_runs(runs_a, f"A: embeddings start at N(0, {PAPER_INIT_STD}^2) (Diffusion-LM)")
plot_runs(runs_b, f"B: embeddings start at N(0, {CLOSE_INIT_STD}^2), a few sigma0 apart")


def summary(trainer):
    first, last = trainer.history[0], trainer.history[-1]
    return {k: (round(first[k], 4), round(last[k], 4)) for k in ("mean_norm", "mean_dist", "min_dist", "spread",
                                                                   "roundtrip_acc")}


for name, trainer in {**runs_a, **runs_b}.items():
    s = summary(trainer)
    print(f"{name:28s}", "  ".join(f"{k} {a} -> {b}" for k, (a, b) in s.items()))
    for k, (a, b) in s.items():
        log.add(f"{name} {k} start", a)
        log.add(f"{name} {k} end", b)

# %% [markdown]
# What to read in the plots:
#
# * **B without rounding** collapses: norms, distances and the round-trip
#   accuracy fall together; the rows end up closer than $2\sigma_0$ and the
#   embedding step destroys the words. **B with rounding** moves the other
#   way: the rows spread until they are several $\sigma_0$ apart and the
#   round trip is (nearly) perfect. The cell below asserts these directions.
# * **A** shows the same force acting from far away: without rounding the
#   table shrinks steadily. With the rounding term the two runs are
#   indistinguishable until the closest rows come within a few $\sigma_0$ of
#   each other; from then on the term holds the smallest distance while the
#   rest of the table keeps shrinking. How far A gets depends on the number
#   of steps: in the ci profile the runs are too short to see more than the
#   first percent of shrinking; in the laptop profile the smallest distance
#   falls by a factor of several (see the printed numbers). Diffusion-LM
#   itself trains for hundreds of thousands of steps, where the
#   slow drift has all the time it needs.

# %%
(b0, b1, b_ad) = (summary(t) for t in runs_b.values())
# B without rounding: collapse (distances and round trip fall)
assert b0["mean_dist"][1] < b0["mean_dist"][0] and b0["roundtrip_acc"][1] < b0["roundtrip_acc"][0], b0
# B with rounding (fixed lambda): the rows move apart and the round trip improves
if ROUNDING_WEIGHT > 0:
    assert b1["min_dist"][1] > b1["min_dist"][0] and b1["roundtrip_acc"][1] > b1["roundtrip_acc"][0], b1
    assert b1["roundtrip_acc"][1] > b0["roundtrip_acc"][1]
# A without rounding: the table shrinks from the start
a0, a1 = (summary(t) for t in runs_a.values())
assert a0["mean_norm"][1] < a0["mean_norm"][0] and a0["mean_dist"][1] < a0["mean_dist"][0], a0
rounding_a = [r.get("rounding", 0.0) for r in main.history[1:]]
print(f"A main run: rounding term first {rounding_a[0]:.2e}, largest {max(rounding_a):.2e}, last {rounding_a[-1]:.2e}")
if ROUNDING_WEIGHT > 0 and max(rounding_a) > 1e-4:
    # the run was long enough for the closest rows to meet the rounding term: it must have held them apart
    assert a1["min_dist"][1] > a0["min_dist"][1], (a0, a1)
    print(f"A: smallest distance at the end {a0['min_dist'][1]:.3f} without rounding, {a1['min_dist'][1]:.3f} with")
else:
    print("A: the rounding term never woke up in this run (too short for the rows to meet); "
          "the two A runs are the same up to rounding errors")
log.add("A main: rounding term at first log", rounding_a[0])
log.add("A main: largest rounding term", max(rounding_a))

# %% [markdown]
# ## 4 · The rounding weight and the adaptive ratio
#
# $\lambda$ sets how much the rounding term counts against
# $\mathcal L_{\text{reg}}$. The two have unrelated scales: the regression
# terms are squared distances, which shrink with the table, and the
# rounding term is a cross-entropy in nats that is $\approx 0$ for
# well-separated rows and $\log V$ for a collapsed table. A fixed
# $\lambda$ that balances them early can be far off later. The CLIP-DiffusionLM
# draft ends by mentioning an "adaptive ratio adjustment" that balances the
# rounding ("certainty") term against the others; the draft gives no formula,
# so here is the one the course uses (`clipdiff_mini.diffusion.text_diffusion`):
#
# $$
# m_k = \beta m_{k-1} + (1-\beta)\,\mathcal L_{\text{reg},k},\quad
# n_k = \beta n_{k-1} + (1-\beta)\,\mathcal L_{\text{round},k},\quad
# \lambda_{\text{eff},k} = \lambda\cdot\operatorname{clip}\!\Big(\frac{m_k}{n_k}, \tfrac{1}{100}, 100\Big),
# $$
#
# with $\beta = 0.9$, both running averages taken without gradient. Then
# $\lambda_{\text{eff}}\,\mathcal L_{\text{round}} \approx \lambda\,\mathcal L_{\text{reg}}$: the rounding term
# carries about $\lambda/(1+\lambda)$ of the loss, whatever the scales. The
# clip keeps the weight finite when the rounding loss is $\approx 0$.
#
# Below: $\lambda_{\text{eff}}$ and the share of the loss that the weighted rounding
# term carries, in the B runs.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for name, trainer in runs_b.items():
    if "no rounding" in name:
        continue
    axes[0].plot(*curves(trainer, "lambda_eff"), label=name)
    axes[1].plot(*curves(trainer, "rounding_share"), label=name)
axes[0].set(yscale="log", xlabel="training step", title="lambda_eff (averaged between log rows)")
if ROUNDING_WEIGHT > 0:
    axes[1].axhline(ROUNDING_WEIGHT / (1 + ROUNDING_WEIGHT), color="grey", ls=":", label="lambda / (1 + lambda)")
axes[1].set(xlabel="training step", title="share of the loss: lambda_eff L_round / L")
axes[0].legend(fontsize=8)
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

ad = runs_b[f"B: lambda={ROUNDING_WEIGHT} adaptive"].history[1:]
fx = runs_b[f"B: lambda={ROUNDING_WEIGHT}"].history[1:]
share_ad = float(np.median([r["rounding_share"] for r in ad]))
share_fx = float(np.median([r["rounding_share"] for r in fx]))
print(f"median share of the rounding term: fixed {share_fx:.3f}, adaptive {share_ad:.3f} "
      f"(target lambda/(1+lambda) = {ROUNDING_WEIGHT / (1 + ROUNDING_WEIGHT):.3f})")
print(f"lambda_eff of the adaptive run: first {ad[0]['lambda_eff']:.3g}, last {ad[-1]['lambda_eff']:.3g}")
log.add("B fixed: median rounding share", share_fx)
log.add("B adaptive: median rounding share", share_ad, target=ROUNDING_WEIGHT / (1 + ROUNDING_WEIGHT))
log.add("B adaptive: final lambda_eff", ad[-1]["lambda_eff"])

# %% [markdown]
# Reading it: with a fixed $\lambda$ the rounding term's share follows the
# rounding loss. It is large while the rows are within a few $\sigma_0$ of
# each other (then the term dominates the loss) and falls towards 0 once
# they are well separated (then it barely shapes the table until the rows
# drift back). The adaptive ratio pulls the share towards
# $\lambda/(1+\lambda)$ by moving $\lambda_{\text{eff}}$: down while the
# rounding loss is large, up when it is small, until the cap. It does not
# hit the target exactly: the running average lags behind a rounding loss
# that keeps falling, single batches' rounding losses are spiky (mostly ~0,
# now and then large), and once $\lambda_{\text{eff}}$ is at its cap the
# share falls like the fixed one's. The effect on the table is in the B
# plots above: the adaptive run pushes the rows further apart late in
# training, when the fixed weight has gone quiet. Whether that is better is
# a trade-off: rows far apart are easy to round but make the regression
# harder (section 3).

# %% [markdown]
# ## 5 · Rounding and the clamping trick at sampling time
#
# Sampling starts from $x_T\sim\mathcal N(0, I)$ and ends with a vector
# $x_0$; **rounding** reads it as words: $\hat w_i = \arg\max_v p(v\mid x_{0,i}) = \arg\min_v \|x_{0,i}-e_v\|$
# (`nearest_tokens`). The **clamping trick** of Diffusion-LM applies the same
# snap *inside* the sampler: at every step the predicted
# $\hat x_0 = f_\theta(x_t,t)$ is replaced by its nearest rows $E[\hat w]$
# (`clamp_to_embeddings`) before $x_{t-1}$ is computed, so each step
# commits to words and the next step denoises around real embeddings. The
# DDIM sampler of notebook 02 takes it as `clamp_fn`. Two properties we rely
# on, checked on the trained table: clamping returns rows of $E$, and
# clamping twice is clamping once.

# %%
E_main = main.model.E.detach()
x_any = 2 * torch.randn(64, L, E_main.shape[1], generator=torch.Generator().manual_seed(5))
c1 = clamp_to_embeddings(x_any, E_main)
assert torch.equal(clamp_to_embeddings(c1, E_main), c1)
assert exact_row_fraction(c1, E_main) == 1.0
d2 = torch.cdist(x_any.reshape(-1, E_main.shape[1]), E_main)  # brute force: distances to every row
assert torch.equal(nearest_tokens(x_any, E_main).reshape(-1), d2.argmin(-1))
print("clamping: returns rows of E, idempotent, and picks the nearest row")

# %%
def sample_report(trainer, clamp, seed=0):
    t0 = time.perf_counter()
    x0_s, out = trainer.sample(n_samples, clamp=clamp, generator=torch.Generator().manual_seed(seed))
    secs = time.perf_counter() - t0
    texts = decode_samples(out, tok)
    Em = trainer.model.E.detach()
    dist = torch.cdist(x0_s.reshape(-1, Em.shape[1]), Em).min(-1).values  # distance to the nearest row
    train_set = set(" ".join(tok.tokenize(c)) for c in captions)
    return texts, {
        "well-formed (parser)": float(np.mean([parse_caption(t).well_formed for t in texts])),
        "repeated-word rate": repeated_word_rate(texts),
        "x0 that are exact rows": exact_row_fraction(x0_s, Em),
        "mean distance to row / sigma0": dist.mean().item() / sigma0,
        "distinct samples": len(set(texts)) / len(texts),
        "copies of a training caption": float(np.mean([t in train_set for t in texts])),
        "mean length (words)": float(np.mean([len(t.split()) for t in texts])),
        "seconds": secs,
    }


texts_main, rep_main = sample_report(main, CLAMP)
print(f"{n_samples} samples, DDIM {d.sample_steps} steps, clamp={CLAMP}:")
for t in texts_main[:8]:
    print("  -", t)

# %%
reports, examples = {}, {}
for name, trainer in runs_a.items():
    for clamp in (False, True):
        key = f"{name}, clamp={clamp}"
        examples[key], reports[key] = sample_report(trainer, clamp)
metrics = list(next(iter(reports.values())))
columns = {key: f"{'no round' if 'no rounding' in key else 'round'}, {'clamp' if key.endswith('True') else 'free'}"
           for key in reports}
print(f"A models, {n_samples} samples each".ljust(32) + "".join(f"{c:>18s}" for c in columns.values()))
for m in metrics:
    print(f"{m:32s}" + "".join(f"{reports[key][m]:18.3f}" for key in reports))
for key, rep in reports.items():
    for m in metrics:
        log.add(f"samples {key}: {m}", round(rep[m], 4))
for key in reports:
    print(f"\n{key}:")
    for t in examples[key][:4]:
        print("  -", t)

for name in runs_a:
    assert reports[f"{name}, clamp=True"]["x0 that are exact rows"] == 1.0  # the last step returns a clamped x0
    assert reports[f"{name}, clamp=False"]["x0 that are exact rows"] < 1.0

# %% [markdown]
# What clamping changes, and what it does not:
#
# * with clamping every final vector *is* an embedding row (distance 0), so
#   rounding at the end is trivial; without it the final vectors lie
#   somewhere between rows and rounding has to decide;
# * the words come from the same model either way, so clamping cannot add
#   knowledge the denoiser lacks. With a small, briefly trained denoiser most
#   samples are not yet grammatical (compare the well-formed fraction with
#   the training captions, which are all well-formed); the table shows
#   whether clamping helps or hurts the grammar and the repetitions at this
#   size; the answer can differ between profiles, and we do not assert it.
#
# The numbers above are for one seed and a few hundred samples at most; a
# difference of a few percent between the two columns is within noise.

# %% [markdown]
# ## Exercises
#
# Each exercise is a markdown cell with the question and a code cell below
# it. Replace the `None` placeholders with your answer and run the cell: it
# checks your answer against a computation from this notebook (it prints
# "not attempted yet" while a placeholder is left). None of them trains a
# model. Worked answers are in
# `notebooks/solutions/03_embeddings_and_rounding_solutions.ipynb`.

# %% [markdown]
# **Exercise 3.1** (derive and check). Section 2 showed that a blurred word
# $x = e_a + \sigma_0 z$ rounds back to $a$ with probability $\Phi(d/2\sigma_0)$
# when the only other row is at distance $d$. How far apart, in units of
# $\sigma_0$, must the two rows be for the round trip to succeed 99 % of the
# time? Compute the ratio $d/\sigma_0$ (the standard normal's quantile
# function is `normal(0.0, 1.0).icdf`) and check it by sampling, as in section 2.

# %%
ratio_99 = None  # your value of d / sigma0
if ratio_99 is None:
    print("Exercise 3.1: not attempted yet")
else:
    E2 = torch.zeros(2, d.embed_dim, dtype=torch.float64)
    E2[1, 0] = float(ratio_99) * sigma0  # two rows at distance ratio_99 * sigma0
    mc = roundtrip_accuracy(E2, sigma0, n_per_word=50_000, generator=torch.Generator().manual_seed(6))
    print(f"d = {float(ratio_99):.3f} sigma0: sampled round-trip accuracy {mc:.4f}")
    se = math.sqrt(0.99 * 0.01 / 100_000)  # the standard error of 100,000 draws
    assert abs(mc - 0.99) < 5 * se, "the sampled accuracy is not 0.99 (within five standard errors)"
    print("Exercise 3.1: correct")

# %% [markdown]
# **Exercise 3.2** (predict, then derive). Section 3 showed that without the
# rounding term the table drifts together. Suppose it collapses completely:
# every row of $E$ is the same vector. Predict what the rounding term
# $-\log p(w\mid x_0)$ of one caption does in that limit: does it go to 0,
# to a finite value, or grow without bound? Derive its value (it depends on
# $V$ and $L$ only) and check it with `rounding_nll` on tables shrunk
# towards one point.

# %%
behaviour = None  # "zero", "finite" or "infinite"
limit = None  # your value of -log p(w | x0) for one caption of L positions when all rows are equal
if behaviour is None or limit is None:
    print("Exercise 3.2: not attempted yet")
else:
    for c in (1.0, 0.1, 0.01, 0.0):
        E_c = E0[:1] + c * (E0 - E0[:1])  # (V, D) the table shrunk towards its first row by the factor c
        x_c = sample_x0(embed_tokens(ids[:8], E_c), sigma0, generator=torch.Generator().manual_seed(7))
        nll_c = rounding_nll(x_c, ids[:8], E_c, temperature=tau)  # (8,)
        print(f"rows shrunk by {c:5.2f}: rounding term per caption {nll_c.mean():.4f}")
    assert behaviour == "finite", "look at the printed values as the factor goes to 0"
    assert torch.allclose(nll_c, torch.full_like(nll_c, float(limit)), rtol=1e-9), "the derived limit is off"
    print("Exercise 3.2: correct")

# %% [markdown]
# **Exercise 3.3** (implement). Section 2 noted that the rounding logits
# $-\lVert x - e_v\rVert^2/\tau$ can be replaced by $(2\,x\cdot e_v - \lVert e_v\rVert^2)/\tau$, a
# linear head tied to $E$ plus a bias, because the two differ by a term that
# is the same for every $v$. Implement the rounding term of a batch of
# captions with these logits (matrix products only, no distances), and check
# it against Bayes' rule written with `torch.distributions.Normal`, as in
# section 2, at the blur $1.0$ where the posterior is far from one-hot.

# %%
def rounding_nll_dot(x, ids_, E, tau_):
    """-log p(w | x) per caption from the logits (2 x.e_v - |e_v|^2) / tau_; x (B, L, D), ids_ (B, L) -> (B,)."""
    return None  # your code


blur = 1.0
x_b = sample_x0(embed_tokens(ids[:8], E0), blur, generator=torch.Generator().manual_seed(8))  # (8, L, D)
if rounding_nll_dot(x_b, ids[:8], E0, default_temperature(blur)) is None:
    print("Exercise 3.3: not attempted yet")
else:
    log_lik_b = normal(E0[None, None], blur).log_prob(x_b[:, :, None, :]).sum(-1)  # (8, L, V)
    bayes_b = -(log_lik_b.gather(-1, ids[:8, :, None])[..., 0] - torch.logsumexp(log_lik_b, -1)).sum(-1)  # (8,)
    ours_b = rounding_nll_dot(x_b, ids[:8], E0, default_temperature(blur))
    print(f"per caption: yours {ours_b[:3].numpy().round(4)}, Bayes {bayes_b[:3].numpy().round(4)}")
    assert torch.allclose(ours_b, bayes_b, rtol=1e-9, atol=1e-9)
    print("Exercise 3.3: correct")

# %% [markdown]
# ## Summary
#
# * Diffusion-LM turns words into points with a learned table and an
#   embedding step $x_0\sim\mathcal N(\mathrm{EMB}(w),\sigma_0^2 I)$, and back
#   with a rounding step. Taking $p(w\mid x_0)$ to be the posterior of the
#   embedding step gives a softmax over negative squared distances with
#   temperature $2\sigma_0^2$; its argmax is the nearest row.
# * The regression terms alone reward a table with little spread, so learned
#   embeddings drift together (collapse); the rounding term is what keeps
#   words several $\sigma_0$ apart. From Diffusion-LM's initial scale the
#   drift is slow and the rounding term looks "stuck at 0" for a long time.
# * The rounding weight and its adaptive version decide how hard the rows
#   are pushed apart.
# * Clamping snaps each intermediate prediction to real words; it changes
#   where the samples end, not what the model knows.
#
# Things to try: `ROUNDING_WEIGHT = 0` (then section 3's assertions about the
# rounding runs are skipped), `ADAPTIVE = True` for the main model, a
# larger `diffusion.sigma0`, `CLOSE_INIT_STD = 0.3`, or a wider denoiser
# (`"diffusion.denoiser_width": 128` in the `get_config` overrides; about
# twice the time) for better samples.

# %%
total = time.perf_counter() - t_start
print(f"notebook time {total:.0f} s; {len(log.entries)} numbers logged to {log.path.name}")
log.add("notebook seconds", round(total, 1))
