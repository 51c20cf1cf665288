# %% [markdown]
# # 06 · Discrete diffusion: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 06. This notebook
# stands on its own: it rebuilds the schedules and the toy it needs (in
# seconds), then answers each exercise with the derivation, the code, and the
# same check as the exercise cell.

# %%
import math
import os

import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion import discrete as dd
from clipdiff_mini.diffusion import ToySequences
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
T_STEPS = 20  # diffusion steps of the schedules, as in notebook 06

# %%
cfg = get_config(PROFILE)
set_seed(cfg.seed)
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(cfg.seed)
F64 = torch.float64
ci = cfg.profile == "ci"
scheds = {k: dd.mask_schedule(T_STEPS, k) for k in dd.MASK_SCHEDULES}
V_SMALL, MASK_SMALL = 7, 3  # check 1's vocabulary: [MASK] is id 3
toy = ToySequences.random(3, 4, scale=2.0, generator=gen)
cont = toy.nelbo_continuous()
exact_fn = lambda x, t: toy.denoise(x)  # noqa: E731  the exact denoiser of the toy
n_toy = 10_000 if ci else 20_000


def tv_to_toy(x):
    """Total variation distance between the frequencies of the rows of x (N, L) and the toy's distribution."""
    idx = (x * torch.tensor([toy.K ** (toy.L - 1 - i) for i in range(toy.L)])).sum(1)  # product-order index
    freq = torch.bincount(idx, minlength=len(toy.probs)).to(F64) / len(x)
    return 0.5 * float((freq - toy.probs).abs().sum())


print(f"profile {cfg.profile}: T = {T_STEPS}; toy of {len(toy.probs)} sequences, entropy {toy.entropy():.4f} nats")

# %% [markdown]
# ## Exercise 6.1: the `replace` schedule at $t = T$
#
# *Question:* from $\bar\alpha_T$ and $\bar\gamma_T$ alone, (a) the probability
# that a token is replaced and not masked at $t = T$, (b) the probability that
# $x_T = x_0$.
#
# **Answer.** After $T$ steps a token is in exactly one of three states: never
# redrawn and never masked ($\bar\alpha_T$), masked ($\bar\gamma_T$), or redrawn
# at least once and not masked, which is what is left:
#
# $$\text{(a)}\quad K\bar\beta_T = 1 - \bar\alpha_T - \bar\gamma_T .$$
#
# A redrawn token is uniform over the $K$ ordinary tokens, so it lands on its
# own value with probability $1/K$:
#
# $$\text{(b)}\quad q(x_T = x_0\mid x_0) = \bar\alpha_T + \frac{1 - \bar\alpha_T - \bar\gamma_T}{K} .$$
#
# The check multiplies the one-step matrices (no closed form): the mass on the
# $K - 1$ *other* ordinary tokens is $(K-1)\bar\beta_T$, so (a) is that mass
# times $K/(K-1)$.

# %%
s_rep = scheds["replace"]
K_small = V_SMALL - 1
replaced_6_1 = 1 - s_rep.keep_bar[T_STEPS] - s_rep.mask_bar[T_STEPS]
same_as_x0_6_1 = s_rep.keep_bar[T_STEPS] + replaced_6_1 / K_small

prod_rep = torch.eye(V_SMALL, dtype=F64)
for t_ in range(1, T_STEPS + 1):
    prod_rep = prod_rep @ dd.step_matrix(s_rep, t_, V_SMALL, MASK_SMALL)
x0_ex = 0
others = [j for j in range(V_SMALL) if j not in (x0_ex, MASK_SMALL)]  # ordinary tokens other than x_0
replaced_by_product = float(prod_rep[x0_ex, others].sum()) * K_small / (K_small - 1)
assert abs(float(same_as_x0_6_1) - float(prod_rep[x0_ex, x0_ex])) < 1e-12
assert abs(float(replaced_6_1) - replaced_by_product) < 1e-12
print(f"at t = T: replaced {float(replaced_6_1):.6f} (product of step matrices {replaced_by_product:.6f}); "
      f"still x_0 {float(same_as_x0_6_1):.6f} (product {float(prod_rep[x0_ex, x0_ex]):.6f})")

