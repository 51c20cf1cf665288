"""CLIP on open_clip: a small CLIP trained from scratch, or a pretrained one.

Both sources come back as one `ClipBundle`: an open_clip ``CLIP`` model plus
the matching tokenizer and image preprocessing, with two encoders the rest
of the course uses::

    bundle = load_clip(cfg)                       # clip.training.load_clip: cfg.clip.source picks which
    pooled, tokens = bundle.encode_images(images) # uint8 (N,3,H,W) -> (N,D), (N,P,W)
    text = bundle.encode_texts(["a red circle"])  # (N, D)

* ``clip.source = "scratch"``: open_clip's ``CLIP`` class with a small
  convolutional vision tower (open_clip's ``ModifiedResNet``, the tower of the
  original CLIP RN50, shrunk: ``CLIPVisionCfg(layers=(k, k, k, k), width=w)``)
  or a small ViT, and a text transformer over the course's `WordTokenizer`
  vocabulary (a few dozen words instead of open_clip's 49k BPE pieces).
  Trained by `clipdiff_mini.clip.training.train_clip`, saved as a checkpoint.
* ``clip.source = "pretrained"``: ``open_clip.create_model(name, pretrained=tag)``
  (ViT-B-32 as in CLIP-DiffusionLM, ViT-B-16 as in DDCap) with open_clip's own
  tokenizer. Needs network the first time; without it `load_pretrained_clip`
  raises `PretrainedWeightsUnavailable`, which names the offline alternative,
  within seconds (`clipdiff_mini.hub` checks the hub before open_clip asks it;
  weights already in the local cache still load offline).

Patch tokens (what DDCap cross-attends to) are the last transformer layer's
patch tokens for a ViT, and the final spatial grid (flattened, ``P = H*W``)
for the convolutional tower.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

# open_clip's image statistics (those of the original CLIP training set); the
# scratch model uses them too so that both sources share one preprocessing.
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from clipdiff_mini.atomic_io import torch_save
from clipdiff_mini.hub import HubAccess, hub_downloads

CHECKPOINT_FORMAT = 1

PRETRAINED_CHOICES = ("ViT-B-32", "ViT-B-16")  # the two the course names; any open_clip name works


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained CLIP weights could not be fetched (usually: no network)."""


