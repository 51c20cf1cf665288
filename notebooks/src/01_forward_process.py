# %% [markdown]
# # 01 · The forward process: how diffusion destroys data
#
# A diffusion model learns to generate data by learning to *undo* a fixed,
# simple process that turns data into noise. This notebook studies that
# fixed process, the **forward process** of DDPM (Ho et al., 2020), on its
# own: nothing is trained here.
#
# 1. One step adds a little Gaussian noise and shrinks the signal a little.
# 2. Many steps compose into one Gaussian, $q(x_t \mid x_0)$, which we derive
#    with the reparameterisation trick and check against the step-by-step chain.
# 3. A **noise schedule** says how fast the noise grows. We compare the three
#    used by the papers this course follows: linear (DDPM), cosine (improved
#    DDPM) and sqrt (Diffusion-LM).
# 4. Finally we noise *caption embeddings* and watch the words disappear,
#    which explains why Diffusion-LM chose the sqrt schedule for text.
#
# Conventions used throughout the course: steps are $t = 1, \dots, T$, index
# $t = 0$ is the clean data, and every schedule tensor has length $T + 1$
# with $\bar\alpha_0 = 1$ (the library is `clipdiff_mini.diffusion.noise_schedules` and
# `clipdiff_mini.diffusion.gaussian_diffusion`).

# %% [markdown]
# After this notebook you can:
#
# * write one step of the forward process and explain why it shrinks the
#   signal by $\sqrt{1-\beta_t}$ (the variance-preserving process);
# * derive $q(x_t\mid x_0)$ by induction with the reparameterisation trick,
#   and the covariance of two points of one trajectory, and check both against
#   a simulated chain;
# * compute $\bar\alpha_t$ and the signal-to-noise ratio of the linear,
#   cosine and sqrt schedules, and say where along the chain each one removes
#   the signal;
# * measure how many words survive when caption embeddings are noised, and
#   explain why Diffusion-LM uses the sqrt schedule for text.

# %%
import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.data import build_tokenizer, load_split
from clipdiff_mini.diffusion import (SCHEDULES, make_schedule, nearest_tokens, q_mean_variance, q_sample,
                                     q_step, rounding_recovery)
from clipdiff_mini.course.results import ResultLog
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
SCHEDULE = "sqrt"  # schedule of the chain experiment: "linear" | "cosine" | "sqrt"
TIMESTEPS = None  # number of diffusion steps T; None: the profile's (200 in ci, 2000 otherwise)
EMBED_DIM = None  # size of the word embeddings in the last part; None: the profile's (16)

# %%
cfg = get_config(PROFILE, {"diffusion.schedule": SCHEDULE, "diffusion.timesteps": TIMESTEPS,
                           "diffusion.embed_dim": EMBED_DIM})  # None keeps the profile's value
set_seed(cfg.seed)
# Everything here works on small tensors, where a second CPU thread costs more
# in start-up than it saves (on a busy 2-core machine, ten times more).
torch.set_num_threads(1)
log = ResultLog(cfg, "01_forward_process")
T, N = cfg.diffusion.timesteps, cfg.diffusion.mc_samples
gen = torch.Generator().manual_seed(cfg.seed)
t_start = time.perf_counter()
print(f"profile {cfg.profile}: T = {T} steps, {N} Monte Carlo samples per check")

