"""The Gaussian-mixture toy: its exact denoiser and bound against brute force and sampling."""
import math

import pytest
import torch

from clipdiff_mini.diffusion.gaussian_diffusion import variational_bound
from clipdiff_mini.diffusion.noise_schedules import make_schedule
from clipdiff_mini.diffusion.toy_distributions import GaussianMixture, exact_bound_1d

F64 = torch.float64
MIX1 = dict(weights=[0.3, 0.5, 0.2], means=[-2.0, 0.5, 2.5], stds=[0.3, 0.5, 0.2])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


from conftest import torch_generator as _gen  # noqa: E402


def _torch_mixture(weights, means, stds):
    """The same 1-D mixture built from torch.distributions (an independent implementation)."""
    D = torch.distributions
    return D.MixtureSameFamily(D.Categorical(torch.tensor(weights, dtype=F64)),
                               D.Normal(torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64)))


def test_density_and_moments_match_torch_and_quadrature():
    mix = GaussianMixture(**MIX1)
    ref = _torch_mixture(**MIX1)
    x = torch.linspace(-5, 5, 101, dtype=F64)[:, None]
    assert torch.allclose(mix.log_prob(x), ref.log_prob(x[:, 0]), atol=1e-10)
    grid = torch.linspace(-8, 8, 200_001, dtype=F64)
    p = ref.log_prob(grid).exp()
    assert math.isclose(float(mix.mean()), float(torch.trapezoid(p * grid, grid)), abs_tol=1e-8)
    assert math.isclose(float(mix.variance()), float(torch.trapezoid(p * grid ** 2, grid)) - float(mix.mean()) ** 2,
                        abs_tol=1e-8)
    x, labels = mix.sample(50_000, generator=_gen())
    counts = torch.bincount(labels, minlength=3).to(F64) / 50_000
    assert torch.allclose(counts, torch.tensor(MIX1["weights"], dtype=F64), atol=0.01)
    assert abs(float(x.mean() - mix.mean())) < 5 * math.sqrt(float(mix.variance()) / 50_000)


def test_noised_density_is_the_convolution():
    """q(x_t) = int p(x_0) N(x_t; sqrt(a) x_0, 1 - a) dx_0, integrated on a grid."""
    mix = GaussianMixture(**MIX1)
    ref = _torch_mixture(**MIX1)
    grid = torch.linspace(-8, 8, 40_001, dtype=F64)
    p0 = ref.log_prob(grid).exp()
    for a in (0.99, 0.5, 0.01):
        xt = torch.tensor([-1.7, 0.0, 0.4, 2.2], dtype=F64)
        kern = torch.distributions.Normal(math.sqrt(a) * grid, math.sqrt(1 - a))
        conv = torch.stack([torch.trapezoid(p0 * kern.log_prob(v).exp(), grid) for v in xt])
        assert torch.allclose(mix.log_prob(xt[:, None], a).exp(), conv, rtol=1e-6)


def test_posterior_mean_and_variance_match_bayes_on_a_grid():
    mix = GaussianMixture(**MIX1)
    ref = _torch_mixture(**MIX1)
    grid = torch.linspace(-8, 8, 80_001, dtype=F64)
    logp0 = ref.log_prob(grid)
    for a in (0.999, 0.9, 0.3, 0.02):
        xt = torch.tensor([-2.1, -0.4, 0.9, 3.0], dtype=F64)
        mean = mix.posterior_mean(xt[:, None], a)[:, 0]
        var = mix.posterior_variance(xt[:, None], a)[:, 0]
        for i, v in enumerate(xt.tolist()):
            logw = logp0 + torch.distributions.Normal(math.sqrt(a) * grid, math.sqrt(1 - a)).log_prob(torch.tensor(v))
            w = torch.exp(logw - logw.max())
            w = w / torch.trapezoid(w, grid)
            m = float(torch.trapezoid(w * grid, grid))
            vv = float(torch.trapezoid(w * (grid - m) ** 2, grid))
            assert math.isclose(float(mean[i]), m, abs_tol=1e-6), (a, v)
            assert math.isclose(float(var[i]), vv, rel_tol=1e-4, abs_tol=1e-8), (a, v)


