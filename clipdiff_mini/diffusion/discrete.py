"""Discrete diffusion on token ids: masking (absorbing) and mask-and-replace (notebook 06).

The states are V token ids. One of them is ``[MASK]`` (``mask_id``, by
default V - 1); the other K = V - 1 are ordinary tokens. Nothing here knows
what the tokens mean: a caption, a toy sequence, image codes.

**One forward step** (VQ-Diffusion, Gu et al. 2022, eq. 5; DDCap, Zhu et al.
2022): an ordinary token keeps its value with probability alpha_t, becomes
``[MASK]`` with probability gamma_t, and otherwise (mass K beta_t =
1 - alpha_t - gamma_t) is redrawn uniformly over the K ordinary tokens, which
may land on its own value. ``[MASK]`` is absorbing. With row-stochastic
matrices, Q_t[i, j] = q(x_t = j | x_{t-1} = i):

    Q_t[i, i] = alpha_t + beta_t,   Q_t[i, j] = beta_t,   Q_t[i, mask] = gamma_t,   Q_t[mask, mask] = 1

for ordinary i != j.

**Many steps** (VQ-Diffusion eq. 7). Qbar_t = Q_1 Q_2 ... Q_t has the same form
with the cumulative probabilities

    alphabar_t = prod_{s<=t} alpha_s                 (never touched by a replacement and not masked)
    gammabar_t = 1 - prod_{s<=t} (1 - gamma_s)       (masked at some step: absorbed)
    K betabar_t = 1 - alphabar_t - gammabar_t        (replaced at least once, not masked: uniform)

so q(x_t | x_0) = row x_0 of Qbar_t costs O(V), not a matrix product.

**The posterior** (Bayes' rule; D3PM, Austin et al. 2021, eq. 3):

    q(x_{t-1} | x_t, x_0) = Q_t[x_{t-1}, x_t] * Qbar_{t-1}[x_0, x_{t-1}] / Qbar_t[x_0, x_t].

With a predicted distribution p(x_0 | x_t) in place of the one-hot x_0 the
same product, renormalised, is the model's reverse step (D3PM eq. 4).

**Mask-only diffusion** (no replacement; DDCap's released schedule, MDLM,
Sahoo et al. 2024) has a short posterior: an unmasked x_t stays, and a masked
one is revealed as x_0 with probability (alphabar_{t-1} - alphabar_t) /
(1 - alphabar_t). The bound then becomes a weighted cross-entropy on the
masked positions (`mask_elbo_weight`); for alphabar_t = 1 - t/T the weight is
1/t, and in continuous time -log p(x_0) <= E_{t~U(0,1)} (1/t) sum_{masked l}
-log p(x_0^l | x_t) (MDLM eq. 10 with alpha_t = 1 - t).

Indexing follows notebook 01: schedule tensors have length T + 1, index 0 is
clean data (alphabar_0 = 1, gammabar_0 = 0). Probabilities are float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

MASK_SCHEDULES = ("mask", "ddcap", "replace")
F64 = torch.float64


# ---- the schedule --------------------------------------------------------------------
@dataclass(frozen=True)
class MaskSchedule:
    """Cumulative keep and mask probabilities, float64 of shape (T+1,), indexed t = 0..T."""

    name: str
    keep_bar: Tensor  # (T+1,) alphabar_t, keep_bar[0] = 1
    mask_bar: Tensor  # (T+1,) gammabar_t, mask_bar[0] = 0

    def __post_init__(self):
        if float(self.keep_bar[0]) != 1.0 or float(self.mask_bar[0]) != 0.0:
            raise ValueError("a schedule starts at clean data: keep_bar[0] = 1, mask_bar[0] = 0")
        if ((1 - self.keep_bar - self.mask_bar < -1e-12).any() or (1 - self.keep - self.mask < -1e-12).any()
                or (self.mask < -1e-12).any()):
            raise ValueError(f"schedule {self.name!r} has a negative step probability")

    @property
    def T(self) -> int:
        return len(self.keep_bar) - 1

    @property
    def replace_bar(self) -> Tensor:  # (T+1,) K betabar_t: total mass of "replaced, not masked"
        return (1 - self.keep_bar - self.mask_bar).clamp_min(0.0)  # rounding can leave -1e-17

    @property
    def keep(self) -> Tensor:  # (T+1,) alpha_t = alphabar_t / alphabar_{t-1}; alpha_0 = 1
        prev = self.keep_bar[:-1]
        ratio = torch.where(prev > 0, self.keep_bar[1:] / prev.clamp_min(1e-300), torch.zeros_like(prev))
        return torch.cat([torch.ones(1, dtype=F64), ratio])

    @property
    def mask(self) -> Tensor:  # (T+1,) gamma_t = 1 - (1 - gammabar_t) / (1 - gammabar_{t-1}); gamma_0 = 0
        prev = 1 - self.mask_bar[:-1]
        ratio = torch.where(prev > 0, (1 - self.mask_bar[1:]) / prev.clamp_min(1e-300), torch.zeros_like(prev))
        return torch.cat([torch.zeros(1, dtype=F64), 1 - ratio])

    @property
    def replace(self) -> Tensor:  # (T+1,) K beta_t = 1 - alpha_t - gamma_t
        return (1 - self.keep - self.mask).clamp_min(0.0)

    def __repr__(self) -> str:
        return (f"MaskSchedule({self.name!r}, T={self.T}, keep_bar {float(self.keep_bar[1]):.4g}..{float(self.keep_bar[-1]):.3g}, "
                f"mask_bar {float(self.mask_bar[1]):.3g}..{float(self.mask_bar[-1]):.4g}, "
                f"largest replace_bar {float(self.replace_bar.max()):.3g})")


def _linear(T: int, first: float, last: float) -> Tensor:
    """(T+1,) a value at t = 0 (filled in by the caller) then `first`..`last` linearly over t = 1..T."""
    ramp = torch.linspace(first, last, T, dtype=F64) if T > 1 else torch.tensor([last], dtype=F64)
    return torch.cat([torch.zeros(1, dtype=F64), ramp])


def mask_schedule(T: int, kind: str = "mask", final_mask: float = 0.9) -> MaskSchedule:
    """The schedules of notebook 06.

    * ``mask``: alphabar_t = 1 - t/T, gammabar_t = t/T, no replacement. The
      discrete-time version of MDLM's log-linear schedule (alpha_t = 1 - t).
    * ``ddcap``: VQ-Diffusion's linear schedule with DDCap's released ends,
      alphabar from 0.99999 (t = 1) to 0.000009 (t = T), gammabar from 0.000009
      to 0.99999; the replace mass 1 - alphabar - gammabar stays ~1e-6: mask-only
      in practice.
    * ``replace``: the same alphabar, but gammabar only rises to `final_mask`, so
      the rest (about 1 - final_mask at t = T) is uniform replacement.
    """
    if kind not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask schedule {kind!r}; choose from {MASK_SCHEDULES}")
    if kind == "mask":
        t = torch.arange(T + 1, dtype=F64)
        return MaskSchedule(f"mask T={T}", 1 - t / T, t / T)
    keep = _linear(T, 0.99999, 0.000009)
    keep[0] = 1.0
    mask = _linear(T, 0.000009, 0.99999 if kind == "ddcap" else final_mask)
    return MaskSchedule(f"{kind} T={T}", keep, mask)


def mask_elbo_weight(sched: MaskSchedule, t) -> Tensor:
    """(alphabar_{t-1} - alphabar_t) / (1 - alphabar_t): the weight of the masked cross-entropy in the
    bound's term L_{t-1} for mask-only diffusion (notebook 06, section 4). 1/t for the ``mask`` schedule."""
    t = torch.as_tensor(t)
    a = sched.keep_bar
    return (a[t - 1] - a[t]) / (1 - a[t])


