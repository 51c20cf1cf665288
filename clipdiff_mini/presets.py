"""The papers' settings as named sets of config overrides (docs/references.md).

Applied on top of a profile::

    from clipdiff_mini.config import get_config
    from clipdiff_mini.presets import preset_overrides
    cfg = get_config("colab", preset_overrides("paper_ddcap"))

or ``python -m clipdiff_mini.train --preset paper_ddcap``. Both train on a real dataset in the Karpathy
format with pretrained open_clip features: see data/README.md for the downloads.
"""
from __future__ import annotations

from typing import Any

from clipdiff_mini.config import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # CLIP-DiffusionLM (Xu 2022): frozen CLIP ViT-B/32, DistilBERT-sized denoiser with DistilBERT's frozen word
    # embeddings, concat fusion with the image and (in training) caption CLIP features, x0 regression (L1 in
    # the code), certainty (rounding) weight 0.3, no timestep input, cosine schedule T = 1000, 5 feed-back
    # passes, lr 1e-4 decaying to 5e-5, captions of at most 16 tokens, Flickr8k.
    "paper_clip_diffusionlm": {
        "data.source": "karpathy",
        "data.karpathy_json": "data/flickr8k/dataset_flickr8k.json",
        "data.image_dir": "data/flickr8k/Flicker8k_Dataset",
        "data.image_size": 224,
        "data.tokenizer": "bert",
        "data.bert_name": "distilbert-base-uncased",
        "data.max_caption_len": 16,
        "clip.source": "pretrained",
        "clip.pretrained_model": "ViT-B-32",
        "clip.pretrained_tag": "openai",
        "captioner.width": 768,
        "captioner.layers": 6,
        "captioner.heads": 12,
        "captioner.grid": "none",
        "captioner.lr": 1e-4,
        "captioner.lr_schedule": "linear",
        "captioner.lr_final": 5e-5,
        "continuous.embeddings": "pretrained",
        "continuous.backbone": "distilbert",
        "continuous.fusion": "concat",
        "continuous.text_feature": True,
        "continuous.output": "regress",
        "continuous.loss": "l1",
        "continuous.certainty_weight": 0.3,
        "continuous.target": "x0",
        "continuous.timestep_input": False,
        "continuous.self_condition": False,
        "continuous.schedule": "cosine",
        "continuous.timesteps": 1000,
        "continuous.sampler": "feedback",
        "continuous.sample_steps": 5,
        "continuous.drop_repeats": True,
        # none of the course's levers
        "continuous.lr_scale": 1.0,
        "continuous.length_prediction": False,
        "continuous.length_beam": 1,
        "continuous.cond_norm": False,
        "continuous.cond_dropout": 0.0,
        "continuous.t_min_frac": 0.0,
    },
    # DDCap (Zhu 2022): CLIP ViT-B/16 patch tokens (196), GPT-2-base-sized bidirectional transformer, GPT-2
    # BPE vocabulary (through transformers), captions of at most 20 tokens, AdamW lr 2e-4 with warm-up then
    # cosine to 0, weight decay 0.01, batch 512 (here 4 micro-batches of 128 per step), 30 epochs of COCO
    # Karpathy train (+restval: 113,287 images x 5 captions / 512 = 1,106.3 steps per epoch), 5 of them warm-up.
    # The masked-diffusion settings (T = 20, length head, attention mask, guidance) are the `ddcap` section's.
    "paper_ddcap": {
        "data.source": "karpathy",
        "data.karpathy_json": "data/coco/dataset_coco.json",
        "data.image_dir": "data/coco",
        "data.image_size": 224,
        "data.tokenizer": "gpt2",
        "data.max_caption_len": 20,
        "clip.source": "pretrained",
        "clip.pretrained_model": "ViT-B-16",
        "clip.pretrained_tag": "openai",
        "captioner.grid": "coarse",  # a ViT's patch tokens (14 x 14 at 224 px)
        "captioner.width": 768,
        "captioner.layers": 12,
        "captioner.heads": 12,
        "captioner.lr": 2e-4,
        "captioner.lr_schedule": "cosine",
        "captioner.lr_final": 0.0,
        "captioner.weight_decay": 0.01,
        "captioner.batch_size": 512,
        "captioner.grad_accum": 4,
        "captioner.train_steps": 33_190,  # 30 x 113,287 x 5 / 512
        "autoregressive.train_steps": 0,  # a distilled DDCap's teacher trains the same steps
        "captioner.warmup_steps": 5_532,  # 5 epochs
        "captioner.train_minutes": 0.0,
        "captioner.patience": 0,  # the papers train their stated steps
        "ddcap.timesteps": 20,
        "ddcap.conditioning": "cross",  # the denoiser cross-attends to the CLIP patch tokens
        "ddcap.schedule": "mask",  # the released schedule puts ~no mass on replacement: mask-only
        "ddcap.length_prediction": True,
        "ddcap.concentrated_mask": True,
        "ddcap.order": "best_first",
        "ddcap.tokens_per_step": 1,  # the code commits one token per step
        # image-free training and guidance keep the section's values (the note's p = 0.2, s = 1.17;
        # the released code's defaults are 0.1 and 1.06)
    },
}


def preset_overrides(name: str) -> dict[str, Any]:
    """The overrides of preset `name` (a copy); an unknown name is a `ConfigError` listing the presets."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
