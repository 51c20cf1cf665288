"""Pieces of the CLIP trainer: batches, hard negatives, the loss with negatives, the schedule."""
import math

import numpy as np
import torch

from clipdiff_mini.clip.training import (CaptionSampler, anchor_groups, clip_loss_with_negatives, negative_captions,
                                         swap_table, swap_word_groups, warmup_cosine)
from clipdiff_mini.data.tokenizers import WordTokenizer

CAPS = ["a red circle left of two blue squares", "three shapes", "the dark background", "a small green cross"]


def test_negative_captions_swap_exactly_one_word_within_its_group():
    tok = WordTokenizer.build(CAPS)
    table = swap_table(tok)
    ids = tok.batch_encode(CAPS, max_len=12)
    groups = [set(g) for g in swap_word_groups()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        neg, has = negative_captions(ids, table, gen)
        assert has.tolist() == [True, True, False, True]  # "the dark background" has no swappable word
        for row in range(len(CAPS)):
            diff = (neg[row] != ids[row]).nonzero().flatten().tolist()
            if not has[row]:
                assert diff == []
                continue
            assert len(diff) == 1
            old, new = tok.itos[ids[row, diff[0]]], tok.itos[neg[row, diff[0]]]
            assert any(old in g and new in g for g in groups), (old, new)


def test_clip_loss_with_negatives_against_numpy():
    from open_clip import ClipLoss

    g = torch.Generator().manual_seed(0)
    img, txt, neg = (torch.nn.functional.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1)
                     for _ in range(3))
    has = torch.tensor([True, False, True, True, False])
    scale = torch.tensor(3.0, dtype=torch.float64)
    got = clip_loss_with_negatives(ClipLoss(), img, txt, neg, has, scale).item()
    I, T, N = img.numpy(), txt.numpy(), neg.numpy()
    i2t = []
    for i in range(5):  # image i against all captions and the negatives that exist
        cand = [3 * I[i] @ T[j] for j in range(5)] + [3 * I[i] @ N[j] for j in range(5) if has[j]]
        i2t.append(-(3 * I[i] @ T[i]) + math.log(sum(math.exp(c) for c in cand)))
    t2i = [-(3 * I[j] @ T[j]) + math.log(sum(math.exp(3 * I[i] @ T[j]) for i in range(5))) for j in range(5)]
    assert abs(got - 0.5 * (np.mean(i2t) + np.mean(t2i))) < 1e-10
    # no negatives: exactly open_clip's ClipLoss
    none = clip_loss_with_negatives(ClipLoss(), img, txt, neg, torch.zeros(5, dtype=torch.bool), scale)
    assert abs(none.item() - ClipLoss()(img, txt, scale).item()) < 1e-12


def test_sampler_epochs_and_anchor_batches():
    owner = torch.arange(10).repeat_interleave(2)  # 10 images, 2 captions each
    s = CaptionSampler(owner, 10, 5, seed=0)
    rows = torch.cat([s.next()[0] for _ in range(2)])
    assert sorted(rows.tolist()) == list(range(10))  # one epoch visits every image once
    rows, caps = s.next()
    assert (owner[caps] == rows).all()  # each caption belongs to its image
    # anchor groups: images whose captions use a word, within the size limits
    tok = WordTokenizer.build(["a red circle", "a blue circle", "a red square", "a green cross"])
    ids = tok.batch_encode(["a red circle", "a blue circle", "a red square", "a green cross"], max_len=6)
    groups = anchor_groups(ids, torch.arange(4), 4, min_images=2, max_fraction=0.5)
    assert sorted(sorted(g.tolist()) for g in groups) == [[0, 1], [0, 2]]  # "circle" and "red"
    s = CaptionSampler(torch.arange(4), 4, 2, seed=1, groups=groups, hard_fraction=1.0)
    for _ in range(10):
        assert sorted(s.next()[0].tolist()) in ([0, 1], [0, 2])


def test_warmup_cosine():
    assert warmup_cosine(0, 10, 100) == 0.1 and warmup_cosine(9, 10, 100) == 1.0
    assert abs(warmup_cosine(55, 10, 100) - 0.5) < 1e-12 and warmup_cosine(100, 10, 100) == 0.0


def test_colab_sized_scratch_clip_builds_trains_and_encodes_on_cpu():
    """The colab profile's own CLIP sizes are never trained here (no GPU); check at
    least that they form a valid open_clip model that trains and gives the
    expected feature shapes."""
    from clipdiff_mini.clip.model import ClipBundle, build_scratch_model, scratch_architecture, word_tokenize_fn
    from clipdiff_mini.clip.training import fit_clip
    from clipdiff_mini.config import get_config

    cfg = get_config("colab", {"device": "cpu", "precision": "fp32"})
    tok = WordTokenizer.build(CAPS)
    arch = scratch_architecture(cfg, tok.vocab_size, tok.pad_id, tok.eos_id)
    torch.manual_seed(0)
    model = build_scratch_model(arch)
    side = arch["vision_cfg"]["image_size"]
    bundle = ClipBundle(model=model, tokenize=word_tokenize_fn(tok, cfg.clip.context_length), image_size=side,
                        source="scratch", name="colab-sized", identity="test", tokenizer=tok)
    images = torch.randint(0, 256, (4, 3, cfg.data.image_size, cfg.data.image_size), dtype=torch.uint8)
    ids = tok.batch_encode(CAPS, max_len=cfg.clip.context_length)
    rec = fit_clip(bundle, images, ids, torch.arange(4), steps=2, batch_size=4, lr=1e-4, weight_decay=0.1,
                   warmup_steps=1, seed=0, negatives=swap_table(tok), progress=False)
    assert len(rec["losses"]) == 2 and all(math.isfinite(v) for v in rec["losses"])
    pooled, patches = bundle.encode_images(images)
    grid = side // 32  # ModifiedResNet downsamples by 32
    assert pooled.shape == (4, cfg.clip.embed_dim) and patches.shape == (4, grid * grid, 32 * cfg.clip.vision_width)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert bundle.encode_texts(CAPS[:2]).shape == (2, cfg.clip.embed_dim)
