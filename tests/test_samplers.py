"""DDPM and DDIM with oracle denoisers whose outcome can be worked out by hand.

For Gaussian data N(m, s^2) the exact denoiser E[x_0 | x_t] is linear in x_t, so
every sampler step is x <- A x + b + sigma z and the law of the output follows
from a two-number recursion (mean, variance) computed here in plain floats."""
import math

import pytest
import torch

from clipdiff_mini.diffusion.noise_schedules import make_schedule
from clipdiff_mini.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample

F64 = torch.float64
M, S = 1.5, 0.5  # data N(M, S^2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


from conftest import torch_generator as _gen  # noqa: E402


def _abar(s):
    out, p = [], 1.0
    for b in s.betas.tolist():
        p *= 1 - b
        out.append(p)
    return out


def gaussian_oracle(s, prediction="x0"):
    """E[x_0 | x_t] for x_0 ~ N(M, S^2), elementwise (any shape)."""
    def model_fn(xt, t):
        a = s.alpha_bar[t].to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))
        x0 = M + torch.sqrt(a) * S ** 2 / (a * S ** 2 + 1 - a) * (xt - torch.sqrt(a) * M)
        return x0 if prediction == "x0" else (xt - torch.sqrt(a) * x0) / torch.sqrt(1 - a)
    return model_fn


def _gain(a):  # x0_hat = M + g (x - sqrt(a) M)
    return math.sqrt(a) * S ** 2 / (a * S ** 2 + 1 - a)


def ddpm_law(s, variance="small"):
    """Mean and variance of DDPM's output with the Gaussian oracle (no noise is added at t = 1)."""
    ab = _abar(s)
    betas = s.betas.tolist()
    mu, var = 0.0, 1.0
    for t in range(s.T, 0, -1):
        a, ap, b = ab[t], ab[t - 1], betas[t]
        c0, ct = math.sqrt(ap) * b / (1 - a), math.sqrt(1 - b) * (1 - ap) / (1 - a)
        A = c0 * _gain(a) + ct
        shift = c0 * (M - _gain(a) * math.sqrt(a) * M)
        sig2 = 0.0 if t == 1 else (1 - ap) / (1 - a) * b if variance == "small" else b
        mu, var = A * mu + shift, A * A * var + sig2
    return mu, var


def ddim_law(s, steps, eta):
    ab = _abar(s)
    mu, var = 0.0, 1.0
    seq = list(reversed(steps)) + [0]
    for t, u in zip(seq[:-1], seq[1:]):
        a, au = ab[t], ab[u]
        sig = eta * math.sqrt((1 - au) / (1 - a) * (1 - a / au))
        # x0_hat = M + g (x - sqrt(a) M);  eps_hat = (x - sqrt(a) x0_hat) / sqrt(1 - a)
        g = _gain(a)
        k_x0 = (g, M - g * math.sqrt(a) * M)  # x0_hat = k0 x + k1
        k_eps = ((1 - math.sqrt(a) * g) / math.sqrt(1 - a), -math.sqrt(a) * k_x0[1] / math.sqrt(1 - a))
        d = math.sqrt(max(1 - au - sig ** 2, 0.0))
        A = math.sqrt(au) * k_x0[0] + d * k_eps[0]
        shift = math.sqrt(au) * k_x0[1] + d * k_eps[1]
        mu, var = A * mu + shift, A * A * var + sig ** 2
    return mu, var


def _check_law(x, mu, var):
    n = x.numel()
    assert abs(float(x.mean()) - mu) < 5 * math.sqrt(var / n), (float(x.mean()), mu)
    assert abs(float(x.var()) - var) < 5 * var * math.sqrt(2 / (n - 1)), (float(x.var()), var)


def test_ddpm_output_law_matches_the_recursion_and_the_data():
    s = make_schedule("linear", 1000)
    x = ddpm_sample(gaussian_oracle(s), s, (4000, 3, 2), generator=_gen(), progress=False, dtype=F64)
    mu, var = ddpm_law(s)
    _check_law(x, mu, var)
    # with T = 1000 the fixed variance beta~_t costs little: the data's mean and variance come back
    assert abs(mu - M) < 1e-3 and abs(var / S ** 2 - 1) < 0.03
    assert abs(float(x.mean()) - M) < 0.02 and abs(float(x.var()) / S ** 2 - 1) < 0.05


@pytest.mark.parametrize("prediction,variance", [("x0", "small"), ("eps", "small"), ("x0", "large")])
def test_ddpm_law_short_chain_any_schedule(prediction, variance):
    s = make_schedule("sqrt", 60)
    x = ddpm_sample(gaussian_oracle(s, prediction), s, (20_000, 1), prediction=prediction, variance=variance,
                    generator=_gen(1), progress=False, dtype=F64)
    _check_law(x, *ddpm_law(s, variance))


