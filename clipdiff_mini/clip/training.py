"""Training the small CLIP contrastively, resumably, with open_clip's ClipLoss.

One step: draw a batch of B training images, one of each image's captions at
random, encode both, and minimise the symmetric InfoNCE loss of CLIP
(open_clip's ``ClipLoss``)::

    logits_ij = exp(s) * <u_i, v_j>        u, v unit image / text embeddings
    L = 1/2 [ CE(logits, diag) + CE(logits^T, diag) ]

with the temperature learned as ``s = model.logit_scale`` (clamped so that
exp(s) <= 100, as CLIP does). AdamW, linear warm-up then cosine decay to 0.

Two optional sharpeners of the training signal (see notebook 04 for what
they bought): ``clip.negative_captions`` adds, per caption, a copy with one
word swapped within its group (colour, shape, size, count, direction) as an
extra wrong answer in the image-to-text softmax (NegCLIP), and
``clip.hard_batch_fraction`` draws some batches from pictures whose captions
share a word. In random batches most captions are told apart by colour
alone, so without them shape is learned last and slowly.

Snapshots (model, optimiser, schedule, step, loss history, random state) are
written atomically every ``clip.save_every`` steps next to the final
checkpoint; an interrupted run resumes from the last snapshot and ends with
the same weights as an uninterrupted one.
"""
from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

import torch

