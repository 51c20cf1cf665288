"""Every captioner of the course by name: where its code lives and how to build it; `trainer.train` trains
any of them by this name.

    spec = get_spec("clip_diffusionlm")
    build = spec.load("build")    # build(cfg, train_features) -> nn.Module
    make_fn = spec.load("caption_fn")  # make_fn(tokenizer, **kw) -> caption_fn(model, cond)

    from clipdiff_mini.captioners.trainer import train
    model, record = train("clip_diffusionlm", cfg, data)  # every captioner trains through this

The functions are named by module path and imported on first use, so that
naming a captioner does not import torch models it does not need. Adding a
captioner is one module and one entry in `CAPTIONERS` (tests/test_registry.py
adds a tiny one); `clipdiff_mini.captioners.trainer.train` then trains, checkpoints
and loads it like the others. Its module provides, like `clipdiff_mini.captioners.ddcap` does:

* ``build(cfg, train) -> model``, a `captioners.base.Captioner` (``loss`` and ``sample``);
* ``caption_fn(tokenizer, **kw) -> caption_fn(model, cond) -> list[str]``;
* optionally ``training_config(cfg) -> cfg``: its own checks and changes of the config before
  training (the autoregressive decoder's own step budget, for example);

and may own a config section `section` (its settings, part of the run's identity; "" for none).
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class CaptionerSpec:
    """Where a captioner's functions are: module path and function names; its config section."""

    name: str
    module: str
    build: str
    caption_fn: str
    section: str = ""  # its config section ("" = none: it reads only the shared `captioner` section)
    settings: str = ""  # the model's attribute holding its config section (its sampling switches are read there)
    kind: str = "diffusion"  # "diffusion" (has a denoising trajectory) or "autoregressive"
    training_config: str = ""  # optional function cfg -> cfg run before training (checks, own step budget)
    distills: bool = True  # captioner.targets="autoregressive" trains it on the decoder's captions (not the decoder)
    # config -> keyword arguments of caption_fn beyond the tokenizer (e.g. CLIP-DiffusionLM's drop_repeats)
    caption_kw: Callable[[Any], dict] = lambda cfg: {}
    # config -> keyword arguments of `train_captioner` (a peak learning-rate factor, the plateau switch)
    train_kw: Callable[[Any], dict] = lambda cfg: {}

    def load(self, what: str) -> Callable:
        """The function `what` ("build", "caption_fn" or "training_config"), imported now."""
        return getattr(importlib.import_module(self.module), getattr(self, what))

    def with_sampling(self, model, cfg):
        """`model` sampling with the switches of `cfg`'s section (the sampling-only ones may differ from
        those it trained with; its weights are untouched). Returns the model."""
        if self.settings:
            setattr(model, self.settings, getattr(cfg, self.section))
        return model

    def caption_function(self, tokenizer, cfg, **kw) -> Callable:
        """caption_fn(model, cond) with the settings of `cfg` (and `kw` on top)."""
        return self.load("caption_fn")(tokenizer, **{**self.caption_kw(cfg), **kw})

    def run_settings(self, cfg) -> dict[str, Any]:
        """The part of a run's identity that is this captioner's own: its config section, if it has one."""
        return {self.section: asdict(getattr(cfg, self.section))} if self.section else {}


CAPTIONERS: dict[str, CaptionerSpec] = {spec.name: spec for spec in (
    CaptionerSpec("clip_diffusionlm", "clipdiff_mini.captioners.continuous", "build_continuous_captioner",
                  "continuous_caption_fn", "continuous", settings="ccfg", training_config="training_config",
                  caption_kw=lambda cfg: {"drop_repeats": cfg.continuous.drop_repeats},
                  # its own peak learning-rate factor, and no plateau stop (config.py says why)
                  train_kw=lambda cfg: {"lr_scale": cfg.continuous.lr_scale,
                                        "plateau_stop": cfg.continuous.plateau_stop}),
    CaptionerSpec("ddcap", "clipdiff_mini.captioners.ddcap", "build_ddcap_captioner", "ddcap_caption_fn",
                  "ddcap", settings="dcfg"),
    CaptionerSpec("autoregressive", "clipdiff_mini.captioners.autoregressive", "build_ar_captioner",
                  "ar_caption_fn", "autoregressive", settings="acfg", kind="autoregressive",
                  training_config="training_config", distills=False),
)}


def get_spec(name: str) -> CaptionerSpec:
    if name not in CAPTIONERS:
        raise ValueError(f"unknown captioner {name!r}; known: {', '.join(CAPTIONERS)}")
    return CAPTIONERS[name]

