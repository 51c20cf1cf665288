"""Masked / mask-and-replace discrete diffusion, each piece against an independent computation:
explicit matrix products, enumeration of whole forward paths, Monte Carlo, a Python loop,
and the chain rule of a toy distribution."""
import itertools
import math

import pytest
import torch

from clipdiff_mini.diffusion import discrete as dd
from clipdiff_mini.diffusion.discrete_toy import ToySequences

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from conftest import torch_generator as _gen  # noqa: E402


def _step_by_hand(keep, mask, V, m):
    """Q_t written out from the verbal rule, one entry at a time (the test's own construction)."""
    K = V - 1
    Q = [[0.0] * V for _ in range(V)]
    for i in range(V):
        for j in range(V):
            if i == m:
                Q[i][j] = 1.0 if j == m else 0.0
            elif j == m:
                Q[i][j] = mask
            else:
                Q[i][j] = (1 - keep - mask) / K + (keep if i == j else 0.0)
    return torch.tensor(Q, dtype=F64)


@pytest.mark.parametrize("kind", dd.MASK_SCHEDULES)
@pytest.mark.parametrize("mask_id", [4, 1])
def test_qbar_closed_form_is_the_product_of_the_steps(kind, mask_id):
    s = dd.mask_schedule(12, kind)
    V = 5
    prod = torch.eye(V, dtype=F64)
    for t in range(1, s.T + 1):
        step = _step_by_hand(float(s.keep[t]), float(s.mask[t]), V, mask_id)
        assert torch.allclose(dd.step_matrix(s, t, V, mask_id), step, atol=1e-15)
        prod = prod @ step
        assert torch.allclose(dd.qbar_matrix(s, t, V, mask_id), prod, atol=1e-12), t
        assert torch.allclose(prod.sum(1), torch.ones(V, dtype=F64))
        rows = dd.q_probs(s, torch.arange(V), t, V, mask_id)  # (V, V), one row per x_0
        assert torch.allclose(rows, prod, atol=1e-12)


def test_schedules_end_where_the_papers_say():
    s = dd.mask_schedule(20, "mask")
    assert torch.allclose(s.keep_bar, 1 - torch.arange(21, dtype=F64) / 20) and float(s.replace_bar.abs().max()) < 1e-15
    ddcap = dd.mask_schedule(20, "ddcap")
    assert math.isclose(float(ddcap.keep_bar[1]), 0.99999) and math.isclose(float(ddcap.mask_bar[-1]), 0.99999)
    assert float(ddcap.replace_bar.max()) < 2e-6  # mask-only in practice
    rep = dd.mask_schedule(20, "replace", final_mask=0.9)
    assert abs(float(rep.replace_bar[-1]) - 0.1) < 1e-4
    with pytest.raises(ValueError):
        dd.mask_schedule(20, "cosine")


def test_elbo_weight_of_the_linear_mask_schedule_is_one_over_t():
    s = dd.mask_schedule(50, "mask")
    t = torch.arange(1, 51)
    assert torch.allclose(dd.mask_elbo_weight(s, t), 1.0 / t.to(F64), rtol=1e-12)


@pytest.mark.parametrize("kind", ["replace", "mask"])
def test_q_sample_matches_qbar_by_monte_carlo(kind):
    s, V, m, N = dd.mask_schedule(10, kind), 6, 2, 60_000
    x0 = torch.tensor([0, 3, 5, 2])  # the last one is [MASK]: it must stay
    g = _gen(3)
    for t in (1, 4, 10):
        xt = dd.q_sample(s, x0.expand(N, 4), t, V, m, generator=g)  # (N, 4)
        Qbar = dd.qbar_matrix(s, t, V, m)
        for col, x in enumerate(x0.tolist()):
            freq = torch.bincount(xt[:, col], minlength=V).to(F64) / N
            want = Qbar[x]
            se = torch.sqrt(want * (1 - want) / N).clamp_min(1e-12)
            assert ((freq - want).abs() <= 5 * se + 1e-12).all(), (t, x, freq, want)


def test_q_sample_with_one_timestep_per_row():
    s, V = dd.mask_schedule(10, "mask"), 4
    x0 = torch.zeros(3, 20_000, dtype=torch.long)
    xt = dd.q_sample(s, x0, torch.tensor([1, 5, 10]), V, generator=_gen(0))
    frac = (xt == V - 1).to(F64).mean(1)
    assert torch.allclose(frac, torch.tensor([0.1, 0.5, 1.0], dtype=F64), atol=0.015)