from clipdiff_mini.atomic_io import torch_save
from clipdiff_mini.clip.model import (ClipBundle, build_scratch_model, load_pretrained_clip, load_scratch_checkpoint,
                                      save_scratch_checkpoint,
                                      scratch_architecture, scratch_checkpoint_path, scratch_training_key)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 1/100


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 temperature_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Weight decay on matrices and conv kernels only; not on gains, biases,
    positional embeddings or the temperature (as open_clip's trainer does).
    The temperature gets its own learning rate: Adam moves a parameter by
    about `lr` per step, so in a few thousand steps at 1e-3 the log-temperature
    can hardly leave its starting value."""
    decay, no_decay, temp = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "logit_scale" in name:
            temp.append(p)
        elif p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "positional_embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            {"params": temp, "weight_decay": 0.0, "lr": lr * temperature_lr_mult}]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def anchor_groups(caption_ids: torch.Tensor, caption_owner: torch.Tensor, n_images: int, min_images: int,
                  max_fraction: float = 0.35, skip_ids: tuple[int, ...] = (0, 1, 2, 3, 4)) -> list[torch.Tensor]:
    """For each word, the images with a caption that uses it; kept when the
    word is specific enough (at most `max_fraction` of the images) and common
    enough to fill a batch (at least `min_images`). On the shapes data these
    are mostly colour and shape words. Returns LongTensors of image rows."""
    groups = []
    vocab = int(caption_ids.max()) + 1 if caption_ids.numel() else 0
    for w in range(vocab):
        if w in skip_ids:
            continue
        rows = torch.unique(caption_owner[(caption_ids == w).any(1)])
        if min_images <= len(rows) <= max_fraction * n_images:
            groups.append(rows)
    return groups


class CaptionSampler:
    """Batches of (image index, one random caption of that image).

    Images are drawn epoch by epoch without replacement; the caption of each
    image uniformly among its captions. With `hard_fraction` > 0 that share
    of the batches is instead drawn from one *anchor group* (the images whose
    captions share a word, see `anchor_groups`): a batch of pictures that all
    hold, say, something red, so that colour no longer tells them apart and
    the loss has to use shape, size, count and layout. All randomness comes
    from one ``torch.Generator`` whose state is saved in snapshots.
    """

    def __init__(self, caption_owner: torch.Tensor, n_images: int, batch_size: int, seed: int,
                 groups: list[torch.Tensor] | None = None, hard_fraction: float = 0.0):
        # caption_owner: (M,) image row of each caption row
        order = torch.argsort(caption_owner, stable=True)
        self.caption_order = order  # captions grouped by image
        counts = torch.bincount(caption_owner, minlength=n_images)  # (N,)
        if (counts == 0).any():
            raise ValueError(f"{int((counts == 0).sum())} training images have no caption")
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts  # (N,)
        self.n_images = n_images
        self.batch_size = min(batch_size, n_images)
        self.groups = [g for g in (groups or []) if len(g) >= self.batch_size]
        self.hard_fraction = hard_fraction if self.groups else 0.0
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hard_fraction > 0 and torch.rand((), generator=self.gen).item() < self.hard_fraction:
            group = self.groups[int(torch.randint(len(self.groups), (), generator=self.gen))]
            rows = group[torch.randperm(len(group), generator=self.gen)[:self.batch_size]]  # (B,)
        else:
            if self.pos + self.batch_size > len(self.perm):
                self.perm = torch.randperm(self.n_images, generator=self.gen)
                self.pos = 0
            rows = self.perm[self.pos:self.pos + self.batch_size]  # (B,)
            self.pos += self.batch_size
        pick = (torch.rand(len(rows), generator=self.gen) * self.counts[rows]).long()  # (B,)
        caps = self.caption_order[self.starts[rows] + pick]  # (B,)
        return rows, caps

    def state(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state(self, s: dict[str, Any]) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos = s["perm"], s["pos"]


def swap_word_groups() -> list[tuple[str, ...]]:
    """Groups of interchangeable words for hard negative captions: colours,
    shapes (singular and plural), sizes, counts and relation directions. Of
    these, real caption datasets mostly use colours, numbers and left/right."""
    from clipdiff_mini.data.caption_grammar import PLURAL
    from clipdiff_mini.data.scenes import COLOURS, SHAPES, SIZES

    return [tuple(COLOURS), tuple(SHAPES), tuple(PLURAL[s] for s in SHAPES), tuple(SIZES),
            ("two", "three", "four", "five", "six", "seven", "eight", "nine"),
            ("left", "right"), ("above", "below"), ("over", "under")]


def swap_table(tokenizer, groups: list[tuple[str, ...]] | None = None) -> torch.Tensor:
    """(V, K) LongTensor: for each token id, the ids it may be swapped with
    (the other members of its group that are in the vocabulary), padded with -1."""
    groups = swap_word_groups() if groups is None else groups
    alts: dict[int, list[int]] = {}
    for g in groups:
        ids = [tokenizer.stoi[w] for w in g if w in tokenizer.stoi]
        for i in ids:
            alts[i] = [j for j in ids if j != i]
    k = max((len(v) for v in alts.values()), default=1)
    table = torch.full((tokenizer.vocab_size, max(k, 1)), -1, dtype=torch.long)
    for i, v in alts.items():
        table[i, :len(v)] = torch.tensor(v, dtype=torch.long)
    return table


def negative_captions(text: torch.Tensor, table: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One hard negative per caption: a single word swapped within its group
    ("a red circle left of ..." -> "a red square left of ..."), the NegCLIP
    recipe (Yuksekgonul et al. 2023) for teaching CLIP what bag-of-words
    matching misses. Returns the negatives (B, L) and which rows have one (B,)."""
    n_alt = (table >= 0).sum(1)  # (V,)
    swappable = n_alt[text] > 0  # (B, L)
    has = swappable.any(1)  # (B,)
    score = torch.rand(text.shape, generator=gen).masked_fill(~swappable, -1.0)
    pos = score.argmax(1)  # (B,) a random swappable position
    old = text[torch.arange(len(text)), pos]  # (B,)
    pick = (torch.rand(len(text), generator=gen) * n_alt[old].clamp_min(1)).long()  # (B,)
    new = table[old, pick].clamp_min(0)  # (B,)
    neg = text.clone()
    neg[torch.arange(len(text)), pos] = torch.where(has, new, old)
    return neg, has


def clip_loss_with_negatives(loss_fn, img: torch.Tensor, txt: torch.Tensor, neg: torch.Tensor, has_neg: torch.Tensor,
                             scale: torch.Tensor) -> torch.Tensor:
    """open_clip's ClipLoss with extra negative captions in the image-to-text
    direction: image i must pick its caption among the B captions *and* the
    negatives. open_clip's ClipLoss has no slot for extra negatives, so we take
    its logits (``get_logits``) and append the negative columns ourselves.
    img, txt, neg: (B, D) unit rows; has_neg: (B,) bool."""
    import torch.nn.functional as F

    logits_img, logits_txt = loss_fn.get_logits(img, txt, scale)  # (B, B), (B, B)
    extra = (scale * img @ neg.T).masked_fill(~has_neg.view(1, -1), float("-inf"))  # (B, B)
    labels = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(torch.cat([logits_img, extra], 1), labels) + F.cross_entropy(logits_txt, labels))


