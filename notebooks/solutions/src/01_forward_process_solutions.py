# %% [markdown]
# # 01 · The forward process: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 01. This notebook
# runs on its own: it recomputes what the exercises use (the chain of
# section 2, the schedules of section 3) with the library, then answers each
# exercise with the derivation, the code, and an `assert` that checks it.

# %%
import math
import os

import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion import make_schedule, q_step
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
SCHEDULE = "sqrt"  # schedule of the chain: "linear" | "cosine" | "sqrt"
TIMESTEPS = None  # number of diffusion steps T; None: the profile's

# %%
cfg = get_config(PROFILE, {"diffusion.schedule": SCHEDULE, "diffusion.timesteps": TIMESTEPS})
set_seed(cfg.seed)
torch.set_num_threads(1)  # small tensors: one thread is faster
T, N = cfg.diffusion.timesteps, cfg.diffusion.mc_samples
gen = torch.Generator().manual_seed(cfg.seed)
sched = make_schedule(cfg.diffusion.schedule, T)
print(f"profile {cfg.profile}: {sched.name} schedule, T = {T}, {N} Monte Carlo samples")

# %% [markdown]
# **Exercise 1.1** One step with $\beta = \beta_{t_\text{big}}$ on data of
# variance 4: does the variance go up or down, and to what value?
#
# The step is $x' = \sqrt{1-\beta}\,x + \sqrt\beta\,\varepsilon$ with $\varepsilon$
# independent of $x$, so the variances add:
#
# $$\operatorname{Var}(x') = (1-\beta)\operatorname{Var}(x) + \beta = 4(1-\beta) + \beta = 4 - 3\beta .$$
#
# It goes **down**. In general $\operatorname{Var}(x') - 1 = (1-\beta)(\operatorname{Var}(x) - 1)$:
# each step moves the variance a fraction $\beta$ of the way towards 1, which
# is why the variance-preserving process forgets the scale of the data as
# well as its shape.

# %%
t_big = int(torch.argmin((sched.betas[1:] - 0.3).abs())) + 1  # the step of section 1
beta = float(sched.betas[t_big])
prediction, var_after = "down", 4 - 3 * beta
n_big = 200_000  # more draws than N: a tight check
x_two = (torch.rand(n_big, 4, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(12)  # (n_big, 4), variance 4
x_four = q_step(sched, x_two, t_big, generator=gen)
emp = x_four.var(0)
se = float(((x_four - x_four.mean(0)) ** 2).std(0).max()) / math.sqrt(n_big)
print(f"beta = {beta:.4f}: 4 - 3 beta = {var_after:.4f}; simulated {emp.numpy().round(4)} (tolerance {5 * se:.4f})")
assert var_after < 4
assert torch.allclose(emp, torch.full_like(emp, var_after), atol=5 * se)

# %% [markdown]
# **Exercise 1.2** The correlation of $x_s$ and $x_t$ ($s < t$) on one trajectory.
#
# Given $x_0$, $\operatorname{Var}(x_s) = 1-\bar\alpha_s$, $\operatorname{Var}(x_t) = 1-\bar\alpha_t$ and
# $\operatorname{Cov}(x_s, x_t) = \sqrt{\bar\alpha_t/\bar\alpha_s}\,(1-\bar\alpha_s)$. Dividing,
#
# $$\rho(s, t) = \sqrt{\frac{\bar\alpha_t}{\bar\alpha_s}}\,\frac{1-\bar\alpha_s}{\sqrt{(1-\bar\alpha_s)(1-\bar\alpha_t)}}
# = \sqrt{\frac{\bar\alpha_t\,(1-\bar\alpha_s)}{\bar\alpha_s\,(1-\bar\alpha_t)}}
# = \sqrt{\frac{\mathrm{SNR}(t)}{\mathrm{SNR}(s)}} .$$
#
# Two points of a trajectory stay strongly correlated as long as the SNR has
# not dropped much between them; the correlation does not depend on $x_0$.
# The check simulates the chain of section 2 again and compares sample
# correlations (five standard errors, about $5(1-\rho^2)/\sqrt N$).

# %%
def trajectory_correlation(s, t):
    """Correlation of x_s and x_t (s < t) on one trajectory: sqrt(SNR(t) / SNR(s))."""
    return math.sqrt(float(sched.snr[t] / sched.snr[s]))


x0 = torch.tensor([-2.0, -0.5, 1.0, 3.0], dtype=torch.float64)
pairs = ((T // 20, T // 4), (T // 4, T // 2), (T // 2, 3 * T // 4))
keep = {t for p in pairs for t in p}
x = x0.expand(N, 4).clone()  # (N, 4)
saved = {}
for t in range(1, 3 * T // 4 + 1):
    x = q_step(sched, x, t, generator=gen)
    if t in keep:
        saved[t] = x.clone()
for s_, t_ in pairs:
    a, b = saved[s_] - saved[s_].mean(0), saved[t_] - saved[t_].mean(0)
    emp = (a * b).mean(0) / (a.std(0) * b.std(0))  # (4,)
    rho = trajectory_correlation(s_, t_)
    tol = 5 * (1 - rho ** 2) / math.sqrt(N) + 1e-3
    print(f"corr(x_{s_}, x_{t_}): chains {emp.numpy().round(4)}, sqrt(SNR ratio) {rho:.4f} (tolerance {tol:.4f})")
    assert torch.allclose(emp, torch.full_like(emp, rho), atol=tol), (s_, t_)

# %% [markdown]
# **Exercise 1.3** The first step of the sqrt schedule with $\bar\alpha_t \le 1/2$.
#
# The library's sqrt schedule is $\bar\alpha_t = \dfrac{1-\sqrt{t/T + s}}{1-\sqrt{s}}$ (the formula
# divided by its value at $t = 0$). It decreases in $t$, and
#
# $$\bar\alpha_t \le \tfrac12 \iff \sqrt{t/T + s} \ge \frac{1+\sqrt s}{2}
# \iff t \ge T\left[\Big(\frac{1+\sqrt s}{2}\Big)^2 - s\right],$$
#
# so the answer is the ceiling of the right-hand side. Without the offset
# this is $t = T/4$: the sqrt schedule removes half of the signal power in
# the first quarter of the chain, far earlier than the cosine schedule,
# whose halfway point is near $t = T/2$ (its $\bar\alpha_t$ is a squared cosine of an
# angle that grows linearly with $t$).

# %%
def half_signal_step(T_, s=1e-4):
    """The smallest t with alphabar_t <= 1/2 for the sqrt schedule with T_ steps."""
    return math.ceil(T_ * (((1 + math.sqrt(s)) / 2) ** 2 - s))


for T_ in (100, 1000, T):
    ab_ = make_schedule("sqrt", T_).alpha_bar
    first = int(torch.nonzero(ab_ <= 0.5)[0])
    print(f"T = {T_}: formula {half_signal_step(T_)}, from the table {first}")
    assert half_signal_step(T_) == first, T_
cos_ab = make_schedule("cosine", T).alpha_bar
print(f"cosine, T = {T}: first t with alphabar <= 1/2 at t/T = {int(torch.nonzero(cos_ab <= 0.5)[0]) / T:.3f}")