def _path_joint(s, x0, V, m):
    """p(x_1..x_T | x_0) for every path, by enumeration: {path: prob} (independent of Qbar)."""
    steps = [dd.step_matrix(s, t, V, m) for t in range(1, s.T + 1)]
    out = {}
    for path in itertools.product(range(V), repeat=s.T):
        p, prev = 1.0, x0
        for t, x in enumerate(path):
            p *= float(steps[t][prev, x])
            prev = x
        out[path] = p
    return out


@pytest.mark.parametrize("kind", ["replace", "mask"])
def test_posterior_is_bayes_over_enumerated_paths(kind):
    s, V, m = dd.mask_schedule(4, kind), 3, 2
    for x0 in (0, 1):
        joint = _path_joint(s, x0, V, m)
        for t in range(1, s.T + 1):
            # q(x_{t-1}, x_t | x_0) by summing whole paths
            pair = torch.zeros(V, V, dtype=F64)
            for path, p in joint.items():
                prev = x0 if t == 1 else path[t - 2]
                pair[prev, path[t - 1]] += p
            for xt in range(V):
                if pair[:, xt].sum() < 1e-14:
                    continue
                want = pair[:, xt] / pair[:, xt].sum()
                got = dd.posterior(s, torch.tensor([xt]), torch.tensor([x0]), t, V, m)[0]
                assert torch.allclose(got, want, atol=1e-10), (t, x0, xt, got, want)


def test_posterior_with_a_distribution_over_x0_is_the_d3pm_reverse_step():
    s, V, m = dd.mask_schedule(4, "replace"), 4, 3
    p0 = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=F64)
    for t in (1, 2, 4):
        Qt, Qb = dd.step_matrix(s, t, V, m), dd.qbar_matrix(s, t - 1, V, m)
        for xt in range(V):
            w = sum(p0[k] * Qb[k] * Qt[:, xt] for k in range(3))  # sum_k p(k) q(x_{t-1}, x_t | k)
            got = dd.posterior(s, torch.tensor([xt]), p0[None], t, V, m)[0]
            assert torch.allclose(got, w / w.sum(), atol=1e-12)


def test_mask_only_posterior_reveals_with_the_schedule_probability():
    s, V, m = dd.mask_schedule(10, "mask"), 5, 4
    for t in (2, 5, 10):
        got = dd.posterior(s, torch.tensor([m]), torch.tensor([1]), t, V, m)[0]
        reveal = (float(s.keep_bar[t - 1]) - float(s.keep_bar[t])) / (1 - float(s.keep_bar[t]))
        assert math.isclose(float(got[1]), reveal, rel_tol=1e-12) and math.isclose(float(got[m]), 1 - reveal)
        if t < s.T:  # at t = T every token is masked: an unmasked x_T is impossible
            stay = dd.posterior(s, torch.tensor([2]), torch.tensor([2]), t, V, m)[0]
            assert float(stay[2]) == 1.0


def test_masked_cross_entropy_against_a_loop():
    g = _gen(1)
    B, L, V, m = 3, 5, 6, 5
    logits = torch.randn(B, L, V, generator=g)
    x0 = torch.randint(0, 5, (B, L), generator=g)
    x_t = torch.where(torch.rand(B, L, generator=g) < 0.5, torch.full_like(x0, m), x0)
    w = torch.tensor([1.0, 2.0, 0.5])
    got = dd.masked_cross_entropy(logits, x0, x_t, m, weights=w)
    got_all = dd.masked_cross_entropy(logits, x0, x_t, m, only_masked=False)
    for b in range(B):
        want = want_all = 0.0
        for l in range(L):
            z = logits[b, l].tolist()
            nll = math.log(sum(math.exp(v) for v in z)) - z[int(x0[b, l])]
            want_all += nll
            if int(x_t[b, l]) == m:
                want += nll
        assert math.isclose(float(got[b]), float(w[b]) * want, rel_tol=1e-5)
        assert math.isclose(float(got_all[b]), want_all, rel_tol=1e-5)


def test_carry_over_copies_unmasked_tokens_and_never_predicts_mask():
    g = _gen(2)
    logits = torch.randn(2, 4, 5, generator=g)
    x_t = torch.tensor([[4, 1, 4, 2], [0, 4, 4, 4]])
    logp = dd.carry_over_log_probs(logits, x_t, 4)
    assert torch.isinf(logp[..., 4]).all()
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 4))
    assert float(logp[0, 1, 1]) == 0.0 and float(logp[1, 0, 0]) == 0.0


def _best_first_by_hand(probs, x_t, m, k):
    out = x_t.clone()
    for b in range(x_t.shape[0]):
        cands = [(float(probs[b, l].max()), l) for l in range(x_t.shape[1]) if int(x_t[b, l]) == m]
        for _, l in sorted(cands, key=lambda c: -c[0])[:k]:
            out[b, l] = int(probs[b, l].argmax())
    return out


