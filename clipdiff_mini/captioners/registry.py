"""Every captioner of the course by name: where its code lives and how to build it.

    spec = get_spec("clip_diffusionlm")
    build = spec.load("build")    # build(cfg, train_features) -> nn.Module
    make_fn = spec.load("caption_fn")  # make_fn(tokenizer, **kw) -> caption_fn(model, cond)

The functions are named by module path and imported on first use, so that
naming a captioner does not import torch models it does not need. Adding a
captioner is one line in `CAPTIONERS`. Its module provides, like
`clipdiff_mini.captioners.continuous` does:

* ``build(cfg, train) -> model``, a `captioners.base.Captioner` (``loss`` and ``sample``);
* ``caption_fn(tokenizer, **kw) -> caption_fn(model, cond) -> list[str]``;
* ``train(cfg, data, progress=, resume=, name=) -> (model, record)``, which trains
  through `clipdiff_mini.captioners.training.train_captioner`;

and owns the config section `section` (its settings, part of the run's identity).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class CaptionerSpec:
    """Where a captioner's functions are: module path and function names; its config section."""

    name: str
    module: str
    build: str
    caption_fn: str
    train: str
    section: str
    settings: str = ""  # the model's attribute holding its config section (its sampling switches are read there)
    kind: str = "diffusion"  # "diffusion" (has a denoising trajectory) or "autoregressive"
    # config -> keyword arguments of caption_fn beyond the tokenizer (e.g. CLIP-DiffusionLM's drop_repeats)
    caption_kw: Callable[[Any], dict] = lambda cfg: {}

    def load(self, what: str) -> Callable:
        """The function `what` ("build", "caption_fn" or "train"), imported now."""
        return getattr(importlib.import_module(self.module), getattr(self, what))

    def with_sampling(self, model, cfg):
        """`model` sampling with the switches of `cfg`'s section (the sampling-only ones may differ from
        those it trained with; its weights are untouched). Returns the model."""
        setattr(model, self.settings, getattr(cfg, self.section))
        return model

    def caption_function(self, tokenizer, cfg, **kw) -> Callable:
        """caption_fn(model, cond) with the settings of `cfg` (and `kw` on top)."""
        return self.load("caption_fn")(tokenizer, **{**self.caption_kw(cfg), **kw})


CAPTIONERS: dict[str, CaptionerSpec] = {spec.name: spec for spec in (
    CaptionerSpec("clip_diffusionlm", "clipdiff_mini.captioners.continuous", "build_continuous_captioner",
                  "continuous_caption_fn", "train_continuous", "continuous", settings="ccfg",
                  caption_kw=lambda cfg: {"drop_repeats": cfg.continuous.drop_repeats}),
    CaptionerSpec("ddcap", "clipdiff_mini.captioners.ddcap", "build_ddcap_captioner", "ddcap_caption_fn",
                  "train_ddcap", "ddcap", settings="dcfg"),
    CaptionerSpec("autoregressive", "clipdiff_mini.captioners.autoregressive", "build_ar_captioner",
                  "ar_caption_fn", "train_autoregressive", "autoregressive", settings="acfg", kind="autoregressive"),
)}


def get_spec(name: str) -> CaptionerSpec:
    if name not in CAPTIONERS:
        raise ValueError(f"unknown captioner {name!r}; known: {', '.join(CAPTIONERS)}")
    return CAPTIONERS[name]
