"""DDCap: the concentrated attention mask against its definition, best-first
never re-masking and filling exactly the predicted length, guidance, length
prediction in training, and a training step. Features are random tensors on
the CI dataset's captions (no CLIP needed): what is tested is the mechanics."""
import pytest
import torch

from clipdiff_mini.captioners.ddcap import build_ddcap_captioner, concentrated_attention_mask, ddcap_caption_fn
from clipdiff_mini.captioners.training import train_captioner

from conftest import torch_generator
from test_captioners_continuous import batch_of, fake_split, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")
M = 99  # the [MASK] id of the hand-made examples


def test_concentrated_mask_matches_its_definition_on_hand_made_rows():
    x = torch.tensor([[5, M, 7, M], [M, M, M, M], [1, 2, 3, 4]])
    got = concentrated_attention_mask(x, M)
    # written out by hand: row q lists the keys query q may see (visible keys, and q itself)
    want = torch.tensor([
        [[1, 0, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0], [1, 0, 1, 1]],
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        [[1, 1, 1, 1]] * 4,
    ], dtype=torch.bool)
    assert torch.equal(got, want)


@pytest.mark.parametrize("cam", [True, False])
def test_with_the_mask_visible_positions_never_read_a_mask(cam):
    """Under CAM no real token attends to [MASK] at any layer, so changing the [MASK] embedding cannot
    change the prediction at a visible position; without CAM it does."""
    cfg = tiny_cfg(**{"ddcap.concentrated_mask": cam})
    data = fake_split(cfg, n=6)
    model = build_ddcap_captioner(cfg, data).eval()
    x = data.ids[:3].clone()
    x[:, 2:5] = model.mask_id
    args = (torch.tensor([4, 8, 12]), data.image[data.owner[:3]], data.grid[data.owner[:3]])
    before = model(x, *args)
    with torch.no_grad():
        model.tok.weight[model.mask_id] += torch.randn(model.width, generator=torch_generator(3))  # not a constant: LayerNorm removes those
    after = model(x, *args)
    visible = x != model.mask_id
    same = torch.allclose(before[visible], after[visible], atol=1e-5)
    assert same == cam
    assert not torch.allclose(before[~visible], after[~visible])  # a mask still reads itself


def test_shapes_image_dependence_and_attention_weights():
    cfg = tiny_cfg()
    data = fake_split(cfg, n=8)
    model = build_ddcap_captioner(cfg, data).eval()
    B, L = 3, data.ids.shape[1]
    x = torch.full((B, L), model.mask_id)
    t = torch.full((B,), cfg.ddcap.timesteps)
    logits, w = model(x, t, data.image[:B], data.grid[:B], need_weights=True)
    assert logits.shape == (B, L, data.tokenizer.vocab_size)
    assert w.shape == (B, L, 1 + data.grid.shape[1])
    torch.testing.assert_close(w.sum(-1), torch.ones(B, L))
    other = model(x, t, data.image[3:3 + B], data.grid[3:3 + B])
    assert not torch.allclose(logits, other)


def test_guidance_scale_one_is_the_conditional_model_and_other_scales_mix_log_probs():
    cfg = tiny_cfg()
    data = fake_split(cfg, n=6)
    model = build_ddcap_captioner(cfg, data).eval()
    with torch.no_grad():
        model.null_image.normal_()
    cond = {"image": data.image[:3], "grid": data.grid[:3]}
    x = data.ids[:3].clone()
    x[:, 1:6] = model.mask_id
    t = torch.tensor([5, 5, 5])
    one, _ = model.guided_log_probs(x, t, cond, 1.0)
    plain = torch.log_softmax(model(x, t, cond["image"], cond["grid"]), -1)
    masked = x == model.mask_id
    # scale 1: the conditional distribution, re-normalised without [MASK]
    p = plain.exp()
    p[..., model.mask_id] = 0
    torch.testing.assert_close(one.exp()[masked], (p / p.sum(-1, keepdim=True))[masked])
    s = 1.7
    mixed, _ = model.guided_log_probs(x, t, cond, s)
    null = torch.log_softmax(model(x, t, cond["image"], cond["grid"], torch.ones(3, dtype=torch.bool)), -1)
    want = null + s * (plain - null)  # note eqs. 7-8, then normalised over the words (not [MASK])
    want[..., model.mask_id] = float("-inf")
    want = torch.log_softmax(want, -1)
    torch.testing.assert_close(mixed[masked], want[masked])
    assert torch.equal(mixed[~masked].argmax(-1), x[~masked])  # carry-over: visible tokens are kept


