"""The text-only Diffusion-LM trainer: objective, adaptive weight, training, resuming, sampling."""
import math

import pytest
import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion.noise_schedules import make_schedule
from clipdiff_mini.diffusion.text_diffusion import (AdaptiveRoundingWeight, TextDiffusionLM, TextDiffusionTrainer,
                                          decode_samples, diffusion_lm_losses, exact_row_fraction,
                                          repeated_word_rate, timestep_embedding)

SMALL = {"diffusion.timesteps": 50, "diffusion.denoiser_width": 32, "diffusion.denoiser_layers": 1,
         "diffusion.denoiser_heads": 2, "diffusion.batch_size": 16, "diffusion.embed_dim": 8,
         "diffusion.sample_steps": 5, "device": "cpu"}
V, L = 12, 6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**extra):
    return get_config("ci", {**SMALL, **extra})


def _data(n=40, seed=0):
    """Toy 'captions': [BOS] w w' w'' [EOS] [PAD] with a few fixed patterns."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 10, 11, 5, 2, 0], [1, 6, 2, 0, 0, 0]])
    return patterns[torch.randint(0, len(patterns), (n,), generator=g)]


def test_timestep_embedding_matches_the_formula():
    t = torch.tensor([0, 3, 17])
    emb = timestep_embedding(t, 6)
    for b, tv in enumerate(t.tolist()):
        for k in range(3):
            f = math.exp(-math.log(10_000.0) * k / 3)
            assert emb[b, k].item() == pytest.approx(math.cos(tv * f), abs=1e-5)
            assert emb[b, 3 + k].item() == pytest.approx(math.sin(tv * f), abs=1e-5)


class _Zero(torch.nn.Module):
    def forward(self, x_t, t):
        return torch.zeros_like(x_t)


def test_losses_match_a_hand_computation_with_a_zero_denoiser():
    sched = make_schedule("sqrt", 50)
    model = TextDiffusionLM(V, 4, L, width=16, layers=1, heads=2, init_std=0.5)
    model.denoiser = _Zero()  # f = 0: each regression term is |target|^2
    ids = _data(3)
    t = torch.tensor([1, 7, 50])
    sigma0, tau = 0.3, 0.4
    got = diffusion_lm_losses(model, sched, ids, sigma0=sigma0, temperature=tau, t=t,
                              generator=torch.Generator().manual_seed(5))
    # the same draws, in the documented order: x0 noise, then (t given) the forward noise
    g = torch.Generator().manual_seed(5)
    E = model.embedding.weight.detach()
    mean = E[ids]
    x0 = mean + sigma0 * torch.randn(mean.shape, generator=g)
    mse, prior, rnd = [], [], []
    abar_T = sched.alpha_bar[50].item()
    for b in range(3):
        target = mean[b] if t[b] == 1 else x0[b]
        mse.append((target ** 2).mean().item())
        prior.append(abar_T * (x0[b] ** 2).mean().item())
        nll = 0.0
        for i in range(L):
            logits = [-((x0[b, i] - E[v]) ** 2).sum().item() / tau for v in range(V)]
            top = max(logits)
            lse = top + math.log(sum(math.exp(z - top) for z in logits))
            nll += lse - logits[ids[b, i]]
        rnd.append(nll / L)
    assert got["mse"].item() == pytest.approx(sum(mse) / 3, rel=1e-5)
    assert got["prior"].item() == pytest.approx(sum(prior) / 3, rel=1e-5, abs=1e-12)
    assert got["rounding"].item() == pytest.approx(sum(rnd) / 3, rel=1e-5)
    assert got["reg"].item() == pytest.approx(got["mse"].item() + got["prior"].item(), rel=1e-6)


def test_rounding_on_the_prediction_reads_the_denoiser_output():
    # with f = 0 every position's prediction is the origin: p(w | 0) is a softmax of -||e_v||^2 / tau
    sched = make_schedule("sqrt", 50)
    model = TextDiffusionLM(V, 4, L, width=16, layers=1, heads=2, init_std=0.5)
    model.denoiser = _Zero()
    ids = _data(3)
    tau = 0.4
    got = diffusion_lm_losses(model, sched, ids, sigma0=0.3, temperature=tau, rounding_on="prediction",
                              generator=torch.Generator().manual_seed(5))
    E = model.embedding.weight.detach()
    logits = [-(E[v] ** 2).sum().item() / tau for v in range(V)]
    top = max(logits)
    lse = top + math.log(sum(math.exp(z - top) for z in logits))
    expect = sum(lse - logits[w] for w in ids.flatten().tolist()) / ids.numel()
    assert got["rounding"].item() == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="rounding_on"):
        diffusion_lm_losses(model, sched, ids, sigma0=0.3, rounding_on="logits")


def test_adaptive_weight_follows_the_documented_recursion():
    lam = AdaptiveRoundingWeight(0.5, adaptive=True, beta=0.8, cap=10.0)
    m = n = None
    for reg, rnd in [(2.0, 1.0), (1.0, 0.5), (0.5, 2.0), (1.0, 1e-6), (1.0, 1e-6)]:
        m = reg if m is None else 0.8 * m + 0.2 * reg
        n = rnd if n is None else 0.8 * n + 0.2 * rnd
        expect = 0.5 * min(max(m / n, 0.1), 10.0)
        assert lam(reg, rnd) == pytest.approx(expect)
    assert AdaptiveRoundingWeight(0.5, adaptive=True, cap=10.0)(1.0, 1e-9) == pytest.approx(0.5 * 10.0)  # capped
    assert AdaptiveRoundingWeight(0.5, adaptive=True, cap=10.0)(1e-9, 1.0) == pytest.approx(0.5 / 10.0)
    assert AdaptiveRoundingWeight(0.3, adaptive=False)(5.0, 1.0) == 0.3
    assert AdaptiveRoundingWeight(0.0, adaptive=True)(5.0, 1.0) == 0.0


def test_training_reduces_the_loss_on_a_tiny_dataset():
    ids = _data()
    tr = TextDiffusionTrainer(_cfg(**{"diffusion.rounding_weight": 1.0}), V, L)

    def held_out_loss():  # the same t and noise before and after training
        with torch.no_grad():
            t = torch.arange(1, 41) % 50 + 1
            terms = diffusion_lm_losses(tr.model, tr.sched, ids, sigma0=0.1, t=t,
                                        generator=torch.Generator().manual_seed(9))
        return terms["reg"].item()

    before = held_out_loss()
    tr.train(ids, 100, progress=False)
    after = held_out_loss()
    assert after < 0.5 * before, (before, after)
    assert [r["step"] for r in tr.history][:2] == [0, 25] and tr.history[-1]["step"] == 100


def test_rounding_term_decides_whether_small_embeddings_collapse():
    # Small initial embeddings (std 0.1, so rows ~4 sigma0 apart): the regression
    # terms alone shrink them (round-trip accuracy drops), the rounding term pushes them apart.
    ids = _data()
    acc = {}
    for lam in (0.0, 1.0):
        tr = TextDiffusionTrainer(_cfg(**{"diffusion.rounding_weight": lam, "diffusion.embed_init_std": 0.1}), V, L)
        tr.train(ids, 60, progress=False, log_every=60)
        acc[lam] = (tr.history[0]["roundtrip_acc"], tr.history[-1]["roundtrip_acc"],
                    tr.history[0]["mean_dist"], tr.history[-1]["mean_dist"])
    assert acc[0.0][1] < acc[0.0][0] and acc[0.0][3] < acc[0.0][2], acc
    assert acc[1.0][1] > acc[1.0][0] and acc[1.0][3] > acc[1.0][2], acc


def test_checkpoint_resumes_to_the_same_state(tmp_path):
    ids = _data()
    cfg = _cfg(**{"diffusion.adaptive_rounding": True})
    straight = TextDiffusionTrainer(cfg, V, L)
    straight.train(ids, 30, progress=False, log_every=10)

    path = tmp_path / "ckpt.pt"
    first = TextDiffusionTrainer(cfg, V, L, ckpt_path=path)
    first.train(ids, 15, progress=False, log_every=10, ckpt_every=5)
    assert path.exists() and not list(tmp_path.glob(".*.tmp")), "checkpoint must be written atomically"
    resumed = TextDiffusionTrainer(cfg, V, L, ckpt_path=path)
    assert resumed.step == 15
    resumed.train(ids, 30, progress=False, log_every=10)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"parameter {k} differs after resuming"
    assert straight.history == resumed.history
    assert straight.lam.state_dict() == resumed.lam.state_dict()

    with pytest.raises(ValueError, match="other settings"):
        TextDiffusionTrainer(_cfg(**{"diffusion.sigma0": 0.2}), V, L, ckpt_path=path)


def test_sampling_with_and_without_clamping():
    ids = _data()
    tr = TextDiffusionTrainer(_cfg(), V, L)
    tr.train(ids, 20, progress=False)
    E = tr.model.E.detach()
    x0, out = tr.sample(5, clamp=True, generator=torch.Generator().manual_seed(0))
    assert x0.shape == (5, L, 8) and out.shape == (5, L)
    assert exact_row_fraction(x0, E) == 1.0  # the last DDIM step returns the clamped x0_hat
    assert torch.equal(E[out], x0)
    x0_free, _ = tr.sample(5, clamp=False, generator=torch.Generator().manual_seed(0))
    assert exact_row_fraction(x0_free, E) < 1.0
    x0_ddpm, _ = tr.sample(2, clamp=True, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert exact_row_fraction(x0_ddpm, E) == 1.0
    with pytest.raises(ValueError, match="sampler"):
        tr.sample(1, sampler="euler")


def test_decoding_and_sample_measures():
    class Tok:
        pad_id, bos_id, eos_id, mask_id = 0, 1, 2, 3
        itos = ["[PAD]", "[BOS]", "[EOS]", "[MASK]", "a", "red", "circle"]

        def batch_decode(self, ids, skip_special=True, stop_at_eos=True):
            out = []
            for row in ids.tolist():
                if stop_at_eos and 2 in row:
                    row = row[: row.index(2)]
                out.append(" ".join(self.itos[i] for i in row if i > 3))
            return out

    texts = decode_samples(torch.tensor([[1, 4, 5, 6, 2, 5], [1, 4, 4, 0, 6, 2]]), Tok())
    assert texts == ["a red circle", "a a circle"]
    assert repeated_word_rate(["a red red circle", "a circle", "x"]) == pytest.approx(1 / 4)
    assert repeated_word_rate([]) == 0.0
    E = torch.eye(3)
    x = torch.stack([E[0], E[1] + 0.1, E[2]])
    assert exact_row_fraction(x, E) == pytest.approx(2 / 3)


def test_bad_training_data_is_rejected():
    tr = TextDiffusionTrainer(_cfg(), V, L)
    with pytest.raises(ValueError, match="max_len"):
        tr.train(torch.zeros(4, L + 1, dtype=torch.long), 1, progress=False)
    with pytest.raises(ValueError, match="vocabulary"):
        tr.train(torch.full((4, L), V, dtype=torch.long), 1, progress=False)
