"""A toy distribution over short token sequences whose optimal masked denoiser is known exactly.

The data are all K^L sequences of L tokens from {0..K-1}, each with its own
probability; [MASK] is id K (V = K + 1 ids). Under mask-only diffusion the best
possible x_0-predictor, per position l, is the data's conditional

    p(x_0^l = k | x_t) = sum over sequences s that agree with the visible tokens of x_t and have s_l = k
                         of p(s), divided by the same sum without the condition on s_l,

which does not depend on t: a masked position carries no trace of when it was
masked (MDLM's observation that a mask-only denoiser needs no time input).

With it the bound of notebook 06 can be computed by enumeration, with no
training in the way:

* discrete time, T steps (`nelbo_discrete`): sum_t E_{x_t} [w_t sum_{masked l} -log p(x_0^l | x_t)],
  w_t = (alphabar_{t-1} - alphabar_t) / (1 - alphabar_t), summed over every masking pattern;
* continuous time, alpha_t = 1 - t (`nelbo_continuous`): the integral over t of
  (1/t) t^m (1 - t)^(L-m) for a pattern with m masks is the Beta function B(m, L - m + 1),
  so the bound is an exact finite sum.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from clipdiff_mini.diffusion.discrete import MaskSchedule, mask_elbo_weight

F64 = torch.float64


class ToySequences:
    """p(s) over all K^L sequences; [MASK] = K."""

    def __init__(self, probs: Tensor, K: int, L: int):
        probs = torch.as_tensor(probs, dtype=F64).flatten()
        if probs.numel() != K ** L or (probs < 0).any():
            raise ValueError(f"need {K ** L} non-negative probabilities")
        self.K, self.L, self.V, self.mask_id = K, L, K + 1, K
        self.probs = probs / probs.sum()  # (N,)
        self.seqs = torch.tensor(list(itertools.product(range(K), repeat=L)), dtype=torch.long)  # (N, L)

    @classmethod
    def random(cls, K: int, L: int, scale: float = 2.0, generator: torch.Generator | None = None):
        """p(s) proportional to exp(scale * z_s), z_s ~ N(0, 1): larger scales give a few likely
        sequences and strong correlations between positions."""
        z = torch.randn(K ** L, generator=generator, dtype=F64)
        return cls(torch.softmax(scale * z, 0), K, L)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        return self.seqs[idx]  # (n, L)

    def entropy(self) -> float:
        """H = -sum p log p (nats): what -log p(x_0) averages to, the floor of every bound."""
        p = self.probs[self.probs > 0]
        return float(-(p * p.log()).sum())

    def denoise(self, x_t: Tensor) -> Tensor:
        """The exact p(x_0^l | x_t) (B, L, V) for any x_t (B, L) with [MASK]s; column V-1 ([MASK]) is 0."""
        agree = (x_t[:, None, :] == self.mask_id) | (x_t[:, None, :] == self.seqs[None])  # (B, N, L)
        w = self.probs[None] * agree.all(-1)  # (B, N) p(s) if s fits the visible tokens
        onehot = torch.nn.functional.one_hot(self.seqs, self.V).to(F64)  # (N, L, V)
        out = torch.einsum("bn,nlv->blv", w, onehot)  # (B, L, V)
        return out / out.sum(-1, keepdim=True).clamp_min(1e-300)

    def _patterns(self):
        """Every mask pattern (P, L) bool and, for every data sequence, -log p(x_0^l | visible) (N, P, L)."""
        pats = torch.tensor(list(itertools.product([False, True], repeat=self.L)))  # (P, L)
        N, P = len(self.seqs), len(pats)
        x_t = torch.where(pats[None], torch.full((N, P, self.L), self.mask_id), self.seqs[:, None, :])  # (N, P, L)
        probs = self.denoise(x_t.reshape(N * P, self.L)).reshape(N, P, self.L, self.V)
        p_true = probs.gather(-1, self.seqs[:, None, :, None].expand(N, P, self.L, 1)).squeeze(-1)  # (N, P, L)
        nll = -p_true.clamp_min(1e-300).log() * pats[None]  # only masked positions count
        return pats, nll

    def nelbo_discrete(self, sched: MaskSchedule) -> float:
        """The T-step bound (nats per sequence) of the exact denoiser under a mask-only schedule."""
        pats, nll = self._patterns()
        m = pats.sum(-1).to(F64)  # (P,) masks per pattern
        per_pattern = (self.probs[:, None] * nll.sum(-1)).sum(0)  # (P,) E_{x_0}[sum of masked -log p]
        total = 0.0
        for t in range(1, sched.T + 1):
            a = float(sched.keep_bar[t])
            p_pat = (1 - a) ** m * a ** (self.L - m)  # (P,) each position masked independently
            total += float(mask_elbo_weight(sched, t)) * float((p_pat * per_pattern).sum())
        return total + self._prior_gap(sched)

    def _prior_gap(self, sched: MaskSchedule) -> float:
        """The prior term KL(q(x_T | x_0) || all-[MASK]): 0 if alphabar_T = 0, else infinite."""
        return 0.0 if float(sched.keep_bar[-1]) == 0.0 else math.inf

    def nelbo_continuous(self) -> float:
        """The continuous-time bound with alpha_t = 1 - t: sum over patterns of B(m, L-m+1) * E[sum masked -log p]."""
        pats, nll = self._patterns()
        m = pats.sum(-1)
        beta = torch.tensor([math.gamma(k) * math.gamma(self.L - k + 1) / math.gamma(self.L + 1) if k > 0 else 0.0
                             for k in m.tolist()], dtype=F64)  # (P,) int_0^1 t^(m-1) (1-t)^(L-m) dt
        per_pattern = (self.probs[:, None] * nll.sum(-1)).sum(0)  # (P,)
        return float((beta * per_pattern).sum())
