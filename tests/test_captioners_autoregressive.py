"""The autoregressive baseline: shapes, causality, the key-value cache against
full recomputation and a brute-force argmax loop, beam search against greedy
and against exhaustive enumeration, a training step, and training through the
shared loop with resume. Features are random tensors on the CI dataset's
captions (no CLIP needed): what is tested is the mechanics."""
import itertools

import pytest
import torch

from clipdiff_mini.captioners.autoregressive import ARCaptioner, ar_caption_fn, build_ar_captioner, train_autoregressive
from clipdiff_mini.captioners.features import SplitFeatures
from clipdiff_mini.config import ConfigError, get_config
from clipdiff_mini.data.splits import load_split
from clipdiff_mini.data.tokenizers import WordTokenizer

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
    base = {"captioner.width": 16, "captioner.layers": 2, "captioner.heads": 2, "captioner.batch_size": 8}
    return get_config("ci", {**base, **over})


def batch_of(data, rows):
    owner = data.owner[rows]
    return {"ids": data.ids[rows], "image": data.image[owner], "grid": data.grid[owner], "text": data.text[rows]}


def sharp(model, seed=0):
    """Weights of a larger scale than the initialisation, in float64: decisive logits, no near ties,
    so that two exact computations pick the same argmax."""
    g = torch_generator(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every one set here: no dependence on the global RNG
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(0.5 * noise)
            else:  # biases around 0, LayerNorm gains around 1
                p.copy_((0.0 if name.endswith("bias") else 1.0) + 0.1 * noise)
    return model.double().eval()


def double_cond(data, n):
    return {"image": data.image[:n].double(), "grid": data.grid[:n].double()}


def brute_force_greedy(model, cond, max_len):
    """Greedy decoding by the definition: the full forward pass at every step, argmax of the last row."""
    B = cond["image"].shape[0]
    ids = torch.full((B, max_len), model.pad_id, dtype=torch.long)
    ids[:, 0] = model.bos_id
    done = torch.zeros(B, dtype=torch.bool)
    for t in range(1, max_len):
        for b in range(B):  # one picture at a time: no batching either
            if done[b]:
                continue
            logits = model(ids[b:b + 1, :t], cond["image"][b:b + 1], cond["grid"][b:b + 1])[0, -1]  # (V,)
            ids[b, t] = logits.argmax()
            done[b] = ids[b, t] == model.eos_id
    return ids


# ---- the network ------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
@pytest.mark.parametrize("grid_tokens", [0, 4])
def test_shapes_and_the_image_matters(conditioning, grid_tokens):
    cfg = tiny_cfg(**{"autoregressive.conditioning": conditioning, "autoregressive.prefix_length": 2})
    data = fake_split(cfg, n=12, grid_tokens=grid_tokens)
    model = build_ar_captioner(cfg, data).eval()
    B, L, V = 3, data.ids.shape[1], data.tokenizer.vocab_size
    logits = model(data.ids[:B], data.image[:B], data.grid[:B])
    assert logits.shape == (B, L, V)
    assert model.n_cond == 2 + grid_tokens
    never = [data.tokenizer.pad_id, data.tokenizer.bos_id, data.tokenizer.mask_id]
    assert torch.isinf(logits[..., never]).all() and torch.isfinite(logits[..., data.tokenizer.eos_id]).all()
    other = model(data.ids[:B], data.image[3:3 + B], data.grid[3:3 + B])
    assert not torch.allclose(logits, other)
    if grid_tokens:  # the grid is read too
        assert not torch.allclose(logits, model(data.ids[:B], data.image[:B], data.grid[3:3 + B]))
    out = model.sample({"image": data.image[:B], "grid": data.grid[:B]})
    assert out["ids"].shape == (B, L) and (out["ids"][:, 0] == data.tokenizer.bos_id).all()
    assert 1 <= out["passes"] <= L - 1 and out["logprob"].shape == (B,)
    caps = ar_caption_fn(data.tokenizer, beam=2)(model, {"image": data.image[:B], "grid": data.grid[:B]})
    assert len(caps) == B and all(isinstance(c, str) for c in caps)


@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_changing_token_j_leaves_earlier_logits_alone(conditioning):
    cfg = tiny_cfg(**{"autoregressive.conditioning": conditioning})
    data = fake_split(cfg, n=6)
    model = sharp(build_ar_captioner(cfg, data))
    ids = data.ids[:4].clone()
    cond = double_cond(data, 4)
    base = model(ids, cond["image"], cond["grid"])  # (B, L, V)
    g = torch_generator(3)
    for j in (1, 4, 9):
        changed = ids.clone()
        changed[:, j] = 5 + (ids[:, j] - 4 + torch.randint(0, 3, (4,), generator=g)) % (data.tokenizer.vocab_size - 5)
        assert (changed[:, j] != ids[:, j]).all()
        out = model(changed, cond["image"], cond["grid"])
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-12)
        fin = torch.isfinite(base[:, j])
        assert not torch.allclose(out[:, j][fin], base[:, j][fin])  # position j itself reads token j


