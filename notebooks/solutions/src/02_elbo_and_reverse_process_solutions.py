# %% [markdown]
# # 02 · The variational bound and the reverse process: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 02. This notebook
# runs on its own: it rebuilds the schedule, the toy mixture and its exact
# denoiser, and the exact bounds of the blended denoisers of section 5, then
# answers each exercise with the derivation, the code, and an `assert`.

# %%
import math
import os

import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion import GaussianMixture, exact_bound_1d, make_schedule
from clipdiff_mini.diffusion import gaussian_diffusion as gd
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
SCHEDULE = "cosine"  # noise schedule: "linear" | "cosine" | "sqrt"
TIMESTEPS = None  # number of diffusion steps T; None: the profile's
VARIANCE = "small"  # reverse-process variance: "small" (posterior variance) or "large" (beta_t)

# %%
cfg = get_config(PROFILE, {"diffusion.schedule": SCHEDULE, "diffusion.timesteps": TIMESTEPS})
set_seed(cfg.seed)
torch.set_num_threads(1)  # small tensors: one thread is faster
sched = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
T, snr = sched.T, sched.snr
gen = torch.Generator().manual_seed(cfg.seed)
F64 = torch.float64
mix = GaussianMixture(weights=[0.3, 0.5, 0.2], means=[-2.0, 0.5, 2.5], stds=[0.3, 0.5, 0.2])  # notebook 02's toy
exact_x0 = mix.denoiser(sched)
print(f"profile {cfg.profile}: {sched}")

# %% [markdown]
# **Exercise 2.1** The posterior mean written with the noise.
#
# Start from section 2,
# $\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t$,
# and substitute $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon)/\sqrt{\bar\alpha_t}$.
# Since $\sqrt{\bar\alpha_{t-1}}/\sqrt{\bar\alpha_t} = 1/\sqrt{\alpha_t}$:
#
# * the coefficient of $x_t$ is
#   $\frac{\beta_t + \alpha_t(1-\bar\alpha_{t-1})}{\sqrt{\alpha_t}\,(1-\bar\alpha_t)}
#   = \frac{\beta_t + \alpha_t - \bar\alpha_t}{\sqrt{\alpha_t}\,(1-\bar\alpha_t)} = \frac{1}{\sqrt{\alpha_t}}$
#   (using $\beta_t + \alpha_t = 1$);
# * the coefficient of $\varepsilon$ is
#   $-\frac{\beta_t\sqrt{1-\bar\alpha_t}}{\sqrt{\alpha_t}\,(1-\bar\alpha_t)} = -\frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}$.
#
# So $\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon\big)$.
# At $t = 1$ ($\bar\alpha_1 = \alpha_1$, $1 - \bar\alpha_1 = \beta_1$) it gives
# $(x_1 - \sqrt{\beta_1}\,\varepsilon)/\sqrt{\alpha_1} = x_0$, as it should.

# %%
def mean_from_eps(xt, eps, t):
    """The posterior mean tilde-mu_t(x_t, x_0) written with the noise eps instead of x_0."""
    return (xt - sched.betas[t] / torch.sqrt(1 - sched.alpha_bar[t]) * eps) / torch.sqrt(sched.alphas[t])


x0_ex = torch.randn(6, 3, generator=gen, dtype=F64)
eps_ex = torch.randn(6, 3, generator=gen, dtype=F64)
worst = 0.0
for t in range(1, T + 1):
    xt_ex = torch.sqrt(sched.alpha_bar[t]) * x0_ex + torch.sqrt(1 - sched.alpha_bar[t]) * eps_ex
    want = gd.q_posterior(sched, x0_ex, xt_ex, t)[0]
    worst = max(worst, float((mean_from_eps(xt_ex, eps_ex, t) - want).abs().max()))
    assert torch.allclose(mean_from_eps(xt_ex, eps_ex, t), want, rtol=1e-8, atol=1e-10), t
print(f"noise form = posterior mean from x0 at all {T} steps (largest difference {worst:.1e})")