def fit_clip(bundle: ClipBundle, images: torch.Tensor, caption_ids: torch.Tensor, caption_owner: torch.Tensor, *,
             steps: int, batch_size: int, lr: float, weight_decay: float, warmup_steps: int, seed: int,
             hard_fraction: float = 0.0, negatives: torch.Tensor | None = None, temperature_lr_mult: float = 1.0,
             snapshot_path: Path | None = None, save_every: int = 0, progress: bool = True,
             log_every: int = 1) -> dict[str, Any]:
    """Train ``bundle.model`` in place; return the training record.

    images: uint8 (N, 3, H, W); caption_ids: (M, L) token ids; caption_owner:
    (M,) the image row of each caption. `hard_fraction`: share of batches
    drawn from one anchor group (`CaptionSampler`). `negatives`: a
    `swap_table`; when given, each caption also gets a hard negative
    (`negative_captions`) that competes in the image-to-text direction. Resumes from `snapshot_path` when it
    holds a snapshot. The record has the loss (and temperature) per step, the
    seconds spent (all sessions together) and steps per second.
    """
    from open_clip import ClipLoss
    from tqdm.auto import tqdm

    model, device = bundle.model, bundle.device
    model.to(device).train()
    conv = not hasattr(model.visual, "transformer")
    if conv:  # convolutions run about 10% faster on channels-last tensors (CPU and GPU)
        model.visual.to(memory_format=torch.channels_last)
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(param_groups(model, weight_decay, lr, temperature_lr_mult), lr=lr, betas=(0.9, 0.98),
                            eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup_steps, steps))
    groups = anchor_groups(caption_ids, caption_owner, images.shape[0], min(batch_size, images.shape[0])) \
        if hard_fraction > 0 else None
    sampler = CaptionSampler(caption_owner, images.shape[0], batch_size, seed, groups, hard_fraction)
    record: dict[str, Any] = {"losses": [], "logit_scale": [], "seconds": 0.0, "steps": steps, "resumed_from": 0}
    start_step = 0
    if snapshot_path is not None and Path(snapshot_path).exists():
        snap = torch.load(snapshot_path, map_location="cpu", weights_only=False)
        model.load_state_dict(snap["model"])
        opt.load_state_dict(snap["opt"])
        sched.load_state_dict(snap["sched"])
        sampler.load_state(snap["sampler"])
        record = snap["record"]
        start_step = record["resumed_from"] = snap["step"]
    use_amp = device.type == "cuda" and bundle.precision in ("bf16", "fp16")
    amp_dtype = torch.bfloat16 if bundle.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and bundle.precision == "fp16")

    def snapshot(step: int) -> None:
        torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "sampler": sampler.state(), "record": record, "step": step}, snapshot_path)

    bar = tqdm(range(start_step, steps), desc="train CLIP", initial=start_step, total=steps, disable=not progress)
    t_last = time.perf_counter()
    for step in bar:
        rows, caps = sampler.next()
        pixels = bundle.preprocess(images[rows])  # (B, 3, S, S)
        if conv:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        text = caption_ids[caps].to(device)  # (B, L)
        if negatives is not None:
            neg, has_neg = negative_captions(caption_ids[caps], negatives, sampler.gen)
            text = torch.cat([text, neg.to(device)])  # (2B, L)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            img_f, txt_f, scale = model(pixels, text)  # (B, D), (B or 2B, D), ()
            img_f, txt_f, scale = img_f.float(), txt_f.float(), scale.float()
            if negatives is None:
                loss = loss_fn(img_f, txt_f, scale)
            else:
                loss = clip_loss_with_negatives(loss_fn, img_f, txt_f[:len(img_f)], txt_f[len(img_f):],
                                                has_neg.to(device), scale)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        loss_value, scale_value = loss.detach().item(), model.logit_scale.detach().item()
        record["losses"].append(loss_value)
        record["logit_scale"].append(scale_value)
        if progress and step % log_every == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}", T=f"{math.exp(-scale_value):.3f}")
        now = time.perf_counter()
        record["seconds"] += now - t_last
        t_last = now
        if snapshot_path is not None and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            snapshot(step + 1)
    bar.close()
    done = steps - start_step
    record["steps_per_second"] = steps / record["seconds"] if record["seconds"] > 0 else float("nan")
    record["steps_this_session"] = done
    if conv:
        model.visual.to(memory_format=torch.contiguous_format)
    model.eval()
    return record


