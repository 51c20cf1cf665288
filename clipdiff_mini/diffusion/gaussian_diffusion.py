"""Gaussian diffusion: the forward process, its posterior, and the variational bound.

Notation and equation numbers follow Ho et al. 2020 (DDPM); the schedule
(`clipdiff_mini.diffusion.noise_schedules.Schedule`) is indexed by t = 0..T with
alphabar_0 = 1, so t = 0 is clean data and the steps are t = 1..T.

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                  (2)
    q(x_t | x_0)     = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I)            (4)
    q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)                     (6)
        mu~_t   = sqrt(alphabar_{t-1}) beta_t / (1 - alphabar_t) x_0
                + sqrt(alpha_t) (1 - alphabar_{t-1}) / (1 - alphabar_t) x_t    (7)
        beta~_t = (1 - alphabar_{t-1}) / (1 - alphabar_t) beta_t

The bound on -log p(x_0) (eq. 5) is L_T + sum_{t=2}^T L_{t-1} + L_0 with
L_T = KL(q(x_T|x_0) || N(0, I)), L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
and L_0 = -log p(x_0 | x_1).

Every function takes ``t`` as a Python int (one step for the whole batch) or a
LongTensor of shape (B,) (one step per example, broadcast over the remaining
dimensions of x). Arithmetic runs in the dtype of x (float32 for half
precision inputs); the schedule constants are float64 and are cast per call.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from clipdiff_mini.diffusion.noise_schedules import SCHEDULES, Schedule, make_schedule, schedule_from_config  # noqa: F401 (re-exported)

PREDICTIONS = ("x0", "eps")  # what a denoiser outputs
VARIANCES = ("small", "large")  # reverse-process variance: beta~_t ("small") or beta_t ("large")


# ---- indexing helpers ---------------------------------------------------------
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _check_t(sched: Schedule, t, min_t: int, what: str) -> torch.Tensor:
    """t as a CPU LongTensor (0-d or (B,)), checked to lie in min_t..T."""
    tt = torch.as_tensor(t)
    if tt.dtype.is_floating_point or tt.dtype == torch.bool:
        raise TypeError(f"{what}: t must be an int or an integer tensor, got dtype {tt.dtype}")
    if tt.dim() > 1:
        raise ValueError(f"{what}: t must be an int or a 1-D tensor of shape (B,), got shape {tuple(tt.shape)}")
    tt = tt.long().cpu()
    if tt.numel() and (int(tt.min()) < min_t or int(tt.max()) > sched.T):
        raise ValueError(f"{what}: t must lie in {min_t}..{sched.T} (T = {sched.T}), "
                         f"got values in {int(tt.min())}..{int(tt.max())}")
    return tt


def _coef(arr: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """arr[t] shaped to broadcast against x: a scalar for 0-d t, (B, 1, ..., 1) for t of shape (B,)."""
    vals = arr[t]  # () or (B,) float64, on the CPU
    if vals.dim() == 1:
        if x.dim() == 0 or vals.shape[0] != x.shape[0]:
            raise ValueError(f"t has shape {tuple(t.shape)} but x has shape {tuple(x.shape)}; "
                             "a tensor t needs one step per example along x's first dimension")
        vals = vals.reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, ..., 1)
    return vals.to(device=x.device, dtype=_work_dtype(x))


def sum_flat(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): sum over every dimension but the first (nats per example)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=_work_dtype(x))


# ---- forward process -------------------------------------------------------------
def q_step(sched: Schedule, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One forward step, x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (DDPM eq. 2), t in 1..T."""
    tt = _check_t(sched, t, 1, "q_step")
    noise = _randn_like(x_prev, generator) if noise is None else noise
    return _coef(torch.sqrt(sched.alphas), tt, x_prev) * x_prev + _coef(torch.sqrt(sched.betas), tt, x_prev) * noise


