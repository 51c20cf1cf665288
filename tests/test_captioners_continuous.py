"""CLIP-DiffusionLM: shapes, both fusions, guidance, x_{t-n} targets, a training
step, and the shared training loop's resume. Features are random tensors on
the CI dataset's captions (no CLIP needed): what is tested is the mechanics."""
import math
from dataclasses import replace

import pytest
import torch

from clipdiff_mini.captioners.continuous import (ContinuousCaptioner, build_continuous_captioner,
                                                 continuous_caption_fn)
from clipdiff_mini.captioners.features import SplitFeatures
from clipdiff_mini.captioners.training import lr_factor, train_captioner
from clipdiff_mini.config import get_config
from clipdiff_mini.data.splits import load_split
from clipdiff_mini.data.tokenizers import WordTokenizer
from clipdiff_mini.diffusion.noise_schedules import make_schedule

from conftest import torch_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_split(cfg, name="train", n=None, grid_tokens=4, seed=0):
    split = load_split(cfg, name, progress=False)
    if n is not None:
        split = split.subset(n)
    tok = WordTokenizer.build(load_split(cfg, "train", progress=False).captions())
    owner, captions = split.caption_table()
    g = torch_generator(seed)
    image = torch.nn.functional.normalize(torch.randn(len(split), 8, generator=g), dim=-1)
    return SplitFeatures(name, split, image, torch.randn(len(split), grid_tokens, 6, generator=g),
                         torch.nn.functional.normalize(torch.randn(len(captions), 8, generator=g), dim=-1),
                         tok.batch_encode(captions, max_len=cfg.data.max_caption_len), owner, tok)


def tiny_cfg(**over):
    base = {"captioner.width": 16, "captioner.layers": 1, "captioner.heads": 2, "continuous.embed_dim": 8,
            "continuous.timesteps": 50, "captioner.batch_size": 8}
    return get_config("ci", {**base, **over})


def batch_of(data, rows):
    owner = data.owner[rows]
    return {"ids": data.ids[rows], "image": data.image[owner], "grid": data.grid[owner], "text": data.text[rows]}


@pytest.mark.parametrize("fusion", ["concat", "add"])
@pytest.mark.parametrize("output", ["regress", "logits"])
def test_shapes_and_fusions(fusion, output):
    cfg = tiny_cfg(**{"continuous.fusion": fusion, "continuous.output": output})
    data = fake_split(cfg, n=12)
    model = build_continuous_captioner(cfg, data)
    B, L = 3, data.ids.shape[1]
    x = torch.randn(B, L, 8)
    out = model(x, torch.tensor([1, 20, 50]), data.image[:B], data.grid[:B], data.text[:B])
    assert out["x0"].shape == (B, L, 8) and out["logits"].shape == (B, L, data.tokenizer.vocab_size)
    assert model.n_prefix == (2 + 4 if fusion == "concat" else 0)
    # the image matters: another picture changes the prediction
    other = model(x, torch.tensor([1, 20, 50]), data.image[3:3 + B], data.grid[3:3 + B], data.text[:B])
    assert not torch.allclose(out["x0"], other["x0"])
    if output == "logits":  # x0 is the mean word vector under the predicted distribution
        torch.testing.assert_close(out["x0"], torch.softmax(out["logits"], -1) @ model.E)
    sample = model.sample({"image": data.image[:B], "grid": data.grid[:B]}, steps=3, generator=torch_generator())
    assert sample["ids"].shape == (B, L) and sample["passes"] == 3 * cfg.continuous.length_beam