# ---- decoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_cached_greedy_equals_full_recomputation_and_the_brute_force_loop(conditioning):
    cfg = tiny_cfg(**{"autoregressive.conditioning": conditioning})
    data = fake_split(cfg, n=6)
    model = sharp(build_ar_captioner(cfg, data), seed=1)
    cond = double_cond(data, 6)
    L = data.ids.shape[1]
    cached = model.sample(cond, beam=1, use_cache=True)
    full = model.sample(cond, beam=1, use_cache=False)
    assert torch.equal(cached["ids"], full["ids"]) and cached["passes"] == full["passes"]
    assert torch.equal(cached["ids"], brute_force_greedy(model, cond, L))
    # passes: one per step until the last caption of the batch has ended
    ends = [(row == model.eos_id).nonzero() for row in cached["ids"]]
    assert cached["passes"] == (max(int(e[0]) for e in ends) if all(len(e) for e in ends) else L - 1)
    # the reported log-prob is the caption's under the teacher-forced model
    torch.testing.assert_close(cached["logprob"], model.sequence_logprob(cached["ids"], cond))


@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_cached_beam_equals_uncached_and_beam_one_is_greedy(conditioning):
    cfg = tiny_cfg(**{"autoregressive.conditioning": conditioning})
    data = fake_split(cfg, n=6)
    model = sharp(build_ar_captioner(cfg, data), seed=2)
    cond = double_cond(data, 6)
    a = model.sample(cond, beam=4, use_cache=True)
    b = model.sample(cond, beam=4, use_cache=False)
    assert torch.equal(a["ids"], b["ids"])
    torch.testing.assert_close(a["logprob"], model.sequence_logprob(a["ids"], cond))
    greedy = model.sample(cond, beam=1)
    one = model.beam_search(cond, 1, data.ids.shape[1])  # the beam code path with one hypothesis
    assert torch.equal(one[0], greedy["ids"])
    # (a beam of 4 is not sure to beat greedy: greedy's prefix can be pruned for ones that end worse; the
    # guaranteed comparison is against the exhaustive search below)


def test_beam_wide_enough_finds_the_most_probable_caption_by_enumeration():
    """Vocabulary [PAD] [BOS] [EOS] [MASK] [UNK] a b, captions of at most 4 tokens after [BOS]: 121 possible
    ones (1 + 3 + 9 + 27 ending with [EOS], 81 cut at the length). A beam of 121 prunes nothing."""
    tok = WordTokenizer.build(["a b"])
    assert tok.vocab_size == 7
    cfg = tiny_cfg(**{"autoregressive.prefix_length": 1})
    L = 5
    torch.manual_seed(0)
    model = ARCaptioner(tok.vocab_size, L, 8, 6, cfg.autoregressive, width=16, layers=2, heads=2, n_grid=2,
                        special_ids=tok.special_ids)
    model = sharp(model, seed=4)
    g = torch_generator(5)
    cond = {"image": torch.randn(3, 8, generator=g).double(), "grid": torch.randn(3, 2, 6, generator=g).double()}
    words = [tok.eos_id, tok.unk_id, *tok.encode("a b", add_special=False)]
    seqs = []
    for n in range(1, L):
        for body in itertools.product(words[1:], repeat=n - 1):  # ends with [EOS] after n - 1 words
            seqs.append([tok.bos_id, *body, tok.eos_id] + [tok.pad_id] * (L - 1 - n))
    seqs += [[tok.bos_id, *body] for body in itertools.product(words[1:], repeat=L - 1)]  # cut at the length
    assert len(seqs) == 121
    all_ids = torch.tensor(seqs)  # (121, L)
    for b in range(3):
        one = {k: v[b:b + 1].expand(len(seqs), *v.shape[1:]) for k, v in cond.items()}
        lp = model.sequence_logprob(all_ids, one)  # (121,)
        # an independent check of the scores: they are a distribution over the 121 captions
        torch.testing.assert_close(torch.logsumexp(lp, 0), torch.zeros((), dtype=lp.dtype))
        best = int(lp.argmax())
        got = model.sample({k: v[b:b + 1] for k, v in cond.items()}, beam=121, length_penalty=0.0)
        assert torch.equal(got["ids"][0], all_ids[best])
        torch.testing.assert_close(got["logprob"][0], lp[best])
        # with length normalisation, the same beam picks the best mean log-prob per token
        n_tok = ((all_ids[:, 1:] != tok.pad_id).sum(1)).double()
        norm = model.sample({k: v[b:b + 1] for k, v in cond.items()}, beam=121, length_penalty=1.0)
        assert torch.equal(norm["ids"][0], all_ids[int((lp / n_tok).argmax())])
        greedy = model.sample({k: v[b:b + 1] for k, v in cond.items()}, beam=1)
        assert lp[best] >= greedy["logprob"][0] - 1e-12
        assert (lp[best] > greedy["logprob"][0]).item() or torch.equal(greedy["ids"][0], all_ids[best])
        for k in (2, 4):  # narrower beams: a real caption, scored right, never above the best
            narrow = model.sample({k_: v[b:b + 1] for k_, v in cond.items()}, beam=k)
            row = next(i for i, s in enumerate(seqs) if s == narrow["ids"][0].tolist())
            torch.testing.assert_close(narrow["logprob"][0], lp[row])
            assert narrow["logprob"][0] <= lp[best] + 1e-12


