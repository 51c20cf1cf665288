"""Training the small CLIP (checkpoint, resume) and the on-disk feature cache."""
import pytest
import torch

import clipdiff_mini.clip.training as clip_training
import clipdiff_mini.clip.feature_cache as feature_cache
from clipdiff_mini.clip.model import save_scratch_checkpoint, scratch_checkpoint_path
from clipdiff_mini.clip.training import load_clip
from clipdiff_mini.config import get_config
from clipdiff_mini.data.splits import load_split

TINY = {"data.n_train": 48, "data.n_val": 24, "data.n_test": 8, "clip.train_steps": 4, "clip.batch_size": 16,
        "clip.warmup_steps": 1, "clip.save_every": 2, "clip.vision_width": 8, "clip.embed_dim": 16,
        "clip.text_width": 32, "clip.text_heads": 2, "clip.text_layers": 1, "clip.feature_batch_size": 10,
        "device": "cpu"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def tiny_cfg(data_dir, root, **extra):
    return get_config("ci", {"paths.data_dir": str(data_dir), "paths.cache_dir": str(root / "cache"),
                             "paths.checkpoint_dir": str(root / "ckpt"), **TINY, **extra})


def test_training_saves_checkpoint_and_resumes_to_the_same_weights(data_dir, tmp_path, monkeypatch):
    cfg_a = tiny_cfg(data_dir, tmp_path / "a")
    bundle_a = clip_training.train_clip(cfg_a, progress=False)
    path_a = scratch_checkpoint_path(cfg_a)
    assert path_a.exists() and not path_a.with_name(path_a.stem + ".snapshot.pt").exists()
    assert len(bundle_a.info["losses"]) == 4 and bundle_a.info["seconds"] > 0

    # an interrupted run: the 4th batch never comes; the snapshot after step 2 survives
    cfg_b = tiny_cfg(data_dir, tmp_path / "b")
    real_next, calls = clip_training.CaptionSampler.next, {"n": 0}

    def crashing_next(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated interruption")
        return real_next(self)

    monkeypatch.setattr(clip_training.CaptionSampler, "next", crashing_next)
    with pytest.raises(KeyboardInterrupt):
        clip_training.train_clip(cfg_b, progress=False)
    path_b = scratch_checkpoint_path(cfg_b)
    assert not path_b.exists() and path_b.with_name(path_b.stem + ".snapshot.pt").exists()
    monkeypatch.setattr(clip_training.CaptionSampler, "next", real_next)
    bundle_b = clip_training.train_clip(cfg_b, progress=False)
    assert bundle_b.info["resumed_from"] == 2
    sa, sb = bundle_a.model.state_dict(), bundle_b.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=1e-5, msg=k)
    assert bundle_a.info["losses"] == pytest.approx(bundle_b.info["losses"], abs=1e-6)


def test_features_are_cached_reused_and_rebuilt_for_a_new_checkpoint(data_dir, tmp_path, monkeypatch):
    cfg = tiny_cfg(data_dir, tmp_path)
    first = feature_cache.extract_features(cfg, "val", progress=False)  # trains the tiny CLIP on the way
    assert first["reused"] is False and first["path"].exists()

    def no_recompute(*args, **kwargs):
        raise AssertionError("features were recomputed although the cache matches")

    monkeypatch.setattr(feature_cache, "compute_features", no_recompute)
    second = feature_cache.extract_features(cfg, "val", progress=False)
    assert second["reused"] is True
    for k in ("image", "patches", "text", "text_owner"):
        torch.testing.assert_close(first[k], second[k])
    monkeypatch.undo()

    # a changed checkpoint (as after retraining) at the same path: the cache must not be used
    bundle = load_clip(cfg, train_if_missing=False)
    with torch.no_grad():
        for p in bundle.model.visual.parameters():
            p.add_(0.01)
    ckpt = torch.load(scratch_checkpoint_path(cfg), weights_only=False)
    save_scratch_checkpoint(scratch_checkpoint_path(cfg), bundle.model, ckpt["arch"], ckpt["itos"], ckpt["info"],
                            ckpt["key"])
    third = feature_cache.extract_features(cfg, "val", progress=False)
    assert third["reused"] is False and third["path"] != first["path"]
    assert not first["path"].exists(), "the stale cache file should be removed"
    assert (third["image"] - first["image"]).abs().max() > 1e-4


def test_cached_features_match_direct_encoding(data_dir, tmp_path):
    cfg = tiny_cfg(data_dir, tmp_path)
    feats = feature_cache.extract_features(cfg, "val", progress=False)
    bundle = load_clip(cfg, train_if_missing=False)
    split = load_split(cfg, "val", progress=False)
    images = split.load_images(progress=False)
    pooled, tokens = bundle.encode_images(images)
    torch.testing.assert_close(feats["image"], pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["patches"], tokens, atol=2e-2, rtol=1e-2)  # stored in float16
    assert feats["patches"].shape == (len(split), 4, 32 * 8)  # 2 x 2 grid of the conv tower, width 32 * 8
    rows = [0, 7, len(feats["captions"]) - 1]
    direct = bundle.encode_texts([feats["captions"][j] for j in rows])
    torch.testing.assert_close(feats["text"][rows], direct, atol=1e-5, rtol=1e-5)
    for j in rows:  # each caption row points at its own image
        assert feats["captions"][j] in split.records[int(feats["text_owner"][j])].captions
    assert feats["image_ids"] == split.image_ids()