# ---- matrices (for checks and small vocabularies) ----------------------------------------
def _mask_id(V: int, mask_id: int | None) -> int:
    m = V - 1 if mask_id is None else int(mask_id)
    if not 0 <= m < V:
        raise ValueError(f"mask_id {m} is not one of the {V} ids")
    return m


def _transition(keep: float, mask: float, replace: float, V: int, m: int) -> Tensor:
    """(V, V) row-stochastic: keep / mask / replace-uniformly-over-the-K-ordinary-tokens, [MASK] absorbing."""
    K = V - 1
    Q = torch.zeros(V, V, dtype=F64)
    ordinary = [i for i in range(V) if i != m]
    for i in ordinary:
        Q[i, ordinary] = replace / K  # beta
        Q[i, i] += keep  # alpha + beta on the diagonal
        Q[i, m] = mask  # gamma
    Q[m, m] = 1.0
    return Q


def step_matrix(sched: MaskSchedule, t: int, V: int, mask_id: int | None = None) -> Tensor:
    """Q_t (V, V), Q_t[i, j] = q(x_t = j | x_{t-1} = i): one forward step."""
    m = _mask_id(V, mask_id)
    return _transition(float(sched.keep[t]), float(sched.mask[t]), float(sched.replace[t]), V, m)


def qbar_matrix(sched: MaskSchedule, t: int, V: int, mask_id: int | None = None) -> Tensor:
    """Qbar_t (V, V) in closed form, from alphabar_t, gammabar_t, betabar_t (module docstring)."""
    m = _mask_id(V, mask_id)
    return _transition(float(sched.keep_bar[t]), float(sched.mask_bar[t]), float(sched.replace_bar[t]), V, m)