def test_prompted_decoding_continues_the_given_words():
    cfg = tiny_cfg()
    data = fake_split(cfg, n=4)
    model = sharp(build_ar_captioner(cfg, data), seed=6)
    cond = double_cond(data, 4)
    prompt = data.ids[:4, :3]
    for beam in (1, 3):
        out = model.sample(cond, beam=beam, prompt=prompt)
        assert torch.equal(out["ids"][:, :3], prompt)
        assert torch.equal(out["ids"], model.sample(cond, beam=beam, prompt=prompt, use_cache=False)["ids"])
    # greedy from the prompt is greedy's own continuation when the prompt is greedy's own start
    free = model.sample(cond, beam=1)["ids"]
    go_on = free[:, 1] != model.eos_id  # a prompt that already ended would be continued all the same
    assert go_on.any()
    assert torch.equal(model.sample(cond, beam=1, prompt=free[:, :2])["ids"][go_on], free[go_on])


# ---- training ---------------------------------------------------------------------------------
def test_loss_is_the_mean_next_token_cross_entropy_up_to_eos_and_one_step_reduces_it():
    cfg = tiny_cfg(**{"captioner.grid": "fine"})
    data = fake_split(cfg, n=16)
    torch.manual_seed(0)
    model = build_ar_captioner(cfg, data)
    batch = batch_of(data, torch.arange(16))
    loss, logs = model.loss(batch)
    # by hand: -log softmax of each real next token, [PAD] targets left out
    logits = model(batch["ids"], batch["image"], batch["grid"])
    terms = []
    for b in range(16):
        row = batch["ids"][b].tolist()
        end = row.index(data.tokenizer.eos_id)
        for i in range(end):
            terms.append(-torch.log_softmax(logits[b, i], -1)[row[i + 1]])
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    assert set(logs) >= {"ce", "loss", "token_accuracy"}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    opt.zero_grad()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()
    with torch.no_grad():
        assert model.loss(batch)[0].item() < loss.item()


def test_training_runs_through_the_shared_loop_and_resumes(tmp_path, monkeypatch):
    over = {"paths.checkpoint_dir": str(tmp_path), "captioner.train_steps": 6, "captioner.eval_every": 3,
            "captioner.eval_images": 4, "captioner.checkpoint_every": 2, "captioner.warmup_steps": 1}
    cfg = tiny_cfg(**over)
    data = {"train": fake_split(cfg, n=20), "val": fake_split(cfg, "val", n=8, seed=1)}
    whole, rec = train_autoregressive(cfg, data, progress=False, name="whole")
    assert rec["steps"] == 6 and [v["step"] for v in rec["history"]["val"]] == [3, 6]

    real_loss = ARCaptioner.loss
    calls = {"n": 0}

    def failing_loss(self, batch, generator=None):
        calls["n"] += 1
        if calls["n"] == 6:  # dies during step 5: the snapshot of step 4 survives
            raise KeyboardInterrupt
        return real_loss(self, batch, generator)

    monkeypatch.setattr(ARCaptioner, "loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_autoregressive(cfg, data, progress=False, name="cut")
    monkeypatch.setattr(ARCaptioner, "loss", real_loss)
    resumed, rec2 = train_autoregressive(cfg, data, progress=False, name="cut")
    assert rec2["resumed"] and rec2["steps"] == 6
    assert rec2["history"]["loss"] == rec["history"]["loss"]  # the same losses, step for step
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # the autoregressive settings are part of the run; the cache, which changes only the speed, is not
    _, rec3 = train_autoregressive(cfg.replace({"autoregressive.use_cache": False}), data, progress=False, name="cut")
    assert rec3["resumed"] and rec3["key"] == rec2["key"]
    from clipdiff_mini.captioners.training import run_key
    assert run_key(cfg, "cut", {"autoregressive": {"conditioning": "cross"}}) != rec2["key"]


def test_config_section_and_its_validation():
    cfg = get_config("ci")
    a = cfg.autoregressive
    assert (a.conditioning, a.beam, a.use_cache) == ("prefix", 1, True)
    assert get_config("ci", {"autoregressive.beam": 5}).autoregressive.beam == 5
    with pytest.raises(ConfigError, match="'prefix', 'cross'"):
        get_config("ci", {"autoregressive.conditioning": "side"})
    with pytest.raises(ConfigError, match="at least 1"):
        get_config("ci", {"autoregressive.beam": 0})
    with pytest.raises(ConfigError, match="must not be negative"):
        get_config("ci", {"autoregressive.length_penalty": -1.0})
