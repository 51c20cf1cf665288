"""The CLIP wrapper: open_clip models, the contrastive loss, checkpoints, the pretrained path offline."""
import math

import numpy as np
import pytest
import torch

from clipdiff_mini.clip.model import (ClipBundle, PretrainedWeightsUnavailable, build_scratch_model,
                                      image_features_and_tokens, load_pretrained_clip, load_scratch_checkpoint,
                                      pretrained_architecture, pretrained_tokenizer, save_scratch_checkpoint,
                                      scratch_architecture, scratch_checkpoint_path, word_tokenize_fn)
from clipdiff_mini.config import get_config
from clipdiff_mini.data.tokenizers import WordTokenizer

CAPTIONS = ["a large red circle left of a small blue square", "two green triangles", "a small yellow cross",
            "three shapes: a purple diamond, an orange circle and a cyan square"]


def tiny(tower="resnet"):
    cfg = get_config("ci", {"clip.vision_tower": tower, "clip.vision_width": 8 if tower == "resnet" else 32,
                            "clip.vision_layers": 1, "clip.text_width": 32, "clip.text_heads": 2,
                            "clip.text_layers": 1, "clip.embed_dim": 16})
    tok = WordTokenizer.build(CAPTIONS)
    arch = scratch_architecture(cfg, tok.vocab_size, tok.pad_id, tok.eos_id)
    torch.manual_seed(0)
    model = build_scratch_model(arch).eval()
    bundle = ClipBundle(model=model, tokenize=word_tokenize_fn(tok, cfg.clip.context_length),
                        image_size=cfg.data.image_size, source="scratch", name="t", identity="t", tokenizer=tok)
    return cfg, tok, arch, bundle


@pytest.mark.parametrize("tower", ["resnet", "vit"])
def test_scratch_model_is_open_clip_over_word_vocabulary(tower):
    import open_clip
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    cfg, tok, arch, bundle = tiny(tower)
    assert isinstance(bundle.model, open_clip.model.CLIP)
    assert isinstance(bundle.model.visual, ModifiedResNet if tower == "resnet" else VisionTransformer)
    assert bundle.model.token_embedding.num_embeddings == tok.vocab_size  # our words, not 49k BPE pieces
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    pooled, tokens = bundle.encode_images(images)
    assert pooled.shape == (3, 16)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3))
    if tower == "resnet":  # final grid of the 64 px picture after 32x downsampling: 2 x 2, width 32 * 8
        assert tokens.shape == (3, 4, 256)
    else:  # (64 / 8)^2 patches of width 32
        assert tokens.shape == (3, 64, 32)
    # the pooled feature is what open_clip's own encode_image returns
    with torch.no_grad():
        direct = torch.nn.functional.normalize(bundle.model.encode_image(bundle.preprocess(images)), dim=-1)
    torch.testing.assert_close(pooled, direct, atol=1e-5, rtol=1e-5)


def test_text_embedding_is_read_at_eos():
    """With causal attention and pooling at [EOS], whatever follows [EOS] cannot matter,
    while the words before it do."""
    cfg, tok, arch, bundle = tiny()
    ids = bundle.tokenize(["a red circle"])  # (1, L): [BOS] a red circle [EOS] [PAD]...
    eos = int((ids[0] == tok.eos_id).nonzero()[0])
    junk = ids.clone()
    junk[0, eos + 1:] = tok.stoi["square"]  # garbage after the end
    other = ids.clone()
    other[0, 2] = tok.stoi["blue"]  # a different word before the end
    with torch.no_grad():
        e0, e1, e2 = (bundle.model.encode_text(x) for x in (ids, junk, other))
    torch.testing.assert_close(e0, e1)
    assert (e0 - e2).abs().max() > 1e-4


def test_clip_loss_is_the_symmetric_infonce():
    """open_clip's ClipLoss against the formula computed independently in float64 numpy,
    and its gradient in the temperature against the closed form."""
    from open_clip import ClipLoss

    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    loss = ClipLoss()(u, v, s.exp())
    loss.backward()
    un, vn, sc = u.numpy(), v.numpy(), math.exp(1.3)
    logits = sc * un @ vn.T
    i2t = -np.mean([logits[i, i] - np.log(np.exp(logits[i]).sum()) for i in range(7)])
    t2i = -np.mean([logits[j, j] - np.log(np.exp(logits[:, j]).sum()) for j in range(7)])
    assert abs(loss.item() - 0.5 * (i2t + t2i)) < 1e-10
    sims = un @ vn.T
    p_row = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_col = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    grad = sc * 0.5 * (np.mean((p_row * sims).sum(1) - np.diag(sims)) + np.mean((p_col * sims).sum(0) - np.diag(sims)))
    assert abs(s.grad.item() - grad) < 1e-10