# ---- the forward process on batches of ids ---------------------------------------------
def _per_row(values: Tensor, like: Tensor) -> Tensor:
    """A scalar or a (B,) tensor shaped to broadcast against `like` (B, ...)."""
    values = torch.as_tensor(values, dtype=F64, device=like.device)
    return values.reshape(-1, *([1] * (like.dim() - 1))) if values.dim() else values


def marginal_probs(x0: Tensor, keep, mask, V: int, mask_id: int | None = None) -> Tensor:
    """Rows x0 of a keep/mask/replace matrix: (..., V) probabilities of x_t given x_0 (ids, shape (...)).

    `keep` and `mask` are cumulative probabilities, scalars or one per row (B,).
    A [MASK] in x_0 stays [MASK] (absorbing)."""
    m = _mask_id(V, mask_id)
    keep, mask = _per_row(keep, x0).unsqueeze(-1), _per_row(mask, x0).unsqueeze(-1)  # (B, 1.., 1) or (1,)
    ordinary = torch.ones(V, dtype=F64, device=x0.device)
    ordinary[m] = 0.0
    onehot = torch.nn.functional.one_hot(x0, V).to(F64)  # (..., V)
    probs = (1 - keep - mask).clamp_min(0) / (V - 1) * ordinary + keep * onehot + mask * (1 - ordinary)  # betabar, alphabar, gammabar
    return torch.where((x0 == m).unsqueeze(-1), onehot, probs)


def q_probs(sched: MaskSchedule, x0: Tensor, t, V: int, mask_id: int | None = None) -> Tensor:
    """q(x_t | x_0) as (..., V) probabilities for ids x0 (...); t an int or one per row (B,)."""
    t = torch.as_tensor(t)
    return marginal_probs(x0, sched.keep_bar[t], sched.mask_bar[t], V, mask_id)


def corrupt(x0: Tensor, keep, mask, V: int, mask_id: int | None = None,
            generator: torch.Generator | None = None) -> Tensor:
    """Draw x_t: each ordinary token is kept (prob `keep`), masked (prob `mask`) or redrawn uniformly
    over the K = V - 1 ordinary tokens (the rest), independently per position.

    `keep`, `mask`: scalars or one value per row (B,). Used with cumulative probabilities it samples
    q(x_t | x_0); with keep = 1 - t, mask = t it is MDLM's continuous-time masking."""
    m = _mask_id(V, mask_id)
    keep, mask = _per_row(keep, x0), _per_row(mask, x0)
    u = torch.rand(x0.shape, generator=generator, dtype=F64, device=x0.device)  # (B, L)
    r = torch.randint(0, V - 1, x0.shape, generator=generator, device=x0.device)  # (B, L) uniform ordinary index
    replaced = r + (r >= m).long()  # skip the [MASK] id
    out = torch.where(u < keep, x0, torch.where(u < keep + mask, torch.full_like(x0, m), replaced))
    return torch.where(x0 == m, x0, out)  # [MASK] is absorbing


