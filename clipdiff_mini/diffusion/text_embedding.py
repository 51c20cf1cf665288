"""Text as continuous vectors: the Diffusion-LM view of a caption.

Diffusion-LM (Li et al., 2022) turns a word sequence ``w = (w_1..w_L)`` into a
point of R^{L x D} with a learned embedding table ``E`` (V x D) and adds one
extra Gaussian step in front of the usual diffusion chain::

    q(x0 | w)   = N(x0; EMB(w), sigma0^2 I)          (embedding step)
    p(w | x0)   = prod_i p(w_i | x0_i)               (rounding step)

The rounding step needs a model of ``p(w_i | x0_i)``. This module uses the one
that the embedding step itself implies. With a uniform prior over words and
``x0_i ~ N(e_w, sigma0^2 I)``, Bayes' rule gives

    p(w | x) = N(x; e_w, sigma0^2 I) / sum_v N(x; e_v, sigma0^2 I)
             = softmax_v( -||x - e_v||^2 / (2 sigma0^2) )_w                 (R1)

(the Gaussian normalising constants are the same for every word and cancel).
So the rounding logits are *negative squared distances to the embedding rows*
with temperature ``tau = 2 sigma0^2``, tied to ``E`` with no extra parameters.
Two consequences the course uses:

* the most likely word is the nearest embedding row (``nearest_tokens``), so
  rounding, the clamping trick and the loss agree on what "the word at x" is;
* ``E_q[-log p(w | x0)]`` is the conditional entropy of the word given its
  noisy embedding: it is ~0 while the rows are many sigma0 apart and grows
  when they crowd together, which is what stops the embeddings collapsing.

Expanding the square, ``-||x - e_v||^2 = -||x||^2 + 2 x.e_v - ||e_v||^2``; the
first term is the same for every ``v`` and drops out of the softmax, so
``rounding_logits`` returns ``(2 x.e_v - ||e_v||^2) / tau`` (the same
log-probabilities, cheaper and without cancelling large numbers). Diffusion-LM
itself uses a tied LM head ``x.e_v``; the difference is the ``-||e_v||^2``
term, which makes the argmax the nearest row even when rows differ in norm.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from clipdiff_mini.diffusion.gaussian_diffusion import q_sample

Tensor = torch.Tensor


def default_temperature(sigma0: float) -> float:
    """tau = 2 sigma0^2, the temperature for which (R1) is the exact posterior."""
    if sigma0 <= 0:
        raise ValueError(f"sigma0 must be positive (got {sigma0}); it is the std of x0 around EMB(w)")
    return 2.0 * float(sigma0) ** 2


def embed_tokens(ids: Tensor, E: Tensor) -> Tensor:
    """EMB(w): rows of the table ``E`` (V, D) for token ids (B, L) -> (B, L, D)."""
    _check_table(E)
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"ids must be an integer tensor of token ids, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= E.shape[0]):
        raise ValueError(f"token ids must lie in [0, {E.shape[0]}) (the embedding table's vocabulary)")
    return F.embedding(ids, E)  # (B, L, D)


def sample_x0(mean: Tensor, sigma0: float, generator: torch.Generator | None = None) -> Tensor:
    """x0 ~ N(EMB(w), sigma0^2 I): the embedding step of Diffusion-LM. mean (B, L, D)."""
    if sigma0 < 0:
        raise ValueError(f"sigma0 must be >= 0, got {sigma0}")
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + sigma0 * noise  # (B, L, D)


def rounding_logits(x: Tensor, E: Tensor, temperature: float) -> Tensor:
    """Logits of p(w | x) from (R1), up to a per-position constant.

    x (..., D), E (V, D) -> (..., V) equal to ``(2 x.e_v - ||e_v||^2) / tau``;
    ``log_softmax`` of this equals ``log_softmax(-||x - e_v||^2 / tau)``.
    """
    _check_table(E)
    if x.shape[-1] != E.shape[1]:
        raise ValueError(f"x has width {x.shape[-1]} but the embedding table has width {E.shape[1]}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dots = x @ E.t()  # (..., V)
    sq = (E * E).sum(-1)  # (V,)
    return (2.0 * dots - sq) / temperature  # (..., V)


def rounding_nll(x: Tensor, ids: Tensor, E: Tensor, *, temperature: float,
                 mask: Tensor | None = None, reduction: str = "sum") -> Tensor:
    """The rounding term -log p(w | x) = -sum_i log p(w_i | x_i), per sequence.

    x (B, L, D) (a sample of x0, or a model's prediction of it), ids (B, L),
    E (V, D); ``mask`` (B, L) bool marks the positions that count (for example
    ``ids != pad_id`` to leave padding out; None counts every position).
    ``reduction="sum"`` sums over counted positions (the log-likelihood of the
    caption); ``"mean"`` divides by their number (a per-token loss, the scale
    Diffusion-LM's code uses). Returns (B,).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if ids.shape != x.shape[:-1]:
        raise ValueError(f"ids shape {tuple(ids.shape)} must match x's leading dims {tuple(x.shape[:-1])}")
    logp = torch.log_softmax(rounding_logits(x, E, temperature), dim=-1)  # (B, L, V)
    nll = -logp.gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)  # (B, L)
    if mask is None:
        mask = torch.ones_like(nll, dtype=torch.bool)
    if mask.shape != nll.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal ids shape {tuple(ids.shape)}")
    m = mask.to(nll.dtype)
    total = (nll * m).sum(-1)  # (B,)
    if reduction == "mean":
        total = total / m.sum(-1).clamp_min(1.0)
    return total


def nearest_tokens(x: Tensor, E: Tensor) -> Tensor:
    """Round vectors to words: argmin_v ||x - e_v||^2, the MAP word under (R1).

    x (..., D), E (V, D) -> LongTensor (...). Ties go to the lower id.
    """
    return rounding_logits(x, E, 1.0).argmax(-1)


def round_to_tokens(x: Tensor, E: Tensor) -> Tensor:
    """Alias of `nearest_tokens`: the rounding step used to decode samples."""
    return nearest_tokens(x, E)


def clamp_to_embeddings(x0_hat: Tensor, E: Tensor) -> Tensor:
    """The clamping trick: replace each vector by its nearest embedding row E[ids].

    x0_hat (..., D) -> (..., D), every output row is exactly a row of ``E``.
    Idempotent: clamping a clamped tensor changes nothing.
    """
    return F.embedding(nearest_tokens(x0_hat, E), E)


def make_clamp_fn(E: Tensor) -> Callable[[Tensor], Tensor]:
    """A ``clamp_fn(x0_hat) -> x0_hat`` for `clipdiff_mini.diffusion.samplers` (table frozen, no grad)."""
    _check_table(E)
    return functools.partial(clamp_to_embeddings, E=E.detach())


@torch.no_grad()
def embedding_stats(E: Tensor, exclude: list[int] | None = None) -> dict[str, float]:
    """Norms and pairwise distances of the embedding rows (collapse diagnostics).

    ``exclude`` lists ids left out (for example unused special tokens).
    Returns mean_norm, mean_dist (over distinct pairs), min_dist, and the
    spread ``mean_dist / mean_norm`` (scale-free: a table that only shrinks
    keeps it, one whose rows merge loses it).
    """
    _check_table(E)
    keep = torch.ones(E.shape[0], dtype=torch.bool, device=E.device)
    if exclude:
        keep[torch.as_tensor(exclude, device=E.device)] = False
    W = E.detach()[keep].float()  # (V', D)
    if W.shape[0] < 2:
        raise ValueError("need at least two embedding rows for pairwise distances")
    d = torch.cdist(W, W)  # (V', V')
    off = ~torch.eye(W.shape[0], dtype=torch.bool, device=W.device)
    norms = W.norm(dim=-1)
    return {"mean_norm": norms.mean().item(), "mean_dist": d[off].mean().item(),
            "min_dist": d[off].min().item(), "spread": (d[off].mean() / norms.mean().clamp_min(1e-12)).item()}


@torch.no_grad()
def roundtrip_accuracy(E: Tensor, sigma0: float, n_per_word: int = 64,
                       generator: torch.Generator | None = None, ids: Tensor | None = None) -> float:
    """Fraction of x0 ~ N(e_w, sigma0^2 I) that round back to w (Monte Carlo).

    1.0 means the words survive the embedding step; 1/V means the table has
    collapsed to one point at the scale sigma0. ``ids`` restricts to some words.
    """
    _check_table(E)
    words = torch.arange(E.shape[0], device=E.device) if ids is None else ids.to(E.device)
    w = words.repeat_interleave(n_per_word)  # (N,)
    x0 = sample_x0(E.detach()[w], sigma0, generator)  # (N, D)
    return (nearest_tokens(x0, E.detach()) == w).float().mean().item()


def _check_table(E: Tensor) -> None:
    if not isinstance(E, torch.Tensor) or E.dim() != 2:
        raise ValueError("E must be a 2-D tensor (vocab_size, embed_dim), for example model.embedding.weight")


@torch.no_grad()
def rounding_recovery(sched, ids: Tensor, E: Tensor, timesteps, *, mask: Tensor | None = None,
                      generator: torch.Generator | None = None) -> list[float]:
    """Fraction of words that rounding a noisy x_t alone gets back, at each t of `timesteps`.

    x_t ~ q(x_t | x_0 = E[ids]) (one draw per t, in order, from `generator`), rounded by the rescaled
    nearest neighbour ``nearest_tokens(x_t / sqrt(abar_t), E)``, the maximum-likelihood word (notebook 01).
    ``ids`` any shape (...,); ``mask`` (same shape, bool) selects the positions that count (e.g. not
    padding). Where this is ~1 a denoiser has nothing to learn (notebooks 01 and 05).
    """
    x0 = F.embedding(ids, E)  # (..., D)
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
    out = []
    for t in timesteps:
        t = int(t)
        xt = q_sample(sched, x0, t, generator=generator)
        pred = nearest_tokens(xt / math.sqrt(float(sched.alpha_bar[t])), E)
        out.append(float(((pred == ids) & keep).sum()) / float(keep.sum()))
    return out