# ---- the bundle ------------------------------------------------------------------
@dataclass
class ClipBundle:
    """An open_clip model with its tokenizer and preprocessing.

    ``identity`` names the weights (the checkpoint file's SHA-256 for a
    scratch model, ``name/tag`` for a pretrained one); the feature cache keys
    on it, so new weights mean new features.
    """

    model: torch.nn.Module
    tokenize: Callable[[Sequence[str]], torch.Tensor]  # list of str -> LongTensor (B, L)
    image_size: int
    source: str  # "scratch" | "pretrained"
    name: str
    identity: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    mean: tuple[float, float, float] = OPENAI_DATASET_MEAN
    std: tuple[float, float, float] = OPENAI_DATASET_STD
    info: dict[str, Any] = field(default_factory=dict)  # training record of a scratch model
    tokenizer: Any = None  # the tokenizer object (WordTokenizer or open_clip's)
    checkpoint: Path | None = None
    arch: dict[str, Any] | None = None  # the open_clip config of a scratch model

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if not isinstance(self.model.text_projection, torch.nn.Linear) \
            else int(self.model.text_projection.out_features)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float (B, 3, S, S) on the model's device.

        Resized (bicubic, antialiased) only when H != S; then
        ``(x / 255 - mean) / std`` per channel.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).float() / 255.0  # (B, 3, H, W) in [0, 1]
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _autocast(self):
        if self.device.type == "cuda" and self.precision in ("bf16", "fp16"):
            return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
        return torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled image embeddings (B, D) (unit length when `normalize`) and
        patch tokens (B, P, W) of one batch of uint8 images (eval mode)."""
        self.model.eval()
        with self._autocast():
            pooled, tokens = image_features_and_tokens(self.model, self.preprocess(images))
        if normalize:
            pooled = F.normalize(pooled.float(), dim=-1)
        return pooled.float().cpu(), tokens.float().cpu()

    @torch.no_grad()
    def encode_fine_grid(self, images: torch.Tensor) -> torch.Tensor:
        """The finer spatial grid (B, P', W') of one batch of uint8 images (`image_fine_grid`)."""
        self.model.eval()
        with self._autocast():
            grid = image_fine_grid(self.model, self.preprocess(images))
        return grid.float().cpu()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Text embeddings (B, D) of a list of captions (eval mode)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a list of captions, got one str")
        self.model.eval()
        ids = self.tokenize(list(texts)).to(self.device)  # (B, L)
        with self._autocast():
            out = self.model.encode_text(ids)
        out = out.float()
        return (F.normalize(out, dim=-1) if normalize else out).cpu()


def image_features_and_tokens(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embedding (B, D) and patch tokens (B, P, W) of preprocessed pixels.

    One pass through open_clip's ``visual.forward_intermediates`` (last block
    only): a ViT returns its last layer's patch tokens (after the final
    LayerNorm, class token left out), the ModifiedResNet its final feature
    map (B, C, h, w), which we flatten to h*w tokens of width C.
    """
    visual = model.visual
    is_vit = hasattr(visual, "transformer")
    out = visual.forward_intermediates(pixels, indices=1, normalize_intermediates=True,
                                       output_fmt="NLC" if is_vit else "NCHW")
    tokens = out["image_intermediates"][-1]
    if tokens.ndim == 4:  # (B, C, h, w) -> (B, h*w, C)
        tokens = tokens.flatten(2).transpose(1, 2)
    return out["image_features"], tokens


def image_fine_grid(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """A finer spatial grid than `image_features_and_tokens`' patch tokens, (B, P', W').

    The ModifiedResNet's last stage sees a 64 px picture as 2 x 2 cells, too
    coarse to keep four objects apart; the stage before it has a 4 x 4 map
    (width 16 * vision_width), the grid a captioner can cross-attend to.
    A ViT's last-layer patch tokens are already its finest grid: returned as they are.
    """
    visual = model.visual
    if hasattr(visual, "transformer"):
        return image_features_and_tokens(model, pixels)[1]
    out = visual.forward_intermediates(pixels, indices=2, intermediates_only=True, normalize_intermediates=True,
                                       output_fmt="NCHW")
    fmap = out["image_intermediates"][0]  # (B, C, h, w) of the stage before the last
    return fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)


# ---- scratch model -----------------------------------------------------------------
def scratch_architecture(cfg, vocab_size: int, pad_id: int = 0, eos_id: int = 2) -> dict[str, Any]:
    """The open_clip model config (JSON-safe) of the small CLIP in `cfg.clip`.

    Vision: ``vision_tower="resnet"`` -> open_clip ``ModifiedResNet`` with
    ``vision_layers`` bottleneck blocks in each of its 4 stages and stem width
    ``vision_width`` (feature width 32 * vision_width; the 64 px image ends as a
    2 x 2 grid, a 128 px input a 4 x 4 grid); ``"vit"`` -> a ViT with ``vision_layers`` blocks of width
    ``vision_width`` on ``vision_patch_size`` patches.
    Text: a causal transformer over the word vocabulary, pooled at the
    ``[EOS]`` token (``pool_type="eos"``; open_clip's default "argmax" assumes
    EOS has the largest id, true for its BPE but not for our vocabulary).
    """
    c = cfg.clip
    side = c.image_size or cfg.data.image_size
    if c.vision_tower == "resnet":
        vision = {"layers": [c.vision_layers] * 4, "width": c.vision_width, "head_width": c.vision_head_width,
                  "image_size": side}
    else:
        vision = {"layers": c.vision_layers, "width": c.vision_width,
                  "head_width": min(c.vision_head_width, c.vision_width), "patch_size": c.vision_patch_size,
                  "image_size": side}
    text = {"context_length": c.context_length, "vocab_size": int(vocab_size), "width": c.text_width,
            "heads": c.text_heads, "layers": c.text_layers, "pad_id": int(pad_id), "eos_id": int(eos_id),
            "pool_type": "eos"}
    return {"embed_dim": c.embed_dim, "vision_cfg": vision, "text_cfg": text,
            "init_logit_scale": math.log(1.0 / c.init_temperature)}


