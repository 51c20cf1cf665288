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
