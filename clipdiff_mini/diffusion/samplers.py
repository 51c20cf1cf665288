"""Reverse-process samplers: ancestral DDPM, DDIM, and Diffusion-LM's clamping.

Both samplers start from x_T ~ N(0, I) and call a denoiser
``model_fn(x_t, t) -> prediction`` (t a LongTensor (B,)) whose output is an
estimate of x_0 (``prediction="x0"``) or of the noise (``prediction="eps"``).
Either way the sampler turns it into an estimate x0_hat, optionally passes it
through ``clamp_fn`` and only then computes the next state. With
``clamp_fn`` = "snap to the nearest word embedding" this is the clamping trick
of Diffusion-LM (Li et al. 2022, Sec. 4.2); the text-embedding module provides
such a function, the samplers only need the callable.

* DDPM (Ho et al. 2020, Algorithm 2): x_{t-1} ~ N(mu~_t(x_t, x0_hat), sigma_t^2 I)
  for t = T..1, with sigma_t^2 = beta~_t ("small") or beta_t ("large"), and no
  noise at the last step (x_0 = mu~_1 = x0_hat).
* DDIM (Song et al. 2021, eq. 12) on an increasing subsequence tau_1 < ... < tau_S
  of 1..T, stepping from t = tau_i to s = tau_{i-1} (s = 0 after the last):
      eps_hat = (x_t - sqrt(alphabar_t) x0_hat) / sqrt(1 - alphabar_t)
      sigma   = eta sqrt((1 - alphabar_s) / (1 - alphabar_t)) sqrt(1 - alphabar_t / alphabar_s)
      x_s     = sqrt(alphabar_s) x0_hat + sqrt(1 - alphabar_s - sigma^2) eps_hat + sigma z
  eta = 0 is deterministic; eta = 1 on every step is DDPM with sigma_t^2 = beta~_t.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from clipdiff_mini.diffusion.gaussian_diffusion import (
    _work_dtype, eps_from_x0, posterior_mean_from_x0, predict_x0, reverse_log_variance,
)
from clipdiff_mini.diffusion.noise_schedules import Schedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ClampFn = Callable[[torch.Tensor], torch.Tensor]


def _initial_noise(shape, x_T, generator, device, dtype) -> torch.Tensor:
    """x_T as given (in ``dtype`` if one is given), else N(0, I) noise (float32 unless ``dtype``)."""
    if x_T is not None:
        dtype = dtype or x_T.dtype
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)} was asked for")
        return x_T.to(device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype or torch.float32)


def _x0_hat(model_fn, sched, x, t: int, prediction, clamp_fn) -> torch.Tensor:
    tvec = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
    x0_hat = predict_x0(sched, x, t, model_fn(x, tvec), prediction)
    return clamp_fn(x0_hat) if clamp_fn is not None else x0_hat


@torch.no_grad()
def ddpm_sample(model_fn: ModelFn, sched: Schedule, shape: Sequence[int], *, prediction: str = "x0",
                clamp_fn: ClampFn | None = None, variance: str = "small",
                generator: torch.Generator | None = None, progress: bool = True,
                x_T: torch.Tensor | None = None, device=None, dtype: torch.dtype | None = None,
                return_trajectory: bool = False):
    """Ancestral sampling, T model calls (DDPM Algorithm 2).

    Returns x_0 of ``shape`` (and with ``return_trajectory`` the list of states
    x_T, x_{T-1}, ..., x_0)."""
    device = torch.device(device) if device is not None else (x_T.device if x_T is not None else torch.device("cpu"))
    x = _initial_noise(shape, x_T, generator, device, dtype)  # (B, ...)
    trajectory = [x]
    for t in tqdm(range(sched.T, 0, -1), desc="DDPM", disable=not progress):
        x0_hat = _x0_hat(model_fn, sched, x, t, prediction, clamp_fn)
        mean = posterior_mean_from_x0(sched, x0_hat, x, t)
        if t > 1:
            std = torch.exp(0.5 * reverse_log_variance(sched, t, x, variance))
            x = mean + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=_work_dtype(x))
        else:  # beta~_1 = 0: the last step returns the mean, x0_hat itself
            x = mean
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


def ddim_timesteps(T: int, timesteps: None | int | Sequence[int] = None) -> list[int]:
    """The increasing subsequence of 1..T that DDIM visits.

    None: every step; an int S: S steps evenly spaced from 1 to T (both included);
    a list: used as given after checking it is strictly increasing within 1..T."""
    if timesteps is None:
        return list(range(1, T + 1))
    if isinstance(timesteps, int) and not isinstance(timesteps, bool):
        if not 1 <= timesteps <= T:
            raise ValueError(f"number of DDIM steps must be in 1..T={T}, got {timesteps}")
        if timesteps == 1:
            return [T]
        steps = torch.linspace(1, T, timesteps, dtype=torch.float64).round().long().tolist()
        return sorted(set(steps))
    steps = [int(s) for s in timesteps]
    if not steps or any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 1 or steps[-1] > T:
        raise ValueError(f"DDIM timesteps must be a strictly increasing, non-empty list within 1..T={T}, got {steps}")
    return steps


@torch.no_grad()
def ddim_sample(model_fn: ModelFn, sched: Schedule, shape: Sequence[int], *,
                timesteps: None | int | Sequence[int] = None, eta: float = 0.0, prediction: str = "x0",
                clamp_fn: ClampFn | None = None, generator: torch.Generator | None = None,
                progress: bool = True, x_T: torch.Tensor | None = None, device=None,
                dtype: torch.dtype | None = None, return_trajectory: bool = False):
    """DDIM sampling (Song et al. 2021, eq. 12) over ``ddim_timesteps(T, timesteps)``.

    Starts from x ~ N(0, I) taken as x at the largest visited step. Returns
    x_0 (and with ``return_trajectory`` the list of states x_{tau_i}, starting
    with the initial noise and ending with x_0)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta}")
    steps = ddim_timesteps(sched.T, timesteps)
    device = torch.device(device) if device is not None else (x_T.device if x_T is not None else torch.device("cpu"))
    x = _initial_noise(shape, x_T, generator, device, dtype)  # (B, ...)
    ab = sched.alpha_bar  # (T+1,) float64, ab[0] = 1
    trajectory = [x]
    pairs = list(zip(reversed(steps), list(reversed(steps))[1:] + [0]))  # (t, s) with s < t, last s = 0
    for t, s in tqdm(pairs, desc="DDIM", disable=not progress):
        x0_hat = _x0_hat(model_fn, sched, x, t, prediction, clamp_fn)
        eps_hat = eps_from_x0(sched, x, t, x0_hat)  # recomputed from the (clamped) x0_hat
        a_t, a_s = float(ab[t]), float(ab[s])
        sigma = eta * ((1 - a_s) / (1 - a_t)) ** 0.5 * (1 - a_t / a_s) ** 0.5
        dir_coef = max(1 - a_s - sigma ** 2, 0.0) ** 0.5
        x = a_s ** 0.5 * x0_hat + dir_coef * eps_hat
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=_work_dtype(x))
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x
