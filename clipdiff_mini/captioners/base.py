"""What every captioner of the course is, and the glue the three share.

A captioner is an ``nn.Module`` that the training loop (`training.train_captioner`), the evaluation
(`evaluate.generate_captions` through the registry's caption function) and the registry
(`registry.CaptionerSpec`) use through two methods, written once here as a `Protocol`:

* ``loss(batch, generator) -> (loss, logs)``: the training objective on a batch
  ``{"ids" (B, L), "image" (B, Di), "grid" (B, P, Dg), "text" (B, Di)}``, with `generator` the
  source of the diffusion noise (unused by the autoregressive decoder, which draws none);
* ``sample(cond, **kw) -> {"ids" (B, L), "passes": int, ...}``: caption ids for the pictures of
  ``cond = {"image", "grid"}``, and the network passes a caption cost; each captioner documents its
  own sampling keywords (the config's sampling-only switches).

The glue: the width/heads check every transformer needs, the rows trained without the picture (for
classifier-free guidance, CLIP-DiffusionLM's section 5.3 and DDCap's image-free training), and the
guidance mix of a conditional and an image-free prediction.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Captioner(Protocol):
    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, Any]]: ...

    def sample(self, cond: dict[str, Tensor], **kw) -> dict[str, Any]: ...


def check_heads(width: int, heads: int) -> None:
    """Multi-head attention splits the width into `heads` equal parts."""
    if width % heads:
        raise ValueError(f"captioner.width={width} must be divisible by captioner.heads={heads}")


def image_free_rows(batch_size: int, p: float, generator: torch.Generator | None, device) -> Tensor:
    """(B,) bool: the rows of a training batch that see the learned null picture instead of theirs,
    each with probability `p` (classifier-free guidance trains one network for both)."""
    return torch.rand(batch_size, generator=generator, device=device) < p


def every_row_image_free(batch_size: int, device) -> Tensor:
    """(B,) bool, all True: the image-free prediction of guidance at sampling."""
    return torch.ones(batch_size, dtype=torch.bool, device=device)


def guidance_mix(conditional: Tensor, image_free: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: image_free + s (conditional - image_free); s = 1 is the conditional
    prediction alone, s > 1 pushes away from what the model would say without the picture
    (Ho and Salimans 2022; DDCap's note, eqs. 7-8, on log-probabilities)."""
    return image_free + scale * (conditional - image_free)
