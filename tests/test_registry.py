"""Adding a captioner is one module and one registry entry: a tiny captioner defined here trains through
`trainer.train` (the one training entry point: the loop, its checkpoint and run key), samples through the registry's
caption function and loads back with `load_trained`, with no change to the library."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipdiff_mini.captioners import registry, trainer
from clipdiff_mini.captioners.checkpoints import load_trained, run_identity
from clipdiff_mini.captioners.decoding import sampling_caption_fn
from clipdiff_mini.captioners.evaluate import generate_captions
from clipdiff_mini.captioners.features import SplitFeatures
from clipdiff_mini.config import get_config
from clipdiff_mini.data.splits import load_split
from clipdiff_mini.data.tokenizers import WordTokenizer

from conftest import torch_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the tiny captioner: everything a captioner module must hold ----------------------------------------
class TinyCaptioner(nn.Module):
    """Every word position read off the pooled image vector by one linear map: logits (B, L, V)."""

    def __init__(self, image_dim: int, length: int, vocab_size: int):
        super().__init__()
        self.length, self.vocab_size = length, vocab_size
        self.head = nn.Linear(image_dim, length * vocab_size)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(image).view(-1, self.length, self.vocab_size)  # (B, L, V)

    def loss(self, batch, generator=None):
        loss = F.cross_entropy(self.logits(batch["image"]).flatten(0, 1), batch["ids"].flatten())
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def sample(self, cond, **kw):
        return {"ids": self.logits(cond["image"]).argmax(-1), "passes": 1}


def build_tiny(cfg, train) -> TinyCaptioner:
    return TinyCaptioner(train.image.shape[1], train.ids.shape[1], train.tokenizer.vocab_size)


def tiny_caption_fn(tokenizer, **kw):
    return sampling_caption_fn(tokenizer, **kw)


TINY_SPEC = registry.CaptionerSpec("tiny", __name__, "build_tiny", "tiny_caption_fn", distills=False)


# ---- the test -----------------------------------------------------------------------------------------
def _split(cfg, name, n, tok, seed):
    """`n` pictures of split `name` with random pooled features: one vector per picture to learn from."""
    split = load_split(cfg, name, progress=False).subset(n)
    owner, captions = split.caption_table()
    g = torch_generator(seed)
    image = torch.randn(len(split), 16, generator=g)  # (N, 16)
    return SplitFeatures(name, split, image, torch.zeros(len(split), 1, 4), torch.zeros(len(captions), 16),
                         tok.batch_encode(captions, max_len=cfg.data.max_caption_len), owner, tok)


def test_a_captioner_added_in_a_test_trains_samples_and_loads_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CAPTIONERS, "tiny", TINY_SPEC)
    cfg = get_config("ci", {"paths.checkpoint_dir": str(tmp_path), "captioner.train_steps": 120,
                            "captioner.batch_size": 32, "captioner.lr": 0.05, "captioner.lr_final": 0.05,
                            "captioner.warmup_steps": 1, "captioner.eval_every": 60, "captioner.eval_images": 10})
    tok = WordTokenizer.build(load_split(cfg, "train", progress=False).captions())
    data = {"train": _split(cfg, "train", 24, tok, 0), "val": _split(cfg, "val", 10, tok, 1)}
    untrained = build_tiny(cfg, data["train"])

    model, record = trainer.train("tiny", cfg, data, progress=False)

    assert isinstance(model, TinyCaptioner) and record["steps"] == 120 and record["finished"]
    assert [v["step"] for v in record["history"]["val"]] == [60, 120]  # the loop's validation checks ran
    losses = record["history"]["loss"]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10  # it learned
    # its run key holds no model section of its own (it has none), only its parameter shapes
    assert set(run_identity(cfg, "tiny", {"architecture": "x"})) >= {"captioner", "data", "clip", "architecture"}
    ckpt = torch.load(record["path"], map_location="cpu", weights_only=False)
    assert ckpt["meta"]["model"] == "tiny" and ckpt["name"] == "tiny"

    # sampling through the registry: the words it writes for a training picture come from that picture's
    # references, far more often than the untrained model's do
    fn = TINY_SPEC.caption_function(tok, cfg)
    train = data["train"]

    def own_word_share(m):
        captions = generate_captions(m, fn, train)
        refs = train.references()
        hits = total = 0
        for image_id, caption in captions.items():
            own = {w for r in refs[image_id] for w in r.split()}
            words = caption.split()
            hits += sum(w in own for w in words)
            total += len(words)
        return hits / max(total, 1)

    trained_share, untrained_share = own_word_share(model), own_word_share(untrained.eval())
    assert trained_share > 0.9 and trained_share > untrained_share + 0.2, (trained_share, untrained_share)

    # loading it back needs no data: the registry builds it from the checkpoint's config and sizes
    loaded = load_trained(record["path"], model="tiny")
    assert loaded.spec is TINY_SPEC and isinstance(loaded.model, TinyCaptioner)
    assert generate_captions(loaded.model, loaded.caption_fn(), train) == generate_captions(model, fn, train)

    # a second call finds the finished run and loads it instead of training again
    _, again = trainer.train("tiny", cfg, data, progress=False)
    assert again["resumed"] and again["steps"] == 120
