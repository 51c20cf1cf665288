# %% [markdown]
# # 02 · The variational bound and the reverse process
#
# Notebook 01 built the forward process, which turns data into noise. A
# diffusion model generates data by running a *learned* reverse process from
# noise back to data. This notebook derives what that reverse process should
# be and how to train it, then samples with it:
#
# 1. the **variational bound** on $-\log p_\theta(x_0)$ and its split into a
#    prior term, one KL term per step, and a reconstruction term;
# 2. the **posterior** $q(x_{t-1}\mid x_t, x_0)$, which every KL term compares
#    against;
# 3. how each KL term becomes a **weighted squared error** on the posterior
#    mean, on $x_0$ or on the noise, and what the "simplified" losses of DDPM
#    and Diffusion-LM drop;
# 4. a **toy distribution** (a mixture of Gaussians) whose optimal denoiser
#    $\mathbb E[x_0\mid x_t]$ is known in closed form, so that we can compute
#    the bound exactly, with no training in the way;
# 5. **DDPM and DDIM sampling** with that exact denoiser, checked against the
#    toy distribution.
#
# Every identity is followed by a numerical check with an `assert`. The
# library pieces are `clipdiff_mini.diffusion.gaussian_diffusion` (posterior, KL, bound),
# `clipdiff_mini.diffusion.samplers` (DDPM, DDIM) and `clipdiff_mini.diffusion.toy_distributions`.

# %% [markdown]
# After this notebook you can:
#
# * derive the variational bound on $-\log p_\theta(x_0)$ and split it into
#   a prior term, one KL term per step and a reconstruction term;
# * derive the posterior $q(x_{t-1}\mid x_t, x_0)$ by completing the square;
# * turn each KL term into a weighted squared error on $x_0$, on the noise or
#   on the mean, and say which weights the simplified losses of DDPM and
#   Diffusion-LM drop;
# * compute the optimal denoiser $\mathbb E[x_0\mid x_t]$ and the whole bound
#   exactly for a mixture of Gaussians, and use them to check Monte Carlo
#   estimates;
# * sample with DDPM and DDIM, explain why a DDIM jump keeps the marginals,
#   and check the samples against the known distribution.

# %%
import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion import gaussian_diffusion as gd
from clipdiff_mini.diffusion import (GaussianMixture, ddim_sample, ddim_timesteps, ddpm_sample, exact_bound_1d,
                                     make_schedule)
from clipdiff_mini.course.results import ResultLog
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
SCHEDULE = "cosine"  # noise schedule of the toy experiments: "linear" | "cosine" | "sqrt" (try "sqrt", see section 6)
TIMESTEPS = None  # number of diffusion steps T; None: the profile's (200 in ci, 2000 otherwise)
DDIM_STEPS = 50  # steps of the DDIM sampler
VARIANCE = "small"  # reverse-process variance: "small" (posterior variance) or "large" (beta_t)

# %%
cfg = get_config(PROFILE, {"diffusion.schedule": SCHEDULE, "diffusion.timesteps": TIMESTEPS})  # None: the profile's
set_seed(cfg.seed)
# Small tensors and many steps: a second CPU thread costs more than it saves.
torch.set_num_threads(1)
log = ResultLog(cfg, "02_elbo_and_reverse_process")
sched = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
T, N, M = sched.T, cfg.diffusion.toy_samples, cfg.diffusion.mc_samples
gen = torch.Generator().manual_seed(cfg.seed)
F64 = torch.float64
t_start = time.perf_counter()
print(f"profile {cfg.profile}: {sched}; {N} toy samples, {M} Monte Carlo samples per check")

# The toy data of this notebook: a mixture of three 1-D Gaussians (section 4 explains it;
# for sections 1-3 any data and any denoiser would do).
mix = GaussianMixture(weights=[0.3, 0.5, 0.2], means=[-2.0, 0.5, 2.5], stds=[0.3, 0.5, 0.2])
exact_x0 = mix.denoiser(sched)  # model_fn(x_t, t) -> E[x_0 | x_t]

# %% [markdown]
# ## 1. The reverse process and its variational bound
#
# The model is a Markov chain running backwards, from pure noise to data:
#
# $$p_\theta(x_{0:T}) = p(x_T)\prod_{t=1}^{T} p_\theta(x_{t-1}\mid x_t),\qquad
# p(x_T) = \mathcal N(0, I),\qquad
# p_\theta(x_{t-1}\mid x_t) = \mathcal N\!\left(\mu_\theta(x_t, t),\ \sigma_t^2 I\right).$$
#
# Its likelihood $p_\theta(x_0) = \int p_\theta(x_{0:T})\,dx_{1:T}$ is an integral
# over all paths, which we cannot compute. The forward process gives a
# distribution over those paths, $q(x_{1:T}\mid x_0)$, to average with instead.
#
# **The bound.** Multiply and divide by $q(x_{1:T}\mid x_0)$ inside the integral
# and use Jensen's inequality ($-\log$ is convex):
#
# $$-\log p_\theta(x_0) = -\log \mathbb E_{q(x_{1:T}\mid x_0)}\!\left[\frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\right]
# \;\le\; \mathbb E_{q}\!\left[-\log\frac{p_\theta(x_{0:T})}{q(x_{1:T}\mid x_0)}\right]
# = \mathbb E_q\!\left[-\log p(x_T) - \sum_{t=1}^T \log\frac{p_\theta(x_{t-1}\mid x_t)}{q(x_t\mid x_{t-1})}\right] =: L .$$
#
# **The split.** Estimated as written, $L$ is a sum of $T$ noisy log-ratios.
# It can be rearranged into terms with closed forms. For $t \ge 2$ the forward
# step does not depend on $x_0$ once $x_{t-1}$ is known (Markov property), so by
# Bayes' rule
#
# $$q(x_t\mid x_{t-1}) = q(x_t\mid x_{t-1}, x_0) = \frac{q(x_{t-1}\mid x_t, x_0)\,q(x_t\mid x_0)}{q(x_{t-1}\mid x_0)} .$$
#
# In the product over $t = 2..T$ the ratios $q(x_t\mid x_0)/q(x_{t-1}\mid x_0)$
# telescope to $q(x_T\mid x_0)/q(x_1\mid x_0)$; the leftover $q(x_1\mid x_0)$ cancels
# the $t = 1$ factor. What remains is
#
# $$L = \mathbb E_q\Big[\underbrace{\mathrm{KL}\big(q(x_T\mid x_0)\,\|\,p(x_T)\big)}_{L_T\ \text{(prior)}}
# + \sum_{t=2}^{T}\underbrace{\mathrm{KL}\big(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t)\big)}_{L_{t-1}}
# \;\underbrace{-\,\log p_\theta(x_0\mid x_1)}_{L_0\ \text{(reconstruction)}}\Big].$$
#
# * $L_T$ has no parameters; it is small when $\bar\alpha_T \approx 0$.
# * Each $L_{t-1}$ compares two Gaussians, so it has a closed form (section 3),
#   and we only need *one* draw of $x_t \sim q(x_t\mid x_0)$ per term instead of
#   a whole trajectory.
# * $L_0$ is the decoder: how likely the data is under the last reverse step.
#
# **Check.** Both forms estimate the same number. On a short chain
# ($T = 10$, same schedule family) we estimate $L$ from its definition by
# simulating whole forward trajectories, and from the split form with
# `gd.variational_bound` (any denoiser would do; we take the exact one of
# section 4). Tolerance: 5 combined standard errors.
#
# The split form has a second advantage beyond closed-form terms: each term
# needs only $x_0$ and one draw of $x_t$, not a whole trajectory, so training
# can pick one random $t$ per example and still follow the gradient of the
# full bound on average.