# %% [markdown]
# ## 1. One step of noise
#
# The forward process is a Markov chain $x_0 \to x_1 \to \dots \to x_T$.
# Each step draws
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\!\left(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\right),$$
#
# with a small variance $\beta_t \in (0, 1)$ chosen in advance (the
# *schedule*). Writing $\alpha_t = 1 - \beta_t$ and drawing
# $\varepsilon_t \sim \mathcal N(0, I)$, the same step reads
#
# $$x_t = \sqrt{\alpha_t}\, x_{t-1} + \sqrt{1-\alpha_t}\, \varepsilon_t .$$
#
# Why shrink by $\sqrt{1-\beta_t}$ instead of only adding noise? Because then
# the step keeps the variance fixed: if $x_{t-1}$ has variance 1 per
# coordinate, $x_t$ has variance $\alpha_t \cdot 1 + (1 - \alpha_t) = 1$. The
# signal fades while the noise grows, and the scale never blows up. (This is
# called the *variance-preserving* process.)
#
# **Check.** Take data with variance 1 that is far from Gaussian (uniform on
# $[-\sqrt3, \sqrt3]$), apply one step with a large $\beta$, and compare the
# variance before and after. Tolerance: five standard errors of the sample
# variance, $5\sqrt{\operatorname{Var}[(x-\bar x)^2]/N}$.