def train_clip(cfg, *, train_split=None, progress: bool = True, force: bool = False) -> ClipBundle:
    """Train the small CLIP of `cfg` on the training split and save it.

    Returns the loaded checkpoint. When the checkpoint already exists (same
    sizes, data and seed) it is loaded instead, unless `force`. A snapshot of
    an interrupted run is resumed.
    """
    from clipdiff_mini.data.tokenizers import WordTokenizer

    path = scratch_checkpoint_path(cfg)
    if path.exists() and not force:
        return load_scratch_checkpoint(path, device=cfg.torch_device(), precision=cfg.precision)
    if train_split is None:
        from clipdiff_mini.data.splits import load_split

        train_split = load_split(cfg, "train")
    t0 = time.perf_counter()
    images = train_split.load_images(size=cfg.data.image_size)  # (N, 3, H, W) uint8
    captions, owner = [], []
    for row, rec in enumerate(train_split.records):
        captions += list(rec.captions)
        owner += [row] * len(rec.captions)
    tok = WordTokenizer.build(captions, min_count=cfg.data.min_word_count)
    caption_ids = tok.batch_encode(captions, max_len=cfg.clip.context_length)  # (M, L)
    caption_owner = torch.tensor(owner, dtype=torch.long)  # (M,)
    load_seconds = time.perf_counter() - t0

    torch.manual_seed(cfg.seed)  # the initial weights
    arch = scratch_architecture(cfg, tok.vocab_size, tok.pad_id, tok.eos_id)
    model = build_scratch_model(arch)
    device = cfg.torch_device()
    from clipdiff_mini.clip.model import word_tokenize_fn

    bundle = ClipBundle(model=model.to(device), tokenize=word_tokenize_fn(tok, cfg.clip.context_length),
                        image_size=arch["vision_cfg"]["image_size"], source="scratch",
                        name=f"scratch-{cfg.clip.vision_tower}",
                        identity="training", device=device, precision=cfg.precision, tokenizer=tok)
    c = cfg.clip
    snap = path.with_name(path.stem + ".snapshot.pt")
    record = fit_clip(bundle, images, caption_ids, caption_owner, steps=c.train_steps, batch_size=c.batch_size,
                      lr=c.lr, weight_decay=c.weight_decay, warmup_steps=c.warmup_steps, seed=cfg.seed,
                      hard_fraction=c.hard_batch_fraction, temperature_lr_mult=c.temperature_lr_mult,
                      negatives=swap_table(tok) if c.negative_captions else None, snapshot_path=snap, save_every=c.save_every, progress=progress)
    record.update({"load_seconds": load_seconds, "threads": torch.get_num_threads(), "device": str(device),
                   "n_params": sum(p.numel() for p in model.parameters()), "n_train_images": int(images.shape[0]),
                   "n_train_captions": len(captions), "peak_rss_mb": peak_rss_mb()})
    if device.type == "cuda":
        record["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    save_scratch_checkpoint(path, model, arch, tok.itos, record, scratch_training_key(cfg))
    if snap.exists():
        snap.unlink()
    return load_scratch_checkpoint(path, device=device, precision=cfg.precision)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


# ---- front door ----------------------------------------------------------------------------
def load_clip(cfg, *, train_if_missing: bool = True, progress: bool = True) -> ClipBundle:
    """The CLIP that `cfg.clip.source` names.

    "scratch": the checkpoint at `scratch_checkpoint_path(cfg)`; trained first
    (resuming a partial run) when it does not exist and `train_if_missing`.
    "pretrained": `load_pretrained_clip`.
    """
    if cfg.clip.source == "pretrained":
        return load_pretrained_clip(cfg)
    if cfg.clip.source != "scratch":
        raise ValueError(f"clip.source={cfg.clip.source!r}; allowed values: 'scratch', 'pretrained'")
    path = scratch_checkpoint_path(cfg)
    if not path.exists() and cfg.clip.checkpoint:  # a named file is never trained into: it is another data's CLIP
        raise FileNotFoundError(f"clip.checkpoint={cfg.clip.checkpoint!r}: no such file ({path}); train that CLIP "
                                "first (notebook 04 for the embedded dataset) or set clip.checkpoint='' to train one "
                                "on this data")
    if not path.exists():
        if not train_if_missing:
            raise FileNotFoundError(f"no trained CLIP at {path}; run notebook 04 or "
                                    "clipdiff_mini.clip.training.train_clip(cfg)")
        train_clip(cfg, progress=progress)
    return load_scratch_checkpoint(path, device=cfg.torch_device(), precision=cfg.precision)