def test_posterior_mean_in_2d_matches_self_normalised_sampling():
    mix = GaussianMixture(weights=[0.25, 0.25, 0.5], means=[[-2, 0], [2, 0], [0, 2]],
                          stds=[[0.3, 0.6], [0.5, 0.2], [0.4, 0.4]])
    x0, _ = mix.sample(400_000, generator=_gen(1))
    a = 0.6
    xt = torch.tensor([[0.5, 1.0], [-1.0, -0.3]], dtype=F64)
    got = mix.posterior_mean(xt, a)
    for i in range(2):  # E[x0 | x_t] = E_p[x0 q(x_t|x0)] / E_p[q(x_t|x0)]
        logw = -((xt[i] - math.sqrt(a) * x0) ** 2).sum(1) / (2 * (1 - a))
        w = torch.softmax(logw, 0)
        est = (w[:, None] * x0).sum(0)
        ess = 1 / float((w ** 2).sum())
        assert torch.allclose(got[i], est, atol=5 * 2.0 / math.sqrt(ess)), (got[i], est, ess)


def test_entropy_and_mmse_against_closed_forms_and_sampling():
    g = GaussianMixture([1.0], [0.7], [0.4])  # one component: everything is closed form
    assert math.isclose(g.entropy_1d(), 0.5 * math.log(2 * math.pi * math.e * 0.16), rel_tol=1e-8)
    for a in (0.99, 0.5, 0.05):
        assert math.isclose(g.mmse_1d(a), 0.16 * (1 - a) / (a * 0.16 + 1 - a), rel_tol=1e-8)
    mix = GaussianMixture(**MIX1)
    x0, _ = mix.sample(200_000, generator=_gen(2))
    nll = -mix.log_prob(x0)
    assert abs(mix.entropy_1d() - float(nll.mean())) < 5 * float(nll.std()) / math.sqrt(len(nll))
    for a in (0.95, 0.4):
        xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=_gen(3), dtype=F64)
        err = (x0 - mix.posterior_mean(xt, a)) ** 2
        assert abs(mix.mmse_1d(a) - float(err.mean())) < 5 * float(err.std()) / math.sqrt(len(err))


def test_exact_bound_matches_monte_carlo_bound():
    mix = GaussianMixture(**MIX1)
    s = make_schedule("cosine", 40)
    exact = exact_bound_1d(mix, s)
    x0, _ = mix.sample(40_000, generator=_gen(4))
    vb = variational_bound(s, mix.denoiser(s), x0, generator=_gen(5))
    se = float(vb["total"].std()) / math.sqrt(len(x0))
    assert abs(exact["total"] - float(vb["total"].mean())) < 5 * se, (exact["total"], float(vb["total"].mean()), se)
    assert exact["total"] > mix.entropy_1d(), "a bound on E[-log p] lies above the data entropy"
    # any other x0-predictor: quadrature of its bound against Monte Carlo
    def shrunk(xt, t):  # a worse denoiser: the exact one pulled towards 0
        return 0.8 * mix.posterior_mean(xt, s.alpha_bar[t])

    worse = exact_bound_1d(mix, s, model_fn=shrunk)
    vb_worse = variational_bound(s, shrunk, x0, generator=_gen(5))
    se = float(vb_worse["total"].std()) / math.sqrt(len(x0))
    assert abs(worse["total"] - float(vb_worse["total"].mean())) < 5 * se
    assert worse["total"] > exact["total"] + 10 * se
    mc_mse = vb_worse["mse_x0"].mean(1)
    assert torch.allclose(worse["mse_x0"][1:], mc_mse[1:], rtol=0.1)
    # the eps-parameterised oracle is the same model
    vb_eps = variational_bound(s, mix.denoiser(s, "eps"), x0[:2000], prediction="eps", generator=_gen(5))
    vb_x0 = variational_bound(s, mix.denoiser(s), x0[:2000], generator=_gen(5))
    assert torch.allclose(vb_eps["total"], vb_x0["total"], rtol=1e-6)


def test_component_stats_recover_a_well_separated_mixture():
    mix = GaussianMixture(weights=[0.2, 0.5, 0.3], means=[[-3, 0], [3, 0], [0, 4]], stds=[[0.3, 0.5], [0.4, 0.2], [0.5, 0.5]])
    x, labels = mix.sample(30_000, generator=_gen(6))
    st = mix.component_stats(x)
    n = torch.bincount(labels, minlength=3).to(F64)
    assert torch.allclose(st["weights"], n / len(x))  # no point lands in the wrong group here
    for k in range(3):
        xk = x[labels == k]
        assert torch.allclose(st["means"][k], xk.mean(0)) and torch.allclose(st["stds"][k], xk.std(0))
    assert torch.allclose(st["weights"], mix.weights, atol=0.015)
    assert torch.allclose(st["stds"], mix.stds, rtol=0.05)


def test_bad_mixtures_are_clear_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture([0.5, 0.6], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture([0.5, 0.5], [0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="1-D mixtures only"):
        GaussianMixture([1.0], [[0.0, 0.0]], [1.0]).mmse_1d(0.5)
