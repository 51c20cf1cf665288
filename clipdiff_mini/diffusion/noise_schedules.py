"""Noise schedules for Gaussian diffusion: how much noise each step adds.

A schedule is a list of variances beta_1..beta_T. Everything the forward
process needs follows from it:

    alpha_t     = 1 - beta_t
    alphabar_t  = prod_{s<=t} alpha_s          (the signal kept after t steps)
    SNR(t)      = alphabar_t / (1 - alphabar_t)

**Indexing follows the papers.** Every tensor has length T + 1 and is indexed
by t = 0..T; index 0 is clean data (beta_0 = 0, alphabar_0 = 1) and the
diffusion steps are t = 1..T. (Released code often shifts this by one; we do
not, so that a formula in a docstring reads the same as in the paper.)
Schedules are stored in float64: alphabar_T can be ~1e-7 and 1 - alphabar_t
~1e-4, where float32 loses digits.

Three schedules:

* ``linear`` (Ho et al. 2020, DDPM, Sec. 4): beta_t rises linearly from 1e-4 to
  0.02 for T = 1000; for other T both ends are scaled by 1000 / T (Nichol &
  Dhariwal 2021) so that the total noise stays about the same.
* ``cosine`` (Nichol & Dhariwal 2021, improved DDPM, eq. 17):
  alphabar_t = f(t) / f(0), f(t) = cos^2(pi/2 * (t/T + s) / (1 + s)), s = 0.008,
  with beta_t = 1 - alphabar_t / alphabar_{t-1} clipped at 0.999.
* ``sqrt`` (Li et al. 2022, Diffusion-LM, App. A): alphabar_t = 1 - sqrt(t/T + s),
  s = 1e-4, betas clipped at 0.999 as for cosine.

For cosine and sqrt the betas are built, as in the released code, from ratios
of consecutive values of the alphabar formula and then clipped; alphabar is
the cumulative product of the clipped betas. For ``sqrt`` this means the
stored alphabar_t is the paper's formula divided by its value at t = 0
(1 - sqrt(1e-4) = 0.99), so that alphabar_0 = 1 exactly; the paper's formula
also dips below zero at t = T, which the clipping at 0.999 absorbs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

SCHEDULES = ("linear", "cosine", "sqrt")
MAX_BETA = 0.999  # the clipping of improved DDPM / Diffusion-LM: beta = 1 would wipe x_{t-1} out entirely


@dataclass(frozen=True)
class Schedule:
    """A noise schedule and the per-step constants derived from it.

    All tensors are float64 of shape (T + 1,), indexed by t = 0..T.
    """

    name: str
    T: int
    betas: torch.Tensor  # (T+1,) beta_0 = 0
    alphas: torch.Tensor  # (T+1,) 1 - beta_t
    alpha_bar: torch.Tensor  # (T+1,) alphabar_0 = 1

    # ---- derived quantities (computed once, on first access) ----
    @cached_property
    def alpha_bar_prev(self) -> torch.Tensor:
        """(T+1,) alphabar_{t-1}; entry 0 is set to 1 (unused: there is no step 0)."""
        return torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar[:-1]])

    @cached_property
    def snr(self) -> torch.Tensor:
        """(T+1,) signal-to-noise ratio alphabar_t / (1 - alphabar_t); +inf at t = 0."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @cached_property
    def log_snr(self) -> torch.Tensor:
        return torch.log(self.alpha_bar) - torch.log1p(-self.alpha_bar)

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """(T+1,) beta~_t = (1 - alphabar_{t-1}) / (1 - alphabar_t) * beta_t (DDPM eq. 7).

        Zero at t = 1 (x_0 is known exactly given x_1 and x_0) and set to 0 at t = 0."""
        ab, abp = self.alpha_bar, self.alpha_bar_prev
        out = (1.0 - abp) / (1.0 - ab).clamp_min(1e-300) * self.betas
        out[0] = 0.0
        return out

    @cached_property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        """(T+1,) log beta~_t with the t = 1 entry (log 0) replaced by the t = 2 entry,
        the convention of the DDPM code, so that it is finite. Needs T >= 2."""
        v = self.posterior_variance.clone()
        if self.T >= 2:
            v[1] = v[2]
        else:  # a single step: no t = 2 to borrow from; fall back to beta_1
            v[1] = self.betas[1]
        v[0] = v[1]
        return torch.log(v)

    @cached_property
    def posterior_mean_coef_x0(self) -> torch.Tensor:
        """(T+1,) coefficient of x_0 in the posterior mean: sqrt(alphabar_{t-1}) beta_t / (1 - alphabar_t) (DDPM eq. 7)."""
        c = self.betas * torch.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar).clamp_min(1e-300)
        c[0] = 1.0
        return c

    @cached_property
    def posterior_mean_coef_xt(self) -> torch.Tensor:
        """(T+1,) coefficient of x_t in the posterior mean: sqrt(alpha_t) (1 - alphabar_{t-1}) / (1 - alphabar_t)."""
        c = torch.sqrt(self.alphas) * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar).clamp_min(1e-300)
        c[0] = 0.0
        return c

    def __repr__(self) -> str:
        return (f"Schedule({self.name!r}, T={self.T}, beta_1={self.betas[1].item():.3g}, "
                f"beta_T={self.betas[-1].item():.3g}, alphabar_T={self.alpha_bar[-1].item():.3g})")


def linear_betas(T: int) -> torch.Tensor:
    """(T,) betas of DDPM: linear from 1e-4 to 0.02 at T = 1000, both ends scaled by 1000/T.

    For T <= 20 the scaling would push beta past 1; those betas are clipped at
    0.999 (not in the papers, which use T >= 1000; it keeps short chains usable)."""
    scale = 1000.0 / T
    betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def _cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """f(u) = cos^2(pi/2 (u + s) / (1 + s)) for u = t / T in [0, 1] (improved DDPM eq. 17)."""
    return torch.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2


def _sqrt_alpha_bar(u: torch.Tensor, s: float = 1e-4) -> torch.Tensor:
    """1 - sqrt(u + s) for u = t / T in [0, 1] (Diffusion-LM)."""
    return 1.0 - torch.sqrt(u + s)


def betas_from_alpha_bar(fn, T: int, max_beta: float = MAX_BETA) -> torch.Tensor:
    """(T,) beta_t = min(1 - fn(t/T) / fn((t-1)/T), max_beta) for t = 1..T.

    The product of (1 - beta_t) telescopes to fn(t/T) / fn(0) where no clipping happens."""
    u = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,)
    f = fn(u)
    betas = 1.0 - f[1:] / f[:-1]
    # the sqrt formula is negative at u = 1, which makes the ratio negative (beta > 1): clip
    return betas.clamp(min=0.0, max=max_beta)


def make_schedule(name: str, T: int) -> Schedule:
    """The schedule ``name`` ("linear", "cosine" or "sqrt") with T steps."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive integer number of diffusion steps, got {T!r}")
    if name == "linear":
        b = linear_betas(T)
    elif name == "cosine":
        b = betas_from_alpha_bar(_cosine_alpha_bar, T)
    else:
        b = betas_from_alpha_bar(_sqrt_alpha_bar, T)
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), b])  # (T+1,) beta_0 = 0
    alphas = 1.0 - betas
    alpha_bar = torch.cumprod(alphas, dim=0)  # alphabar_0 = 1
    return Schedule(name=name, T=T, betas=betas, alphas=alphas, alpha_bar=alpha_bar)


def schedule_from_config(cfg) -> Schedule:
    """``make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)``."""
    return make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
