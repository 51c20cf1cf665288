"""A toy data distribution whose optimal denoiser is known in closed form.

For a mixture of Gaussians with diagonal covariances,

    p(x_0) = sum_k pi_k N(x_0; m_k, diag(s_k^2)),

the noised marginal q(x_t) = int q(x_t | x_0) p(x_0) dx_0 is again a mixture
(x_t = sqrt(a) x_0 + sqrt(1 - a) eps with a = alphabar_t):

    q(x_t) = sum_k pi_k N(x_t; sqrt(a) m_k, diag(a s_k^2 + 1 - a)),

and, given the component k, (x_0, x_t) is jointly Gaussian, so per dimension

    E[x_0 | x_t, k]   = m_k + g_k (x_t - sqrt(a) m_k),   g_k = sqrt(a) s_k^2 / (a s_k^2 + 1 - a)
    Var[x_0 | x_t, k] = s_k^2 (1 - a) / (a s_k^2 + 1 - a).

Averaging over the component's posterior probability r_k(x_t) (Bayes' rule
with the marginal above) gives the exact E[x_0 | x_t] and Var[x_0 | x_t]: the
best possible x_0-predictor in squared error, which a trained denoiser can at
most match. Used in notebook 02 to check the bound and the samplers with
no training in the way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clipdiff_mini.diffusion.gaussian_diffusion import bound_weights
from clipdiff_mini.diffusion.noise_schedules import Schedule


def _as_alpha_bar(alpha_bar, n: int) -> torch.Tensor:
    """alphabar as (N, 1, 1) float64, or (1, 1, 1) when one value is shared by all N points
    (the common case in a sampler; it keeps the broadcasting cheap)."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64).cpu()
    if a.dim() == 1 and a.shape != (n,):
        raise ValueError(f"alpha_bar must be a scalar or have shape ({n},), got {tuple(a.shape)}")
    if a.dim() > 1:
        raise ValueError(f"alpha_bar must be a scalar or have shape ({n},), got {tuple(a.shape)}")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise ValueError("alpha_bar must lie in [0, 1]")
    return a.reshape(-1)[:1].reshape(1, 1, 1) if lo == hi else a.reshape(n, 1, 1)


