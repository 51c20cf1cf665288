"""The forward process, posterior, conversions, KL and bound, each against an
independent computation: running the chain, Bayes' rule on a grid, Monte Carlo,
torch.distributions, or the bound's raw definition."""
import math

import pytest
import torch

from clipdiff_mini.diffusion import gaussian_diffusion as gd
from clipdiff_mini.diffusion.noise_schedules import make_schedule

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


from conftest import torch_generator as _gen  # noqa: E402


def _floats(s):
    """betas, alphas, alphabar as Python lists (the test's own arithmetic)."""
    betas = [float(b) for b in s.betas]
    abar, p = [], 1.0
    for b in betas:
        p *= 1 - b
        abar.append(p)
    return betas, [1 - b for b in betas], abar


def test_q_sample_matches_running_the_chain():
    s = make_schedule("cosine", 40)
    betas, alphas, abar = _floats(s)
    N = 40_000
    x0 = torch.tensor([-1.0, 0.5, 2.0], dtype=F64).expand(N, 3)  # (N, 3)
    g = _gen(1)
    x = x0.clone()
    for t in range(1, s.T + 1):
        x = gd.q_step(s, x, t, generator=g)  # step by step, q(x_t | x_{t-1})
        if t in (1, 10, 25, 40):
            want_mean, want_var = math.sqrt(abar[t]) * x0[0], 1 - abar[t]
            se_mean = math.sqrt(want_var / N)
            se_var = want_var * math.sqrt(2 / (N - 1))
            assert torch.allclose(x.mean(0), want_mean, atol=5 * se_mean), t
            assert torch.allclose(x.var(0), torch.full((3,), want_var, dtype=F64), atol=5 * se_var), t
            # the closed form, sampled directly, agrees with the chain as well
            y = gd.q_sample(s, x0, t, generator=g)
            assert torch.allclose(y.mean(0), x.mean(0), atol=7 * se_mean)
            assert torch.allclose(y.var(0), x.var(0), atol=7 * se_var)


def test_per_example_t_broadcasts_over_remaining_dims():
    s = make_schedule("sqrt", 100)
    _, _, abar = _floats(s)
    x0 = torch.randn(4, 3, 2, generator=_gen(), dtype=F64)  # (B, L, D)
    noise = torch.randn(4, 3, 2, generator=_gen(2), dtype=F64)
    t = torch.tensor([1, 7, 50, 100])
    xt = gd.q_sample(s, x0, t, noise=noise)
    for i, ti in enumerate(t.tolist()):
        want = math.sqrt(abar[ti]) * x0[i] + math.sqrt(1 - abar[ti]) * noise[i]
        assert torch.allclose(xt[i], want, rtol=1e-12, atol=1e-12)
    assert xt.dtype == F64
    # float32 inputs stay float32
    assert gd.q_sample(s, x0.float(), t).dtype == torch.float32


def test_bad_t_is_a_clear_error():
    s = make_schedule("linear", 10)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="0..10"):
        gd.q_sample(s, x, 11)
    with pytest.raises(ValueError, match="1..10"):
        gd.q_step(s, x, 0)
    with pytest.raises(TypeError, match="integer"):
        gd.q_sample(s, x, 2.5)
    with pytest.raises(ValueError, match="one step per example"):
        gd.q_sample(s, x, torch.tensor([1, 2]))


