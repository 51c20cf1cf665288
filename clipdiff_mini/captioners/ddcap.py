"""DDCap: masked discrete diffusion over caption tokens, conditioned on CLIP
features (notebook 07).

A caption x_0 = ([BOS] w_1 .. [EOS] [PAD] ..) of L ids is corrupted by the
mask-only forward process of notebook 06: each position is hidden behind
[MASK] with probability gammabar_t (``ddcap.schedule``; "mask" is t/T).
A bidirectional transformer reads x_t, the timestep (adaptive LayerNorm)
and the memory [pooled CLIP feature, spatial grid tokens], and predicts
p(x_0 | x_t, y) at every position. ``ddcap.conditioning`` says how the
memory is read: ``"cross"`` (DDCap), a cross-attention to it in every block;
``"prefix"`` (the course's default, as the autoregressive decoder and
ClipCap read it), its 1 + P tokens in front of the caption in
self-attention, so every layer mixes picture and words in one attention.
``ddcap.loss_positions="all"`` scores every caption token, not only the
hidden ones. The loss is DDCap's
cross-entropy -log p(x_0 | x_t, y) on the masked positions (``"uniform"``)
or the 1/t-weighted bound of notebook 06 (``"elbo"``, MDLM eq. 10).

The four tricks of the note's Table 1, each a switch of `DDCapConfig`:

* **length prediction**: an MLP on the pooled CLIP feature classifies the
  caption's length n (non-padding tokens); training masks only the first n
  positions (the rest are given as [PAD]), sampling starts from n [MASK]s
  followed by [PAD]s. Without it the whole canvas is masked and the model
  writes its own padding.
* **concentrated attention mask (CAM)**: in self-attention, query q may not
  attend to key k when x_t[k] is [MASK] and k != q (`concentrated_attention_mask`).
* **best-first inference**: each network call commits the K most confident
  masked positions (`clipdiff_mini.diffusion.discrete.unmask_best_first`),
  never re-masking; the model is told t = max(1, floor(m T / n)) for m masks
  left of n. The baseline is the ancestral sampler of notebook 06, which
  unmasks positions at random as the schedule says.
* **image-free training**: with probability p the image features are
  replaced by a learned null feature; sampling mixes
  log p' = log p(x_0 | x_t, null) + s (log p(x_0 | x_t, y) - log p(x_0 | x_t, null))
  (note eqs. 7-8), two network passes per step unless s = 1.

The blocks are the course's transformer block (`captioners.backbone`):
attention through `F.scaled_dot_product_attention` with the concentrated
mask as a per-sample boolean mask, adaptive LayerNorm on the timestep, and
cross-attention or prefix tokens for the CLIP memory.

**Decoding cost.** The memory depends on the picture alone, never on x_t or
t, so the cross-attention keys and values K_l = mem W_k^l, V_l = mem W_v^l of
every block l are the same at every pass of a sampler (with prefix
conditioning the projected memory tokens are; their later layers read the
caption, so they are recomputed). `memory_kv` computes
them once per caption batch (and once more for the null picture when the
guidance scale is not 1), and every pass reuses them: a pass then costs the
caption's own projections, attention and MLP only. ``sample(...,
cache_memory=False)`` recomputes them at every pass (the path before this
cache, kept for the speed comparison; both give the same ids bit for bit).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipdiff_mini.captioners.backbone import Block
from clipdiff_mini.captioners.base import check_heads, every_row_image_free, guidance_mix, image_free_rows
from clipdiff_mini.captioners.length import LengthHead, caption_lengths
from clipdiff_mini.diffusion.discrete import (ancestral_step, carry_over_log_probs, mask_elbo_weight, mask_schedule,
                                              remask_least_confident, unmask_ordered)
from clipdiff_mini.diffusion.text_diffusion import timestep_embedding

Tensor = torch.Tensor


def concentrated_attention_mask(x_t: Tensor, mask_id: int) -> Tensor:
    """Allowed self-attention (B, L, L), True = query q (row) may attend to key k (column):
    every key that is not [MASK], and the query's own position (DDCap's CAM)."""
    visible = x_t != mask_id  # (B, L)
    eye = torch.eye(x_t.shape[1], dtype=torch.bool, device=x_t.device)  # (L, L)
    return visible[:, None, :] | eye[None]  # (B, L, L)


class DDCapCaptioner(nn.Module):
    """p(x_0 | x_t, t, image) for caption ids x_t (B, L); see the module docstring."""

    def __init__(self, vocab_size: int, max_len: int, image_dim: int, grid_dim: int, n_grid: int, dcfg, *,
                 pad_id: int, mask_id: int, width: int, layers: int, heads: int, dropout: float = 0.0):
        super().__init__()
        check_heads(width, heads)
        self.dcfg, self.vocab_size, self.max_len, self.width = dcfg, vocab_size, max_len, width
        self.pad_id, self.mask_id = pad_id, mask_id
        self.sched = mask_schedule(dcfg.timesteps, dcfg.schedule)
        # tokens and positions start at the same small scale (GPT-2's 0.02): with N(0, 1) tokens a [MASK]
        # would look the same at every position until the position embeddings had grown 50-fold
        self.tok = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        # the memory: [pooled feature, grid tokens], each projected to the width, with a type and grid position
        self.image_proj = nn.Linear(image_dim, width)
        self.grid_proj = nn.Linear(grid_dim, width) if n_grid else None
        self.memory_pos = nn.Parameter(torch.randn(1 + n_grid, width) * 0.5)  # against unit-variance tokens
        # pooled CLIP vectors are unit length (0.04 per coordinate) and grid activations an order of magnitude
        # larger: a LayerNorm per memory token puts both on the scale of the caption tokens
        self.memory_norm = nn.LayerNorm(width)
        self.null_image = nn.Parameter(torch.zeros(image_dim))  # image-free training's learned null feature
        self.null_grid = nn.Parameter(torch.zeros(n_grid, grid_dim)) if n_grid else None
        self.n_grid = n_grid
        if dcfg.conditioning not in ("cross", "prefix"):
            raise ValueError(f"ddcap.conditioning={dcfg.conditioning!r}; allowed: 'cross', 'prefix'")
        self.prefix = dcfg.conditioning == "prefix"
        self.blocks = nn.ModuleList(Block(width, heads, dropout, dcfg.timestep_input, cross=not self.prefix)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        # length head: MLP on the pooled CLIP feature -> n in 0..L (DDCap: 512 -> 384 -> 20)
        self.length_head = LengthHead(image_dim, 2 * width, max_len)

    # ---- the denoiser -----------------------------------------------------------------------
    def memory(self, image: Tensor, grid: Tensor | None, drop: Tensor | None = None) -> Tensor:
        """The cross-attention memory (B, 1 + P, W); rows with `drop` (B,) see the null feature."""
        if drop is not None and drop.any():
            image = torch.where(drop[:, None], self.null_image.expand_as(image), image)
            if self.n_grid:
                grid = torch.where(drop[:, None, None], self.null_grid.expand_as(grid), grid)
        parts = [self.image_proj(image)[:, None]]  # (B, 1, W)
        if self.n_grid:
            parts.append(self.grid_proj(grid))  # (B, P, W)
        return self.memory_norm(torch.cat(parts, 1)) + self.memory_pos  # (B, 1 + P, W)

    def memory_kv(self, image: Tensor, grid: Tensor | None = None, drop: Tensor | None = None) -> list:
        """What every pass reads of the picture: with cross-attention each block's keys and values
        [(K, V) (B, H, 1 + P, d)] of the memory of `image`/`grid` (rows with `drop` see the null
        feature); with prefix conditioning [the memory tokens (B, 1 + P, W)]. Both depend on the picture
        alone, not on x_t or t: a sampler computes them once per caption batch and passes them to every
        `forward`."""
        mem = self.memory(image, grid, drop)  # (B, 1 + P, W)
        if self.prefix:
            return [mem]
        return [block.cross_attn.keys_values(mem) for block in self.blocks]

    def allowed_pairs(self, x_t: Tensor) -> Tensor | None:
        """The self-attention mask (B, S, S) of the sequence the blocks read (None: all pairs allowed).
        Cross-attention: the caption alone, S = L, under the concentrated mask when it is on. Prefix: the
        memory's M = 1 + P tokens come first, S = M + L; they are never [MASK], so every query may read
        them, and the concentrated mask applies to the caption's keys as before."""
        if not self.dcfg.concentrated_mask:
            return None
        if not self.prefix:
            return concentrated_attention_mask(x_t, self.mask_id)  # (B, L, L)
        M = 1 + self.n_grid
        memory_ids = torch.full((x_t.shape[0], M), self.pad_id, dtype=x_t.dtype, device=x_t.device)  # not [MASK]
        seq = torch.cat([memory_ids, x_t], 1)  # (B, S)
        return concentrated_attention_mask(seq, self.mask_id)  # (B, S, S)

    def forward(self, x_t: Tensor, t: Tensor, image: Tensor | None = None, grid: Tensor | None = None,
                drop: Tensor | None = None, need_weights: bool = False, memory_kv: list | None = None):
        """Logits (B, L, V) of x_0 for ids x_t (B, L) at timesteps t (B,); with `need_weights` also the
        last block's attention of each caption position over the memory [pooled, grid], (B, L, 1 + P)
        (prefix conditioning: renormalised over the memory's keys). `memory_kv`: from `memory_kv`
        (then image, grid and drop are not read)."""
        L = x_t.shape[1]
        h = self.tok(x_t) + self.pos[:L]  # (B, L, W)
        temb = self.time(timestep_embedding(t, self.width)) if self.dcfg.timestep_input else None  # (B, W)
        if memory_kv is None:
            memory_kv = self.memory_kv(image, grid, drop)
        M = 0
        if self.prefix:  # the memory tokens in front of the caption, read by self-attention
            M = memory_kv[0].shape[1]
            h = torch.cat([memory_kv[0], h], 1)  # (B, M + L, W)
        allowed = self.allowed_pairs(x_t)
        weights = None
        for i, block in enumerate(self.blocks):
            kv = None if self.prefix else memory_kv[i]
            h, w = block(h, kv, allowed, temb, need_weights and i == len(self.blocks) - 1)
            weights = w if w is not None else weights
        logits = self.head(self.norm(h[:, M:]))  # (B, L, V)
        if need_weights and self.prefix:  # caption queries over the memory keys, as a distribution
            weights = weights[:, M:, :M]
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)  # (B, L, M)
        return (logits, weights) if need_weights else logits

    # ---- training ---------------------------------------------------------------------------
    def lengths(self, ids: Tensor) -> Tensor:
        """n (B,): the number of non-padding tokens of each caption ([BOS] and [EOS] included)."""
        return caption_lengths(ids, self.pad_id)

    def corrupt(self, ids: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0): each maskable position becomes [MASK] with probability gammabar_t.
        With length prediction only the caption's own n positions are maskable (the [PAD]s are given)."""
        p = self.sched.mask_bar.to(ids.device)[t].float()[:, None]  # (B, 1)
        hide = torch.rand(ids.shape, generator=generator, device=ids.device) < p  # (B, L)
        if self.dcfg.length_prediction:
            hide &= ids != self.pad_id
        return torch.where(hide, torch.full_like(ids, self.mask_id), ids)

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Masked cross-entropy (+ the length head's cross-entropy) on {"ids" (B, L), "image", "grid"}."""
        ids = batch["ids"]
        B = ids.shape[0]
        dev = ids.device
        t = torch.randint(1, self.sched.T + 1, (B,), generator=generator, device=dev)  # (B,)
        x_t = self.corrupt(ids, t, generator)
        drop = image_free_rows(B, self.dcfg.image_free_p, generator, dev)
        logits = self(x_t, t, batch["image"], batch.get("grid"), drop)
        masked = x_t == self.mask_id  # (B, L)
        logp = torch.log_softmax(logits.float(), -1)
        # "masked": DDCap's loss on the hidden positions; "all": also copy the given ones (a BERT-style
        # reconstruction term; with length prediction the given [PAD]s stay out, they are not the caption's)
        scored = masked if self.dcfg.loss_positions == "masked" else (
            ids != self.pad_id if self.dcfg.length_prediction else torch.ones_like(masked))
        nll = -logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1) * scored  # (B, L)
        if self.dcfg.loss_weighting == "elbo":  # the bound: sum over masked positions, weighted by 1/t (per token)
            w = mask_elbo_weight(self.sched, t.cpu()).to(dev).float()  # (B,)
            ce = (nll.sum(-1) * w).sum() / (B * self.max_len)
        else:  # DDCap: the mean cross-entropy of the masked tokens
            ce = nll.sum() / scored.sum().clamp_min(1)
        logs = {"ce": ce.item(), "masked": masked.float().mean().item()}
        loss = ce
        if self.dcfg.length_prediction:
            length_ce = F.cross_entropy(self.length_head(batch["image"]), self.lengths(ids))
            loss = loss + length_ce
            logs["length_ce"] = length_ce.item()
        logs["loss"] = loss.item()
        return loss, logs

    # ---- sampling ---------------------------------------------------------------------------
    def memory_cache(self, cond: dict, scale: float) -> dict:
        """{"image": `memory_kv` of the pictures of `cond`, "null": that of the null picture (B rows) or None
        when `scale` == 1}: what every pass of one sampling call reads, computed once."""
        B = cond["image"].shape[0]
        null = None
        if scale != 1.0:
            drop = every_row_image_free(B, cond["image"].device)
            null = self.memory_kv(cond["image"], cond.get("grid"), drop)
        return {"image": self.memory_kv(cond["image"], cond.get("grid")), "null": null}

    def guided_log_probs(self, x_t: Tensor, t: Tensor, cond: dict, scale: float, need_weights: bool = False,
                         cache: dict | None = None):
        """log p'(x_0 | x_t) (B, L, V) with carry-over (notebook 06): note eqs. 7-8 when `scale` != 1.
        `cache`: `memory_cache(cond, scale)` (None: the memory's keys and values are computed here)."""
        kv = cache["image"] if cache is not None else None
        out = self(x_t, t, cond["image"], cond.get("grid"), need_weights=need_weights, memory_kv=kv)
        logits, weights = out if need_weights else (out, None)
        logp = torch.log_softmax(logits.float(), -1)
        if scale != 1.0:
            drop = every_row_image_free(x_t.shape[0], x_t.device)
            kv = cache["null"] if cache is not None else None
            null = torch.log_softmax(self(x_t, t, cond["image"], cond.get("grid"), drop, memory_kv=kv).float(), -1)
            logp = guidance_mix(logp, null, scale)
        return carry_over_log_probs(logp, x_t, self.mask_id), weights

    @torch.no_grad()
    def predict_lengths(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """n (B,) from the length head, at least 2 ([BOS] [EOS]) and at most L."""
        return self.length_head.choose(image, self.dcfg.length_choice, generator)

    @torch.no_grad()
    def sample(self, cond: dict[str, Tensor], *, order: str | None = None, tokens_per_step: int | None = None,
               guidance_scale: float | None = None, init_ids: Tensor | None = None,
               generator: torch.Generator | None = None, trajectory: bool = False,
               attention: bool = False, cache_memory: bool = True) -> dict[str, Any]:
        """Caption ids (B, L) for the pictures of `cond` {"image" (B, Di), "grid" (B, P, Dg)}.

        `init_ids` (B, L): start from these ids instead of all-[MASK] (infilling: only its [MASK]
        positions are filled). Returns {"ids", "passes": mean network passes per caption, "lengths"
        (B,), and with `trajectory` "trajectory": [(t, ids (B, L))] from the start to the end; with
        `attention` "attention": (B, L, 1 + P) the last block's cross-attention of each position at
        the call that committed it}. `cache_memory`: compute the memory's cross-attention keys and values
        once for all passes (False: at every pass, as before the cache; the same ids, slower)."""
        c = self.dcfg
        order = order or c.order
        K = tokens_per_step or c.tokens_per_step
        scale = c.guidance_scale if guidance_scale is None else guidance_scale
        B, L = cond["image"].shape[0], self.max_len
        dev = cond["image"].device
        pos = torch.arange(L, device=dev)[None]  # (1, L)
        if init_ids is not None:
            x = init_ids.to(dev).clone()
            n = torch.where(x == self.pad_id, 0, 1).sum(-1)
        else:
            n = self.predict_lengths(cond["image"], generator) if c.length_prediction else torch.full((B,), L, device=dev)
            x = torch.where(pos < n[:, None], self.mask_id, self.pad_id).long()  # (B, L)
        n_masked = (x == self.mask_id).sum(-1)  # (B,) positions this sampler fills
        traj = [(self.sched.T, x.cpu())]
        attn = torch.zeros(B, L, 1 + self.n_grid, device=dev) if attention else None
        calls = torch.zeros(B, device=dev)  # network calls each caption needed
        per_call = 2 if scale != 1.0 else 1
        cache = self.memory_cache(cond, scale) if cache_memory else None
        if order == "random":  # notebook 06's ancestral sampler: the schedule decides which positions unmask
            for t in range(self.sched.T, 0, -1):
                active = (x == self.mask_id).any(-1)
                if not active.any():
                    break
                logp, w = self.guided_log_probs(x, torch.full((B,), t, device=dev), cond, scale, attention, cache)
                # the posterior treats every position as masked (the schedule's x_T); given tokens stay
                hidden = torch.full_like(x, self.mask_id)
                draw = ancestral_step(self.sched, logp.exp(), hidden, t, self.mask_id, generator)
                new = torch.where(x == self.mask_id, draw, x)
                if attention:
                    attn = torch.where(((x == self.mask_id) & (new != self.mask_id))[..., None], w, attn)
                x = new
                calls += active.float()
                traj.append((t, x.cpu()))
        elif order in _COMMIT_ORDERS:  # K masks committed per call, chosen by the order, never re-masked
            rank_by, block = _COMMIT_ORDERS[order], (c.block_size if order == "blocks" else 0)
            while (x == self.mask_id).any():
                m = (x == self.mask_id).sum(-1)  # (B,) masks left
                t = (m * self.sched.T // n_masked.clamp_min(1)).clamp(1, self.sched.T)  # DDCap: floor(m T / n)
                logp, w = self.guided_log_probs(x, t, cond, scale, attention, cache)
                new = unmask_ordered(logp.exp(), x, self.mask_id, K, rank_by=rank_by, block=block,
                                     sample=c.sample_tokens, generator=generator)
                if attention:
                    attn = torch.where(((x == self.mask_id) & (new != self.mask_id))[..., None], w, attn)
                calls += (m > 0).float()
                x = new
                traj.append((int(t.max()), x.cpu()))
        elif order == "mask_predict":  # Mask-Predict: write every mask, then re-mask the least confident
            fillable = x == self.mask_id  # (B, L) the positions this sampler writes
            conf = torch.zeros(x.shape, device=dev)  # (B, L)
            iters = max(1, c.iterations)
            for i in range(iters):
                masked = x == self.mask_id
                m = masked.sum(-1)
                t = (m * self.sched.T // n_masked.clamp_min(1)).clamp(1, self.sched.T)
                logp, w = self.guided_log_probs(x, t, cond, scale, attention, cache)
                p = logp.exp()
                p[..., self.mask_id] = 0.0  # never write [MASK]
                best, token = p.max(-1)  # (B, L)
                new = torch.where(masked, token, x)
                conf = torch.where(masked, best, conf)
                if attention:
                    attn = torch.where(masked[..., None], w, attn)
                calls += (m > 0).float()
                x = new
                traj.append((int(t.max()), x.cpu()))
                if i < iters - 1:  # iteration i + 1 rewrites n (T' - i - 1) / T' of the words
                    x = remask_least_confident(x, conf, fillable, n_masked * (iters - 1 - i) // iters, self.mask_id)
        else:
            raise ValueError(f"ddcap.order={order!r}; allowed: 'random', 'mask_predict', "
                             + ", ".join(map(repr, _COMMIT_ORDERS)))
        out = {"ids": x, "passes": float(per_call * calls.mean()), "lengths": n}
        if trajectory:
            out["trajectory"] = traj
        if attention:
            out["attention"] = attn
        return out


# the committing samplers: order name -> (ranking of `unmask_ordered`); "blocks" ranks by confidence
# within semi-autoregressive blocks of ddcap.block_size positions
_COMMIT_ORDERS = {"best_first": "confidence", "margin": "margin", "left_to_right": "left_to_right",
                  "blocks": "confidence"}


# ---- building, captioning, training ---------------------------------------------------------
def build_ddcap_captioner(cfg, train) -> DDCapCaptioner:
    """The model `cfg` describes, sized for the features and vocabulary of `train` (a `SplitFeatures`)."""
    c = cfg.captioner
    tok = train.tokenizer
    return DDCapCaptioner(tok.vocab_size, train.ids.shape[1], train.image.shape[1], train.grid.shape[2],
                          train.grid.shape[1], cfg.ddcap, pad_id=tok.pad_id, mask_id=tok.mask_id, width=c.width,
                          layers=c.layers, heads=c.heads, dropout=c.dropout)


def ddcap_caption_fn(tokenizer, drop_repeats: bool = False, **sample_kw):
    """caption_fn(model, cond) -> captions, for the training loop's validation and for evaluation."""
    from clipdiff_mini.captioners.decoding import sampling_caption_fn

    return sampling_caption_fn(tokenizer, drop_repeats, **sample_kw)


def train_ddcap(cfg, data, *, progress: bool = True, resume: bool = True, name: str = "ddcap"):
    """``trainer.train("ddcap", cfg, data)``: build and train DDCap, choosing its weights on data["val"].
    Returns (model, training record) (see `training.train_captioner`)."""
    from clipdiff_mini.captioners.trainer import train

    return train("ddcap", cfg, data, progress=progress, resume=resume, name=name)