def test_ddim_eta0_is_deterministic_and_recovers_a_gaussian():
    s = make_schedule("cosine", 1000)
    xT = torch.randn(20_000, 1, generator=_gen(), dtype=F64)
    x1 = ddim_sample(gaussian_oracle(s), s, xT.shape, timesteps=100, x_T=xT, generator=_gen(5), progress=False)
    x2 = ddim_sample(gaussian_oracle(s), s, xT.shape, timesteps=100, x_T=xT, generator=_gen(6), progress=False)
    assert torch.equal(x1, x2), "eta = 0 must not use the generator"
    _check_law(x1, *ddim_law(s, ddim_timesteps(s.T, 100), 0.0))
    # eta = 0 is a deterministic map x_T -> x_0; for linear-Gaussian oracles it is affine
    A = (x1[1] - x1[0]) / (xT[1] - xT[0])
    assert torch.allclose(x1, x1[0] + A * (xT - xT[0]), atol=1e-9)
    # Each deterministic step shrinks the spread a little (by Cauchy-Schwarz, see notebook 02):
    # 100 steps keep ~97% of the variance, all 1000 steps > 99%.
    x = ddim_sample(gaussian_oracle(s), s, xT.shape, x_T=xT, progress=False)
    mu, var = ddim_law(s, list(range(1, s.T + 1)), 0.0)
    _check_law(x, mu, var)
    assert abs(mu - M) < 1e-3 and abs(var / S ** 2 - 1) < 0.01
    assert abs(float(x.mean()) - M) < 0.02 and abs(float(x.var()) / S ** 2 - 1) < 0.05


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_law_on_a_subsequence(eta):
    s = make_schedule("linear", 500)
    steps = [1, 3, 10, 40, 100, 250, 420, 500]
    x = ddim_sample(gaussian_oracle(s), s, (20_000, 1), timesteps=steps, eta=eta,
                    generator=_gen(2), progress=False, dtype=F64)
    _check_law(x, *ddim_law(s, steps, eta))


def test_ddim_point_mass_trajectory():
    """x0_hat = c always: eps_hat never changes, so x_s = sqrt(abar_s) c + sqrt(1 - abar_s) eps_T exactly."""
    s = make_schedule("sqrt", 200)
    c = torch.tensor([0.3, -1.2], dtype=F64)
    xT = torch.randn(5, 2, generator=_gen(), dtype=F64)
    x, traj = ddim_sample(lambda x, t: c.expand_as(x), s, xT.shape, timesteps=17, x_T=xT,
                          progress=False, return_trajectory=True)
    ab = _abar(s)
    steps = ddim_timesteps(s.T, 17)
    eps_T = (xT - math.sqrt(ab[steps[-1]]) * c) / math.sqrt(1 - ab[steps[-1]])
    for state, t in zip(traj[1:-1], reversed(steps[:-1])):
        assert torch.allclose(state, math.sqrt(ab[t]) * c + math.sqrt(1 - ab[t]) * eps_T, atol=1e-10)
    assert torch.allclose(x, c.expand_as(x), atol=1e-12) and len(traj) == len(steps) + 1


def test_ddim_eta1_on_every_step_is_ddpm():
    s = make_schedule("cosine", 80)
    a = ddpm_sample(gaussian_oracle(s), s, (50, 2), generator=_gen(9), progress=False, dtype=F64)
    b = ddim_sample(gaussian_oracle(s), s, (50, 2), eta=1.0, generator=_gen(9), progress=False, dtype=F64)
    assert torch.allclose(a, b, atol=1e-9)


def test_clamp_fn_is_applied_to_x0_hat_at_every_step():
    s = make_schedule("sqrt", 30)
    words = torch.tensor([-1.0, 1.0], dtype=F64)
    calls = []

    def clamp(x0_hat):  # snap to the nearest "word" in {-1, +1}
        calls.append(x0_hat.shape)
        return words[(x0_hat[..., None] - words).abs().argmin(-1)]

    x = ddpm_sample(gaussian_oracle(s), s, (100, 4), clamp_fn=clamp, generator=_gen(), progress=False, dtype=F64)
    assert len(calls) == s.T and bool(((x == -1) | (x == 1)).all())
    calls.clear()
    y = ddim_sample(gaussian_oracle(s), s, (100, 4), timesteps=7, clamp_fn=clamp, progress=False, dtype=F64)
    assert len(calls) == 7 and bool(((y == -1) | (y == 1)).all())


def test_timestep_subsequences_and_errors():
    assert ddim_timesteps(10) == list(range(1, 11))
    st = ddim_timesteps(1000, 50)
    assert len(st) == 50 and st[0] == 1 and st[-1] == 1000 and all(b > a for a, b in zip(st, st[1:]))
    assert ddim_timesteps(1000, 1) == [1000]
    for bad in ([5, 3], [0, 4], [2, 11], []):
        with pytest.raises(ValueError, match="strictly increasing"):
            ddim_timesteps(10, bad)
    with pytest.raises(ValueError, match="1..T"):
        ddim_timesteps(10, 11)
    s = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="'x0', 'eps'"):
        ddpm_sample(gaussian_oracle(s), s, (2, 1), prediction="v", progress=False)
    with pytest.raises(ValueError, match="shape"):
        ddim_sample(gaussian_oracle(s), s, (2, 1), x_T=torch.zeros(3, 1), progress=False)