def test_best_first_commits_the_k_most_confident_masks_and_keeps_the_rest():
    g = _gen(5)
    B, L, V, m = 6, 9, 7, 6
    x = torch.full((B, L), m)
    x[:, :2] = torch.randint(0, 6, (B, 2), generator=g)  # already committed tokens
    seen = x.clone()
    for _ in range(5):
        probs = torch.softmax(3 * torch.randn(B, L, V, generator=g), -1)
        probs[..., m] = 0
        probs = probs / probs.sum(-1, keepdim=True)
        new = dd.unmask_best_first(probs, x, m, 2)
        assert torch.equal(new, _best_first_by_hand(probs, x, m, 2))
        before, after = (x == m).sum(1), (new == m).sum(1)
        assert torch.equal(after, (before - 2).clamp_min(0))  # exactly k per row while masks remain
        assert torch.equal(new[x != m], x[x != m])  # committed tokens never change, never re-masked
        x = new
    assert (x != m).all() and torch.equal(x[:, :2], seen[:, :2])


def test_best_first_sampling_draws_from_the_model():
    probs = torch.tensor([[[0.7, 0.3, 0.0]]]).expand(20_000, 1, 3)
    x = dd.unmask_best_first(probs, torch.full((20_000, 1), 2), 2, 1, sample=True, generator=_gen(0))
    assert abs(float((x == 0).float().mean()) - 0.7) < 0.02


def test_toy_continuous_bound_equals_the_entropy_and_discrete_bounds_approach_it():
    toy = ToySequences.random(3, 3, generator=_gen(4))
    H = toy.entropy()
    assert math.isclose(toy.nelbo_continuous(), H, rel_tol=1e-10)
    gaps = [toy.nelbo_discrete(dd.mask_schedule(T, "mask")) - H for T in (1, 4, 32, 512)]
    assert all(g > 0 for g in gaps) and gaps == sorted(gaps, reverse=True) and gaps[-1] < 5e-3
    assert math.isinf(toy.nelbo_discrete(dd.mask_schedule(8, "ddcap")))  # alphabar_T > 0: prior term


def test_monte_carlo_of_the_one_over_t_loss_estimates_the_continuous_bound():
    toy = ToySequences.random(3, 3, generator=_gen(6))
    g, N = _gen(7), 40_000
    x0 = toy.sample(N, generator=g)
    t = torch.rand(N, generator=g, dtype=F64).clamp_min(1e-6)
    x_t = dd.corrupt(x0, 1 - t, t, toy.V, generator=g)
    logits = toy.denoise(x_t).clamp_min(1e-300).log()
    est = dd.masked_cross_entropy(logits, x0, x_t, toy.mask_id, weights=1 / t)
    se = float(est.std()) / math.sqrt(N)
    assert abs(float(est.mean()) - toy.nelbo_continuous()) < 5 * se


def test_toy_denoiser_is_the_conditional_of_the_data():
    toy = ToySequences.random(2, 3, generator=_gen(8))
    x_t = torch.tensor([[2, 1, 2]])  # middle token visible
    got = toy.denoise(x_t)[0, 0, :2]
    p = {tuple(s.tolist()): float(q) for s, q in zip(toy.seqs, toy.probs)}
    want = torch.tensor([sum(v for s, v in p.items() if s[1] == 1 and s[0] == k) for k in range(2)], dtype=F64)
    assert torch.allclose(got, want / want.sum())


@pytest.mark.parametrize("order", ["random", "best_first"])
def test_samplers_fill_every_mask_and_never_remask(order):
    toy = ToySequences.random(3, 4, generator=_gen(9))
    x, traj = dd.sample_masked(lambda x, t: toy.denoise(x), dd.mask_schedule(8, "mask"), (50, 4), toy.mask_id,
                               order=order, generator=_gen(10), return_trajectory=True)
    assert (x != toy.mask_id).all() and (traj[0] == toy.mask_id).all()
    for a, b in zip(traj, traj[1:]):
        assert torch.equal(b[a != toy.mask_id], a[a != toy.mask_id])


def test_random_order_sampler_with_the_exact_denoiser_recovers_the_data():
    toy = ToySequences.random(2, 3, scale=1.0, generator=_gen(11))
    N = 10_000  # with T = 1 (every position revealed at once, independently) the distance is ~0.27
    x = dd.sample_masked(lambda x, t: toy.denoise(x), dd.mask_schedule(50, "mask"), (N, 3), toy.mask_id,
                         order="random", generator=_gen(12))
    idx = (x * torch.tensor([4, 2, 1])).sum(1)  # sequence index in itertools.product order
    freq = torch.bincount(idx, minlength=8).to(F64) / N
    tv = 0.5 * float((freq - toy.probs).abs().sum())
    assert tv < 0.03, tv  # sampling noise alone is ~0.01 at this N


