"""Sizes and counts that cannot work are rejected by the config, next to their cause."""
import numpy as np
import pytest

from clipdiff_mini.config import PROFILES, SHAPES_LONGEST_CAPTION_TOKENS, ConfigError, get_config


@pytest.mark.parametrize("key", ["data.n_train", "data.n_val", "data.n_test", "clip.train_steps", "clip.batch_size",
                                 "clip.feature_batch_size", "diffusion.train_steps", "diffusion.batch_size",
                                 "diffusion.timesteps", "diffusion.sample_steps", "data.captions_per_image",
                                 "clip.embed_dim", "diffusion.denoiser_layers"])
@pytest.mark.parametrize("bad", [0, -3])
def test_zero_and_negative_counts_are_rejected_with_the_key(key, bad):
    with pytest.raises(ConfigError) as err:
        get_config("ci", {key: bad})
    assert f"{key}={bad}" in str(err.value)
    assert ("at least 1" in str(err.value)) or ("negative" in str(err.value))


def test_the_smallest_working_counts_are_accepted():
    cfg = get_config("ci", {"data.n_train": 1, "data.n_val": 1, "data.n_test": 1, "clip.train_steps": 1,
                            "clip.batch_size": 1, "diffusion.timesteps": 1, "diffusion.sample_steps": 1})
    assert (cfg.data.n_train, cfg.clip.batch_size, cfg.diffusion.sample_steps) == (1, 1, 1)


def test_every_profile_and_the_values_the_tests_use_still_pass():
    for p in PROFILES:
        get_config(p)
    get_config("ci", {"data.tokenizer": "bert", "data.max_caption_len": 20})  # BERT lengths are not known here
    get_config("ci", {"clip.text_width": 32, "clip.text_heads": 2, "clip.warmup_steps": 0})
    get_config("ci", {"data.image_size": 8, "data.max_objects": 9})  # the dataset builder explains these itself


def test_caption_lengths_that_would_cut_captions():
    with pytest.raises(ConfigError, match=r"data.max_caption_len=21 cannot hold the longest caption .* at least 22"):
        get_config("ci", {"data.max_caption_len": 21})
    with pytest.raises(ConfigError, match=r"clip.context_length=12 .* at least 22"):
        get_config("ci", {"clip.context_length": 12})
    assert get_config("ci", {"data.max_caption_len": 22}).data.max_caption_len == 22
    # a real dataset: its longest caption is not known to the config, only the bare minimum is checked
    karpathy = get_config("ci", {"data.source": "karpathy", "data.max_caption_len": 12, "clip.context_length": 12})
    assert karpathy.data.max_caption_len == 12
    with pytest.raises(ConfigError, match=r"\[BOS\], one word and \[EOS\]; use at least 3"):
        get_config("ci", {"data.source": "karpathy", "data.max_caption_len": 2})
    # a pretrained CLIP uses open_clip's own 77-token tokenizer: clip.context_length is not read
    assert get_config("ci", {"clip.source": "pretrained", "clip.context_length": 12}).clip.context_length == 12


def test_other_combinations_that_cannot_work():
    with pytest.raises(ConfigError, match=r"diffusion.sample_steps=201 exceeds diffusion.timesteps=200"):
        get_config("ci", {"diffusion.sample_steps": 201})
    with pytest.raises(ConfigError, match=r"clip.text_width=64 is not divisible by clip.text_heads=3"):
        get_config("ci", {"clip.text_heads": 3})
    with pytest.raises(ConfigError, match=r"diffusion.denoiser_width=30 is not divisible"):
        get_config("ci", {"diffusion.denoiser_width": 30})
    with pytest.raises(ConfigError, match="init_temperature=0.0 must be positive"):
        get_config("ci", {"clip.init_temperature": 0.0})
    with pytest.raises(ConfigError, match="num_workers=-1 must not be negative"):
        get_config("ci", {"num_workers": -1})


def test_the_longest_caption_constant_matches_the_grammar():
    """Independent of the constant: generate captions for many random scenes and count word tokens."""
    from clipdiff_mini.data.caption_grammar import MAX_WORDS, captions_for_scene
    from clipdiff_mini.data.scenes import sample_scene
    from clipdiff_mini.data.tokenizers import WordTokenizer

    assert SHAPES_LONGEST_CAPTION_TOKENS == MAX_WORDS + 2
    rng = np.random.default_rng(0)
    captions = [c for _ in range(300) for c in captions_for_scene(sample_scene(rng, max_objects=4), rng, n=5)]
    tok = WordTokenizer.build(captions)
    longest = max(len(tok.encode(c)) for c in captions)  # with [BOS]/[EOS]
    assert 12 < longest <= SHAPES_LONGEST_CAPTION_TOKENS, longest