# %% [markdown]
# **Exercise 2.2** The noise weight from the $x_0$ weight.
#
# A bound term is the same number whichever error we write it with:
# $w^{\varepsilon}_t\,\lVert\varepsilon - \hat\varepsilon\rVert^2 = w^{x_0}_t\,\lVert x_0 - \hat x_0\rVert^2$.
# With $\lVert\varepsilon - \hat\varepsilon\rVert^2 = \mathrm{SNR}(t)\,\lVert x_0 - \hat x_0\rVert^2$
# this holds for every error only if
#
# $$w^{\varepsilon}_t = \frac{w^{x_0}_t}{\mathrm{SNR}(t)} .$$
#
# (From the formulas in $\beta_t$: $w^{x_0}_t / w^{\varepsilon}_t = \bar\alpha_{t-1}\alpha_t/(1-\bar\alpha_t) = \mathrm{SNR}(t)$, for
# either variance.) At the low-noise end $\mathrm{SNR}(t)$ is large, so the
# $x_0$ weight is the larger one there, by a factor $\mathrm{SNR}(t)$: this is
# the steep weighting that Diffusion-LM's simplified $x_0$ loss drops.

# %%
w_x0_all = gd.bound_weights(sched, "x0", VARIANCE)[0]  # (T + 1,)
w_eps = w_x0_all[2:] / snr[2:]  # (T - 1,) t = 2..T
larger_at_low_noise = "x0"
lib_eps = gd.bound_weights(sched, "eps", VARIANCE)[0][2:]
assert torch.allclose(w_eps, lib_eps, rtol=1e-9)
assert float(w_x0_all[2]) > float(lib_eps[0])
print(f"w_x0 / w_eps at t = 2: {float(w_x0_all[2] / lib_eps[0]):.4g} = SNR(2) = {float(snr[2]):.4g}")

# %% [markdown]
# **Exercise 2.3** The bound of the blended denoisers
# $f_\lambda = \mathbb E[x_0\mid x_t] + \lambda\,\Delta$, with $\Delta = f_\text{lin} - \mathbb E[x_0\mid x_t]$.
#
# By the decomposition of section 4 (the cross term vanishes because
# $\Delta$ is a function of $x_t$ and $\mathbb E[x_0 - \mathbb E[x_0\mid x_t] \mid x_t] = 0$),
# $\mathrm{MSE}_t(f_\lambda) = \mathrm{MMSE}_t + \lambda^2\,\mathbb E\,\Delta^2$. Every bound
# term is a weight times this error plus a constant that does not depend on
# the denoiser, and the prior term does not depend on it either, so
#
# $$L(\lambda) = L(0) + \lambda^2 K,\qquad K = \sum_t w^{x_0}_t\,\mathbb E\,\Delta_t^2 \ge 0 .$$
#
# The bound depends on $\lambda$ only through $\lambda^2$: $L(-0.5)$ and
# $L(0.5)$ are **equal**, and $\frac{L(1) - L(0)}{L(0.5) - L(0)} = \frac{1}{0.25} = 4$.
# (The same holds for the two simplified losses, which are other weightings
# of the same errors.)

# %%
mu_d, var_d = float(mix.mean()), float(mix.variance())


def linear_denoiser(xt, t):
    """E[x_0 | x_t] if the data were N(mu_d, var_d) (section 5 of notebook 02)."""
    a = sched.alpha_bar[t].to(xt.dtype)[:, None]
    return mu_d + torch.sqrt(a) * var_d / (a * var_d + 1 - a) * (xt - torch.sqrt(a) * mu_d)


def blended(lam):
    return lambda xt, t: exact_x0(xt, t) + lam * (linear_denoiser(xt, t) - exact_x0(xt, t))


bound = {lam: exact_bound_1d(mix, sched, variance=VARIANCE, model_fn=None if lam == 0 else blended(lam))["total"]
         for lam in (-0.5, 0.0, 0.5, 1.0)}
prediction, ratio = "equal", 4.0
got = (bound[1.0] - bound[0.0]) / (bound[0.5] - bound[0.0])
print(f"bounds: {', '.join(f'lambda {lam:+.1f}: {b:.6f}' for lam, b in bound.items())}; ratio {got:.8f}")
assert abs(bound[-0.5] - bound[0.5]) < 1e-6 * (bound[0.5] - bound[0.0])
assert math.isclose(ratio, got, rel_tol=1e-6)