def test_checkpoint_roundtrip(tmp_path):
    cfg, tok, arch, bundle = tiny()
    path = tmp_path / "clip.pt"
    save_scratch_checkpoint(path, bundle.model, arch, tok.itos, {"losses": [1.0]}, {"k": 1})
    loaded = load_scratch_checkpoint(path)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(loaded.encode_images(images)[0], bundle.encode_images(images)[0])
    torch.testing.assert_close(loaded.encode_texts(CAPTIONS), bundle.encode_texts(CAPTIONS))
    assert loaded.identity.startswith("scratch:") and loaded.info == {"losses": [1.0]}
    with torch.no_grad():
        bundle.model.logit_scale.add_(0.1)
    save_scratch_checkpoint(path, bundle.model, arch, tok.itos, {}, {"k": 1})
    assert load_scratch_checkpoint(path).identity != loaded.identity  # new weights, new identity
    with pytest.raises(FileNotFoundError, match="train_clip"):
        load_scratch_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_name_follows_what_shapes_the_weights_only():
    base = scratch_checkpoint_path(get_config("ci"))
    # the captioners' tokenizer settings and where features go do not touch the CLIP
    for same in ({"data.tokenizer": "bert"}, {"data.max_caption_len": 30}, {"clip.feature_batch_size": 7},
                 {"clip.source": "pretrained"}):
        assert scratch_checkpoint_path(get_config("ci", same)) == base, same
    for other in ({"clip.embed_dim": 32}, {"clip.context_length": 30}, {"data.n_train": 300}, {"seed": 1},
                  {"data.min_word_count": 2}):
        assert scratch_checkpoint_path(get_config("ci", other)) != base, other
    assert scratch_architecture(get_config("ci", {"data.tokenizer": "bert"}), 60)["text_cfg"]["context_length"] == 24


def test_pretrained_architecture_and_tokenizer_without_network():
    """ViT-B-32 as CLIP-DiffusionLM uses it: the architecture and open_clip's tokenizer
    need no download; the patch tokens are the 7 x 7 grid of 32-pixel patches."""
    model = pretrained_architecture("ViT-B-32").eval()
    assert model.visual.patch_size == (32, 32) and model.text_projection.shape[-1] == 512
    tok = pretrained_tokenizer("ViT-B-32")
    ids = tok(["a red circle"])
    assert ids.shape == (1, 77)
    assert ids[0, 0].item() == 49406 and 49407 in ids[0].tolist()  # open_clip's start / end of text
    with torch.no_grad():
        pooled, tokens = image_features_and_tokens(model, torch.randn(1, 3, 224, 224))
    assert pooled.shape == (1, 512) and tokens.shape == (1, 49, 768)
    with pytest.raises(ValueError, match="ViT-B-16"):
        pretrained_architecture("ViT-Q-99")


def test_pretrained_weights_offline_give_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # no network, whatever this machine has
    cfg = get_config("ci", {"clip.source": "pretrained", "clip.pretrained_model": "ViT-B-32",
                            "clip.pretrained_tag": "openai", "device": "cpu"})
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        load_pretrained_clip(cfg, cache_dir=str(tmp_path))  # an empty cache: nothing to fall back on
    msg = str(err.value)
    assert "network" in msg and "'clip.source': 'scratch'" in msg and "ViT-B-32/openai" in msg
    with pytest.raises(ValueError, match="known tags"):
        load_pretrained_clip(get_config("ci", {"clip.source": "pretrained", "clip.pretrained_tag": "nope"}))


@pytest.mark.parametrize("tower", ["resnet", "vit"])
def test_fine_grid_is_the_stage_before_the_last(tower):
    from clipdiff_mini.clip.model import image_fine_grid

    cfg, tok, arch, bundle = tiny(tower)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    grid = bundle.encode_fine_grid(images)
    visual = bundle.model.visual
    with torch.no_grad():
        pixels = bundle.preprocess(images)
        if tower == "resnet":  # by hand: stem and the first three stages of open_clip's ModifiedResNet
            x = visual.stem(pixels) if hasattr(visual, "stem") else None
            if x is None:
                x = visual.act3(visual.bn3(visual.conv3(visual.act2(visual.bn2(visual.conv2(
                    visual.act1(visual.bn1(visual.conv1(pixels)))))))))
                x = visual.avgpool(x)
            x = visual.layer3(visual.layer2(visual.layer1(x)))  # (B, 16 w, 4, 4) at 64 px
            want = x.flatten(2).transpose(1, 2)
            assert grid.shape == (2, 16, 16 * 8)
        else:  # a ViT's finest grid is its last layer's patch tokens
            want = image_features_and_tokens(bundle.model, pixels)[1]
    torch.testing.assert_close(grid, want.float(), atol=1e-5, rtol=1e-4)