def build_scratch_model(arch: dict[str, Any]) -> torch.nn.Module:
    """An open_clip ``CLIP`` from a `scratch_architecture` dict (random init)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = dict(arch["vision_cfg"])
    if isinstance(vision["layers"], list):
        vision["layers"] = tuple(vision["layers"])  # open_clip tells the ResNet by a tuple of stage depths
    return CLIP(embed_dim=arch["embed_dim"], vision_cfg=CLIPVisionCfg(**vision),
                text_cfg=CLIPTextCfg(**arch["text_cfg"]),
                init_logit_scale=arch.get("init_logit_scale", math.log(1 / 0.07)))


def word_tokenize_fn(tokenizer, context_length: int) -> Callable[[Sequence[str]], torch.Tensor]:
    """Captions -> (B, context_length) ids with the course's word tokenizer
    (``[BOS] w1 .. wn [EOS] [PAD]...``, EOS kept when cut)."""

    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        return tokenizer.batch_encode(list(texts), max_len=context_length)

    return tokenize


def scratch_training_key(cfg) -> dict[str, Any]:
    """Everything that determines the trained weights: the clip section (less
    the fields that only choose or use a model), the data section (less the
    captioners' tokenizer settings) and the seed."""
    clip = cfg.to_dict()["clip"]
    for k in ("source", "pretrained_model", "pretrained_tag", "feature_batch_size", "save_every", "checkpoint"):
        clip.pop(k, None)
    data = cfg.to_dict()["data"]
    for k in ("tokenizer", "max_caption_len", "bert_name"):  # the captioners' text settings: CLIP has its own
        data.pop(k, None)
    return {"format": CHECKPOINT_FORMAT, "clip": clip, "data": data, "seed": cfg.seed}


def scratch_checkpoint_path(cfg) -> Path:
    """``<checkpoint_dir>/clip_scratch_<profile>_<hash>.pt``; the hash covers
    `scratch_training_key`, so changing a size or the data gives a new file.
    ``clip.checkpoint``, when set, names the file instead (a CLIP trained on other data)."""
    if cfg.clip.checkpoint:
        return cfg.resolve(cfg.clip.checkpoint)
    digest = hashlib.sha256(json.dumps(scratch_training_key(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return cfg.path("checkpoint_dir") / f"clip_scratch_{cfg.profile}_{digest}.pt"


def save_scratch_checkpoint(path: Path, model: torch.nn.Module, arch: dict, itos: list[str], info: dict,
                            key: dict) -> None:
    """Write the final checkpoint atomically (weights on CPU, architecture,
    vocabulary, training record, training key)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save({"format": CHECKPOINT_FORMAT, "arch": arch, "state_dict": state, "itos": list(itos),
                "info": info, "key": key}, path)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_scratch_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                            precision: str = "fp32") -> ClipBundle:
    """A `ClipBundle` from a checkpoint written by `save_scratch_checkpoint`."""
    from clipdiff_mini.data.tokenizers import WordTokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no CLIP checkpoint at {path}; train one with clipdiff_mini.clip.training.train_clip(cfg) "
                                "(notebook 04) or call load_clip(cfg), which trains it when missing")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a course CLIP checkpoint of format {CHECKPOINT_FORMAT}; delete it and retrain")
    model = build_scratch_model(ckpt["arch"])
    model.load_state_dict(ckpt["state_dict"])
    device = torch.device(device)
    model.to(device).eval()
    tok = WordTokenizer(ckpt["itos"])
    ctx = ckpt["arch"]["text_cfg"]["context_length"]
    return ClipBundle(model=model, tokenize=word_tokenize_fn(tok, ctx), image_size=ckpt["arch"]["vision_cfg"]["image_size"],
                      source="scratch", name=f"scratch-{'resnet' if isinstance(ckpt['arch']['vision_cfg']['layers'], list) else 'vit'}",
                      identity=f"scratch:{file_sha256(path)}", device=device, precision=precision,
                      info=dict(ckpt.get("info", {})), tokenizer=tok, checkpoint=path, arch=ckpt["arch"])


# ---- pretrained model ------------------------------------------------------------------
def pretrained_architecture(name: str) -> torch.nn.Module:
    """The open_clip architecture `name` with random weights (no download)."""
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {name!r}; the course uses {', '.join(PRETRAINED_CHOICES)} "
                         f"(open_clip.list_models() lists all)")
    return open_clip.create_model(name, pretrained=None)


def pretrained_tokenizer(name: str):
    """open_clip's own tokenizer for `name` (its BPE vocabulary ships with the package)."""
    import open_clip

    return open_clip.get_tokenizer(name)


def load_pretrained_clip(cfg, device: torch.device | str | None = None, cache_dir: str | None = None) -> ClipBundle:
    """``open_clip.create_model(cfg.clip.pretrained_model, pretrained=cfg.clip.pretrained_tag)``.

    Raises `PretrainedWeightsUnavailable` when the weights cannot be fetched,
    with the offline alternative in the message.
    """
    import open_clip

    name, tag = cfg.clip.pretrained_model, cfg.clip.pretrained_tag
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {name!r}; the course uses {', '.join(PRETRAINED_CHOICES)}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags and not Path(tag).is_file():
        raise ValueError(f"clip.pretrained_tag={tag!r} is not a pretrained tag of {name}; known tags: {', '.join(tags)} "
                         "(or give the path of a downloaded weights file)")
    device = torch.device(device) if device is not None else cfg.torch_device()
    # A weights file on disk needs no hub; otherwise ask the hub first (3 s at most) so that an
    # offline machine fails at once instead of after a minute of retries (clipdiff_mini.hub).
    with (contextlib.nullcontext(HubAccess(True)) if Path(tag).is_file() else hub_downloads()) as hub:
        try:
            model = open_clip.create_model(name, pretrained=tag, device=device, require_pretrained=True,
                                           cache_dir=cache_dir)
        except Exception as exc:  # open_clip wraps hub/URL failures in RuntimeError/FileNotFoundError
            raise PretrainedWeightsUnavailable(
                f"could not get the pretrained CLIP weights {name}/{tag}"
                f"{'' if hub.online else f' ({hub.reason})'}: pretrained weights are downloaded from the "
                f"Hugging Face hub and need network access the first time. Without network, use the small CLIP "
                f"trained on the embedded dataset: get_config(profile, {{'clip.source': 'scratch'}}) (trained in "
                f"notebook 04), or copy the weights file onto this machine and set clip.pretrained_tag to its "
                f"path. (open_clip said: {type(exc).__name__}: {str(exc)[:300]})"
            ) from exc
    model.eval()
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = pp.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipBundle(model=model, tokenize=pretrained_tokenizer(name), image_size=int(size), source="pretrained",
                      name=f"{name}/{tag}", identity=f"pretrained:{name}/{tag}", device=device,
                      precision=cfg.precision, mean=tuple(pp.get("mean", OPENAI_DATASET_MEAN)),
                      std=tuple(pp.get("std", OPENAI_DATASET_STD)), tokenizer=pretrained_tokenizer(name))
