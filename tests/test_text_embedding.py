"""Embeddings, rounding and clamping, checked against brute-force computations."""
import math

import pytest
import torch

from clipdiff_mini.diffusion.text_embedding import (clamp_to_embeddings, default_temperature, embed_tokens,
                                          embedding_stats, make_clamp_fn, nearest_tokens, round_to_tokens,
                                          rounding_logits, rounding_nll, roundtrip_accuracy, sample_x0)


def _table(V=7, D=5, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(V, D, generator=g, dtype=torch.float64)


def _log_gauss(x, mean, sigma):
    """log N(x; mean, sigma^2 I) written out coordinate by coordinate."""
    out = 0.0
    for xi, mi in zip(x.tolist(), mean.tolist()):
        out += -0.5 * math.log(2 * math.pi * sigma ** 2) - (xi - mi) ** 2 / (2 * sigma ** 2)
    return out


def test_rounding_nll_is_the_bayes_posterior_of_the_embedding_step():
    # Brute force: p(w|x) = N(x; e_w, s^2) / sum_v N(x; e_v, s^2) by a loop over positions and words.
    sigma0 = 0.7
    E = _table()
    g = torch.Generator().manual_seed(1)
    B, L, V = 3, 4, E.shape[0]
    ids = torch.randint(0, V, (B, L), generator=g)
    x = E[ids] + sigma0 * torch.randn(B, L, E.shape[1], generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    got_sum = rounding_nll(x, ids, E, temperature=default_temperature(sigma0), mask=mask, reduction="sum")
    got_mean = rounding_nll(x, ids, E, temperature=default_temperature(sigma0), mask=mask, reduction="mean")
    for b in range(B):
        total, count = 0.0, 0
        for i in range(L):
            if not mask[b, i]:
                continue
            logs = [_log_gauss(x[b, i], E[v], sigma0) for v in range(V)]
            top = max(logs)
            log_norm = top + math.log(sum(math.exp(l - top) for l in logs))
            total += -(logs[ids[b, i]] - log_norm)
            count += 1
        assert got_sum[b].item() == pytest.approx(total, rel=1e-9, abs=1e-9)
        assert got_mean[b].item() == pytest.approx(total / count, rel=1e-9, abs=1e-9)


def test_rounding_logits_match_negative_squared_distance_up_to_a_constant():
    E = _table(V=6, D=3, seed=2)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tau = 0.37
    got = torch.log_softmax(rounding_logits(x, E, tau), -1)
    for n in range(x.shape[0]):
        d2 = [sum((a - b) ** 2 for a, b in zip(x[n].tolist(), E[v].tolist())) for v in range(6)]
        z = [-d / tau for d in d2]
        top = max(z)
        lse = top + math.log(sum(math.exp(zz - top) for zz in z))
        for v in range(6):
            assert got[n, v].item() == pytest.approx(z[v] - lse, abs=1e-9)


def test_no_mask_counts_every_position():
    E = _table()
    ids = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(4))
    x = E[ids] + 0.5
    full = rounding_nll(x, ids, E, temperature=0.5)
    ones = rounding_nll(x, ids, E, temperature=0.5, mask=torch.ones(2, 5, dtype=torch.bool))
    per_pos = -torch.log_softmax(rounding_logits(x, E, 0.5), -1).gather(-1, ids[..., None])[..., 0]
    assert torch.allclose(full, ones)
    assert torch.allclose(full, per_pos.sum(-1))
    assert (full > 0).all()


def test_nearest_tokens_matches_brute_force_argmin():
    E = _table(V=9, D=4, seed=5)
    x = 1.5 * torch.randn(4, 6, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ids = nearest_tokens(x, E)
    assert ids.shape == (4, 6) and ids.dtype == torch.int64
    for b in range(4):
        for i in range(6):
            d2 = [((x[b, i] - E[v]) ** 2).sum().item() for v in range(9)]
            assert ids[b, i].item() == min(range(9), key=lambda v: d2[v])
    assert torch.equal(round_to_tokens(x, E), ids)


def test_small_sigma0_with_separated_embeddings_recovers_the_words():
    # Rows of 4 * identity are 4 * sqrt(2) ~ 5.7 apart; with sigma0 = 0.1 a misrounding
    # needs a 28-sigma deviation, so every word must come back.
    V = 12
    E = 4.0 * torch.eye(V, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    words = torch.randint(0, V, (8, 10), generator=g)
    x0 = sample_x0(embed_tokens(words, E), 0.1, generator=g)
    assert torch.equal(nearest_tokens(x0, E), words)
    assert roundtrip_accuracy(E, 0.1, n_per_word=50, generator=g) == 1.0


def test_collapsed_table_rounds_everything_to_one_word():
    V = 5
    E = torch.ones(V, 3)
    acc = roundtrip_accuracy(E, 0.1, n_per_word=20, generator=torch.Generator().manual_seed(0))
    assert acc == pytest.approx(1.0 / V)  # all ties -> the lowest id, right for one word in V


def test_clamping_returns_rows_of_E_and_is_idempotent():
    E = _table(V=8, D=3, seed=8).float()
    x = 2 * torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(9))
    c = clamp_to_embeddings(x, E)
    assert c.shape == x.shape
    for row in c.reshape(-1, 3):
        assert any(torch.equal(row, e) for e in E), "clamped vector is not an embedding row"
    assert torch.equal(clamp_to_embeddings(c, E), c)
    # each vector went to its nearest row
    d_to_clamped = ((x - c) ** 2).sum(-1)
    d_min = torch.stack([((x - e) ** 2).sum(-1) for e in E]).min(0).values
    assert torch.allclose(d_to_clamped, d_min)


def test_make_clamp_fn_is_a_sampler_callable_without_gradients():
    E = torch.nn.Parameter(torch.randn(6, 4))
    fn = make_clamp_fn(E)
    x = torch.randn(2, 3, 4)
    out = fn(x)
    assert not out.requires_grad
    assert torch.equal(out, E.detach()[nearest_tokens(x, E.detach())])


def test_sample_x0_has_mean_emb_and_std_sigma0():
    E = _table(V=3, D=2, seed=10)
    ids = torch.zeros(20000, 1, dtype=torch.long)
    x0 = sample_x0(embed_tokens(ids, E), 0.3, generator=torch.Generator().manual_seed(11))
    # standard error of the mean 0.3/sqrt(2e4) = 0.002; of the std ~0.0015
    assert torch.allclose(x0.mean((0, 1)), E[0], atol=0.01)
    assert torch.allclose(x0.std((0, 1)), torch.full((2,), 0.3, dtype=torch.float64), atol=0.01)


def test_embedding_stats_against_loops():
    E = _table(V=5, D=3, seed=12)
    s = embedding_stats(E, exclude=[0])
    rows = [E[i] for i in range(1, 5)]
    norms = [r.norm().item() for r in rows]
    dists = [(a - b).norm().item() for i, a in enumerate(rows) for j, b in enumerate(rows) if i != j]
    assert s["mean_norm"] == pytest.approx(sum(norms) / 4, rel=1e-5)
    assert s["mean_dist"] == pytest.approx(sum(dists) / len(dists), rel=1e-5)
    assert s["min_dist"] == pytest.approx(min(dists), rel=1e-5)
    assert s["spread"] == pytest.approx(s["mean_dist"] / s["mean_norm"], rel=1e-6)


def test_bad_inputs_raise_clear_errors():
    E = torch.randn(4, 3)
    with pytest.raises(ValueError, match="token ids must lie"):
        embed_tokens(torch.tensor([[0, 4]]), E)
    with pytest.raises(ValueError, match="width"):
        rounding_logits(torch.randn(2, 5), E, 1.0)
    with pytest.raises(ValueError, match="reduction"):
        rounding_nll(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), E, temperature=1.0, reduction="avg")
    with pytest.raises(ValueError, match="sigma0 must be positive"):
        default_temperature(0.0)
    with pytest.raises(ValueError, match="2-D"):
        nearest_tokens(torch.randn(3), torch.randn(3))


def test_rounding_recovery_matches_a_hand_computed_likelihood_argmax():
    from clipdiff_mini.diffusion.noise_schedules import make_schedule
    from clipdiff_mini.diffusion.text_embedding import rounding_recovery

    sched = make_schedule("cosine", 100)
    E = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))  # (V, D)
    ids = torch.randint(0, 7, (40, 6), generator=torch.Generator().manual_seed(2))  # (B, L)
    mask = torch.rand(40, 6, generator=torch.Generator().manual_seed(3)) < 0.7
    ts = [1, 50, 90, 100]
    got = rounding_recovery(sched, ids, E, ts, mask=mask, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, by hand: x_t, then argmax_v log q(x_t | e_v)
    for t, frac in zip(ts, got):
        a = float(sched.alpha_bar[t])
        xt = math.sqrt(a) * E[ids] + math.sqrt(1 - a) * torch.randn((40, 6, 5), generator=g)
        loglik = -((xt[..., None, :] - math.sqrt(a) * E) ** 2).sum(-1)  # (B, L, V)
        right = (loglik.argmax(-1) == ids) & mask
        assert frac == pytest.approx(right.sum().item() / mask.sum().item())
    assert got[0] == 1.0 and got[-1] < 0.5  # t = 1 is trivial, t = T near chance