# %%
short = make_schedule(cfg.diffusion.schedule, 10)
x0 = mix.sample(M, generator=gen)[0]  # (M, 1)
short_model = mix.denoiser(short)
# (a) the definition: -log p(x_T) - sum_t [log p(x_{t-1}|x_t) - log q(x_t|x_{t-1})] along one trajectory
path = [x0]
for t in range(1, short.T + 1):
    path.append(gd.q_step(short, path[-1], t, generator=gen))
raw = -gd.gaussian_log_prob(path[-1], 0.0, torch.tensor(0.0, dtype=F64)).sum(1)
for t in range(1, short.T + 1):
    xt, xprev = path[t], path[t - 1]
    tvec = torch.full((M,), t)
    raw += gd.gaussian_log_prob(xt, torch.sqrt(short.alphas[t]) * xprev, torch.log(short.betas[t])).sum(1)
    mean = gd.posterior_mean_from_x0(short, short_model(xt, tvec), xt, t)  # mu_theta
    raw -= gd.gaussian_log_prob(xprev, mean, gd.reverse_log_variance(short, t, xt, VARIANCE)).sum(1)
# (b) the split form: prior + KL terms + decoder
vb_short = gd.variational_bound(short, short_model, x0, variance=VARIANCE, generator=gen)["total"]
se = math.sqrt(raw.var() / M + vb_short.var() / M)
print(f"definition: {raw.mean():.4f} (per-sample sd {raw.std():.2f})")
print(f"split form: {vb_short.mean():.4f} (per-sample sd {vb_short.std():.2f})")
print(f"difference {float(raw.mean() - vb_short.mean()):+.4f}, tolerance {5 * se:.4f}")
assert abs(float(raw.mean() - vb_short.mean())) < 5 * se
log.add("bound on a 10-step chain, split form (nats)", round(float(vb_short.mean()), 4),
        definition=round(float(raw.mean()), 4), tolerance=round(5 * se, 4))

# %% [markdown]
# ## 2. The posterior $q(x_{t-1}\mid x_t, x_0)$
#
# Every KL term compares the model's step with the *forward process run
# backwards, given the clean data*. By Bayes' rule (as above),
# $q(x_{t-1}\mid x_t, x_0) \propto q(x_t\mid x_{t-1})\,q(x_{t-1}\mid x_0)$, a product
# of two Gaussians in $x_{t-1}$:
#
# $$\log q(x_{t-1}\mid x_t, x_0) = -\frac12\left[\frac{\lVert x_t - \sqrt{\alpha_t}\,x_{t-1}\rVert^2}{\beta_t}
# + \frac{\lVert x_{t-1} - \sqrt{\bar\alpha_{t-1}}\,x_0\rVert^2}{1-\bar\alpha_{t-1}}\right] + \text{const}.$$
#
# **Completing the square.** The coefficient of $\lVert x_{t-1}\rVert^2$ (times $-\tfrac12$) is the precision
#
# $$\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}} = \frac{\alpha_t(1-\bar\alpha_{t-1}) + \beta_t}{\beta_t(1-\bar\alpha_{t-1})}
# = \frac{1-\bar\alpha_t}{\beta_t(1-\bar\alpha_{t-1})}$$
#
# (using $\alpha_t + \beta_t = 1$ and $\alpha_t\bar\alpha_{t-1} = \bar\alpha_t$), and the
# linear coefficient is $\frac{\sqrt{\alpha_t}}{\beta_t}x_t + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}x_0$.
# The mean is the linear coefficient divided by the precision:
#
# $$q(x_{t-1}\mid x_t, x_0) = \mathcal N\big(\tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),\qquad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,\qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t .$$
#
# At $t = 1$, $\bar\alpha_0 = 1$ gives $\tilde\mu_1 = x_0$ and $\tilde\beta_1 = 0$:
# given $x_0$, there is nothing left to guess.
#
# **Check.** Multiply the two densities on a fine grid of $x_{t-1}$ values
# (400,001 points), normalise numerically, and compare the grid's mean and
# variance with `gd.q_posterior` at several $t$. Tolerance: relative $10^{-6}$.