def test_add_fusion_equals_adding_the_projected_feature_by_hand():
    cfg = tiny_cfg(**{"continuous.fusion": "add", "continuous.self_condition": False, "continuous.output": "regress",
                      "continuous.timestep_input": False, "continuous.backbone": "distilbert"})
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data).eval()
    x = torch.randn(2, data.ids.shape[1], 8)
    got = model(x, torch.tensor([5, 5]), data.image[:2], data.grid[:2], data.text[:2])["x0"]
    norm = model.cond_norm  # LayerNorm on each projected condition, written out

    def ln(v):
        return (v - v.mean(-1, keepdim=True)) / (v.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt() \
            * norm.weight + norm.bias

    cond = ln(model.image_proj(data.image[:2])) + ln(model.text_proj(data.text[:2]))
    h = model.up(x) + model.segment.weight[0] + cond[:, None]
    want = model.head(model.out_norm(model.encoder(inputs_embeds=h).last_hidden_state))
    torch.testing.assert_close(got, want)


def test_guidance_scale_one_is_the_conditional_model_and_other_scales_mix_linearly():
    cfg = tiny_cfg(**{"continuous.cond_dropout": 0.3, "continuous.output": "regress"})
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data).eval()
    torch.nn.init.normal_(model.null_image)  # a trained null vector differs from zeros
    x, t = torch.randn(2, data.ids.shape[1], 8), torch.tensor([10, 30])
    cond = {"image": data.image[:2], "grid": data.grid[:2]}
    plain = model(x, t, image=cond["image"], grid=cond["grid"])
    torch.testing.assert_close(model._guided(x, t, cond, None, 1.0)["x0"], plain["x0"])
    un = model(x, t, image=cond["image"], grid=cond["grid"], drop=torch.ones(2, dtype=torch.bool))
    assert not torch.allclose(un["x0"], plain["x0"])
    torch.testing.assert_close(model._guided(x, t, cond, None, 2.5)["x0"], un["x0"] + 2.5 * (plain["x0"] - un["x0"]))


def test_x_t_minus_n_target_is_the_noise_free_jump():
    cfg = tiny_cfg(**{"continuous.target": "x_t-n", "continuous.target_n": 7, "continuous.output": "regress"})
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data)
    sched = make_schedule("cosine", 50)
    x0, eps = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    t = torch.tensor([3, 20, 50])
    ab = sched.alpha_bar
    x_t = torch.stack([math.sqrt(ab[int(k)]) * x0[i] + math.sqrt(1 - ab[int(k)]) * eps[i] for i, k in enumerate(t)])
    got = model.target(x0, x_t, t)
    for i, k in enumerate(t.tolist()):
        s = max(k - 7, 0)  # by hand: same eps, the noise level of step s
        want = math.sqrt(ab[s]) * x0[i] + math.sqrt(1 - ab[s]) * eps[i]
        torch.testing.assert_close(got[i], want.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[0], x0[0], atol=1e-4, rtol=1e-4)  # n >= t: the target is x0 itself


def test_x_t_minus_n_with_word_logits_is_refused():
    with pytest.raises(ValueError, match="regress"):
        build_continuous_captioner(tiny_cfg(**{"continuous.target": "x_t-n", "continuous.output": "logits"}),
                                   fake_split(tiny_cfg(), n=4))


@pytest.mark.parametrize("over", [{}, {"continuous.output": "regress", "continuous.loss": "l1",
                                       "continuous.adaptive_certainty": True, "continuous.embeddings": "learned"}])
def test_one_training_step_reduces_the_loss_on_a_fixed_batch(over):
    cfg = tiny_cfg(**{"continuous.self_condition": False, **over})
    data = fake_split(cfg, n=16)
    torch.manual_seed(0)
    model = build_continuous_captioner(cfg, data)
    batch = batch_of(data, torch.arange(16))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def fixed_loss():  # the same t and noise each time: the loss of one fixed batch
        torch.manual_seed(1)
        return model.loss(batch)[0]

    before = fixed_loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = fixed_loss()
    assert after.item() < before.item()


def test_frozen_word_vectors_have_the_stated_scale_and_do_not_train():
    cfg = tiny_cfg(**{"continuous.embed_scale": 0.5})
    model = build_continuous_captioner(cfg, fake_split(cfg, n=4))
    rms = model.E.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 0.5))
    assert not model.embedding.weight.requires_grad


def test_lr_factor_warmup_then_decay_to_the_final_ratio():
    assert lr_factor(0, 100, 10, "linear", 0.1) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_factor(9, 100, 10, "linear", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "linear", 0.1) == pytest.approx(1 - 0.9 * 0.5)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(70, 100, 10, "constant", 0.1) == 1.0
    with pytest.raises(TypeError):  # the clock has no say in the learning rate (issue 18)
        lr_factor(20, 100, 10, "linear", 0.1, time_fraction=0.5)