@pytest.mark.parametrize("name", ["linear", "cosine", "sqrt"])
def test_posterior_matches_bayes_on_a_grid(name):
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): multiply the two on a grid."""
    s = make_schedule(name, 200)
    betas, alphas, abar = _floats(s)
    x0, xt = 0.7, -0.3
    for t in (2, 3, 100, 200):
        prior_mean, prior_var = math.sqrt(abar[t - 1]) * x0, 1 - abar[t - 1]
        sd = math.sqrt(min(prior_var, betas[t] / alphas[t]))
        centre = prior_mean
        grid = torch.linspace(centre - 40 * sd - 3, centre + 40 * sd + 3, 400_001, dtype=F64)
        logp = (-(grid - prior_mean) ** 2 / (2 * prior_var)
                - (xt - math.sqrt(alphas[t]) * grid) ** 2 / (2 * betas[t]))
        w = torch.exp(logp - logp.max())
        w = w / torch.trapezoid(w, grid)
        m = float(torch.trapezoid(w * grid, grid))
        v = float(torch.trapezoid(w * (grid - m) ** 2, grid))
        mean, var, logvar = gd.q_posterior(s, torch.tensor([x0], dtype=F64), torch.tensor([xt], dtype=F64), t)
        assert math.isclose(float(mean), m, rel_tol=1e-6, abs_tol=1e-9), (t, float(mean), m)
        assert math.isclose(float(var), v, rel_tol=1e-5), (t, float(var), v)
        assert math.isclose(float(logvar), math.log(v), abs_tol=1e-5)


def test_posterior_at_t1_is_x0():
    s = make_schedule("sqrt", 50)
    x0 = torch.randn(5, 4, generator=_gen(), dtype=F64)
    xt = gd.q_sample(s, x0, 1, generator=_gen(1))
    mean, var, logvar = gd.q_posterior(s, x0, xt, 1)
    assert torch.allclose(mean, x0, atol=1e-12) and float(var) == 0.0 and math.isfinite(float(logvar))


@pytest.mark.parametrize("name", ["linear", "cosine", "sqrt"])
def test_conversions_recover_what_made_x_t(name):
    s = make_schedule(name, 300)
    x0 = torch.randn(6, 5, generator=_gen(), dtype=F64)
    eps = torch.randn(6, 5, generator=_gen(1), dtype=F64)
    t = torch.tensor([1, 2, 10, 150, 299, 300])
    xt = gd.q_sample(s, x0, t, noise=eps)
    tol = dict(rtol=1e-7, atol=1e-7)
    # at t = T of the cosine/sqrt schedules alphabar ~ 1e-9: x0 from eps loses digits, so check t < T there
    keep = slice(None) if name == "linear" else slice(0, 5)
    assert torch.allclose(gd.x0_from_eps(s, xt, t, eps)[keep], x0[keep], **tol)
    assert torch.allclose(gd.predict_x0(s, xt, t, eps, "eps")[keep], x0[keep], **tol)
    assert torch.allclose(gd.eps_from_x0(s, xt, t, x0), eps, **tol)
    # eq. 11 (in terms of eps) and eq. 7 (in terms of x0) give the same posterior mean
    mean7, _, _ = gd.q_posterior(s, x0, xt, t)
    assert torch.allclose(gd.posterior_mean_from_eps(s, xt, t, eps), mean7, **tol)
    assert torch.allclose(gd.x0_from_posterior_mean(s, xt, t, mean7), x0, **tol)
    with pytest.raises(ValueError, match="'x0', 'eps'"):
        gd.predict_x0(s, xt, t, eps, "v")


def test_gaussian_kl_matches_monte_carlo_and_torch():
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.4, math.log(2.0)
    N = 400_000
    x = m1 + math.exp(0.5 * lv1) * torch.randn(N, generator=_gen(), dtype=F64)
    Normal = torch.distributions.Normal
    p = Normal(torch.tensor(m1, dtype=F64), torch.tensor(math.exp(0.5 * lv1), dtype=F64))
    q = Normal(torch.tensor(m2, dtype=F64), torch.tensor(math.exp(0.5 * lv2), dtype=F64))
    ratio = p.log_prob(x) - q.log_prob(x)  # KL = E_p[log p - log q]
    kl = float(gd.gaussian_kl(*(torch.tensor(v, dtype=F64) for v in (m1, lv1, m2, lv2))))
    assert abs(kl - float(ratio.mean())) < 5 * float(ratio.std()) / math.sqrt(N)
    assert math.isclose(kl, float(torch.distributions.kl_divergence(p, q)), rel_tol=1e-12)
    assert float(gd.gaussian_kl(m1, lv1, m1, lv1)) == 0.0


def test_prior_kl_matches_monte_carlo():
    s = make_schedule("linear", 30)
    _, _, abar = _floats(s)
    # alphabar_T ~ 5e-6: L_T is tiny for unit-size data, so take far-away points to make it visible
    x0 = torch.tensor([[150.0, -300.0]], dtype=F64)
    N = 400_000
    xT = math.sqrt(abar[-1]) * x0 + math.sqrt(1 - abar[-1]) * torch.randn(N, 2, generator=_gen(), dtype=F64)
    q = torch.distributions.Normal(math.sqrt(abar[-1]) * x0, math.sqrt(1 - abar[-1]))
    ratio = (q.log_prob(xT) - torch.distributions.Normal(0.0, 1.0).log_prob(xT))  # (N, 2)
    kl = gd.prior_kl(s, x0)[0]
    assert torch.allclose(kl, ratio.mean(0), atol=float(5 * ratio.std(0).max() / math.sqrt(N)))
    assert float(kl.sum()) > 0.05


def test_reconstruction_nll_is_a_gaussian_density():
    x, m, lv = torch.tensor([0.2, -1.0]), torch.tensor([0.0, 0.5]), torch.tensor([math.log(0.3), math.log(2.0)])
    want = -torch.distributions.Normal(m, torch.exp(0.5 * lv)).log_prob(x)
    assert torch.allclose(gd.reconstruction_nll(x, m, lv), want, rtol=1e-6)


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("name", ["cosine", "sqrt"])
def test_kl_is_a_weighted_squared_error(name, variance):
    """gaussian_kl between the true posterior and the model step = weight * ||target - prediction||^2 + D * const."""
    s = make_schedule(name, 100)
    D = 7
    w_mean, c_mean = gd.bound_weights(s, "mean", variance)
    w_x0, c_x0 = gd.bound_weights(s, "x0", variance)
    w_eps, c_eps = gd.bound_weights(s, "eps", variance)
    assert torch.allclose(c_mean, c_x0) and torch.allclose(c_mean, c_eps)
    _, _, abar = _floats(s)
    for t in (1, 2, 5, 50, 99):
        x0 = torch.randn(1, D, generator=_gen(t), dtype=F64)
        x0_hat = x0 + 0.3 * torch.randn(1, D, generator=_gen(t + 1), dtype=F64)
        xt = gd.q_sample(s, x0, t, generator=_gen(t + 2))
        logvar = gd.reverse_log_variance(s, t, xt, variance)
        true_mean, _, true_logvar = gd.q_posterior(s, x0, xt, t)
        model_mean = gd.posterior_mean_from_x0(s, x0_hat, xt, t)
        if t == 1:  # the decoder term -log N(x_0; model mean, sigma_1^2)
            term = float(gd.reconstruction_nll(x0, model_mean, logvar.expand_as(x0)).sum())
        else:
            term = float(gd.gaussian_kl(true_mean, true_logvar, model_mean, logvar).sum())
        eps, eps_hat = gd.eps_from_x0(s, xt, t, x0), gd.eps_from_x0(s, xt, t, x0_hat)
        for w, c, err in ((w_mean, c_mean, true_mean - model_mean), (w_x0, c_x0, x0 - x0_hat),
                          (w_eps, c_eps, eps - eps_hat)):
            assert math.isclose(term, float(w[t] * (err ** 2).sum() + D * c[t]), rel_tol=1e-7), (t, term)
        if variance == "small" and t >= 2:  # the x0 weight is half the drop in SNR over the step
            snr = lambda a: a / (1 - a)  # noqa: E731
            assert math.isclose(float(w_x0[t]), (snr(abar[t - 1]) - snr(abar[t])) / 2, rel_tol=1e-7)
            assert float(c_x0[t]) == pytest.approx(0.0, abs=1e-12)


def test_variational_bound_matches_its_raw_definition():
    """E_q[-log p(x_T) - sum_t log p(x_{t-1}|x_t) + sum_t log q(x_t|x_{t-1})] estimated from whole
    forward trajectories equals the KL form (prior + KL terms + decoder) computed by variational_bound."""
    s = make_schedule("cosine", 8)
    m, sd = 1.0, 0.6  # data N(m, sd^2); any denoiser would do, take the exact one

    def model_fn(xt, t):
        a = s.alpha_bar[t].to(xt.dtype)[:, None]
        return m + torch.sqrt(a) * sd ** 2 / (a * sd ** 2 + 1 - a) * (xt - torch.sqrt(a) * m)

    N = 200_000
    g = _gen(3)
    x0 = m + sd * torch.randn(N, 1, generator=g, dtype=F64)
    betas, _, _ = _floats(s)
    # raw definition: one forward trajectory per example
    xs = [x0]
    for t in range(1, s.T + 1):
        xs.append(gd.q_step(s, xs[-1], t, generator=g))
    normal = torch.distributions.Normal
    raw = -normal(0.0, 1.0).log_prob(xs[-1]).sum(1)
    for t in range(1, s.T + 1):
        xt, xprev = xs[t], xs[t - 1]
        raw += normal(math.sqrt(1 - betas[t]) * xprev, math.sqrt(betas[t])).log_prob(xt).sum(1)
        tvec = torch.full((N,), t)
        mean = gd.posterior_mean_from_x0(s, model_fn(xt, tvec), xt, t)
        sigma = torch.exp(0.5 * gd.reverse_log_variance(s, t, xt, "small"))
        raw -= normal(mean, sigma).log_prob(xprev).sum(1)
    vb = gd.variational_bound(s, model_fn, x0, generator=g)
    se = math.sqrt(raw.var() / N + vb["total"].var() / N)
    assert abs(float(raw.mean() - vb["total"].mean())) < 5 * se, (float(raw.mean()), float(vb["total"].mean()), se)
    assert vb["terms"].shape == (s.T + 1, N) and float(vb["terms"][0].abs().sum()) == 0.0
    # and a bound it is: above the data's entropy 1/2 log(2 pi e sd^2)
    assert float(vb["total"].mean()) > 0.5 * math.log(2 * math.pi * math.e * sd ** 2)