def q_sample(sched: MaskSchedule, x0: Tensor, t, V: int, mask_id: int | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """x_t ~ q(x_t | x_0) for ids x0 (B, L); t an int or (B,) ints in 1..T (row x_0 of Qbar_t)."""
    t = torch.as_tensor(t)
    return corrupt(x0, sched.keep_bar[t], sched.mask_bar[t], V, mask_id, generator)


# ---- the posterior and the model's reverse step ------------------------------------------
def posterior(sched: MaskSchedule, x_t: Tensor, x0: Tensor, t, V: int, mask_id: int | None = None) -> Tensor:
    """q(x_{t-1} | x_t, x_0) as (..., V) probabilities, for t >= 1.

    `x0` is either ids (same shape as x_t) or probabilities (..., V): then it is the model's reverse
    step p(x_{t-1} | x_t) proportional to sum_k p(x_0 = k | x_t) q(x_{t-1}, x_t | x_0 = k) (D3PM eq. 4).
    Computed as Q_t[x_{t-1}, x_t] * (x0 Qbar_{t-1})[x_{t-1}], normalised over x_{t-1}: O(V) per position.
    Where x_t is impossible under x0 (probability 0) the result is all zeros."""
    m = _mask_id(V, mask_id)
    t = torch.as_tensor(t)
    p0 = torch.nn.functional.one_hot(x0, V).to(F64) if not x0.is_floating_point() else x0.to(F64)  # (..., V)
    # x0 Qbar_{t-1}: q(x_{t-1} | x_0), averaged over the x_0 distribution
    kb, mb = _per_row(sched.keep_bar[t - 1], x_t), _per_row(sched.mask_bar[t - 1], x_t)
    p_mask0 = p0[..., m]  # (...) mass of an x_0 that is already [MASK] (0 for data)
    prev = kb.unsqueeze(-1) * p0 + ((1 - kb - mb).clamp_min(0) / (V - 1) * (1 - p_mask0)).unsqueeze(-1)  # (..., V)
    prev[..., m] = mb * (1 - p_mask0) + p_mask0
    # Q_t[:, x_t]: the likelihood of the observed x_t from each value of x_{t-1}
    k, g = _per_row(sched.keep[t], x_t).unsqueeze(-1), _per_row(sched.mask[t], x_t).unsqueeze(-1)
    xt_is_mask = (x_t == m).unsqueeze(-1)  # (..., 1)
    lik = torch.where(xt_is_mask, g, k * torch.nn.functional.one_hot(x_t, V) + (1 - k - g).clamp_min(0) / (V - 1))
    lik[..., m] = xt_is_mask.squeeze(-1).to(F64)  # [MASK] only ever leads to [MASK]
    joint = lik * prev  # (..., V)
    return joint / joint.sum(-1, keepdim=True).clamp_min(1e-300)


# ---- the loss -------------------------------------------------------------------------
def _upcast(logits: Tensor) -> Tensor:
    """Half-precision logits to float32 for the softmax; float32 and float64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def carry_over_log_probs(logits: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """MDLM's parameterisation for mask-only diffusion (log-probs (B, L, V)): [MASK] is never predicted
    (its logit is -inf) and an unmasked position predicts its own token with certainty, since under
    mask-only diffusion an unmasked x_t^l is x_0^l."""
    logits = _upcast(logits).clone()
    logits[..., mask_id] = float("-inf")
    logp = torch.log_softmax(logits, -1)  # (B, L, V)
    copy = torch.full_like(logp, float("-inf")).scatter(-1, x_t.unsqueeze(-1), 0.0)  # log one-hot(x_t)
    return torch.where((x_t == mask_id).unsqueeze(-1), logp, copy)


def masked_cross_entropy(logits: Tensor, x0: Tensor, x_t: Tensor, mask_id: int, weights: Tensor | None = None,
                         only_masked: bool = True, pad_mask: Tensor | None = None) -> Tensor:
    """Per-sequence x_0-prediction loss (B,): w_b * sum_l m_bl * -log softmax(logits)_{b, l, x0_bl}.

    m_bl = 1 where x_t is [MASK] (`only_masked`) or everywhere (mask-and-replace needs every position,
    since an unmasked token may be a replacement); `pad_mask` (B, L) can exclude positions further.
    `weights` (B,): None gives DDCap's plain cross-entropy -log p(x_0 | x_t, y); the bound of mask-only
    diffusion uses `mask_elbo_weight(sched, t)`, which is 1/t for alphabar_t = 1 - t (MDLM eq. 10)."""
    logp = torch.log_softmax(_upcast(logits), -1)  # (B, L, V)
    nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
    keep = (x_t == mask_id).float() if only_masked else torch.ones_like(nll)
    if pad_mask is not None:
        keep = keep * pad_mask.float()
    per_seq = (nll * keep).sum(-1)  # (B,)
    return per_seq if weights is None else per_seq * weights.to(per_seq)


# ---- sampling -------------------------------------------------------------------------
def ancestral_step(sched: MaskSchedule, probs0: Tensor, x_t: Tensor, t: int, mask_id: int,
                   generator: torch.Generator | None = None) -> Tensor:
    """Draw x_{t-1} ~ p(x_{t-1} | x_t) = the posterior with x_0 ~ `probs0` (B, L, V), position by position.

    Under mask-only diffusion each [MASK] is revealed with probability
    (alphabar_{t-1} - alphabar_t) / (1 - alphabar_t), as a draw from probs0; revealed tokens stay."""
    V = probs0.shape[-1]
    step = posterior(sched, x_t, probs0.to(F64), t, V, mask_id)  # (B, L, V)
    draw = torch.multinomial(step.reshape(-1, V).float(), 1, generator=generator)  # (B*L, 1)
    return draw.reshape(x_t.shape)


def unmask_best_first(probs0: Tensor, x_t: Tensor, mask_id: int, k, sample: bool = False,
                      generator: torch.Generator | None = None) -> Tensor:
    """Commit the k most confident [MASK] positions of each row; all other positions are left as they are.

    probs0 (B, L, V): the model's p(x_0 | x_t). The candidate token is the argmax (or, with `sample`, a
    draw from probs0), its confidence the probability of that token. `k` an int or (B,) ints; a row
    with fewer masks commits all of them. Committed tokens are never re-masked (DDCap's best-first
    inference commits one token per step; its paper's text speaks of the top-K)."""
    return unmask_ordered(probs0, x_t, mask_id, k, rank_by="confidence", sample=sample, generator=generator)


DECODING_ORDERS = ("confidence", "margin", "left_to_right")


def unmask_ordered(probs0: Tensor, x_t: Tensor, mask_id: int, k, *, rank_by: str = "confidence", block: int = 0,
                   sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Commit k [MASK] positions of each row, chosen by `rank_by`; every other position is left as it is.

    * ``"confidence"``: the most probable candidates first (DDCap's best-first; `unmask_best_first`);
    * ``"margin"``: the largest gap between a position's best and second-best token first (a position
      torn between two words, e.g. two objects' colours, waits);
    * ``"left_to_right"``: the leftmost masks first (an autoregressive order on a masked model).

    ``block`` > 0: only the masks of the first block of `block` positions that still holds one are
    eligible (semi-autoregressive block decoding, as LLaDA; block 1 with k 1 is left to right). A row
    commits min(k, eligible masks). The candidate token is the argmax of probs0 (B, L, V) without [MASK]
    (or, with `sample`, a draw from it). Committed tokens are never re-masked."""
    if rank_by not in DECODING_ORDERS:
        raise ValueError(f"rank_by={rank_by!r}; allowed: {', '.join(map(repr, DECODING_ORDERS))}")
    B, L, V = probs0.shape
    p = probs0.float().clone()
    p[..., mask_id] = 0.0  # never "predict" [MASK]
    if sample:
        token = torch.multinomial(p.reshape(-1, V), 1, generator=generator).reshape(B, L)  # (B, L)
    else:
        token = p.argmax(-1)  # (B, L)
    pos = torch.arange(L, device=x_t.device).expand(B, L)  # (B, L)
    if rank_by == "confidence":
        score = p.gather(-1, token.unsqueeze(-1)).squeeze(-1)  # (B, L) in [0, 1]
    elif rank_by == "margin":
        top2 = p.topk(2, dim=-1).values  # (B, L, 2)
        score = top2[..., 0] - top2[..., 1]  # (B, L) in [0, 1]
    else:
        score = 1.0 - pos.float() / L  # (B, L) in (0, 1]: leftmost highest
    eligible = x_t == mask_id  # (B, L)
    if block > 0:
        blk = pos // block  # (B, L)
        first = torch.where(eligible, blk, torch.full_like(blk, L)).min(-1, keepdim=True).values  # (B, 1)
        eligible = eligible & (blk == first)
    score = torch.where(eligible, score, torch.full_like(score, -1.0))  # ineligible positions rank last
    rank = torch.sort(score, dim=-1, descending=True, stable=True).indices.argsort(-1)  # (B, L) 0 = first
    k = torch.as_tensor(k, device=x_t.device).reshape(-1, 1)  # (B, 1) or (1, 1)
    commit = eligible & (rank < k)
    return torch.where(commit, token, x_t)


def remask_least_confident(x: Tensor, confidence: Tensor, fillable: Tensor, n: Tensor, mask_id: int) -> Tensor:
    """Mask-Predict's re-masking: put [MASK] back at the `n` (B,) least confident `fillable` (B, L)
    positions of each row of ids x (B, L), by `confidence` (B, L); the rest is kept. A model that wrote a
    word it was unsure of gets to rewrite it with every other word visible (Ghazvininejad et al. 2019)."""
    score = torch.where(fillable, confidence.float(), torch.full_like(confidence, float("inf"), dtype=torch.float))
    rank = torch.sort(score, dim=-1, stable=True).indices.argsort(-1)  # (B, L) 0 = least confident
    hide = fillable & (rank < n.reshape(-1, 1))
    return torch.where(hide, torch.full_like(x, mask_id), x)


def sample_masked(model_fn: Callable[[Tensor, Tensor], Tensor], sched: MaskSchedule, shape: tuple[int, int],
                  mask_id: int, *, order: str = "random", steps: int | None = None, sample: bool = True,
                  generator: torch.Generator | None = None, device=None,
                  return_trajectory: bool = False):
    """Generate (B, L) ids from all-[MASK], with model_fn(x_t, t) -> probabilities p(x_0 | x_t) (B, L, V).

    * ``order="random"``: the ancestral sampler, t = T..1 (`ancestral_step`): which positions are
      revealed at a step is random, as the schedule says, their tokens drawn from the model.
    * ``order="best_first"``: `steps` (default L) steps, each committing an equal share of the L
      positions, the most confident first (`unmask_best_first`); the model sees DDCap's timestep
      t = floor((L - i) T / L) at step i. With ``sample=False`` the tokens are argmaxes.
    Returns the ids, and the list of states from all-[MASK] to the end with ``return_trajectory``."""
    if order not in ("random", "best_first"):
        raise ValueError(f"order must be 'random' or 'best_first', got {order!r}")
    B, L = shape
    x = torch.full((B, L), mask_id, dtype=torch.long, device=device)
    traj = [x]
    if order == "random":
        for t in range(sched.T, 0, -1):
            probs0 = model_fn(x, torch.full((B,), t, device=device))
            x = ancestral_step(sched, probs0, x, t, mask_id, generator)
            traj.append(x)
    else:
        S = steps or L
        done = [round(i * L / S) for i in range(S + 1)]  # positions committed after step i
        for i in range(S):
            t = max(1, math.floor((L - done[i]) * sched.T / L))
            probs0 = model_fn(x, torch.full((B,), t, device=device))
            x = unmask_best_first(probs0, x, mask_id, done[i + 1] - done[i], sample=sample, generator=generator)
            traj.append(x)
    return (x, traj) if return_trajectory else x