def q_mean_variance(sched: Schedule, x0: torch.Tensor, t):
    """Mean, variance and log-variance of q(x_t | x_0) (DDPM eq. 4), t in 0..T.

    mean has x0's shape; variance/log_variance broadcast against it (log_variance is -inf at t = 0)."""
    tt = _check_t(sched, t, 0, "q_mean_variance")
    mean = _coef(torch.sqrt(sched.alpha_bar), tt, x0) * x0
    var = _coef(1.0 - sched.alpha_bar, tt, x0)
    return mean, var, torch.log(var)


def q_sample(sched: Schedule, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps, eps ~ N(0, I): a draw from q(x_t | x_0) (eq. 4)."""
    tt = _check_t(sched, t, 0, "q_sample")
    noise = _randn_like(x0, generator) if noise is None else noise
    return _coef(torch.sqrt(sched.alpha_bar), tt, x0) * x0 + _coef(torch.sqrt(1.0 - sched.alpha_bar), tt, x0) * noise


# ---- the posterior q(x_{t-1} | x_t, x_0) -------------------------------------------
def posterior_mean_from_x0(sched: Schedule, x0: torch.Tensor, xt: torch.Tensor, t) -> torch.Tensor:
    """mu~_t(x_t, x_0) (DDPM eq. 7), t in 1..T. At t = 1 it is x_0 itself."""
    tt = _check_t(sched, t, 1, "posterior_mean_from_x0")
    return _coef(sched.posterior_mean_coef_x0, tt, xt) * x0 + _coef(sched.posterior_mean_coef_xt, tt, xt) * xt


def q_posterior(sched: Schedule, x0: torch.Tensor, xt: torch.Tensor, t):
    """(mean, variance, log_variance) of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7), t in 1..T.

    The variance beta~_t is exactly 0 at t = 1; there ``log_variance`` is the
    t = 2 value instead of -inf (the DDPM code's "clipped" convention), so that it
    can be fed to a KL or used as a decoder variance."""
    tt = _check_t(sched, t, 1, "q_posterior")
    mean = posterior_mean_from_x0(sched, x0, xt, tt)
    var = _coef(sched.posterior_variance, tt, xt)
    logvar = _coef(sched.posterior_log_variance_clipped, tt, xt)
    return mean, var, logvar


# ---- conversions between what a denoiser may predict ------------------------------
def x0_from_eps(sched: Schedule, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t) (eq. 4 solved for x_0)."""
    tt = _check_t(sched, t, 0, "x0_from_eps")
    return (xt - _coef(torch.sqrt(1.0 - sched.alpha_bar), tt, xt) * eps) / _coef(torch.sqrt(sched.alpha_bar), tt, xt)


def eps_from_x0(sched: Schedule, xt: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(alphabar_t) x_0) / sqrt(1 - alphabar_t) (eq. 4 solved for eps), t in 1..T."""
    tt = _check_t(sched, t, 1, "eps_from_x0")
    return (xt - _coef(torch.sqrt(sched.alpha_bar), tt, xt) * x0) / _coef(torch.sqrt(1.0 - sched.alpha_bar), tt, xt)


def posterior_mean_from_eps(sched: Schedule, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """mu~_t = (x_t - beta_t / sqrt(1 - alphabar_t) eps) / sqrt(alpha_t) (DDPM eq. 11), t in 1..T."""
    tt = _check_t(sched, t, 1, "posterior_mean_from_eps")
    k = _coef(sched.betas / torch.sqrt(1.0 - sched.alpha_bar).clamp_min(1e-300), tt, xt)
    return (xt - k * eps) / _coef(torch.sqrt(sched.alphas), tt, xt)


def x0_from_posterior_mean(sched: Schedule, xt: torch.Tensor, t, mean: torch.Tensor) -> torch.Tensor:
    """Invert eq. 7 for x_0: (mu~ - c_xt x_t) / c_x0, t in 1..T."""
    tt = _check_t(sched, t, 1, "x0_from_posterior_mean")
    return (mean - _coef(sched.posterior_mean_coef_xt, tt, xt) * xt) / _coef(sched.posterior_mean_coef_x0, tt, xt)


def predict_x0(sched: Schedule, xt: torch.Tensor, t, output: torch.Tensor, prediction: str) -> torch.Tensor:
    """The denoiser's estimate of x_0 from its raw output, for ``prediction`` in PREDICTIONS."""
    if prediction == "x0":
        return output
    if prediction == "eps":
        return x0_from_eps(sched, xt, t, output)
    raise ValueError(f"unknown prediction {prediction!r}; allowed: {', '.join(map(repr, PREDICTIONS))}")


# ---- the reverse process's fixed variance ----------------------------------------
def reverse_log_variance(sched: Schedule, t, x: torch.Tensor, variance: str = "small") -> torch.Tensor:
    """log sigma_t^2 of p(x_{t-1} | x_t), broadcast against x, t in 1..T.

    "small": sigma_t^2 = beta~_t (the posterior variance; optimal when x_0 is a point),
    "large": sigma_t^2 = beta_t (optimal when x_0 ~ N(0, I)) (DDPM Sec. 3.2).
    At t = 1 both use beta~_2, as the DDPM / improved-DDPM code does: this is the
    variance of the decoder p(x_0 | x_1)."""
    tt = _check_t(sched, t, 1, "reverse_log_variance")
    if variance == "small":
        arr = sched.posterior_log_variance_clipped
    elif variance == "large":
        arr = torch.log(sched.betas.clamp_min(1e-300)).clone()
        arr[1] = sched.posterior_log_variance_clipped[1]
    else:
        raise ValueError(f"unknown reverse variance {variance!r}; allowed: {', '.join(map(repr, VARIANCES))}")
    return _coef(arr, tt, x)


# ---- KL, log-likelihood and the terms of the bound ---------------------------------
def gaussian_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats:
    1/2 [logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^(-logvar2) - 1]."""
    mean1, logvar1, mean2, logvar2 = (torch.as_tensor(v) for v in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def gaussian_log_prob(x, mean, logvar) -> torch.Tensor:
    """Elementwise log N(x; mean, e^logvar)."""
    x, mean, logvar = (torch.as_tensor(v) for v in (x, mean, logvar))
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def prior_kl(sched: Schedule, x0: torch.Tensor) -> torch.Tensor:
    """Elementwise L_T = KL(q(x_T | x_0) || N(0, I)); no parameters, so no gradient signal."""
    mean, _, logvar = q_mean_variance(sched, x0, sched.T)
    return gaussian_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(mean))


def step_kl(sched: Schedule, x0: torch.Tensor, xt: torch.Tensor, t, model_mean: torch.Tensor,
            model_logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || N(model_mean, e^model_logvar)), t in 2..T."""
    tt = _check_t(sched, t, 2, "step_kl")
    mean, _, logvar = q_posterior(sched, x0, xt, tt)
    return gaussian_kl(mean, logvar, model_mean, model_logvar)


def reconstruction_nll(x0: torch.Tensor, model_mean: torch.Tensor, model_logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise L_0 = -log p(x_0 | x_1) for a Gaussian decoder N(model_mean, e^model_logvar).

    (A density, for continuous data such as embeddings; DDPM discretises it for 8-bit images.)"""
    return -gaussian_log_prob(x0, model_mean, model_logvar)


def bound_weights(sched: Schedule, target: str = "x0", variance: str = "small"):
    """The bound's terms as weighted squared errors: (weight, const), each (T+1,) float64.

    With a fixed reverse variance sigma_t^2, for t = 1..T the term for step t
    (L_{t-1}, or the decoder L_0 at t = 1) on a D-dimensional x is
        weight[t] * ||target - prediction||^2 + D * const[t]
    where, writing mu = c_x0 x_0 + c_xt x_t (eq. 7),
        target "mean": weight = 1 / (2 sigma_t^2)
        target "x0":   weight = c_x0^2 / (2 sigma_t^2)           (= (SNR(t-1) - SNR(t)) / 2 for "small", t >= 2)
        target "eps":  weight = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alphabar_t))   (DDPM eq. 12)
    const is the variance mismatch 1/2 (log(sigma^2 / beta~) + beta~ / sigma^2 - 1) for
    t >= 2 and the decoder's normaliser 1/2 log(2 pi sigma_1^2) at t = 1. Entry 0 is 0.
    """
    if target not in ("mean", "x0", "eps"):
        raise ValueError(f"unknown target {target!r}; allowed: 'mean', 'x0', 'eps'")
    steps = torch.arange(1, sched.T + 1)
    ref = torch.zeros(sched.T, dtype=torch.float64)
    sigma2 = torch.exp(reverse_log_variance(sched, steps, ref, variance))  # (T,)
    if target == "mean":
        w = 1.0 / (2 * sigma2)
    elif target == "x0":
        w = sched.posterior_mean_coef_x0[1:] ** 2 / (2 * sigma2)
    else:
        b, a, ab = sched.betas[1:], sched.alphas[1:], sched.alpha_bar[1:]
        w = b ** 2 / (2 * sigma2 * a * (1 - ab))
    post = sched.posterior_variance[1:]
    const = 0.5 * (torch.log(sigma2) - torch.log(post.clamp_min(1e-300)) + post / sigma2 - 1.0)
    const[0] = 0.5 * math.log(2 * math.pi) + 0.5 * torch.log(sigma2[0])
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([zero, w]), torch.cat([zero, const])


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def variational_bound(sched: Schedule, model_fn: ModelFn, x0: torch.Tensor, *, prediction: str = "x0",
                      variance: str = "small", generator: torch.Generator | None = None,
                      progress: bool = False) -> dict[str, torch.Tensor]:
    """Every term of the bound on -log p(x_0) (DDPM eq. 5), one x_t draw per step and example.

    ``model_fn(x_t, t) -> prediction`` with t a LongTensor (B,). Returns, in nats
    per example (summed over the non-batch dims of x0):
      "prior": (B,) L_T;  "terms": (T+1, B) with terms[1] = L_0 (decoder) and
      terms[t] = L_{t-1} for t >= 2 (terms[0] = 0);  "total": (B,) the bound;
      "mse_x0", "mse_eps": (T+1, B) the squared errors of the x_0 / eps estimates
      (the per-step "simplified" losses). Costs T calls of model_fn.
    """
    from tqdm.auto import tqdm

    B, T = x0.shape[0], sched.T
    terms = x0.new_zeros((T + 1, B), dtype=_work_dtype(x0))
    mse_x0, mse_eps = torch.zeros_like(terms), torch.zeros_like(terms)
    for t in tqdm(range(1, T + 1), desc="bound", disable=not progress):
        tvec = torch.full((B,), t, dtype=torch.long, device=x0.device)
        eps = _randn_like(x0, generator)
        xt = q_sample(sched, x0, t, noise=eps)
        x0_hat = predict_x0(sched, xt, t, model_fn(xt, tvec), prediction)
        mean = posterior_mean_from_x0(sched, x0_hat, xt, t)
        logvar = reverse_log_variance(sched, t, xt, variance)
        if t == 1:
            terms[t] = sum_flat(reconstruction_nll(x0, mean, logvar.expand_as(x0)))
        else:
            terms[t] = sum_flat(step_kl(sched, x0, xt, t, mean, logvar.expand_as(x0)))
        mse_x0[t] = sum_flat((x0 - x0_hat) ** 2)
        mse_eps[t] = sum_flat((eps - eps_from_x0(sched, xt, t, x0_hat)) ** 2)
    prior = sum_flat(prior_kl(sched, x0))
    return {"prior": prior, "terms": terms, "total": prior + terms.sum(0), "mse_x0": mse_x0, "mse_eps": mse_eps}