# %% [markdown]
# ## Exercise 6.2: the reveal probability of a cosine schedule
#
# *Question:* write $\lambda_t$ for any masking-only schedule given by
# $\bar\alpha$; does the cosine schedule reveal more or fewer masks than `mask`
# at $t = T$?
#
# **Answer.** Section 2's derivation never used the form of $\bar\alpha$: a masked
# $x_t$ was $x_0$ a step earlier with weight $\bar\alpha_{t-1} - \bar\alpha_t$ (kept
# until $t-1$, masked at $t$) and masked already with weight $1 - \bar\alpha_{t-1}$,
# so
#
# $$\lambda_t = \frac{\bar\alpha_{t-1} - \bar\alpha_t}{1 - \bar\alpha_t} .$$
#
# At $t = T$ the cosine schedule has $\bar\alpha_T = 0$ and
# $\bar\alpha_{T-1} = \cos\big(\tfrac\pi2 - \tfrac{\pi}{2T}\big) = \sin\tfrac{\pi}{2T}$,
# so $\lambda_T = \sin\tfrac{\pi}{2T} \approx \tfrac{\pi}{2T}$, larger than $1/T$ by a
# factor close to $\pi/2$: **more**. In general $\lambda_T = \bar\alpha_{T-1}$ when
# $\bar\alpha_T = 0$: the share of tokens still unmasked one step before the end.
# The cosine schedule keeps more tokens until late (its $\bar\alpha$ falls fastest
# at the end), so its first reverse step has more to reveal. At $t = 1$ every
# schedule has $\lambda_1 = 1$ (all remaining masks are revealed).

# %%
def reveal_prob(keep_bar, t):
    """lambda_t = q(x_{t-1} = x_0 | x_t = [MASK], x_0) for a masking-only schedule; keep_bar (T+1,), t >= 1."""
    return (keep_bar[t - 1] - keep_bar[t]) / (1 - keep_bar[t])


more_at_T_6_2 = True

steps_ex = torch.arange(T_STEPS + 1, dtype=F64)
keep_cos = torch.cos(math.pi / 2 * steps_ex / T_STEPS)  # (T+1,) alphabar_t
s_cos = dd.MaskSchedule(f"cosine T={T_STEPS}", keep_cos, 1 - keep_cos)
t_all = torch.arange(1, T_STEPS + 1)
via_posterior = dd.posterior(s_cos, torch.full((T_STEPS,), 2), torch.zeros(T_STEPS, dtype=torch.long),
                             t_all, 3, 2)[:, 0]  # (T,) the mass on x_0 of a masked x_t
mine = torch.tensor([float(reveal_prob(keep_cos, int(t_))) for t_ in t_all], dtype=F64)
assert torch.allclose(mine, via_posterior, atol=1e-12)
lam_T = float(via_posterior[-1])
assert more_at_T_6_2 == (lam_T > 1 / T_STEPS)
assert abs(lam_T - math.sin(math.pi / (2 * T_STEPS))) < 1e-12
print(f"cosine lambda_T = {lam_T:.4f} = sin(pi/2T), against 1/T = {1 / T_STEPS:.4f}; lambda_1 = {float(mine[0]):.4f}")

# %% [markdown]
# ## Exercise 6.3: the gap at twice the steps
#
# *Question:* the ratio of the bound's gap at $T = 2000$ to the gap at $T = 1000$.
#
# **Answer.** The plot of notebook 06 shows the gap falling like $1/T$, so
# doubling $T$ halves it: the ratio is one half. The reason: a finite $T$ loses
# only when two positions are revealed in the same step. With $\bar\alpha_t = 1 - t/T$
# a mask is revealed at a uniformly random one of the $T$ steps, so two given
# positions share a step with probability of order $1/T$.

# %%
ratio_6_3 = 0.5
disc_1000 = toy.nelbo_discrete(dd.mask_schedule(1000, "mask"))
gap_2000 = toy.nelbo_discrete(dd.mask_schedule(2000, "mask")) - cont
measured_ratio = gap_2000 / (disc_1000 - cont)
assert abs(ratio_6_3 - measured_ratio) < 0.05
print(f"gap {disc_1000 - cont:.3e} at T = 1000, {gap_2000:.3e} at T = 2000, ratio {measured_ratio:.4f}")

# %% [markdown]
# ## Exercise 6.4: random order with $T = 2$
#
# *Question:* order random-order sampling with $T = 1, 2, 4$ by their total
# variation distance to the toy, largest first.
#
# **Answer.** $T = 1$, then $T = 2$, then $T = 4$. Every position revealed in the
# same step is drawn from its conditional given the tokens visible *before*
# that step, independently of the others revealed with it, so the sampler
# ignores how those positions depend on each other. $T = 1$ draws all four
# positions at once from their marginals; with $T = 2$ about two are revealed
# per step; with $T = 4$ about one per step, though by chance some steps still
# reveal two or more (hence $T = 4$ is not yet exact, and $T = 50$ nearly is).

# %%
order_6_4 = ["T = 1", "T = 2", "T = 4"]
tv_ex = {}
for T_ex in (1, 2, 4):
    x_ex = dd.sample_masked(exact_fn, dd.mask_schedule(T_ex, "mask"), (n_toy, toy.L), toy.mask_id, generator=gen,
                            order="random")
    tv_ex[f"T = {T_ex}"] = tv_to_toy(x_ex)
measured_order = sorted(tv_ex, key=tv_ex.get, reverse=True)
assert order_6_4 == measured_order, tv_ex
print(f"TV distances ({n_toy} samples each): {({k: round(v, 3) for k, v in tv_ex.items()})}")