@pytest.mark.parametrize("k", [1, 3])
def test_best_first_never_remasks_and_fills_exactly_the_predicted_length(k):
    cfg = tiny_cfg(**{"ddcap.tokens_per_step": k})
    data = fake_split(cfg, n=8)
    model = build_ddcap_captioner(cfg, data).eval()
    cond = {"image": data.image[:5], "grid": data.grid[:5]}
    out = model.sample(cond, trajectory=True, generator=torch_generator())
    n = model.predict_lengths(cond["image"])
    assert torch.equal(out["lengths"], n)
    ids = out["ids"]
    pos = torch.arange(ids.shape[1])[None]
    assert (ids[pos < n[:, None]] != model.pad_id).all() and (ids[pos >= n[:, None]] == model.pad_id).all()
    assert (ids != model.mask_id).all()
    states = [s for _, s in out["trajectory"]]
    for a, b in zip(states, states[1:]):
        committed = a != model.mask_id
        assert torch.equal(b[committed], a[committed])  # never re-masked, never changed
        new = ((a == model.mask_id) & (b != model.mask_id)).sum(-1)
        assert (new <= k).all()
    assert len(states) - 1 == -(-int(n.max()) // k)
    # guidance costs two passes per step: one caption of length n needs ceil(n / k) steps
    want = 2 * torch.ceil(n.float() / k).mean()
    assert out["passes"] == pytest.approx(float(want))


def test_without_length_prediction_the_whole_canvas_is_filled_and_infilling_keeps_the_given_words():
    cfg = tiny_cfg(**{"ddcap.length_prediction": False, "ddcap.order": "random"})
    data = fake_split(cfg, n=6)
    model = build_ddcap_captioner(cfg, data).eval()
    cond = {"image": data.image[:3], "grid": data.grid[:3]}
    out = model.sample(cond, generator=torch_generator())
    assert (out["ids"] != model.mask_id).all() and (out["lengths"] == data.ids.shape[1]).all()
    init = data.ids[:3].clone()
    init[:, 2:4] = model.mask_id
    filled = model.sample(cond, init_ids=init, order="best_first", generator=torch_generator())["ids"]
    keep = init != model.mask_id
    assert torch.equal(filled[keep], init[keep]) and (filled != model.mask_id).all()


def test_training_masks_only_caption_positions_with_length_prediction():
    for on in (True, False):
        cfg = tiny_cfg(**{"ddcap.length_prediction": on})
        data = fake_split(cfg, n=20)
        model = build_ddcap_captioner(cfg, data)
        ids = data.ids[:16]
        x = model.corrupt(ids, torch.full((16,), cfg.ddcap.timesteps), torch_generator())  # t = T: all maskable hidden
        pad = ids == model.pad_id
        assert (x[~pad] == model.mask_id).all()
        assert (x[pad] == model.pad_id).all() if on else (x[pad] == model.mask_id).all()


@pytest.mark.parametrize("weighting", ["uniform", "elbo"])
def test_one_training_step_reduces_the_loss_on_a_fixed_batch(weighting):
    cfg = tiny_cfg(**{"ddcap.loss_weighting": weighting})
    data = fake_split(cfg, n=16)
    torch.manual_seed(0)
    model = build_ddcap_captioner(cfg, data)
    batch = batch_of(data, torch.arange(16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_loss():
        return model.loss(batch, generator=torch_generator(7))[0]

    before = fixed_loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert fixed_loss().item() < before.item()


def test_trains_through_the_shared_loop(tmp_path):
    cfg = tiny_cfg(**{"paths.checkpoint_dir": str(tmp_path), "captioner.train_steps": 6, "captioner.eval_every": 3,
                      "captioner.eval_images": 4, "captioner.checkpoint_every": 3})
    train, val = fake_split(cfg, n=20), fake_split(cfg, "val", n=6)
    model = build_ddcap_captioner(cfg, train)
    rec = train_captioner(model, train, val, cfg, name="ddcap-test", caption_fn=ddcap_caption_fn(train.tokenizer),
                          progress=False)
    assert rec["steps"] == 6 and rec["path"].exists() and len(rec["history"]["val"]) == 2


# ---- attention through scaled_dot_product_attention, the memory's keys and values once per call (issue 22) ----
def hand_attention(att, x, m, allowed):
    """Attention module `att` of queries x (B, Lq, W) over m (B, Lk, W) written out head by head with an
    explicit softmax: (out (B, Lq, W), weights (B, Lq, Lk) mean over heads)."""
    W = x.shape[-1]
    H = att.heads
    d = W // H
    q, kv = att.q(x), att.kv(m)
    k, v = kv[..., :W], kv[..., W:]  # the first W outputs are the keys, head h in columns h d .. (h + 1) d
    outs, weights = [], []
    for h in range(H):
        cols = slice(h * d, (h + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / d ** 0.5  # (B, Lq, Lk)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.exp(scores - scores.max(-1, keepdim=True).values)
        p = p / p.sum(-1, keepdim=True)
        outs.append(p @ v[..., cols])
        weights.append(p)
    return att.out(torch.cat(outs, -1)), torch.stack(weights).mean(0)


def old_forward(model, x_t, t, image, grid=None, drop=None):
    """DDCap's forward as it was before issue 22: the memory recomputed at every call, attention by hand."""
    from clipdiff_mini.diffusion.text_diffusion import timestep_embedding

    L = x_t.shape[1]
    h = model.tok(x_t) + model.pos[:L]
    temb = model.time(timestep_embedding(t, model.width)) if model.dcfg.timestep_input else None
    mem = model.memory(image, grid, drop)
    allowed = concentrated_attention_mask(x_t, model.mask_id) if model.dcfg.concentrated_mask else None
    for block in model.blocks:
        mod = block.ada(temb) if block.ada is not None and temb is not None else None
        n = block._norm(0, h, mod)
        h = h + block.drop(hand_attention(block.self_attn, n, n, allowed)[0])
        h = h + block.drop(hand_attention(block.cross_attn, block._norm(1, h, mod), mem, None)[0])
        h = h + block.drop(block.mlp(block._norm(2, h, mod)))
    return model.head(model.norm(h))


@pytest.mark.parametrize("cam", [True, False])
def test_attention_equals_a_softmax_written_by_hand(cam):
    from clipdiff_mini.captioners.backbone import Attention

    g = torch_generator(5)
    torch.manual_seed(5)
    att = Attention(24, 3)
    B, L, P = 4, 9, 5
    x = torch.randn(B, L, 24, generator=g)
    ids = torch.randint(0, 5, (B, L), generator=g)
    ids[torch.rand(B, L, generator=g) < 0.5] = M
    ids[1] = M  # a row of masks only: each query sees itself alone
    allowed = concentrated_attention_mask(ids, M) if cam else None
    out, w = att(x, x, allowed, need_weights=True)  # self-attention, the mask per sample
    want, want_w = hand_attention(att, x, x, allowed)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(w, want_w, rtol=0, atol=1e-6)
    if cam:
        assert (w[~allowed] == 0).all()
    plain, none = att(x, x, allowed)  # without the weights: the same output
    assert none is None and torch.equal(plain, out)
    m = torch.randn(B, P, 24, generator=g)  # cross-attention, precomputed keys and values
    torch.testing.assert_close(att(x, None, None, kv=att.keys_values(m))[0], hand_attention(att, x, m, None)[0],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("cam", [True, False])
def test_logits_loss_and_gradients_are_those_of_the_old_forward(cam):
    cfg = tiny_cfg(**{"ddcap.concentrated_mask": cam, "captioner.layers": 2, "ddcap.conditioning": "cross"})
    data = fake_split(cfg, n=16)
    torch.manual_seed(0)
    model = build_ddcap_captioner(cfg, data)
    with torch.no_grad():  # AdaLN starts at zero; give it something to do
        for block in model.blocks:
            block.ada.weight.normal_(0, 0.05)
        model.null_image.normal_()
    batch = batch_of(data, torch.arange(16))
    x = model.corrupt(batch["ids"], torch.full((16,), 10), torch_generator(2))
    t, drop = torch.randint(1, 21, (16,), generator=torch_generator(3)), torch.arange(16) % 3 == 0
    torch.testing.assert_close(model(x, t, batch["image"], batch["grid"], drop),
                               old_forward(model, x, t, batch["image"], batch["grid"], drop), rtol=0, atol=1e-5)
    import copy

    ref = copy.deepcopy(model)
    ref.forward = lambda x_t, t, image, grid=None, drop=None: old_forward(ref, x_t, t, image, grid, drop)
    loss, _ = model.loss(batch, generator=torch_generator(7))
    want, _ = ref.loss(batch, generator=torch_generator(7))  # the same draws of t, masks and dropped images
    assert abs(loss.item() - want.item()) < 1e-6
    loss.backward()
    want.backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_state_dict_keys_are_unchanged():
    cfg = tiny_cfg(**{"ddcap.conditioning": "cross"})
    model = build_ddcap_captioner(cfg, fake_split(cfg, n=4))
    per_block = {f"{a}.{p}.{w}" for a in ("self_attn", "cross_attn") for p in ("q", "kv", "out")
                 for w in ("weight", "bias")}
    keys = {k.split(".", 2)[2] for k in model.state_dict() if k.startswith("blocks.0.")}
    assert per_block <= keys
    assert keys - per_block == {"ada.weight", "ada.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}


def _with_a_null_picture(cfg, n):
    """A tiny DDCap whose learned null picture differs from the zeros it starts at (so guidance reads it)."""
    data = fake_split(cfg, n=n)
    model = build_ddcap_captioner(cfg, data).eval()
    with torch.no_grad():
        model.null_image.normal_()
        model.null_grid.normal_()
    return model, data


def test_guided_log_probs_with_the_memory_cache_equal_recomputing_it():
    model, data = _with_a_null_picture(tiny_cfg(**{"captioner.layers": 2}), 6)
    cond = {"image": data.image[:3], "grid": data.grid[:3]}
    x = data.ids[:3].clone()
    x[:, 1:6] = model.mask_id
    t = torch.tensor([5, 9, 13])
    for s in (1.0, 1.7):
        cache = model.memory_cache(cond, s)
        assert (cache["null"] is None) == (s == 1.0)
        a, wa = model.guided_log_probs(x, t, cond, s, True, cache)
        b, wb = model.guided_log_probs(x, t, cond, s, True)
        assert torch.equal(a, b) and torch.equal(wa, wb)
    # the null branch really reads the null picture's memory, not the picture's
    cache = model.memory_cache(cond, 1.7)
    swapped = {"image": cache["image"], "null": cache["image"]}
    assert not torch.allclose(model.guided_log_probs(x, t, cond, 1.7, cache=swapped)[0],
                              model.guided_log_probs(x, t, cond, 1.7, cache=cache)[0])


@pytest.mark.parametrize("order", ["best_first", "random", "mask_predict"])
@pytest.mark.parametrize("scale", [1.0, 1.7])
def test_sampling_with_the_memory_cache_gives_the_same_ids_as_recomputing_it_every_pass(order, scale):
    cfg = tiny_cfg(**{"captioner.layers": 2, "ddcap.order": order, "ddcap.guidance_scale": scale,
                      "ddcap.sample_tokens": True})
    model, data = _with_a_null_picture(cfg, 10)
    cond = {"image": data.image[:7], "grid": data.grid[:7]}
    a = model.sample(cond, generator=torch_generator(4), attention=True, trajectory=True)
    b = model.sample(cond, generator=torch_generator(4), attention=True, trajectory=True, cache_memory=False)
    assert torch.equal(a["ids"], b["ids"]) and a["passes"] == b["passes"]
    assert torch.equal(a["attention"], b["attention"])
    assert all(torch.equal(p[1], q[1]) for p, q in zip(a["trajectory"], b["trajectory"]))


# ---- the decoding orders of notebook 07's diagnosis, on a model whose predictions are fixed --------
def _fixed_model(monkeypatch, conf_by_position):
    """A tiny DDCap whose p(x_0 | x_t) is the same at every call: position i proposes token 10 + i with
    probability conf_by_position[i] (the rest on token 4); the calls' inputs are recorded."""
    cfg = tiny_cfg(**{"ddcap.guidance_scale": 1.0, "ddcap.tokens_per_step": 1, "ddcap.block_size": 2,
                      "ddcap.iterations": 3})
    data = fake_split(cfg, n=4)
    model = build_ddcap_captioner(cfg, data).eval()
    L, V = data.ids.shape[1], data.tokenizer.vocab_size
    probs = torch.zeros(1, L, V)
    for i in range(L):
        c = conf_by_position[i] if i < len(conf_by_position) else 0.5
        probs[0, i, 10 + i] = c
        probs[0, i, 4] = 1 - c
    seen = []

    def fixed(x_t, t, cond, scale, need_weights=False, cache=None):
        seen.append(x_t.clone())
        return probs.expand(x_t.shape[0], -1, -1).clamp_min(1e-9).log(), None

    monkeypatch.setattr(model, "guided_log_probs", fixed)
    return model, data, seen


CONF = [0.6, 0.9, 0.7, 0.95]  # a canvas of 4 masks; position 3 is the most confident, then 1, 2, 0


@pytest.mark.parametrize("order,first_commits", [
    ("best_first", [3, 1, 2, 0]),  # by confidence
    ("margin", [3, 1, 2, 0]),  # margins |2c - 1|: 0.2, 0.8, 0.4, 0.9
    ("left_to_right", [0, 1, 2, 3]),
    ("blocks", [1, 0, 3, 2]),  # block [0, 1] first (1 before 0), then block [2, 3] (3 before 2)
])
def test_each_committing_order_writes_the_positions_worked_out_by_hand(monkeypatch, order, first_commits):
    model, data, seen = _fixed_model(monkeypatch, CONF)
    L = data.ids.shape[1]
    canvas = torch.full((1, L), model.pad_id)
    canvas[0, :4] = model.mask_id
    out = model.sample(data.condition(torch.arange(1)), order=order, init_ids=canvas, trajectory=True)
    order_seen = []
    for (_, before), (_, after) in zip(out["trajectory"], out["trajectory"][1:]):
        order_seen += ((before != after).nonzero()[:, 1]).tolist()
    assert order_seen == first_commits
    assert out["passes"] == 4.0 and len(seen) == 4  # one call per committed token
    assert (out["ids"] != model.mask_id).all()
    assert out["ids"][0, :4].tolist() == [10, 11, 12, 13]  # each position its proposed token


def test_mask_predict_rewrites_the_least_confident_words(monkeypatch):
    model, data, seen = _fixed_model(monkeypatch, CONF)
    L = data.ids.shape[1]
    canvas = torch.full((1, L), model.pad_id)
    canvas[0, :4] = model.mask_id
    out = model.sample(data.condition(torch.arange(1)), order="mask_predict", init_ids=canvas)
    # 3 iterations over n = 4: all 4 written, then 4 * 2 // 3 = 2 re-masked (the least confident: 0 and 2),
    # then 4 * 1 // 3 = 1 (position 0, confidence 0.6)
    masked = [(x[0, :4] == model.mask_id).nonzero()[:, 0].tolist() for x in seen]
    assert masked == [[0, 1, 2, 3], [0, 2], [0]]
    assert out["passes"] == 3.0
    assert (out["ids"] != model.mask_id).all() and out["ids"][0, 4:].eq(model.pad_id).all()


# ---- prefix conditioning and the loss on every position (issue 21's levers) ----------------------
def test_prefix_attention_mask_matches_its_definition_entry_by_entry():
    cfg = tiny_cfg(**{"ddcap.conditioning": "prefix", "ddcap.concentrated_mask": True})
    data = fake_split(cfg, n=4)
    model = build_ddcap_captioner(cfg, data)
    x = data.ids[:3].clone()
    x[0, 1:4] = model.mask_id
    x[1, :] = model.mask_id
    allowed = model.allowed_pairs(x)
    P = 1 + data.grid.shape[1]
    S = P + x.shape[1]
    assert allowed.shape == (3, S, S)
    for b in range(3):
        for q in range(S):
            for k in range(S):
                key_is_mask = k >= P and x[b, k - P] == model.mask_id
                assert bool(allowed[b, q, k]) == (not key_is_mask or k == q)


def prefix_forward_by_hand(model, x_t, t, image, grid):
    """The prefix model spelled out: [memory; caption] through self-attention blocks written by hand."""
    from clipdiff_mini.diffusion.text_diffusion import timestep_embedding

    mem = model.memory(image, grid)  # (B, P, W)
    P = mem.shape[1]
    h = torch.cat([mem, model.tok(x_t) + model.pos[:x_t.shape[1]]], 1)
    allowed = None
    if model.dcfg.concentrated_mask:
        seq_is_mask = torch.cat([torch.zeros(x_t.shape[0], P, dtype=torch.bool), x_t == model.mask_id], 1)
        S = h.shape[1]
        allowed = torch.stack([torch.stack([~seq_is_mask[b] | (torch.arange(S) == q) for q in range(S)])
                               for b in range(x_t.shape[0])])
    temb = model.time(timestep_embedding(t, model.width)) if model.dcfg.timestep_input else None
    for block in model.blocks:
        assert block.cross_attn is None
        mod = block.ada(temb) if block.ada is not None and temb is not None else None
        n = block._norm(0, h, mod)
        h = h + hand_attention(block.self_attn, n, n, allowed)[0]
        h = h + block.mlp(block._norm(1, h, mod))
    return model.head(model.norm(h[:, P:]))


@pytest.mark.parametrize("cam", [True, False])
def test_prefix_forward_equals_the_sequence_written_by_hand(cam):
    cfg = tiny_cfg(**{"ddcap.conditioning": "prefix", "ddcap.concentrated_mask": cam, "captioner.layers": 2})
    data = fake_split(cfg, n=8)
    torch.manual_seed(0)
    model = build_ddcap_captioner(cfg, data).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.ada.weight.normal_(0, 0.05)
    x = data.ids[:4].clone()
    x[:, 2:6] = model.mask_id
    t = torch.tensor([3, 7, 11, 19])
    got, w = model(x, t, data.image[:4], data.grid[:4], need_weights=True)
    want = prefix_forward_by_hand(model, x, t, data.image[:4], data.grid[:4])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert w.shape == (4, x.shape[1], 1 + data.grid.shape[1])  # caption over memory, a distribution
    torch.testing.assert_close(w.sum(-1), torch.ones(4, x.shape[1]))
    # the picture is read: another picture's memory changes the logits
    assert not torch.allclose(got, model(x, t, data.image[4:8], data.grid[4:8]))


def test_prefix_sampling_with_the_cached_memory_equals_recomputing_it():
    cfg = tiny_cfg(**{"ddcap.conditioning": "prefix", "captioner.layers": 2, "ddcap.guidance_scale": 1.5})
    model, data = _with_a_null_picture(cfg, 5)
    cond = {"image": data.image, "grid": data.grid}
    a = model.sample(cond, generator=torch_generator(1))
    b = model.sample(cond, generator=torch_generator(1), cache_memory=False)
    assert torch.equal(a["ids"], b["ids"]) and a["passes"] == b["passes"]
    assert (a["ids"] != model.mask_id).all()


@pytest.mark.parametrize("positions", ["masked", "all"])
def test_the_loss_is_the_mean_cross_entropy_of_the_positions_it_names(positions):
    cfg = tiny_cfg(**{"ddcap.loss_positions": positions, "ddcap.image_free_p": 0.0})
    data = fake_split(cfg, n=8)
    torch.manual_seed(0)
    model = build_ddcap_captioner(cfg, data)
    batch = batch_of(data, torch.arange(8))
    loss, logs = model.loss(batch, generator=torch_generator(4))
    g = torch_generator(4)  # the same draws, in the loss's order: t, the masks, the dropped pictures
    ids = batch["ids"]
    t = torch.randint(1, model.sched.T + 1, (8,), generator=g)
    x_t = model.corrupt(ids, t, g)
    torch.rand(8, generator=g)
    logits = model(x_t, t, batch["image"], batch["grid"])
    total, count = 0.0, 0
    for b in range(8):
        for i in range(ids.shape[1]):
            use = x_t[b, i] == model.mask_id if positions == "masked" else ids[b, i] != model.pad_id
            if use:
                total -= torch.log_softmax(logits[b, i], -1)[ids[b, i]].item()
                count += 1
    assert abs(logs["ce"] - total / count) < 1e-4
