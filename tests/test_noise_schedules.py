"""Noise schedules against their published formulas, recomputed here in plain Python floats."""
import math

import pytest
import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion.noise_schedules import SCHEDULES, make_schedule, schedule_from_config


def _cumprod(values):
    out, p = [], 1.0
    for v in values:
        p *= v
        out.append(p)
    return out


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1, 5, 50, 1000, 2000])
def test_shapes_indexing_and_monotonicity(name, T):
    s = make_schedule(name, T)
    for arr in (s.betas, s.alphas, s.alpha_bar):
        assert arr.shape == (T + 1,) and arr.dtype == torch.float64
    assert s.betas[0] == 0 and s.alpha_bar[0] == 1  # paper indexing: t = 0 is clean data
    b = s.betas[1:]
    assert bool((b > 0).all()) and bool((b <= 0.999).all())
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all()), "alphabar must fall strictly with t"
    # alphabar is the running product of 1 - beta (recomputed with Python floats)
    expect = _cumprod([1.0 - float(x) for x in b])
    assert torch.allclose(s.alpha_bar[1:], torch.tensor(expect, dtype=torch.float64), rtol=1e-12, atol=0)


def test_linear_endpoints_and_scaling():
    s = make_schedule("linear", 1000)
    assert math.isclose(float(s.betas[1]), 1e-4, rel_tol=1e-12)
    assert math.isclose(float(s.betas[1000]), 0.02, rel_tol=1e-12)
    d = s.betas[2:] - s.betas[1:-1]
    assert torch.allclose(d, torch.full_like(d, (0.02 - 1e-4) / 999), rtol=1e-9), "linear in t"
    s2 = make_schedule("linear", 250)  # both ends scaled by 1000 / T
    assert math.isclose(float(s2.betas[1]), 4e-4, rel_tol=1e-12)
    assert math.isclose(float(s2.betas[250]), 0.08, rel_tol=1e-12)
    # the scaling keeps the total noise similar: alphabar_T ~ exp(-sum beta) ~ exp(-10)
    assert 1e-5 < float(s.alpha_bar[-1]) < 1e-4 and 1e-5 < float(s2.alpha_bar[-1]) < 1e-4


def test_cosine_matches_formula_and_clips():
    T, sft = 1000, 0.008
    s = make_schedule("cosine", T)
    f = [math.cos((t / T + sft) / (1 + sft) * math.pi / 2) ** 2 for t in range(T + 1)]
    for t in (1, 10, 500, 900, T - 1):  # no clipping before the last step
        assert math.isclose(float(s.alpha_bar[t]), f[t] / f[0], rel_tol=1e-9), t
    assert float(s.betas[T]) == pytest.approx(0.999)  # f(T) = 0 would give beta_T = 1
    # eq. 17's beta_t = 1 - alphabar_t / alphabar_{t-1}
    assert math.isclose(float(s.betas[300]), 1 - f[300] / f[299], rel_tol=1e-9)


def test_sqrt_matches_formula_and_clips():
    T, sft = 2000, 1e-4
    s = make_schedule("sqrt", T)
    paper = [1 - math.sqrt(t / T + sft) for t in range(T + 1)]  # Diffusion-LM's alphabar
    for t in (1, 2, 100, 1000, T - 1):
        # betas from consecutive ratios -> the paper's formula normalised to 1 at t = 0
        assert math.isclose(float(s.alpha_bar[t]), paper[t] / paper[0], rel_tol=1e-9), t
        assert abs(float(s.alpha_bar[t]) - paper[t]) < 0.011  # within the 1% normalisation
    assert paper[T] < 0, "the formula itself dips below zero at t = T ..."
    assert float(s.betas[T]) == pytest.approx(0.999)  # ... which the clipping absorbs
    # the point of the schedule: a big first step compared with linear / cosine
    assert float(s.betas[1]) > 0.01 > 100 * float(make_schedule("cosine", T).betas[1])


def test_snr_and_posterior_constants_match_definitions():
    s = make_schedule("cosine", 100)
    for t in (1, 2, 37, 100):
        ab, abp, b = float(s.alpha_bar[t]), float(s.alpha_bar[t - 1]), float(s.betas[t])
        assert math.isclose(float(s.snr[t]), ab / (1 - ab), rel_tol=1e-9)
        assert math.isclose(float(s.posterior_variance[t]), (1 - abp) / (1 - ab) * b, rel_tol=1e-9, abs_tol=1e-300)
    assert float(s.posterior_variance[1]) == 0.0
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    assert s.snr[0] == float("inf")


def test_bad_names_and_T_are_clear_errors():
    with pytest.raises(ValueError, match="allowed: linear, cosine, sqrt"):
        make_schedule("quadratic", 10)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            make_schedule("linear", bad)


def test_from_config():
    cfg = get_config("ci", {"diffusion.schedule": "cosine"})
    s = schedule_from_config(cfg)
    assert s.name == "cosine" and s.T == cfg.diffusion.timesteps