def test_plateau_is_patience_checks_without_a_better_score():
    from clipdiff_mini.captioners.training import plateaued

    def hist(*accs):
        return [{"scene_accuracy": a, "object_recall": 0.5} for a in accs]

    assert not plateaued(hist(0.1, 0.2, 0.2), 0)  # patience 0: never
    assert not plateaued(hist(0.1, 0.2), 2)  # not enough checks yet
    assert plateaued(hist(0.1, 0.3, 0.2, 0.3), 2)  # the best (0.3 at check 2) not beaten by checks 3 and 4
    assert not plateaued(hist(0.1, 0.3, 0.2, 0.31), 2)  # check 4 beat it
    assert not plateaued(hist(0.1, 0.3, 0.31, 0.2), 2)
    # ties on scene accuracy are broken by object recall, as in choosing the best weights
    assert not plateaued(hist(0.3, 0.3, 0.3)[:2] + [{"scene_accuracy": 0.3, "object_recall": 0.6}], 1)


def test_training_resumes_where_it_stopped_bit_identically(tmp_path, monkeypatch):
    over = {"paths.checkpoint_dir": str(tmp_path), "captioner.train_steps": 6, "captioner.eval_every": 3,
            "captioner.eval_images": 4, "captioner.checkpoint_every": 2, "captioner.warmup_steps": 1,
            "continuous.sample_steps": 2}
    cfg = tiny_cfg(**over)
    train, val = fake_split(cfg, n=20), fake_split(cfg, "val", n=8, seed=1)
    fn = continuous_caption_fn(train.tokenizer)

    def fresh():
        torch.manual_seed(0)
        return build_continuous_captioner(cfg, train)

    whole = fresh()
    rec = train_captioner(whole, train, val, cfg, name="whole", caption_fn=fn, progress=False)
    assert rec["steps"] == 6 and [v["step"] for v in rec["history"]["val"]] == [3, 6]
    last_whole = rec["history"]["loss"]

    interrupted = fresh()
    real_loss = ContinuousCaptioner.loss
    calls = {"n": 0}

    def failing_loss(self, batch, generator=None):
        calls["n"] += 1
        if calls["n"] == 6:  # dies during step 5: the snapshot of step 4 survives
            raise KeyboardInterrupt
        return real_loss(self, batch, generator)

    monkeypatch.setattr(ContinuousCaptioner, "loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_captioner(interrupted, train, val, cfg, name="cut", caption_fn=fn, progress=False)
    monkeypatch.setattr(ContinuousCaptioner, "loss", real_loss)
    resumed_model = fresh()
    rec2 = train_captioner(resumed_model, train, val, cfg, name="cut", caption_fn=fn, progress=False)
    assert rec2["resumed"] and rec2["steps"] == 6
    assert rec2["history"]["loss"] == last_whole  # the same losses, step for step
    for (k, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    # a finished run is loaded, not retrained
    again = fresh()
    rec3 = train_captioner(again, train, val, cfg, name="cut", caption_fn=fn, progress=False)
    assert rec3["resumed"] and rec3["steps"] == 6 and len(rec3["history"]["loss"]) == 6


def test_pretrained_word_vectors_are_the_bert_rows_of_each_word():
    from safetensors.torch import load_file

    from clipdiff_mini.captioners.continuous import pretrained_word_vectors
    from clipdiff_mini.data.tokenizers import bert_vocab_dir

    tok = WordTokenizer.build(["a red circle", "an orange triangle"])
    vecs = pretrained_word_vectors(tok)
    weights = load_file(str(bert_vocab_dir() / "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))  # (30522, 384)
    vocab = (bert_vocab_dir() / "vocab.txt").read_text().split("\n")
    assert vecs.shape == (tok.vocab_size, table.shape[1])
    for word in ("red", "circle", "orange"):  # single word pieces: exactly their row
        torch.testing.assert_close(vecs[tok.itos.index(word)], table[vocab.index(word)])
    torch.testing.assert_close(vecs[tok.eos_id], table[vocab.index("[SEP]")])
    cfg = tiny_cfg(**{"continuous.embeddings": "pretrained"})
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data)
    assert model.embed_dim == table.shape[1] and not model.embedding.weight.requires_grad
    out = model.sample({"image": data.image[:2], "grid": data.grid[:2]}, steps=2)
    assert out["ids"].shape == (2, data.ids.shape[1])


# ---- infilling by replacement ---------------------------------------------------------------
def _recording(model):
    """Wrap model.forward to record (x_t, t, x0_prev) of every network call."""
    calls = []
    forward = model.forward

    def wrapped(x_t, t, *args, **kw):
        calls.append((x_t.clone(), t.clone(), None if kw.get("x0_prev") is None else kw["x0_prev"].clone()))
        return forward(x_t, t, *args, **kw)

    model.forward = wrapped
    return calls


@pytest.mark.parametrize("sampler", ["feedback", "ddim"])
def test_infilling_keeps_the_given_words_and_feeds_them_in_at_every_call(sampler):
    cfg = tiny_cfg(**{"continuous.sampler": sampler, "continuous.sample_steps": 4})
    data = fake_split(cfg, n=64)
    torch.manual_seed(0)
    model = build_continuous_captioner(cfg, data).eval()
    ids = data.ids[::5][:64]  # one caption per picture, (B, L)
    known = torch.rand(ids.shape, generator=torch_generator(1)) < 0.5  # (B, L)
    cond = {"image": data.image[:ids.shape[0]], "grid": data.grid[:ids.shape[0]]}
    calls = _recording(model)
    out = model.sample(cond, known_ids=ids, known=known, generator=torch_generator(2))
    assert torch.equal(out["ids"][known], ids[known])
    assert len(calls) == 4 and out["passes"] == 4
    E = model.E.detach()
    x_known = E[ids]  # (B, L, D) looked up directly
    ab = model.sched.alpha_bar
    for k, (x_t, t, prev) in enumerate(calls):
        if sampler == "feedback" and k > 0:  # a feed-back input is an x0 estimate: the given words exactly
            torch.testing.assert_close(x_t[known], x_known[known])
        else:  # a draw of q(x_t | E[w]): the standardised noise at the given positions is N(0, 1)
            a = float(ab[int(t[0])])
            z = (x_t[known] - a ** 0.5 * x_known[known]) / (1 - a) ** 0.5
            assert abs(float(z.mean())) < 0.06 and abs(float(z.std()) - 1) < 0.06, (k, z.mean(), z.std())
        # self-conditioning sees the given words from the first call on
        torch.testing.assert_close(prev[known], x_known[known])
    assert torch.equal(calls[0][2][~known], torch.zeros_like(calls[0][2][~known]))


def test_infilling_needs_both_arguments():
    cfg = tiny_cfg()
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data).eval()
    with pytest.raises(ValueError):
        model.sample({"image": data.image, "grid": data.grid}, known_ids=data.ids[:4])


# ---- the re-noising sampler and the length head ---------------------------------------------
def _recording_outputs(model):
    """Wrap model.forward to record (x_t, t, x0 estimate, logits) of every network call."""
    calls = []
    forward = model.forward

    def wrapped(x_t, t, *args, **kw):
        out = forward(x_t, t, *args, **kw)
        calls.append((x_t.clone(), t.clone(), out["x0"].clone(), out["logits"].clone()))
        return out

    model.forward = wrapped
    return calls


def test_renoise_sampler_feeds_a_fresh_forward_draw_around_the_last_estimate():
    cfg = tiny_cfg(**{"continuous.sampler": "renoise", "continuous.sample_steps": 5,
                      "continuous.length_prediction": False})
    data = fake_split(cfg, n=64)
    torch.manual_seed(0)
    model = build_continuous_captioner(cfg, data).eval()
    cond = {"image": data.image[:64], "grid": data.grid[:64]}
    calls = _recording_outputs(model)
    out = model.sample(cond, generator=torch_generator(3))
    assert out["passes"] == 5 and len(calls) == 5
    levels = [int(call[1][0]) for call in calls]
    assert levels == sorted(levels, reverse=True) and levels[0] == model.sched.T and levels[-1] == 1
    ab = model.sched.alpha_bar
    for (_, _, x0_prev, _), (x_t, t, _, _) in zip(calls, calls[1:]):
        a = float(ab[int(t[0])])
        z = (x_t - a ** 0.5 * x0_prev) / (1 - a) ** 0.5  # q(x_s | x0_hat): standard normal noise
        assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03
    # the caption is the last call's most likely words
    assert torch.equal(out["ids"], calls[-1][3].argmax(-1))


def test_length_prediction_gives_eos_and_pads_clean_and_fills_only_the_caption():
    cfg = tiny_cfg(**{"continuous.length_prediction": True, "continuous.sample_steps": 3, "continuous.length_beam": 1})
    data = fake_split(cfg, n=32)
    torch.manual_seed(0)
    model = build_continuous_captioner(cfg, data).eval()
    tok = data.tokenizer
    B, L = 16, data.ids.shape[1]
    cond = {"image": data.image[:B], "grid": data.grid[:B]}
    n = model.length_head(cond["image"]).detach()
    n[:, :2] = float("-inf")
    n = n.argmax(-1)  # (B,) the head's most likely length, computed here by hand
    calls = _recording_outputs(model)
    out = model.sample(cond, generator=torch_generator(4))
    assert torch.equal(out["lengths"], n)
    E = model.E.detach()
    for b in range(B):
        k = int(n[b])
        assert out["ids"][b, k - 1] == tok.eos_id and (out["ids"][b, k:] == tok.pad_id).all()
        for x_t, _, _, _ in calls:  # the given positions enter and leave every call as clean vectors
            torch.testing.assert_close(x_t[b, k - 1], E[tok.eos_id])
            torch.testing.assert_close(x_t[b, k:], E[tok.pad_id].expand(L - k, -1))
        if k > 2:  # the caption's own positions start as noise
            assert not torch.allclose(calls[0][0][b, 1:k - 1], E[out["ids"][b, 1:k - 1]])
    assert (n > 2).any()


def test_length_prediction_loss_counts_only_the_denoised_positions():
    cfg = tiny_cfg(**{"continuous.length_prediction": True, "continuous.self_condition": False})
    data = fake_split(cfg, n=16)
    torch.manual_seed(0)
    model = build_continuous_captioner(cfg, data)
    batch = batch_of(data, torch.arange(8))
    ids = batch["ids"]
    n = (ids != data.tokenizer.pad_id).sum(-1)
    torch.manual_seed(5)
    loss, logs = model.loss(batch)
    # the same draws by hand: t, then the noise; [EOS] and [PAD]s replaced by their clean vectors
    torch.manual_seed(5)
    t = model.sample_t(8)
    x0 = model.E.detach()[ids]
    noise = torch.randn(x0.shape)
    ab = model.sched.alpha_bar[t].float()[:, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    denoised = torch.arange(ids.shape[1])[None] < (n[:, None] - 1)  # (B, L)
    x_t = torch.where(denoised[..., None], x_t, x0)
    torch.rand(8)  # the conditioning-dropout draw
    logits = model(x_t, t, batch["image"], batch["grid"], drop=torch.zeros(8, dtype=torch.bool))["logits"]
    ce = torch.nn.functional.cross_entropy(logits[denoised], ids[denoised])
    length_ce = torch.nn.functional.cross_entropy(model.length_head(batch["image"]), n)
    torch.testing.assert_close(loss, ce + length_ce)
    assert logs["ce"] == pytest.approx(float(ce), rel=1e-5)


def test_length_beam_keeps_the_candidate_with_the_best_mean_word_log_probability():
    cfg = tiny_cfg(**{"continuous.length_prediction": True, "continuous.sample_steps": 2})
    data = fake_split(cfg, n=32)
    torch.manual_seed(0)
    model = build_continuous_captioner(cfg, data).eval()
    B, k = 6, 3
    cond = {"image": data.image[:B], "grid": data.grid[:B]}
    out = model.sample(cond, length_beam=k, generator=torch_generator(7))
    assert out["passes"] == 2 * k
    # the candidates by hand: the k most likely lengths (n >= 2) of each picture, same draws
    head = model.length_head(cond["image"]).detach()[:, 2:]
    lengths = head.argsort(-1, descending=True)[:, :k] + 2  # (B, k)
    rep = {key: v.repeat_interleave(k, 0) for key, v in cond.items()}
    cand = model.sample_once(rep, lengths=lengths.reshape(-1), generator=torch_generator(7))
    logp = torch.log_softmax(cand["logits"], -1)
    for b in range(B):
        scores = []
        for j in range(k):
            r, n = b * k + j, int(lengths[b, j])
            ids = cand["ids"][r]
            assert ids[n - 1] == data.tokenizer.eos_id
            scores.append(sum(float(logp[r, i, ids[i]]) for i in range(n - 1)) / (n - 1))
        best = max(range(k), key=lambda j: scores[j])
        assert torch.equal(out["ids"][b], cand["ids"][b * k + best])
        assert int(out["lengths"][b]) == int(lengths[b, best])


def test_the_plateau_stop_is_a_switch_of_its_own(tmp_path, monkeypatch):
    """continuous.plateau_stop: with validation scores that never improve and a patience of one check, a run
    with the switch on stops at the second check; with it off (the default) it trains its whole step budget."""
    from clipdiff_mini.captioners import continuous, training

    flat = {"scene_accuracy": 0.5, "object_recall": 0.5, "well_formed": 1.0}
    monkeypatch.setattr(training, "validate", lambda *a, **k: dict(flat))
    over = {"paths.checkpoint_dir": str(tmp_path), "captioner.train_steps": 8, "captioner.eval_every": 2,
            "captioner.eval_images": 4, "captioner.warmup_steps": 1, "captioner.patience": 1,
            "continuous.sample_steps": 2}
    cfg = tiny_cfg(**over)
    data = {"train": fake_split(cfg, n=20), "val": fake_split(cfg, "val", n=8, seed=1)}
    _, off = continuous.train_continuous(cfg, data, progress=False)
    _, on = continuous.train_continuous(cfg.replace({"continuous.plateau_stop": True}), data, progress=False)
    assert off["steps"] == 8 and off["stopped_by"] == "steps"
    assert on["steps"] == 4 and on["stopped_by"] == "plateau"
    assert off["key"] != on["key"]


# ---- the backbone switch: DistilBERT (the paper's) or the course's pre-LN block (DDCap's) ----
def test_course_backbone_is_the_pre_ln_block_written_out_by_hand():
    from test_captioners_ddcap import hand_attention

    cfg = tiny_cfg(**{"continuous.backbone": "course", "captioner.layers": 2, "captioner.grid": "fine"})
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data).eval()
    assert model.encoder is None and len(model.blocks) == 2
    assert not any("distilbert" in type(m).__module__.lower() for m in model.modules())
    h = torch.randn(3, model.n_prefix + model.max_len, 16, generator=torch_generator(1))

    def ln(mod, v):  # LayerNorm written out
        return (v - v.mean(-1, keepdim=True)) / (v.var(-1, unbiased=False, keepdim=True) + mod.eps).sqrt() \
            * mod.weight + mod.bias

    want = h + model.pos[:h.shape[1]]
    for b in model.blocks:  # x + attn(LN(x)), then x + MLP(LN(x)); every position sees every other one
        n = ln(b.norms[0], want)
        want = want + hand_attention(b.self_attn, n, n, None)[0]
        n = ln(b.norms[1], want)
        want = want + b.mlp[2](torch.nn.functional.gelu(b.mlp[0](n)))
    torch.testing.assert_close(model.encode(h), want, rtol=1e-5, atol=1e-5)


def test_course_backbone_trains_samples_and_keys_apart_from_distilbert():
    from clipdiff_mini.captioners.checkpoints import run_identity

    cfg = tiny_cfg(**{"continuous.backbone": "course"})
    data = fake_split(cfg, n=8)
    model = build_continuous_captioner(cfg, data)
    batch = {"ids": data.ids[:8], "image": data.image[data.owner[:8]], "grid": data.grid[data.owner[:8]],
             "text": data.text[:8]}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):  # one batch, learned: the loss must fall
        loss, _ = model.loss(batch, torch_generator(0))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    out = model.eval().sample({"image": batch["image"][:2], "grid": batch["grid"][:2]}, sampler="feedback", steps=3)
    assert out["ids"].shape == (2, data.ids.shape[1]) and out["passes"] == 3 * cfg.continuous.length_beam
    # the two backbones are two runs: the switch is part of the run identity
    distil = tiny_cfg(**{"continuous.backbone": "distilbert"})
    paper = run_identity(distil, "m", {"continuous": vars(distil.continuous)})
    course = run_identity(cfg, "m", {"continuous": vars(cfg.continuous)})
    assert paper["continuous"]["backbone"] == "distilbert" and course["continuous"]["backbone"] == "course"
    assert {k: v for k, v in paper["continuous"].items() if k != "backbone"} == \
        {k: v for k, v in course["continuous"].items() if k != "backbone"}


# ---- settled words in training, the commit sampler --------------------------------------------------
def test_settled_positions_leave_given_ones_out_and_cover_every_share():
    g = torch_generator(3)
    given = torch.zeros(4000, 10, dtype=torch.bool)
    given[:, 7:] = True  # [EOS] and [PAD]s
    settled = ContinuousCaptioner.settled_positions(given, g)
    assert not (settled & given).any()
    share = settled[:, :7].float().mean(-1)  # (B,) per caption: uniform on [0, 1] up to the binomial draw
    assert abs(share.mean().item() - 0.5) < 0.02
    assert (share == 0).float().mean() > 0.05 and (share == 1).float().mean() > 0.05  # all noisy and all clean
    assert abs((share < 0.25).float().mean().item() - 0.25) < 0.05


def test_one_timestep_per_caption_equals_the_same_level_at_every_position():
    cfg = tiny_cfg()
    data = fake_split(cfg, n=4)
    model = build_continuous_captioner(cfg, data).eval()
    x = torch.randn(2, data.ids.shape[1], 8, generator=torch_generator(2))
    t = torch.tensor([7, 30])
    a = model(x, t, data.image[:2], data.grid[:2])["logits"]
    b = model(x, t[:, None].expand(2, data.ids.shape[1]), data.image[:2], data.grid[:2])["logits"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("steps", [3, 5, 40])
def test_commit_sampler_fixes_each_word_once_surest_first_in_even_shares(steps):
    cfg = tiny_cfg(**{"continuous.settled_words": True, "continuous.sampler": "commit",
                      "continuous.sample_steps": steps, "continuous.length_beam": 1})
    data = fake_split(cfg, n=6)
    model = build_continuous_captioner(cfg, data).eval()
    cond = {"image": data.image[:6], "grid": data.grid[:6]}
    calls = []  # the word log-probabilities of every network call
    model.register_forward_hook(lambda m, a, o: calls.append(torch.log_softmax(o["logits"], -1).max(-1).values))
    out = model.sample(cond, trajectory=True, generator=torch_generator(4))
    n = out["lengths"]  # (B,) caption lengths: positions n - 1 .. are [EOS] and [PAD]s, given
    L = data.ids.shape[1]
    own = torch.arange(L)[None] < (n[:, None] - 1)  # (B, L) the positions the sampler writes
    assert out["passes"] == min(steps, int(own.sum(-1).max()))  # no pass once every word is fixed
    assert ((out["commit_pass"] >= 0) == own).all()  # every own position fixed exactly once, the given ones never
    for b in range(6):
        open_, counts = int(own[b].sum()), []
        for k in range(out["passes"]):  # the share of pass k, worked by hand: ceil(open / passes left)
            take = min(open_, -(-open_ // (steps - k)))
            counts.append(take)
            open_ -= take
        assert [int((out["commit_pass"][b] == k).sum()) for k in range(out["passes"])] == counts
    for k, (t, ids_k) in enumerate(out["trajectory"]):  # once fixed, a word never changes
        fixed = (out["commit_pass"] >= 0) & (out["commit_pass"] <= k)
        assert (ids_k[fixed] == out["ids"][fixed]).all()
    # within a pass, the words fixed were at least as sure as the ones left open (the best-first rule)
    assert len(calls) == out["passes"]
    for k, best in enumerate(calls):
        for b in range(6):
            fixed, later = out["commit_pass"][b] == k, out["commit_pass"][b] > k
            if fixed.any() and later.any():
                assert best[b][fixed].min() >= best[b][later].max()
            torch.testing.assert_close(out["token_logp"][b][fixed], best[b][fixed])
    given_ids = torch.where(torch.arange(L)[None] == n[:, None] - 1, data.tokenizer.eos_id, data.tokenizer.pad_id)
    assert (out["ids"][~own] == given_ids[~own]).all()


def test_training_with_settled_words_scores_only_the_noisy_words():
    cfg = tiny_cfg(**{"continuous.settled_words": True})
    data = fake_split(cfg, n=8)
    model = build_continuous_captioner(cfg, data)
    batch = {"ids": data.ids[:8], "image": data.image[data.owner[:8]], "grid": data.grid[data.owner[:8]],
             "text": data.text[:8]}
    seen = {}

    def grab(module, args, kwargs, output):
        seen.setdefault("t", args[1] if len(args) > 1 else kwargs["t"])
        seen.setdefault("x", args[0])
    model.register_forward_hook(grab, with_kwargs=True)
    loss, logs = model.loss(batch, torch_generator(0))
    t, x = seen["t"], seen["x"]
    assert t.shape == batch["ids"].shape  # one level per position
    clean = t == 0
    torch.testing.assert_close(x[clean], model.embed(batch["ids"])[clean])  # level 0: the word's own vector
    assert clean.any() and (~clean).any() and torch.isfinite(loss)