# %%
sched = make_schedule(cfg.diffusion.schedule, T)
x_uniform = (torch.rand(N, 4, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(3)  # (N, 4), var 1
t_big = int(torch.argmin((sched.betas[1:] - 0.3).abs())) + 1  # a step with beta near 0.3, if the schedule has one
x_next = q_step(sched, x_uniform, t_big, generator=gen)
for name, x in (("before", x_uniform), ("after", x_next)):
    se = float(((x - x.mean(0)) ** 2).std(0).max()) / math.sqrt(N)
    print(f"{name:6s} the step (beta_{t_big} = {float(sched.betas[t_big]):.3f}): "
          f"per-coordinate variance {x.var(0).numpy().round(4)}, tolerance {5 * se:.4f}")
    assert torch.allclose(x.var(0), torch.ones(4, dtype=torch.float64), atol=5 * se)

# %% [markdown]
# ## 2. Many steps in one: $q(x_t \mid x_0)$
#
# Training needs $x_t$ for a random $t$, and running $t$ steps of the chain
# every time would be slow. It is not needed: the composition of Gaussian
# steps is Gaussian, with a mean and variance we can compute once.
#
# **Derivation (reparameterisation trick).** Write each step with its own
# fresh noise, $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{1-\alpha_t}\,\varepsilon_t$,
# and let $\bar\alpha_t = \prod_{s=1}^{t} \alpha_s$ (so $\bar\alpha_0 = 1$).
# We show by induction on $t$ that
#
# $$x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\;\bar\varepsilon_t,
# \qquad \bar\varepsilon_t \sim \mathcal N(0, I) \text{ independent of } x_0 .$$
#
# *Base case* $t = 1$: this is the step itself, since $\bar\alpha_1 = \alpha_1$.
#
# *Induction step.* Suppose it holds for $t - 1$. Substitute it into the step:
#
# $$x_t = \sqrt{\alpha_t}\left(\sqrt{\bar\alpha_{t-1}}\,x_0 + \sqrt{1-\bar\alpha_{t-1}}\;\bar\varepsilon_{t-1}\right) + \sqrt{1-\alpha_t}\;\varepsilon_t
# = \sqrt{\bar\alpha_t}\,x_0 + \underbrace{\sqrt{\alpha_t - \bar\alpha_t}\;\bar\varepsilon_{t-1} + \sqrt{1-\alpha_t}\;\varepsilon_t}_{\text{noise}} .$$
#
# The two noise terms are independent zero-mean Gaussians ($\varepsilon_t$ is
# fresh, $\bar\varepsilon_{t-1}$ depends only on earlier steps), and a sum of
# independent Gaussians is Gaussian with the variances added:
# $(\alpha_t - \bar\alpha_t) + (1 - \alpha_t) = 1 - \bar\alpha_t$. So the noise
# equals $\sqrt{1-\bar\alpha_t}\;\bar\varepsilon_t$ in distribution, with
# $\bar\varepsilon_t \sim \mathcal N(0, I)$ independent of $x_0$. $\square$
#
# In distribution form (DDPM eq. 4):
#
# $$q(x_t \mid x_0) = \mathcal N\!\left(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\, I\right).$$
#
# The same argument from step $s$ instead of step 0 gives
# $x_t = \sqrt{\bar\alpha_t/\bar\alpha_s}\,x_s + (\text{noise independent of } x_s)$,
# so two points of one trajectory are correlated:
# $\operatorname{Cov}(x_s, x_t \mid x_0) = \sqrt{\bar\alpha_t/\bar\alpha_s}\,(1-\bar\alpha_s)$ for $s < t$.
#
# **Check.** Run the chain step by step $N$ times from four fixed starting
# values and compare, at several $t$, the sample mean, variance and the
# covariance between two times with the closed forms. Tolerance: 5 standard
# errors of each estimate (for the variance, $\sigma^2\sqrt{2/(N-1)}$).

# %%
x0 = torch.tensor([-2.0, -0.5, 1.0, 3.0], dtype=torch.float64)  # four starting values, one per column
checkpoints = sorted({1, T // 20, T // 4, T // 2, 3 * T // 4, T})
x = x0.expand(N, 4).clone()  # (N, 4)
saved = {0: x.clone()}
t0 = time.perf_counter()
for t in range(1, T + 1):
    x = q_step(sched, x, t, generator=gen)  # one step of q(x_t | x_{t-1})
    if t in checkpoints:
        saved[t] = x.clone()
print(f"{N} chains x {T} steps in {time.perf_counter() - t0:.2f} s")

worst = 0.0
print("   t   alphabar_t | mean: chain vs closed form (col 4) | var: chain vs closed form")
for t in checkpoints:
    mean, var, _ = q_mean_variance(sched, x0, t)  # closed form
    emp_mean, emp_var = saved[t].mean(0), saved[t].var(0)
    z_mean = ((emp_mean - mean).abs() / torch.sqrt(var / N)).max()
    z_var = ((emp_var - var).abs() / (var * math.sqrt(2 / (N - 1)))).max()
    worst = max(worst, float(z_mean), float(z_var))
    print(f"{t:5d}  {float(sched.alpha_bar[t]):.5f}  | {float(emp_mean[3]):+.4f} vs {float(mean[3]):+.4f}"
          f"            | {float(emp_var[3]):.4f} vs {float(var):.4f}")
    assert z_mean < 5 and z_var < 5, (t, float(z_mean), float(z_var))
s_, t_ = T // 4, T // 2  # covariance between two times of the same trajectories
cov = ((saved[s_] - saved[s_].mean(0)) * (saved[t_] - saved[t_].mean(0))).mean(0)
ab = sched.alpha_bar
cov_closed = math.sqrt(float(ab[t_] / ab[s_])) * (1 - float(ab[s_]))
prod = (saved[s_] - saved[s_].mean(0)) * (saved[t_] - saved[t_].mean(0))
se_cov = float(prod.std(0).max()) / math.sqrt(N)
print(f"Cov(x_{s_}, x_{t_}): chain {cov.numpy().round(4)}, closed form {cov_closed:.4f} (tolerance {5 * se_cov:.4f})")
assert torch.allclose(cov, torch.full_like(cov, cov_closed), atol=5 * se_cov)
log.add("chain vs closed form: largest deviation (standard errors)", round(worst, 2), tolerance=5)

# %% [markdown]
# The closed form also says the *shape* of $q(x_t\mid x_0)$ is Gaussian, not
# only its first two moments. The histograms of the chain at three times,
# against the closed-form density, and twenty single trajectories against
# the band $\sqrt{\bar\alpha_t}\,x_0 \pm 2\sqrt{1-\bar\alpha_t}$:

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
ts = np.arange(T + 1)
paths = [x0[3].expand(20).clone()]  # 20 trajectories from the 4th starting value
for t in range(1, T + 1):
    paths.append(q_step(sched, paths[-1], t, generator=gen))
few = torch.stack(paths)  # (T+1, 20)
m_band = np.sqrt(ab.numpy()) * float(x0[3])
sd_band = np.sqrt(1 - ab.numpy())
axes[0].plot(ts, few.numpy(), lw=0.6, alpha=0.7)
axes[0].plot(ts, m_band, "k", lw=2, label=r"$\sqrt{\bar\alpha_t}\,x_0$")
axes[0].fill_between(ts, m_band - 2 * sd_band, m_band + 2 * sd_band, color="k", alpha=0.12, label="± 2 sd")
axes[0].set(xlabel="t", ylabel="$x_t$", title=f"20 trajectories from $x_0$ = {float(x0[3]):g} ({sched.name} schedule)")
axes[0].legend()
grid = torch.linspace(-4, 5, 400, dtype=torch.float64)
for t, c in zip((T // 20, T // 4, T // 2), ("C0", "C1", "C2")):
    mean, var, _ = q_mean_variance(sched, x0[3:], t)
    axes[1].hist(saved[t][:, 3].numpy(), bins=60, density=True, alpha=0.35, color=c, label=f"chain, t = {t}")
    dens = torch.exp(-(grid - mean) ** 2 / (2 * var)) / torch.sqrt(2 * math.pi * var)
    axes[1].plot(grid.numpy(), dens.numpy(), color=c, lw=2)
axes[1].set(xlabel="$x_t$", ylabel="density", title="chain histograms vs closed-form $q(x_t|x_0)$ (lines)")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Three noise schedules
#
# All that matters about a schedule, for $q(x_t \mid x_0)$, is the curve
# $\bar\alpha_t$: the fraction of signal *power* left at step $t$. Its
# signal-to-noise ratio is $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$.
# The papers we follow use three:
#
# * **linear** (DDPM): $\beta_t$ grows linearly from $10^{-4}$ to $0.02$ for
#   $T = 1000$. For other $T$ both ends are multiplied by $1000/T$, which keeps
#   $\sum_t \beta_t$, and so $\bar\alpha_T \approx e^{-\sum_t\beta_t}$, about the same.
# * **cosine** (improved DDPM): $\bar\alpha_t = f(t)/f(0)$ with
#   $f(t) = \cos^2\!\left(\frac{\pi}{2}\,\frac{t/T + s}{1 + s}\right)$, $s = 0.008$.
#   The small offset $s$ keeps $\beta_1$ from being vanishingly small. Since
#   $f(T) = 0$ the last step would have $\beta_T = 1$; betas are clipped at
#   $0.999$.
# * **sqrt** (Diffusion-LM): $\bar\alpha_t = 1 - \sqrt{t/T + s}$ with $s = 10^{-4}$,
#   betas again clipped at $0.999$ (the formula is slightly negative at $t = T$).
#   The library builds the betas from ratios of consecutive values, as the
#   released code does, so the stored $\bar\alpha_t$ is this formula divided by
#   its value at $t = 0$ ($0.99$): $\bar\alpha_0 = 1$ exactly.
#
# For cosine and sqrt, $\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}$.
#
# **Check.** The library's schedules against the formulas above, evaluated
# here independently (relative tolerance $10^{-9}$, only float64 rounding).

# %%
scheds = {name: make_schedule(name, T) for name in SCHEDULES}
f_cos = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
f_sqrt = [1 - math.sqrt(t / T + 1e-4) for t in range(T + 1)]
scale = 1000 / T
assert math.isclose(float(scheds["linear"].betas[1]), 1e-4 * scale, rel_tol=1e-9)
assert math.isclose(float(scheds["linear"].betas[T]), min(0.02 * scale, 0.999), rel_tol=1e-9)
for t in range(1, T):  # every step before the (clipped) last one
    assert math.isclose(float(scheds["cosine"].alpha_bar[t]), f_cos[t] / f_cos[0], rel_tol=1e-9)
    assert math.isclose(float(scheds["sqrt"].alpha_bar[t]), f_sqrt[t] / f_sqrt[0], rel_tol=1e-9)
for name, s in scheds.items():
    assert bool((s.betas[1:] <= 0.999).all()) and bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())
    assert float(s.alpha_bar[T]) < 1e-4, "x_T should be (almost) pure noise"
    print(f"{name:6s}: beta_1 = {float(s.betas[1]):.2e}, beta_T = {float(s.betas[T]):.3f}, "
          f"alphabar_T = {float(s.alpha_bar[T]):.2e}, SNR(1) = {float(s.snr[1]):.3g}")
    log.add(f"{name}: alphabar_T", float(s.alpha_bar[T]))
    log.add(f"{name}: SNR at t=1", round(float(s.snr[1]), 2))
print("all three schedules match their formulas")

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4))
u = np.arange(T + 1) / T
for name, s in scheds.items():
    axes[0].plot(u, s.alpha_bar.numpy(), label=name)
    axes[1].plot(u[1:], s.snr[1:].numpy(), label=name)
    axes[2].plot(u[1:], s.betas[1:].numpy(), label=name)
axes[0].set(xlabel="t / T", ylabel=r"$\bar\alpha_t$", title="signal kept")
axes[1].set(xlabel="t / T", ylabel="SNR(t)", yscale="log", title=r"signal-to-noise ratio $\bar\alpha_t/(1-\bar\alpha_t)$")
axes[1].axhline(1, color="grey", lw=0.8, ls="--")
axes[2].set(xlabel="t / T", ylabel=r"$\beta_t$", yscale="log", title="per-step noise variance")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# What the plots show:
#
# * **linear** destroys the signal early: $\bar\alpha_t$ is tiny over the last
#   third of the chain, so those steps all look like pure noise and teach a
#   model little.
# * **cosine** was designed to fix that: $\log\mathrm{SNR}$ falls almost
#   linearly over most of the chain, so noise levels are spread evenly.
# * **sqrt** is different at the *start*: its SNR at $t = 1$ is in the tens
#   (67 for $T = 2000$), against thousands or tens of thousands for the other
#   two. Its very first steps
#   already add a lot of noise, after which the noise grows more slowly.
#   The next section shows why that matters for text.
#
# The end point matters too: the reverse process starts from $\mathcal N(0, I)$
# instead of $q(x_T\mid x_0)$, which is only right if $\bar\alpha_T \approx 0$;
# all three reach $\bar\alpha_T < 10^{-4}$.

# %% [markdown]
# ## 4. Noise on caption embeddings
#
# Diffusion-LM, and CLIP-DiffusionLM after it, diffuse *word embeddings*: a
# caption of $L$ tokens becomes $L$ vectors $x_0 = \mathrm{EMB}(w) \in \mathbb R^{L\times D}$
# and the forward process noises them like any other data. (Notebook 03 makes
# the embedding learnable; here it is a fixed random table, as at the start of
# training: entries drawn from $\mathcal N(0, 1)$, the Diffusion-LM initialisation.)
#
# How much of the caption survives at step $t$? A simple measure is whether
# each noisy vector still points to its word. Given $x_t$, the word whose
# embedding $e_v$ makes $x_t$ most likely under $q(x_t \mid x_0 = e_v)$ maximises
# $-\lVert x_t - \sqrt{\bar\alpha_t}\,e_v\rVert^2$, and since
# $\lVert x_t - \sqrt{\bar\alpha_t}\,e_v\rVert = \sqrt{\bar\alpha_t}\,\lVert x_t/\sqrt{\bar\alpha_t} - e_v\rVert$,
# it is the **nearest embedding to the rescaled vector** $x_t/\sqrt{\bar\alpha_t}$.
# (Rounding $x_t$ itself, without the rescaling, would be biased towards
# embeddings of small norm.)
#
# **Check** of this identity: the three forms pick the same word for every
# noisy vector (exact agreement; ties have probability zero).
#
# The captions are the training captions of the embedded dataset, turned into
# word ids by the course's word tokenizer; we sample $N$ word occurrences from
# them (special tokens left out), so frequent words count more. The table also
# has rows for the special tokens (`[PAD]`, `[UNK]`, ...), and a noisy vector
# may land nearest to one of those: that counts as a miss.

# %%
t0 = time.perf_counter()
train = load_split(cfg, "train", progress=False)
tok = build_tokenizer(cfg, train)
ids = tok.batch_encode(train.captions(), cfg.data.max_caption_len)  # (n_captions, L) padded
specials = torch.tensor(sorted(tok.special_ids.values()))
word_ids = ids[~torch.isin(ids, specials)]  # every word occurrence, flattened
E = torch.randn(tok.vocab_size, cfg.diffusion.embed_dim, generator=gen)  # (V, D) random embedding table
w = word_ids[torch.randint(len(word_ids), (N,), generator=gen)]  # (N,) sampled word occurrences
x0_words = E[w]  # (N, D)
counts = torch.bincount(word_ids, minlength=tok.vocab_size)
majority = float(counts.max() / counts.sum())
print(f"{len(train)} training images, {len(ids)} captions, vocabulary {tok.vocab_size} "
      f"(D = {cfg.diffusion.embed_dim}); loaded in {time.perf_counter() - t0:.1f} s")
print(f"most frequent word {tok.itos[int(counts.argmax())]!r}: {majority:.1%} of word occurrences "
      "(accuracy of always guessing it)")

t = T // 4
s = scheds["sqrt"]
xt = q_sample(s, x0_words, t, generator=gen)
a = float(s.alpha_bar[t])
by_rescaled = nearest_tokens(xt / math.sqrt(a), E)
by_scaled_table = nearest_tokens(xt, math.sqrt(a) * E)
loglik = -((xt[:, None, :] - math.sqrt(a) * E[None]) ** 2).sum(-1) / (2 * (1 - a))  # (N, V) log q(x_t|e_v) + const
by_likelihood = loglik.argmax(-1)
assert torch.equal(by_rescaled, by_scaled_table) and torch.equal(by_rescaled, by_likelihood)
print(f"t = {t}: the three rules agree on all {N} vectors; "
      f"accuracy {float((by_rescaled == w).float().mean()):.3f} (rescaled nearest neighbour)")

# %%
t_grid = sorted({max(1, round(v * T)) for v in np.linspace(0, 1, 41)})
acc = {}
t0 = time.perf_counter()
for name, s in scheds.items():  # rounding x_t alone, the rescaled nearest neighbour above, at every t
    acc[name] = rounding_recovery(s, w, E, t_grid, generator=gen)
print(f"accuracy curves in {time.perf_counter() - t0:.1f} s")

u_grid = np.array(t_grid) / T
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for name in scheds:
    axes[0].plot(u_grid, acc[name], "o-", ms=3, label=name)
    axes[1].plot(u_grid, acc[name], "o-", ms=3, label=name)
for ax in axes:
    ax.axhline(majority, color="grey", ls="--", lw=0.8, label="guess the most frequent word")
    ax.set(xlabel="t / T", ylabel="nearest-word accuracy")
    ax.legend()
axes[0].set_title(f"words recovered from noisy embeddings (D = {cfg.diffusion.embed_dim})")
axes[1].set(xlim=(0, 0.3), ylim=(0.8, 1.005), title="zoom on the first 30% of the chain")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same in words: one training caption, each word replaced by the nearest
# word to its noisy vector, at a few points of the chain.

# %%
caption = train.captions()[0]
cap_ids = torch.tensor(tok.encode(caption, add_special=False))
cap_x0 = E[cap_ids]  # (L, D)
print(f"{'':14s}{caption}")
for name, s in scheds.items():
    for frac in (0.1, 0.3, 0.5):
        t = max(1, round(frac * T))
        xt = q_sample(s, cap_x0, t, generator=gen)
        noisy = nearest_tokens(xt / math.sqrt(float(s.alpha_bar[t])), E)
        print(f"{name:6s} t/T={frac:.1f}  {tok.decode(noisy.tolist())}")

# %% [markdown]
# ### Why Diffusion-LM uses the sqrt schedule
#
# With the linear and cosine schedules the first part of the chain barely
# touches the words: every noisy vector is still nearest to its own word for
# the first fifth to third of the steps. For a denoiser those steps are
# trivial (return the nearest embedding, or nearly $x_t$ itself) and the
# training loss on them is close to zero. A model trained on uniformly drawn
# $t$ spends a large share of its updates on steps that teach it nothing.
#
# Images are different: there, low-noise steps still have fine detail to
# restore. A word embedding has no fine detail: once the noise is small
# compared with the distance between embeddings, the word is known exactly.
#
# The sqrt schedule raises the noise sharply from the very first step, so
# words start to become ambiguous early, and then raises it more slowly, so
# the accuracy declines steadily over the whole chain instead of staying at
# 100% and then collapsing. In the numbers below, "easy" steps are those where
# more than 99% of the words are still recovered by nearest-neighbour rounding.
#
# **Check** of the claim: the sqrt schedule has the smallest fraction of such
# steps of the three, measured on the accuracy curves above (grid of
# $t/T$ = 0, 0.025, ..., 1).

# %%
easy = {name: float(np.mean(np.array(acc[name]) > 0.99)) for name in scheds}
for name in scheds:
    at = {f: acc[name][int(np.argmin(np.abs(u_grid - f)))] for f in (0.1, 0.25, 0.5)}
    print(f"{name:6s}: easy steps {easy[name]:.0%}; accuracy at t/T = 0.1: {at[0.1]:.3f}, "
          f"0.25: {at[0.25]:.3f}, 0.5: {at[0.5]:.3f}")
    log.add(f"{name}: fraction of steps with >99% words recovered", round(easy[name], 3))
    for f, v in at.items():
        log.add(f"{name}: nearest-word accuracy at t/T={f}", round(v, 3))
assert easy["sqrt"] < min(easy["linear"], easy["cosine"]), easy

# %% [markdown]
# How strong the effect is depends on how far apart the embeddings are
# compared with the noise: try `EMBED_DIM = 4` or `64` in the parameters cell
# (random embeddings in more dimensions are further apart, so all curves move
# right). In Diffusion-LM the embeddings are learned, and the rounding loss
# of notebook 03 keeps them apart.

# %% [markdown]
# ## Exercises
#
# Each exercise is a markdown cell with the question and a code cell below
# it. Replace the `None` placeholders with your answer and run the cell: it
# checks your answer against a computation from this notebook (it prints
# "not attempted yet" while a placeholder is left). Worked answers are in
# `notebooks/solutions/01_forward_process_solutions.ipynb`.

# %% [markdown]
# **Exercise 1.1** (predict, then derive). Section 1 applied one step with
# $\beta = \beta_{t_\text{big}}$ to data of variance 1, and the variance stayed 1.
# Now apply the same step to data of variance 4 (uniform, twice as wide). Will the
# per-coordinate variance go up or down? Derive its value after the step as
# a function of $\beta$, and check it against a simulation with `q_step`.

# %%
prediction = None  # "up" or "down"
var_after = None  # your formula for the variance after the step, e.g. using float(sched.betas[t_big])
if prediction is None or var_after is None:
    print("Exercise 1.1: not attempted yet")
else:
    n_big = 200_000  # more draws than N, so that the check tells close formulas apart
    x_two = (torch.rand(n_big, 4, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(12)  # variance 4
    x_four = q_step(sched, x_two, t_big, generator=gen)  # (n_big, 4)
    emp = x_four.var(0)
    se = float(((x_four - x_four.mean(0)) ** 2).std(0).max()) / math.sqrt(n_big)
    print(f"simulated variance after the step {emp.numpy().round(4)}, your value {float(var_after):.4f}")
    assert prediction == "down", "look again at the sign of the change: the step pulls the variance towards 1"
    assert torch.allclose(emp, torch.full_like(emp, float(var_after)), atol=5 * se), "the derived variance is off"
    print("Exercise 1.1: correct")

# %% [markdown]
# **Exercise 1.2** (derive and check). Section 2 gave the covariance of two
# points of one trajectory, $\operatorname{Cov}(x_s, x_t\mid x_0)$ for $s < t$.
# Derive their *correlation* $\operatorname{Cov}/\sqrt{\operatorname{Var}(x_s)\operatorname{Var}(x_t)}$
# and write it with the signal-to-noise ratio $\mathrm{SNR}(t) = \bar\alpha_t/(1-\bar\alpha_t)$
# only. Implement it and compare with the sample correlation of the chains
# simulated in section 2 (`saved`).

# %%
def trajectory_correlation(s, t):
    """Correlation of x_s and x_t (s < t) on one trajectory of the forward process, from `sched`."""
    return None  # your formula


if trajectory_correlation(1, 2) is None:
    print("Exercise 1.2: not attempted yet")
else:
    for s_, t_ in ((T // 20, T // 4), (T // 4, T // 2), (T // 2, 3 * T // 4)):
        a, b = saved[s_] - saved[s_].mean(0), saved[t_] - saved[t_].mean(0)
        emp = (a * b).mean(0) / (a.std(0) * b.std(0))  # (4,) one sample correlation per starting value
        rho = float(trajectory_correlation(s_, t_))
        tol = 5 * (1 - rho ** 2) / math.sqrt(N) + 1e-3  # about five standard errors of a sample correlation
        print(f"corr(x_{s_}, x_{t_}): chains {emp.numpy().round(4)}, yours {rho:.4f} (tolerance {tol:.4f})")
        assert torch.allclose(emp, torch.full_like(emp, rho), atol=tol), (s_, t_)
    print("Exercise 1.2: correct")

# %% [markdown]
# **Exercise 1.3** (implement). For the sqrt schedule, find in closed form
# the first step at which at most half of the signal power is left, the
# smallest $t$ with $\bar\alpha_t \le 1/2$, as a function of $T$ (use the
# formula of section 3, with its offset $s$ and the division by the value at
# $t = 0$). Implement it and compare with the library's schedule for several $T$.

# %%
def half_signal_step(T_, s=1e-4):
    """The smallest t with alphabar_t <= 1/2 for the sqrt schedule with T_ steps."""
    return None  # your formula


if half_signal_step(100) is None:
    print("Exercise 1.3: not attempted yet")
else:
    for T_ in (100, 1000, T):
        ab_ = make_schedule("sqrt", T_).alpha_bar
        first = int(torch.nonzero(ab_ <= 0.5)[0])  # found by scanning the table
        print(f"T = {T_}: yours {half_signal_step(T_)}, from the table {first} (t/T = {first / T_:.3f})")
        assert half_signal_step(T_) == first, T_
    print("Exercise 1.3: correct")

# %% [markdown]
# ## Summary
#
# * One forward step shrinks the signal by $\sqrt{1-\beta_t}$ and adds
#   variance $\beta_t$, which keeps unit variance unchanged.
# * $t$ steps compose into $q(x_t\mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}x_0, (1-\bar\alpha_t)I)$,
#   checked against the simulated chain above, so training can jump to any $t$
#   in one draw (`q_sample`).
# * Schedules differ in where along the chain the signal goes: linear (DDPM)
#   loses it early, cosine spreads it evenly in log-SNR, sqrt (Diffusion-LM)
#   adds a lot of noise in the very first steps, which suits text embeddings.
#
# Next, notebook 02: the reverse process, the variational bound and the
# samplers that turn noise back into data.

# %%
elapsed = time.perf_counter() - t_start
log.add("notebook seconds", round(elapsed, 1))
print(f"notebook ran in {elapsed:.1f} s (profile {cfg.profile})")
print(log.table())