# %%
x0_val, xt_val = 0.7, -0.3
rows = []
for t in sorted({2, 3, T // 10, T // 2, T}):
    a_t, b_t = float(sched.alphas[t]), float(sched.betas[t])
    ab_prev = float(sched.alpha_bar[t - 1])
    sd = math.sqrt(min(1 - ab_prev, b_t / a_t))  # the narrower of the two factors sets the grid spacing
    c = math.sqrt(ab_prev) * x0_val
    grid = torch.linspace(c - 40 * sd - 3, c + 40 * sd + 3, 400_001, dtype=F64)
    log_prior = -(grid - math.sqrt(ab_prev) * x0_val) ** 2 / (2 * (1 - ab_prev))  # q(x_{t-1} | x_0)
    log_lik = -(xt_val - math.sqrt(a_t) * grid) ** 2 / (2 * b_t)  # q(x_t | x_{t-1})
    w = torch.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w /= torch.trapezoid(w, grid)
    m_grid = float(torch.trapezoid(w * grid, grid))
    v_grid = float(torch.trapezoid(w * (grid - m_grid) ** 2, grid))
    mean, var, _ = gd.q_posterior(sched, torch.tensor([x0_val], dtype=F64), torch.tensor([xt_val], dtype=F64), t)
    rows.append((t, m_grid, float(mean), v_grid, float(var)))
    assert math.isclose(float(mean), m_grid, rel_tol=1e-6, abs_tol=1e-9) and math.isclose(float(var), v_grid, rel_tol=1e-6)
print("    t   mean (grid)   mean (formula)   var (grid)     var (formula)")
for r in rows:
    print(f"{r[0]:5d}   {r[1]:+.8f}   {r[2]:+.8f}    {r[3]:.6e}   {r[4]:.6e}")
m1, v1, _ = gd.q_posterior(sched, torch.tensor([x0_val], dtype=F64), torch.tensor([xt_val], dtype=F64), 1)
assert abs(float(m1) - x0_val) < 1e-12 and float(v1) == 0.0
print(f"t = 1: mean {float(m1)} = x_0, variance {float(v1)}")

# %%
# show the step where the two factors are about equally wide (late in the chain), so both matter
ratio = torch.log(sched.betas[2:] / sched.alphas[2:]) - torch.log(1 - sched.alpha_bar[1:-1])
t_show = int(ratio.abs().argmin()) + 2
a_t, b_t, ab_prev = float(sched.alphas[t_show]), float(sched.betas[t_show]), float(sched.alpha_bar[t_show - 1])
lo = min(math.sqrt(ab_prev) * x0_val - 4 * math.sqrt(1 - ab_prev), xt_val / math.sqrt(a_t) - 4 * math.sqrt(b_t / a_t))
hi = max(math.sqrt(ab_prev) * x0_val + 4 * math.sqrt(1 - ab_prev), xt_val / math.sqrt(a_t) + 4 * math.sqrt(b_t / a_t))
grid = torch.linspace(lo, hi, 2001, dtype=F64)
f_prior = torch.exp(-(grid - math.sqrt(ab_prev) * x0_val) ** 2 / (2 * (1 - ab_prev)))
f_lik = torch.exp(-(xt_val - math.sqrt(a_t) * grid) ** 2 / (2 * b_t))
mean, var, _ = gd.q_posterior(sched, torch.tensor([x0_val], dtype=F64), torch.tensor([xt_val], dtype=F64), t_show)
post = torch.exp(-(grid - mean) ** 2 / (2 * var)) / torch.sqrt(2 * math.pi * var)
plt.figure(figsize=(8, 3.5))
plt.plot(grid, f_prior / torch.trapezoid(f_prior, grid), label=r"$q(x_{t-1}\mid x_0)$")
plt.plot(grid, f_lik / torch.trapezoid(f_lik, grid), label=r"$q(x_t\mid x_{t-1})$ as a function of $x_{t-1}$ (normalised)")
plt.plot(grid, post, "k", lw=2, label=r"posterior $\mathcal{N}(\tilde\mu_t, \tilde\beta_t)$")
plt.title(f"t = {t_show}: the posterior is the product of the two, renormalised")
plt.xlabel("$x_{t-1}$")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. From KL terms to squared errors
#
# For two Gaussians with diagonal covariances, per coordinate,
#
# $$\mathrm{KL}\big(\mathcal N(\mu_1, s_1^2)\,\|\,\mathcal N(\mu_2, s_2^2)\big)
# = \frac12\left[\log\frac{s_2^2}{s_1^2} + \frac{s_1^2}{s_2^2} + \frac{(\mu_1-\mu_2)^2}{s_2^2} - 1\right]$$
#
# (`gd.gaussian_kl`, checked against Monte Carlo in the unit tests). DDPM fixes
# the reverse variance $\sigma_t^2$ (to $\tilde\beta_t$, "small", or $\beta_t$, "large")
# and learns only the mean, so in dimension $D$
#
# $$L_{t-1} = \frac{1}{2\sigma_t^2}\,\lVert\tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)\rVert^2 + D\,c_t,\qquad
# c_t = \tfrac12\left[\log\tfrac{\sigma_t^2}{\tilde\beta_t} + \tfrac{\tilde\beta_t}{\sigma_t^2} - 1\right]$$
#
# ($c_t = 0$ for $\sigma_t^2 = \tilde\beta_t$): a **weighted squared error on the mean**.
# The mean can be produced in three ways, and each gives a different weight.
#
# **Predict $x_0$** (Diffusion-LM, CLIP-DiffusionLM): set
# $\mu_\theta = \tilde\mu_t(x_t, \hat x_0)$. The $x_t$ parts cancel, leaving
# $\tilde\mu_t - \mu_\theta = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}(x_0 - \hat x_0)$, so
#
# $$L_{t-1} = w^{x_0}_t\,\lVert x_0 - \hat x_0\rVert^2 + Dc_t,\qquad
# w^{x_0}_t = \frac{\bar\alpha_{t-1}\beta_t^2}{2\sigma_t^2(1-\bar\alpha_t)^2}.$$
#
# With $\sigma_t^2 = \tilde\beta_t$ this simplifies to half the drop in
# signal-to-noise ratio over the step: $w^{x_0}_t = \frac{\bar\alpha_{t-1}\beta_t}{2(1-\bar\alpha_{t-1})(1-\bar\alpha_t)}
# = \tfrac12\big(\mathrm{SNR}(t-1) - \mathrm{SNR}(t)\big)$,
# because $\mathrm{SNR}(t-1) - \mathrm{SNR}(t) = \frac{\bar\alpha_{t-1}(1-\bar\alpha_t) - \bar\alpha_t(1-\bar\alpha_{t-1})}{(1-\bar\alpha_{t-1})(1-\bar\alpha_t)}
# = \frac{\bar\alpha_{t-1} - \bar\alpha_t}{(\dots)}$ and $\bar\alpha_{t-1} - \bar\alpha_t = \bar\alpha_{t-1}\beta_t$.
#
# **Predict the noise** (DDPM): substitute $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon)/\sqrt{\bar\alpha_t}$
# (notebook 01) into $\tilde\mu_t$; after collecting terms,
# $\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon\big)$.
# With $\mu_\theta$ of the same form in $\hat\varepsilon$,
#
# $$L_{t-1} = w^{\varepsilon}_t\,\lVert \varepsilon - \hat\varepsilon\rVert^2 + Dc_t,\qquad
# w^{\varepsilon}_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}.$$
#
# The decoder term $L_0 = -\log\mathcal N(x_0; \mu_\theta(x_1, 1), \sigma_1^2)$ has
# the same form with $\tilde\mu_1 = x_0$, weight $1/(2\sigma_1^2)$ on the $x_0$ error and
# constant $\tfrac D2\log(2\pi\sigma_1^2)$. ($\tilde\beta_1 = 0$ cannot be a decoder
# variance; like the DDPM code we use $\tilde\beta_2$ there.)
#
# **The simplified losses.** DDPM trains on $L_\text{simple} = \mathbb E_{t, x_0, \varepsilon}\lVert\varepsilon - \hat\varepsilon\rVert^2$
# with $t$ uniform: the weights $w^\varepsilon_t$ are dropped. Diffusion-LM does
# the same on the $x_0$ error, $\mathbb E\lVert x_0 - \hat x_0\rVert^2$. Since
# $\varepsilon - \hat\varepsilon = -\sqrt{\mathrm{SNR}(t)}\,(x_0 - \hat x_0)$, the noise
# loss is the $x_0$ loss weighted by $\mathrm{SNR}(t)$.
#
# **Check.** For random $x_0$, a wrong estimate $\hat x_0$ and $x_t \sim q(x_t\mid x_0)$,
# the KL computed from the two Gaussians equals weight $\times$ squared error + constant,
# for all three targets and both variance choices (the library's weights are in
# `gd.bound_weights`), and the SNR form of $w^{x_0}_t$ holds. Tolerance: relative $10^{-9}$.

# %%
D = 5
snr = sched.snr
worst = 0.0
for variance in ("small", "large"):
    weights = {target: gd.bound_weights(sched, target, variance) for target in ("mean", "x0", "eps")}
    for t in sorted({1, 2, 3, T // 4, T // 2, T - 1, T}):
        x0_ = torch.randn(1, D, generator=gen, dtype=F64)
        x0_hat = x0_ + 0.5 * torch.randn(1, D, generator=gen, dtype=F64)
        xt = gd.q_sample(sched, x0_, t, generator=gen)
        logvar = gd.reverse_log_variance(sched, t, xt, variance)
        mu_true, _, logvar_true = gd.q_posterior(sched, x0_, xt, t)
        mu_model = gd.posterior_mean_from_x0(sched, x0_hat, xt, t)
        if t == 1:  # the decoder
            term = float(gd.reconstruction_nll(x0_, mu_model, logvar.expand_as(x0_)).sum())
        else:
            term = float(gd.gaussian_kl(mu_true, logvar_true, mu_model, logvar).sum())
        errors = {"mean": mu_true - mu_model, "x0": x0_ - x0_hat,
                  "eps": gd.eps_from_x0(sched, xt, t, x0_) - gd.eps_from_x0(sched, xt, t, x0_hat)}
        for target, (w, c) in weights.items():
            as_sq_error = float(w[t] * (errors[target] ** 2).sum() + D * c[t])
            worst = max(worst, abs(as_sq_error - term) / abs(term))
            assert math.isclose(as_sq_error, term, rel_tol=1e-9), (variance, t, target, as_sq_error, term)
w_x0_small = gd.bound_weights(sched, "x0", "small")[0]
snr_form = (snr[1:-1] - snr[2:]) / 2  # t = 2..T
assert torch.allclose(w_x0_small[2:], snr_form, rtol=1e-9)
print(f"KL = weight x squared error + const: largest relative difference {worst:.1e} over all checks")

# %%
fig, ax = plt.subplots(figsize=(8, 4))
u = np.arange(2, T + 1) / T
for target, label in (("x0", r"$w^{x_0}_t$ (on $\|x_0-\hat x_0\|^2$)"), ("eps", r"$w^{\varepsilon}_t$ (on $\|\varepsilon-\hat\varepsilon\|^2$)"),
                      ("mean", r"$1/(2\sigma_t^2)$ (on the mean)")):
    ax.plot(u, gd.bound_weights(sched, target, VARIANCE)[0][2:].numpy(), label=label)
ax.axhline(1.0, color="grey", ls="--", lw=0.8, label="the simplified losses: weight 1")
ax.set(yscale="log", xlabel="t / T", ylabel="weight in the bound",
       title=f"what the bound puts on each step ({sched.name}, T = {T}, sigma^2: {VARIANCE})")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The true bound puts enormous weight on the low-noise steps for an $x_0$
# predictor (the SNR drops fastest there) and comparatively little on the
# noisy steps. The noise predictor's weights are much flatter: that is why
# DDPM could drop them ($w^\varepsilon_t$ varies far less than $w^{x_0}_t$), and
# why Diffusion-LM, which predicts $x_0$, drops a much steeper weighting.
# Dropping the weights changes *which errors matter most*, not *what the best
# denoiser is*: every term is minimised by the same $\hat x_0 = \mathbb E[x_0\mid x_t]$
# (section 5 checks this).

# %% [markdown]
# ## 4. A toy distribution with an exact denoiser
#
# Take data from a mixture of Gaussians, $p(x_0) = \sum_k \pi_k\,\mathcal N(x_0; m_k, s_k^2)$
# (per coordinate). Two facts make everything closed form, with $a = \bar\alpha_t$:
#
# * **The noised marginal is a mixture too.** Given component $k$,
#   $x_t = \sqrt a\,x_0 + \sqrt{1-a}\,\varepsilon$ is a sum of independent Gaussians:
#   $q(x_t\mid k) = \mathcal N(\sqrt a\,m_k,\ a s_k^2 + 1 - a)$. So
#   $q(x_t) = \sum_k \pi_k\,q(x_t\mid k)$, and the component's posterior
#   probability is $r_k(x_t) = \pi_k\,q(x_t\mid k)/q(x_t)$.
# * **Within a component, $(x_0, x_t)$ is jointly Gaussian**, with
#   $\mathrm{Cov}(x_0, x_t) = \sqrt a\,s_k^2$. Conditioning a joint Gaussian gives
#   $\mathbb E[x_0\mid x_t, k] = m_k + g_k\,(x_t - \sqrt a\,m_k)$ with gain
#   $g_k = \frac{\sqrt a\,s_k^2}{a s_k^2 + 1 - a}$, and
#   $\mathrm{Var}[x_0\mid x_t, k] = s_k^2 - g_k\sqrt a\,s_k^2 = \frac{s_k^2(1-a)}{a s_k^2 + 1 - a}$.
#
# Averaging over the component:
#
# $$\mathbb E[x_0\mid x_t] = \sum_k r_k(x_t)\,\big(m_k + g_k(x_t - \sqrt a\,m_k)\big),\qquad
# \mathrm{Var}[x_0\mid x_t] = \sum_k r_k\left(\mathrm{Var}_k + (\mathbb E_k - \mathbb E)^2\right).$$
#
# $\mathbb E[x_0\mid x_t]$ is the **optimal denoiser**: for any predictor $f$,
# $\mathbb E\lVert x_0 - f(x_t)\rVert^2 = \mathbb E\,\mathrm{Var}[x_0\mid x_t] + \mathbb E\lVert\mathbb E[x_0\mid x_t] - f(x_t)\rVert^2$,
# so nothing can beat the *minimum mean squared error*
# $\mathrm{MMSE}_t = \mathbb E\,\mathrm{Var}[x_0\mid x_t]$. A trained denoiser can only
# approach it. Here we have it exactly (`GaussianMixture.denoiser`).
#
# **Check.** $\mathbb E[x_0\mid x_t]$ and $\mathrm{Var}[x_0\mid x_t]$ by brute-force
# Bayes on a grid of $x_0$ values (prior density times $q(x_t\mid x_0)$,
# normalised), at several noise levels. Tolerance: absolute $10^{-6}$ (mean),
# relative $10^{-4}$ (variance).

# %%
grid0 = torch.linspace(-8, 8, 80_001, dtype=F64)[:, None]  # x_0 values
log_p0 = mix.log_prob(grid0)  # data density on the grid
for t in sorted({1, T // 10, T // 3, 2 * T // 3}):
    a = float(sched.alpha_bar[t])
    xt = torch.tensor([[-2.0], [0.0], [1.2], [3.0]], dtype=F64) * math.sqrt(a)
    got_m, got_v = mix.posterior_mean(xt, a), mix.posterior_variance(xt, a)
    for i in range(len(xt)):
        logw = log_p0 - (float(xt[i]) - math.sqrt(a) * grid0[:, 0]) ** 2 / (2 * (1 - a))
        wgt = torch.exp(logw - logw.max())
        wgt /= torch.trapezoid(wgt, grid0[:, 0])
        m_b = float(torch.trapezoid(wgt * grid0[:, 0], grid0[:, 0]))
        v_b = float(torch.trapezoid(wgt * (grid0[:, 0] - m_b) ** 2, grid0[:, 0]))
        assert abs(float(got_m[i]) - m_b) < 1e-6 and math.isclose(float(got_v[i]), v_b, rel_tol=1e-4), (t, i)
print("E[x0 | x_t] and Var[x0 | x_t]: closed form = brute-force Bayes on a grid")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
xs = torch.linspace(-4, 4, 801, dtype=F64)[:, None]
axes[0].plot(xs[:, 0], torch.exp(mix.log_prob(xs)), "k", lw=2, label="data $p(x_0)$")
for frac in (0.05, 0.2, 0.5, 0.8):
    t = max(1, round(frac * T))
    axes[0].plot(xs[:, 0], torch.exp(mix.log_prob(xs, float(sched.alpha_bar[t]))), lw=1, label=f"$q(x_t)$, t/T = {frac}")
    axes[1].plot(xs[:, 0], mix.posterior_mean(xs, float(sched.alpha_bar[t]))[:, 0], label=f"t/T = {frac}")
axes[0].set(xlabel="x", ylabel="density", title="the toy data and its noised marginals")
axes[0].legend(fontsize=8)
axes[1].plot(xs[:, 0], xs[:, 0], "k:", lw=0.8, label="identity")
axes[1].set(xlabel="$x_t$", ylabel=r"$\mathbb{E}[x_0\mid x_t]$", ylim=(-3, 3.5),
            title="the exact denoiser: a soft pull towards the components")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. The bound on the toy, exactly
#
# With the exact denoiser and a fixed variance, the expected step term is
# $w^{x_0}_t\,\mathrm{MMSE}_t + c_t$, and in one dimension
# $\mathrm{MMSE}_t = \int q(x_t)\,\mathrm{Var}[x_0\mid x_t]\,dx_t$ is a 1-D integral
# we can compute by quadrature. The prior term is closed form,
# $L_T = \tfrac12\big[\bar\alpha_T\,\mathbb E[x_0^2] - \bar\alpha_T - \log(1-\bar\alpha_T)\big]$.
# So the **whole bound is computable without sampling** (`exact_bound_1d`).
#
# **Checks.**
# 1. The quadrature bound against the Monte Carlo estimate of
#    `gd.variational_bound` (one $x_t$ per step and sample): within 5 standard errors.
# 2. A bound lies above the truth: above the data entropy
#    $H = -\int p\log p$ (the best any model can do), computed by quadrature.
# 3. On the Monte Carlo samples, the identity $\lVert\varepsilon-\hat\varepsilon\rVert^2 = \mathrm{SNR}(t)\lVert x_0-\hat x_0\rVert^2$
#    (relative $10^{-8}$).

# %%
t0 = time.perf_counter()
exact = exact_bound_1d(mix, sched, variance=VARIANCE)
t_exact = time.perf_counter() - t0
t0 = time.perf_counter()
x0 = mix.sample(N, generator=gen)[0]  # (N, 1)
vb = gd.variational_bound(sched, exact_x0, x0, variance=VARIANCE, generator=gen)
t_mc = time.perf_counter() - t0
mc, mc_se = float(vb["total"].mean()), float(vb["total"].std()) / math.sqrt(N)
H = mix.entropy_1d()
print(f"bound, quadrature:  {exact['total']:.4f} nats  ({t_exact:.1f} s)")
print(f"bound, Monte Carlo: {mc:.4f} ± {mc_se:.4f} nats ({N} samples, {t_mc:.1f} s)")
print(f"  of which prior L_T = {exact['prior']:.2e}, decoder L_0 = {float(exact['terms'][1]):.4f}, "
      f"KL terms = {float(exact['terms'][2:].sum()):.4f}")
print(f"data entropy H = {H:.4f} nats: the bound is {exact['total'] - H:.3f} nats above it")
assert abs(exact["total"] - mc) < 5 * mc_se
assert exact["total"] > H
assert torch.allclose(vb["mse_eps"][1:], snr[1:, None] * vb["mse_x0"][1:], rtol=1e-8)
log.add("toy bound, exact (nats)", round(exact["total"], 4), schedule=sched.name, T=T)
log.add("toy bound, Monte Carlo (nats)", round(mc, 4), se=round(mc_se, 4))
log.add("toy data entropy (nats)", round(H, 4))

# %% [markdown]
# Why is there a gap of half a nat or more even with the *exact* denoiser? The
# true reverse step $q(x_{t-1}\mid x_t)$ is not the Gaussian we fit: even
# when it is nearly Gaussian its variance is
# $\tilde\beta_t + \big(\tfrac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}\big)^2\mathrm{Var}[x_0\mid x_t]$, larger than the
# fixed $\tilde\beta_t$ wherever $x_0$ is still uncertain. Improved DDPM learns
# the variance to close this gap; the mean, which we have exactly, is the
# part that matters most for samples (section 6).
#
# Where does the bound come from? Per step, the bound's term against the
# two simplified losses (all for the exact denoiser):

# %%
mse_x0 = exact["mse_x0"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
u = np.arange(1, T + 1) / T
axes[0].plot(u[1:], exact["terms"][2:].numpy(), label="bound term $L_{t-1}$ (nats)")
axes[0].plot(u, mse_x0[1:].numpy(), label=r"$x_0$ error $\mathrm{MMSE}_t$ (Diffusion-LM's loss)")
axes[0].plot(u, (snr[1:] * mse_x0[1:]).numpy(), label=r"$\varepsilon$ error $\mathrm{SNR}(t)\,\mathrm{MMSE}_t$ (DDPM's loss)")
axes[0].set(yscale="log", xlabel="t / T", title="per-step contributions, exact denoiser")
axes[0].legend(fontsize=8)
cum = torch.cumsum(exact["terms"][2:], 0)
axes[1].plot(u[1:], (cum / cum[-1]).numpy())
axes[1].set(xlabel="t / T", ylabel="fraction", title="cumulative share of the KL terms")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The simplified losses and the bound rank denoisers the same way near the optimum
#
# Take a family of imperfect denoisers between the exact one ($\lambda = 0$) and
# the best *linear* denoiser, the one that would be exact if the data were a
# single Gaussian with the mixture's mean and variance ($\lambda = 1$):
# $f_\lambda = \mathbb E[x_0\mid x_t] + \lambda\,(f_\text{lin} - \mathbb E[x_0\mid x_t])$.
# Its per-step error is $\mathrm{MSE}_t(f_\lambda) = \mathrm{MMSE}_t + \lambda^2\,\mathbb E(f_\text{lin} - \mathbb E[x_0\mid x_t])^2$
# (the decomposition of section 4), so all three losses grow with $|\lambda|$ and
# share the minimiser $\lambda = 0$; they differ in how hard they punish errors
# at each $t$.
#
# **Check.** For $\lambda = 1$ the quadrature bound agrees with Monte Carlo
# (5 standard errors), and for each loss, the value at $\lambda = 0$ is the
# smallest in the family.

# %%
mu_d, var_d = float(mix.mean()), float(mix.variance())


def linear_denoiser(xt, t):
    """E[x_0 | x_t] if the data were N(mu_d, var_d): the best denoiser that is linear in x_t."""
    a = sched.alpha_bar[t].to(xt.dtype)[:, None]
    return mu_d + torch.sqrt(a) * var_d / (a * var_d + 1 - a) * (xt - torch.sqrt(a) * mu_d)


def blended(lam):
    return lambda xt, t: exact_x0(xt, t) + lam * (linear_denoiser(xt, t) - exact_x0(xt, t))


table = {}
for lam in (-0.5, 0.0, 0.5, 1.0):
    res = exact if lam == 0 else exact_bound_1d(mix, sched, variance=VARIANCE, model_fn=blended(lam))
    table[lam] = (res["total"], float((snr[1:] * res["mse_x0"][1:]).mean()), float(res["mse_x0"][1:].mean()))
print("  lambda   bound (nats)   L_simple on eps   L on x0")
for lam, (b, le, lx) in table.items():
    print(f"  {lam:+.2f}    {b:10.4f}     {le:10.4f}       {lx:8.4f}")
for k in range(3):
    assert min(table, key=lambda lam: table[lam][k]) == 0.0
n_chk = min(N, 4000)
vb_lin = gd.variational_bound(sched, blended(1.0), x0[:n_chk], variance=VARIANCE, generator=gen)["total"]
se_lin = float(vb_lin.std()) / math.sqrt(n_chk)
print(f"lambda = 1, Monte Carlo ({n_chk} samples): {vb_lin.mean():.4f} ± {se_lin:.4f}")
assert abs(float(vb_lin.mean()) - table[1.0][0]) < 5 * se_lin
log.add("toy bound with the linear (Gaussian) denoiser (nats)", round(table[1.0][0], 4))

# %% [markdown]
# ## 6. Sampling: DDPM and DDIM
#
# **DDPM** (ancestral sampling) runs the model chain: start from
# $x_T\sim\mathcal N(0, I)$; for $t = T, \dots, 1$ predict $\hat x_0$, compute
# $\tilde\mu_t(x_t, \hat x_0)$ and draw $x_{t-1} = \tilde\mu_t + \sigma_t z$; at
# $t = 1$ return the mean ($\tilde\mu_1 = \hat x_0$). $T$ model calls.
#
# **DDIM** (Song et al. 2021) notices that the training loss only involves the
# marginals $q(x_t\mid x_0)$, never the steps, so any process with the same
# marginals can be used for sampling. For two steps $s < t$ take
#
# $$q_\sigma(x_s\mid x_t, x_0) = \mathcal N\!\left(\sqrt{\bar\alpha_s}\,x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\;\frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma^2 I\right).$$
#
# If $x_t\sim q(x_t\mid x_0)$ then $\frac{x_t - \sqrt{\bar\alpha_t}x_0}{\sqrt{1-\bar\alpha_t}}$ is a
# standard Gaussian $\varepsilon$, and $x_s = \sqrt{\bar\alpha_s}\,x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\varepsilon + \sigma z$
# has mean $\sqrt{\bar\alpha_s}x_0$ and variance $(1 - \bar\alpha_s - \sigma^2) + \sigma^2 = 1-\bar\alpha_s$:
# **the marginal is right for every $\sigma$ and every jump size**. Sampling
# replaces $x_0$ and $\varepsilon$ by the model's estimates and may skip steps.
# With $\sigma = \eta\sqrt{\tfrac{1-\bar\alpha_s}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_s}}$:
# $\eta = 0$ is deterministic (no noise after $x_T$), and $\eta = 1$ with
# $s = t - 1$ gives $\sigma^2 = \tilde\beta_t$, the DDPM step.
#
# **Checks.** (a) One DDIM jump with the true $x_0$ keeps the marginal: from
# $x_t\sim q(x_t\mid x_0)$, the state at $s$ has mean $\sqrt{\bar\alpha_s}x_0$ and
# variance $1-\bar\alpha_s$ (5 standard errors), for $\eta = 0, 0.5, 1$.
# (b) For $\eta = 1$, $s = t-1$: $\sigma^2 = \tilde\beta_t$ (relative $10^{-9}$).

# %%
x0_point = 1.3
t_hi, s_lo = (3 * T) // 4, T // 4
xt = gd.q_sample(sched, torch.full((M, 1), x0_point, dtype=F64), t_hi, generator=gen)
for eta in (0.0, 0.5, 1.0):
    _, traj = ddim_sample(lambda x, t: torch.full_like(x, x0_point), sched, xt.shape, timesteps=[s_lo, t_hi],
                          eta=eta, x_T=xt, generator=gen, progress=False, return_trajectory=True)
    xs_ = traj[1]  # the state at s
    want_m, want_v = math.sqrt(float(sched.alpha_bar[s_lo])) * x0_point, 1 - float(sched.alpha_bar[s_lo])
    print(f"eta = {eta}: x_{s_lo} mean {float(xs_.mean()):.4f} (want {want_m:.4f}), var {float(xs_.var()):.4f} (want {want_v:.4f})")
    assert abs(float(xs_.mean()) - want_m) < 5 * math.sqrt(want_v / M)
    assert abs(float(xs_.var()) - want_v) < 5 * want_v * math.sqrt(2 / (M - 1))
ab = sched.alpha_bar
for t in (2, T // 2, T):
    sig2 = (1 - ab[t - 1]) / (1 - ab[t]) * (1 - ab[t] / ab[t - 1])
    assert math.isclose(float(sig2), float(sched.posterior_variance[t]), rel_tol=1e-9)
print("DDIM with eta = 1 and single steps has the DDPM variance")

# %% [markdown]
# Now sample the 1-D toy with the exact denoiser: DDPM with all $T$ steps, DDIM
# with `DDIM_STEPS` steps and $\eta = 0$. Left: histograms against the true
# density. Right: a few sample paths $x_t$ (DDPM paths are jagged, DDIM paths
# are smooth: each is a deterministic function of its starting noise).

# %%
t0 = time.perf_counter()
x_ddpm = ddpm_sample(exact_x0, sched, (N, 1), variance=VARIANCE, generator=gen, progress=False, dtype=F64)
t_ddpm = time.perf_counter() - t0
t0 = time.perf_counter()
x_ddim = ddim_sample(exact_x0, sched, (N, 1), timesteps=DDIM_STEPS, eta=0.0, generator=gen, progress=False, dtype=F64)
t_ddim = time.perf_counter() - t0
# a dozen more samples with their whole paths (keeping all N paths would take T x N numbers)
_, traj_ddpm = ddpm_sample(exact_x0, sched, (12, 1), variance=VARIANCE, generator=gen, progress=False,
                           dtype=F64, return_trajectory=True)
_, traj_ddim = ddim_sample(exact_x0, sched, (12, 1), timesteps=DDIM_STEPS, generator=gen, progress=False,
                           dtype=F64, return_trajectory=True)
print(f"DDPM: {T} steps, {t_ddpm:.2f} s;  DDIM: {DDIM_STEPS} steps, {t_ddim:.2f} s  ({N} samples each)")
log.add("toy 1-D sampling seconds, DDPM", round(t_ddpm, 2), steps=T, samples=N)
log.add("toy 1-D sampling seconds, DDIM", round(t_ddim, 2), steps=DDIM_STEPS, samples=N)

fig, axes = plt.subplots(1, 2, figsize=(14, 4))
xs = torch.linspace(-4, 4, 801, dtype=F64)[:, None]
axes[0].hist(x_ddpm[:, 0].numpy(), bins=120, density=True, alpha=0.45, label="DDPM")
axes[0].hist(x_ddim[:, 0].numpy(), bins=120, density=True, alpha=0.45, label=f"DDIM ({DDIM_STEPS} steps)")
axes[0].plot(xs[:, 0], torch.exp(mix.log_prob(xs)), "k", lw=1.5, label="true density")
axes[0].set(xlabel="$x_0$", title="samples with the exact denoiser")
axes[0].legend(fontsize=8)
ddim_t = [T] + list(reversed(ddim_timesteps(T, DDIM_STEPS)))[1:] + [0]
for i in range(12):
    axes[1].plot(np.arange(T, -1, -1), torch.stack(traj_ddpm)[:, i, 0].numpy(), color="C0", lw=0.5, alpha=0.7)
    axes[1].plot(ddim_t, torch.stack(traj_ddim)[:, i, 0].numpy(), color="C1", lw=1.2)
axes[1].invert_xaxis()
axes[1].set(xlabel="t (sampling runs right to left)", ylabel="$x_t$", title="paths: DDPM (blue) and DDIM (orange)")
plt.tight_layout()
plt.show()

# %% [markdown]
# A 2-D mixture with five components of different weights and shapes, the same
# two samplers, and a numerical check. Each sample is assigned to its most
# probable component (`component_stats`), and per component we compare the
# fraction of samples (the weight), the mean and the spread with the truth.
# The same statistics of a sample drawn from the mixture itself show how much
# of the difference is plain sampling noise.
#
# **Tolerances:** weights within 0.03 (about 4 standard errors at the CI
# size), means within 0.1 (about a third of a component's spread), and spreads
# within 20% of the *expected* spread. "Expected" because the last step returns
# $\hat x_0(x_1) = \mathbb E[x_0\mid x_1]$, a mean, not a draw: a component of spread
# $s$ comes out with spread about $s\sqrt{\bar\alpha_1 s^2/(\bar\alpha_1 s^2 + 1 - \bar\alpha_1)}$.
# For the cosine and linear schedules $1-\bar\alpha_1$ is tiny and this factor is ~1.

# %%
ang = torch.tensor([90.0, 162.0, 234.0, 306.0, 18.0]) * math.pi / 180
mix2 = GaussianMixture(weights=[0.1, 0.2, 0.3, 0.15, 0.25],
                       means=torch.stack([2 * torch.cos(ang), 2 * torch.sin(ang)], 1),
                       stds=[[0.25, 0.25], [0.2, 0.4], [0.3, 0.15], [0.25, 0.25], [0.35, 0.2]])
den2 = mix2.denoiser(sched)
t0 = time.perf_counter()
samples = {"data": mix2.sample(N, generator=gen)[0],
           "DDPM": ddpm_sample(den2, sched, (N, 2), variance=VARIANCE, generator=gen, progress=False, dtype=F64),
           f"DDIM {DDIM_STEPS}": ddim_sample(den2, sched, (N, 2), timesteps=DDIM_STEPS, generator=gen,
                                             progress=False, dtype=F64)}
print(f"2-D sampling in {time.perf_counter() - t0:.1f} s")
a1 = float(sched.alpha_bar[1])
expected_spread = mix2.stds * torch.sqrt(a1 * mix2.stds ** 2 / (a1 * mix2.stds ** 2 + 1 - a1))  # (K, 2)
fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
for ax, (name, xs2) in zip(axes, samples.items()):
    st = mix2.component_stats(xs2)
    w_err = float((st["weights"] - mix2.weights).abs().max())
    m_err = float((st["means"] - mix2.means).abs().max())
    ratio = st["stds"] / (mix2.stds if name == "data" else expected_spread)
    print(f"{name:8s}: weights {st['weights'].numpy().round(3)} (largest error {w_err:.3f}), "
          f"largest mean error {m_err:.3f}, spread / expected in [{float(ratio.min()):.2f}, {float(ratio.max()):.2f}]")
    assert w_err < 0.03 and m_err < 0.1 and 0.8 < float(ratio.min()) and float(ratio.max()) < 1.2, name
    if name != "data":
        log.add(f"toy 2-D {name}: largest weight error", round(w_err, 4))
        log.add(f"toy 2-D {name}: largest mean error", round(m_err, 4))
    ax.scatter(xs2[:4000, 0], xs2[:4000, 1], s=1, alpha=0.4)
    ax.scatter(mix2.means[:, 0], mix2.means[:, 1], c="k", marker="x")
    ax.set(title=name, xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), aspect="equal")
print(f"weights of the mixture: {mix2.weights.numpy()}; expected spread factor from the last step "
      f"{float((expected_spread / mix2.stds).min()):.3f}..{float((expected_spread / mix2.stds).max()):.3f}")
plt.tight_layout()
plt.show()

# %% [markdown]
# What to take from this:
#
# * With the exact denoiser, **both samplers recover the distribution**: the
#   modes, their weights and positions. A sampler cannot fix a bad denoiser,
#   but with a good one it does not need to be clever.
# * **DDIM** got there with `DDIM_STEPS` model calls instead of $T$. Its
#   deterministic jumps shrink each component slightly (on a Gaussian, a
#   deterministic step can only lose spread, never gain it); with more steps
#   the shrinkage disappears.
# * **The last step returns a mean.** Try `SCHEDULE = "sqrt"`: its first
#   forward step already adds a lot of noise (notebook 01), so $x_1$ is blurry
#   and the final $\mathbb E[x_0\mid x_1]$ pulls every sample towards its
#   component's centre (the expected factor printed above drops well below 1).
#   For images that would be a defect; for text it is what we want, because
#   the result is rounded to the nearest word embedding anyway, which is the
#   subject of notebook 03 (rounding and the clamping trick).

# %% [markdown]
# ## Summary
#
# * The variational bound splits into a prior term, one KL term per step and
#   a reconstruction term; each KL term between Gaussians is a weighted
#   squared error of the denoiser, and the simplified losses are the same
#   errors under other weights.
# * On a one-dimensional mixture the best denoiser is known, so the bound is
#   computed exactly and checked against Monte Carlo.
# * DDPM and DDIM both recover the distribution from the exact denoiser;
#   DDIM with far fewer calls.
#
# What this run measured:

# %%
print("\n".join([
    f"- A 10-step chain: the bound by its definition {raw.mean():.4f}, by its split form {vb_short.mean():.4f} nats.",
    f"- The toy's bound with the exact denoiser: {exact['total']:.4f} nats exactly, {mc:.4f} ± {mc_se:.4f} by "
    f"Monte Carlo, above the data entropy {H:.4f}; with the best linear denoiser {table[1.0][0]:.4f}.",
    f"- Sampling the toy: DDPM with {T} calls in {t_ddpm:.2f} s, DDIM with {DDIM_STEPS} in {t_ddim:.2f} s.",
]))

# %% [markdown]
# ## Exercises
#
# Each exercise is a markdown cell with the question and a code cell below
# it. Replace the `None` placeholders with your answer and run the cell: it
# checks your answer against a computation from this notebook (it prints
# "not attempted yet" while a placeholder is left). Worked answers are in
# `notebooks/solutions/02_elbo_and_reverse_process_solutions.ipynb`.

# %% [markdown]
# **Exercise 2.1** (implement). Section 3 states that in terms of the noise,
# the posterior mean is
# $\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\varepsilon\big)$
# when $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$. Implement
# `mean_from_eps(xt, eps, t)` from this formula, and check it against the
# posterior mean computed from $x_0$ (`gd.q_posterior`, section 2) at every
# step, including $t = 1$. Derive the formula on paper first: substitute
# $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon)/\sqrt{\bar\alpha_t}$ into $\tilde\mu_t$.

# %%
def mean_from_eps(xt, eps, t):
    """The posterior mean tilde-mu_t(x_t, x_0) written with the noise eps instead of x_0 (sched's schedule)."""
    return None  # your formula


x0_ex = torch.randn(6, 3, generator=gen, dtype=F64)  # (6, 3) any data
eps_ex = torch.randn(6, 3, generator=gen, dtype=F64)  # (6, 3) the noise that makes x_t
if mean_from_eps(x0_ex, eps_ex, 2) is None:
    print("Exercise 2.1: not attempted yet")
else:
    for t in range(1, T + 1):
        xt_ex = torch.sqrt(sched.alpha_bar[t]) * x0_ex + torch.sqrt(1 - sched.alpha_bar[t]) * eps_ex
        want = gd.q_posterior(sched, x0_ex, xt_ex, t)[0]
        assert torch.allclose(mean_from_eps(xt_ex, eps_ex, t), want, rtol=1e-8, atol=1e-10), t
    print(f"Exercise 2.1: correct at all {T} steps")

# %% [markdown]
# **Exercise 2.2** (derive and check). Section 3 wrote each bound term as a
# weight times a squared error, on $x_0$ ($w^{x_0}_t$) or on the noise
# ($w^{\varepsilon}_t$), and showed $\varepsilon - \hat\varepsilon = -\sqrt{\mathrm{SNR}(t)}\,(x_0 - \hat x_0)$.
# Derive $w^{\varepsilon}_t$ from $w^{x_0}_t$ and $\mathrm{SNR}(t)$ alone, without
# the formula in $\beta_t$ and $\sigma_t$. Compute it for $t = 2, \dots, T$ from
# `gd.bound_weights(sched, "x0", VARIANCE)[0]` and `snr`, and check it against
# the library's noise weights. Then predict: which of the two weightings is
# larger at the low-noise end of the chain?

# %%
w_x0_all = gd.bound_weights(sched, "x0", VARIANCE)[0]  # (T + 1,) index t
w_eps = None  # your (T - 1,) tensor of w^eps_t for t = 2..T
larger_at_low_noise = None  # "x0" or "eps"
if w_eps is None or larger_at_low_noise is None:
    print("Exercise 2.2: not attempted yet")
else:
    lib_eps = gd.bound_weights(sched, "eps", VARIANCE)[0][2:]
    assert torch.allclose(w_eps, lib_eps, rtol=1e-9), "the weights differ from the library's"
    assert larger_at_low_noise == ("x0" if float(w_x0_all[2]) > float(lib_eps[0]) else "eps")
    print(f"Exercise 2.2: correct; at t = 2 the x0 weight is {float(w_x0_all[2] / lib_eps[0]):.3g} "
          "times the noise weight")

# %% [markdown]
# **Exercise 2.3** (predict, then derive). Section 5 computed the exact
# bound for the blended denoisers $f_\lambda$ at $\lambda = -0.5, 0, 0.5, 1$
# (`table[lam][0]`). Predict before looking at the table: is the bound at
# $\lambda = -0.5$ larger than, smaller than, or equal to the bound at
# $\lambda = 0.5$? Then derive the ratio
# $\dfrac{L(\lambda = 1) - L(0)}{L(\lambda = 0.5) - L(0)}$ from the error
# decomposition of section 4, and check both against `table`.

# %%
prediction = None  # "larger", "smaller" or "equal"
ratio = None  # your derived value of (L(1) - L(0)) / (L(0.5) - L(0))
if prediction is None or ratio is None:
    print("Exercise 2.3: not attempted yet")
else:
    bound = {lam: v[0] for lam, v in table.items()}
    got = (bound[1.0] - bound[0.0]) / (bound[0.5] - bound[0.0])
    rel = (bound[-0.5] - bound[0.5]) / (bound[0.5] - bound[0.0])  # the difference, on the scale of the excess
    print(f"bound(-0.5) - bound(0.5) = {bound[-0.5] - bound[0.5]:.3e}; ratio from the table {got:.6f}")
    want = "equal" if abs(rel) < 1e-6 else ("larger" if rel > 0 else "smaller")
    assert prediction == want, f"the table says {want}"
    assert math.isclose(float(ratio), got, rel_tol=1e-6), "the derived ratio does not match the table"
    print("Exercise 2.3: correct")

# %%
elapsed = time.perf_counter() - t_start
log.add("notebook seconds", round(elapsed, 1))
print(f"notebook ran in {elapsed:.1f} s (profile {cfg.profile})")
print(log.table())