# ---- decoding orders and re-masking, on hand-worked examples ------------------------------------
def _probs(rows):
    """(B, L, V) from nested lists of per-position distributions over V = 4 tokens (id 3 = [MASK])."""
    return torch.tensor(rows, dtype=torch.float)


# one row, L = 4, all masked; position: best token, its prob, second prob
#   0: token 1, 0.50 / 0.45 (confident-ish, tiny margin)
#   1: token 0, 0.40 / 0.30
#   2: token 2, 0.90 / 0.05 (most confident, largest margin)
#   3: token 1, 0.60 / 0.35 (margin 0.25)
P = _probs([[[0.45, 0.50, 0.05, 0.0], [0.40, 0.30, 0.30, 0.0], [0.05, 0.05, 0.90, 0.0], [0.05, 0.60, 0.35, 0.0]]])
ALL_MASKED = torch.full((1, 4), 3)


@pytest.mark.parametrize("rank_by,k,block,want", [
    ("confidence", 1, 0, [3, 3, 2, 3]),  # 0.90 at position 2
    ("confidence", 2, 0, [3, 3, 2, 1]),  # then 0.60 at position 3
    ("margin", 2, 0, [3, 3, 2, 1]),  # margins 0.05, 0.10, 0.85, 0.25: positions 2 then 3
    ("margin", 3, 0, [3, 0, 2, 1]),  # then position 1 (0.10) before position 0 (0.05)
    ("confidence", 3, 0, [1, 3, 2, 1]),  # confidence ranks position 0 (0.50) before 1 (0.40)
    ("left_to_right", 2, 0, [1, 0, 3, 3]),
    ("confidence", 2, 2, [1, 0, 3, 3]),  # block [0, 1] first: both of its masks, whatever their confidence
    ("confidence", 1, 2, [1, 3, 3, 3]),  # within the block, the more confident (position 0: 0.50 > 0.40)
])
def test_unmask_ordered_commits_the_positions_worked_out_by_hand(rank_by, k, block, want):
    got = dd.unmask_ordered(P, ALL_MASKED, 3, k, rank_by=rank_by, block=block)
    assert got.tolist() == [want]


def test_unmask_ordered_moves_to_the_next_block_and_never_writes_mask():
    x = torch.tensor([[1, 0, 3, 3]])  # the first block is done: the second is eligible
    got = dd.unmask_ordered(P, x, 3, 1, rank_by="confidence", block=2)
    assert got.tolist() == [[1, 0, 2, 3]]
    # a distribution whose argmax is [MASK] still commits a real token
    q = _probs([[[0.1, 0.1, 0.1, 0.7]] * 4])
    out = dd.unmask_ordered(q, ALL_MASKED, 3, 4)
    assert (out != 3).all()
    # committed tokens stay: the confidence of already-written positions does not matter
    x = torch.tensor([[2, 3, 3, 3]])
    assert dd.unmask_ordered(P, x, 3, 1).tolist()[0][0] == 2
    # it agrees with unmask_best_first (the confidence order) on random inputs
    g = _gen(3)
    probs = torch.rand(5, 7, 6, generator=g).softmax(-1)
    x = torch.where(torch.rand(5, 7, generator=g) < 0.6, 5, torch.randint(0, 5, (5, 7), generator=g))
    assert torch.equal(dd.unmask_ordered(probs, x, 5, 2), dd.unmask_best_first(probs, x, 5, 2))


def test_remask_least_confident_by_hand():
    x = torch.tensor([[0, 5, 6, 7, 8, 1], [0, 5, 6, 1, 2, 2]])  # [BOS] words [EOS] / [PAD]s = id 2
    conf = torch.tensor([[1.0, 0.9, 0.2, 0.5, 0.1, 1.0], [1.0, 0.3, 0.8, 1.0, 1.0, 1.0]])
    fillable = torch.tensor([[False, True, True, True, True, False], [False, True, True, False, False, False]])
    got = dd.remask_least_confident(x, conf, fillable, torch.tensor([2, 1]), mask_id=9)
    # row 0: the two least confident fillable positions are 4 (0.1) and 2 (0.2); row 1: position 1 (0.3)
    assert got.tolist() == [[0, 5, 9, 7, 9, 1], [0, 9, 6, 1, 2, 2]]
    assert torch.equal(dd.remask_least_confident(x, conf, fillable, torch.tensor([0, 0]), 9), x)