@dataclass
class GaussianMixture:
    """weights (K,), means (K, D), stds (K, D) (diagonal standard deviations); float64, CPU tensors
    (a teaching toy: inputs are moved to float64 on the CPU's parameters, so pass CPU tensors)."""

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def __post_init__(self):
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64).reshape(-1)
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        if self.means.dim() == 1:  # K scalars -> a 1-D mixture
            self.means = self.means[:, None]
        K, D = self.means.shape
        stds = torch.as_tensor(self.stds, dtype=torch.float64)
        self.stds = stds.reshape(K, 1).expand(K, D).clone() if stds.numel() == K else stds.reshape(K, D)
        if self.weights.shape != (K,):
            raise ValueError(f"weights must have one entry per component ({K}), got {tuple(self.weights.shape)}")
        if bool((self.weights <= 0).any()) or abs(float(self.weights.sum()) - 1) > 1e-9:
            raise ValueError("mixture weights must be positive and sum to 1")
        if bool((self.stds <= 0).any()):
            raise ValueError("component standard deviations must be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> torch.Tensor:
        """(D,) E[x_0]."""
        return self.weights @ self.means

    def second_moment(self) -> torch.Tensor:
        """(D,) E[x_0^2] per dimension."""
        return self.weights @ (self.means ** 2 + self.stds ** 2)

    def variance(self) -> torch.Tensor:
        """(D,) Var[x_0] per dimension."""
        return self.second_moment() - self.mean() ** 2

    def sample(self, n: int, generator: torch.Generator | None = None):
        """(x (n, D) float64, component labels (n,))."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[labels] + self.stds[labels] * z, labels

    def component_stats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Assign each point of x (N, D) to its most probable component and summarise each group:
        {"weights": (K,), "means": (K, D), "stds": (K, D)} (nan for an empty group).

        For judging samples against the mixture; with well-separated components the
        hard assignment is nearly exact (check it on a sample of the mixture itself)."""
        x = x.to(torch.float64)
        labels = self.responsibilities(x, 1.0).argmax(1)  # (N,)
        K, D = self.n_components, self.dim
        weights = torch.bincount(labels, minlength=K).to(torch.float64) / len(x)
        means = torch.full((K, D), float("nan"), dtype=torch.float64)
        stds = torch.full((K, D), float("nan"), dtype=torch.float64)
        for k in range(K):
            xk = x[labels == k]
            if len(xk):
                means[k] = xk.mean(0)
            if len(xk) > 1:
                stds[k] = xk.std(0)
        return {"weights": weights, "means": means, "stds": stds}

    # ---- the noised marginal and the optimal denoiser -------------------------
    def _component_log_probs(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(N, K) log pi_k + log N(x; sqrt(a) m_k, a s_k^2 + 1 - a)."""
        x = x.to(torch.float64)[:, None, :]  # (N, 1, D)
        var = a * self.stds ** 2 + (1 - a)  # (N, K, D)
        lp = -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - torch.sqrt(a) * self.means) ** 2 / var)
        return torch.log(self.weights) + lp.sum(-1)

    def log_prob(self, x: torch.Tensor, alpha_bar=1.0) -> torch.Tensor:
        """(N,) log q(x_t) of the mixture noised to level alpha_bar (alpha_bar = 1: the data density)."""
        a = _as_alpha_bar(alpha_bar, x.shape[0])
        return torch.logsumexp(self._component_log_probs(x, a), dim=1)

    def responsibilities(self, xt: torch.Tensor, alpha_bar) -> torch.Tensor:
        """(N, K) posterior probability of each component given x_t."""
        a = _as_alpha_bar(alpha_bar, xt.shape[0])
        return torch.softmax(self._component_log_probs(xt, a), dim=1)

    def _component_posteriors(self, xt: torch.Tensor, a: torch.Tensor):
        s2 = self.stds ** 2  # (K, D)
        denom = a * s2 + (1 - a)  # (N, K, D)
        gain = torch.sqrt(a) * s2 / denom
        mean_k = self.means + gain * (xt.to(torch.float64)[:, None, :] - torch.sqrt(a) * self.means)  # (N, K, D)
        var_k = s2 * (1 - a) / denom  # (N, K, D)
        return mean_k, var_k

    def posterior_stats(self, xt: torch.Tensor, alpha_bar):
        """One pass for (log q(x_t) (N,), E[x_0 | x_t] (N, D), Var[x_0 | x_t] (N, D)), all float64.

        The variance is the law of total variance over the components:
        sum_k r_k (Var_k + (E_k - E)^2)."""
        a = _as_alpha_bar(alpha_bar, xt.shape[0])
        logp = self._component_log_probs(xt, a)  # (N, K)
        log_q = torch.logsumexp(logp, dim=1)  # (N,)
        r = torch.exp(logp - log_q[:, None])[:, :, None]  # (N, K, 1) responsibilities
        mean_k, var_k = self._component_posteriors(xt, a)  # (N, K, D) each
        m = (r * mean_k).sum(1)  # (N, D)
        v = (r * (var_k + (mean_k - m[:, None, :]) ** 2)).sum(1)  # (N, D)
        return log_q, m, v

    def posterior_mean(self, xt: torch.Tensor, alpha_bar) -> torch.Tensor:
        """(N, D) E[x_0 | x_t]: the optimal x_0-prediction, in x_t's dtype."""
        return self.posterior_stats(xt, alpha_bar)[1].to(xt.dtype)

    def posterior_variance(self, xt: torch.Tensor, alpha_bar) -> torch.Tensor:
        """(N, D) Var[x_0 | x_t] per dimension."""
        return self.posterior_stats(xt, alpha_bar)[2].to(xt.dtype)

    def denoiser(self, sched: Schedule, prediction: str = "x0"):
        """model_fn(x_t (B, D), t (B,)) -> the exact E[x_0 | x_t] (or the matching eps) under ``sched``."""
        from clipdiff_mini.diffusion.gaussian_diffusion import eps_from_x0

        if prediction not in ("x0", "eps"):
            raise ValueError(f"unknown prediction {prediction!r}; allowed: 'x0', 'eps'")

        def model_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x0 = self.posterior_mean(xt, sched.alpha_bar[t.cpu()])
            return x0 if prediction == "x0" else eps_from_x0(sched, xt, t, x0)

        return model_fn

    # ---- exact (quadrature) quantities in one dimension ------------------------
    def _grid_1d(self, alpha_bar: float, n_grid: int, width: float):
        if self.dim != 1:
            raise ValueError(f"quadrature is implemented for 1-D mixtures only (this one has D = {self.dim}); "
                             "use Monte Carlo (variational_bound) in higher dimensions")
        a = float(alpha_bar)
        m = math.sqrt(a) * self.means[:, 0]
        sd = torch.sqrt(a * self.stds[:, 0] ** 2 + 1 - a)
        grid = torch.linspace(float((m - width * sd).min()), float((m + width * sd).max()), n_grid, dtype=torch.float64)
        return grid[:, None], float(grid[1] - grid[0])  # (G, 1)

    def entropy_1d(self, n_grid: int = 20001, width: float = 10.0) -> float:
        """Differential entropy -int p log p of a 1-D mixture (nats), by the trapezoid rule on a fine grid."""
        grid, h = self._grid_1d(1.0, n_grid, width)
        lp = self.log_prob(grid)
        return float(-torch.trapezoid(torch.exp(lp) * lp, dx=h))

    def mmse_1d(self, alpha_bar: float, n_grid: int = 4001, width: float = 10.0) -> float:
        """E[(x_0 - E[x_0 | x_t])^2] = int q(x_t) Var[x_0 | x_t] dx_t for a 1-D mixture, by quadrature."""
        return self.mse_1d(alpha_bar, None, n_grid=n_grid, width=width)

    def mse_1d(self, alpha_bar: float, f=None, n_grid: int = 4001, width: float = 10.0) -> float:
        """E[(x_0 - f(x_t))^2] for an x_0-predictor f (x_t (G, 1) -> (G, 1)); f=None is the exact E[x_0 | x_t].

        Uses E[(x_0 - f)^2 | x_t] = Var[x_0 | x_t] + (E[x_0 | x_t] - f(x_t))^2 and the trapezoid rule
        over x_t (1-D mixtures only)."""
        grid, h = self._grid_1d(alpha_bar, n_grid, width)  # (G, 1)
        log_q, m, v = self.posterior_stats(grid, alpha_bar)  # (G,), (G, 1), (G, 1)
        if f is not None:
            v = v + (m - f(grid)) ** 2
        return float(torch.trapezoid(torch.exp(log_q) * v[:, 0], dx=h))


def exact_bound_1d(mix: GaussianMixture, sched: Schedule, variance: str = "small", model_fn=None,
                   n_grid: int = 4001) -> dict:
    """The bound E[-log p(x_0)] <= E[L_T + sum_t L_{t-1} + L_0] for a 1-D mixture, every term by
    quadrature (no sampling), for the model whose x_0-prediction is ``model_fn(x_t (G, 1), t (G,))``
    (None: the exact denoiser E[x_0 | x_t]).

    Uses bound_weights: the step-t term is w_t * MSE_t + const_t with MSE_t = E[(x_0 - x0_hat)^2].
    Returns {"prior": float, "terms": (T+1,) tensor (terms[1] = L_0), "mse_x0": (T+1,) tensor, "total": float}."""
    w, const = bound_weights(sched, "x0", variance)
    mse = torch.zeros(sched.T + 1, dtype=torch.float64)
    for t in range(1, sched.T + 1):
        f = None
        if model_fn is not None:
            f = (lambda x, t=t: model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long)))
        mse[t] = mix.mse_1d(float(sched.alpha_bar[t]), f, n_grid=n_grid)
    terms = w * mse + const
    terms[0] = 0.0
    aT = float(sched.alpha_bar[-1])
    # KL(N(sqrt(aT) x0, 1 - aT) || N(0, 1)) averaged over x0: only E[x0^2] enters
    prior = 0.5 * (aT * float(mix.second_moment()[0]) + (1 - aT) - 1 - math.log(1 - aT))
    return {"prior": prior, "terms": terms, "mse_x0": mse, "total": prior + float(terms.sum())}
