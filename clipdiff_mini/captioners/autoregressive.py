"""The autoregressive baseline (notebook 08): a causal transformer decoder
that writes a caption word by word, conditioned on the same CLIP features as
the diffusion captioners, in the spirit of ClipCap (Mokady et al. 2021).

The model factorises a caption left to right,

    p(w | c) = prod_i p(w_i | w_<i, c),                                     (1)

and is trained by teacher forcing: the cross-entropy of every next token
given the true previous ones, ``-sum_i log p(w_i | w_<i, c)``, over the
tokens up to and including [EOS] (the [PAD] after it is ignored).

The network: token and learned position embeddings, `captioner.layers` of
the course's pre-norm blocks (`captioners.backbone.Block`, DDCap's, here
under the causal mask and without a timestep: GPT-2's ``x + Attn(LN x)``,
``x + MLP(LN x)``, MLP 4x wide) of `captioner.width` and `captioner.heads`,
a final LayerNorm and an output head **tied** to the token embedding (GPT-2
and ClipCap's GPT-2 do the same: fewer parameters, one vector per word).
The conditioning tokens c are the pooled CLIP vector mapped by one linear
layer to `prefix_length` tokens, plus the projected grid tokens when the
split has a grid (``captioner.grid``), each slot with a learned position.
`autoregressive.conditioning` says how the decoder reads them:

* ``"prefix"`` (ClipCap): they stand in front of the caption; the causal
  mask lets every caption position read all of them.
* ``"cross"`` (the original transformer decoder): the decoder's sequence is
  the caption alone; each block also cross-attends to them.

Decoding (`ARCaptioner.sample`), batched over pictures:

* greedy: ``w_i = argmax p(. | w_<i, c)``, one network pass per word;
* beam search of size k: per picture, the k partial captions of highest
  ``log p`` (sum of (1)) are extended by every word and the k best kept; a
  finished caption stays in the beam at its score (it continues with [PAD]
  at no cost); the final pick maximises ``log p / n^alpha``, n = generated
  tokens with [EOS], alpha = `length_penalty` (0: the most probable caption
  the beam found; 1: the best mean log-prob per token);
* key-value cache: under a causal mask the keys and values of earlier
  positions never change, so each layer keeps them and a step feeds only the
  newest token: step i costs one token's projections and MLP and an
  attention over i keys, instead of a full pass over the i tokens so far
  (``use_cache=False`` does that full pass, for the speed comparison; both
  give the same captions).

[PAD], [BOS] and [MASK] are never written: their logits are -inf in every
output (training and decoding alike, so the decoding distribution is the
trained one).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipdiff_mini.captioners.backbone import Block
from clipdiff_mini.captioners.base import check_heads
from clipdiff_mini.captioners.decoding import sampling_caption_fn

Tensor = torch.Tensor
NEVER_WRITTEN = ("pad", "bos", "mask")  # special tokens the decoder never outputs


class ARCaptioner(nn.Module):
    """p(w_i | w_<i, image), eq. (1) of the module docstring; see there for the architecture.

    ``forward(ids, image, grid)`` returns teacher-forced logits (B, L, V):
    row i is the distribution of the token after ids[:, i].
    `special_ids` is the tokenizer's ``special_ids`` ({"pad", "bos", "eos", "mask", ...}).
    """

    def __init__(self, vocab_size: int, max_len: int, image_dim: int, grid_dim: int, acfg, *, width: int,
                 layers: int, heads: int, dropout: float = 0.0, n_grid: int = 0, special_ids: dict[str, int]):
        super().__init__()
        check_heads(width, heads)
        if acfg.conditioning not in ("prefix", "cross"):
            raise ValueError(f"autoregressive.conditioning={acfg.conditioning!r}; allowed: 'prefix', 'cross'")
        self.acfg, self.vocab_size, self.max_len, self.width = acfg, vocab_size, max_len, width
        self.pad_id, self.bos_id, self.eos_id = special_ids["pad"], special_ids["bos"], special_ids["eos"]
        never = torch.zeros(vocab_size, dtype=torch.bool)
        never[[special_ids[k] for k in NEVER_WRITTEN if k in special_ids]] = True
        self.register_buffer("never", never, persistent=False)  # (V,)
        self.is_cross = acfg.conditioning == "cross"
        self.n_pooled = acfg.prefix_length
        self.n_cond = self.n_pooled + n_grid  # conditioning tokens: pooled slots, then grid cells
        self.image_proj = nn.Linear(image_dim, self.n_pooled * width)
        self.grid_proj = nn.Linear(grid_dim, width) if n_grid > 0 else None
        self.cond_pos = nn.Embedding(self.n_cond, width)  # which slot / grid cell a conditioning token is
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(max_len, width)  # caption positions
        for emb in (self.cond_pos, self.tok, self.pos):
            nn.init.normal_(emb.weight, std=0.02)  # GPT-2's initialisation
        self.drop = nn.Dropout(dropout)
        # the course's block (captioners/backbone.py) under the causal mask, no timestep
        self.blocks = nn.ModuleList(Block(width, heads, dropout, adaptive=False, cross=self.is_cross)
                                    for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)

    # ---- the network ------------------------------------------------------------------------
    def conditioning(self, image: Tensor, grid: Tensor | None = None) -> Tensor:
        """The conditioning tokens c (B, n_cond, W) of pooled features image (B, Di) and grid (B, P, Dg)."""
        B = image.shape[0]
        toks = [self.image_proj(image).view(B, self.n_pooled, self.width)]  # (B, k, W)
        if self.grid_proj is not None:
            if grid is None or grid.shape[1] != self.n_cond - self.n_pooled:
                raise ValueError(f"this captioner reads {self.n_cond - self.n_pooled} grid tokens; "
                                 f"got {None if grid is None else tuple(grid.shape)}")
            toks.append(self.grid_proj(grid))  # (B, P, W)
        return torch.cat(toks, 1) + self.cond_pos.weight  # (B, n_cond, W)

    def memory(self, c: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each block's cross-attention keys and values (B, H, n_cond, d) of c: computed once per caption."""
        return [b.cross_attn.keys_values(c) for b in self.blocks]

    def decode(self, ids: Tensor, c: Tensor, start: int = 0, caches: list[dict] | None = None,
               memory: list | None = None) -> Tensor:
        """Logits (B, T, V) of the token after each of ids (B, T), caption tokens at positions start..start+T-1.

        c (B, n_cond, W): conditioning tokens (prefix: fed in front of the caption when start == 0);
        caches: one dict per block, the keys and values of earlier positions (None: no cache; then start
        must be 0); memory: the cross-attention keys and values per block (None: computed from c)."""
        T = ids.shape[1]
        h = self.tok(ids) + self.pos.weight[start:start + T]  # (B, T, W)
        if not self.is_cross and start == 0:
            h = torch.cat([c, h], 1)  # (B, n_cond + T, W)
        if self.is_cross and memory is None:
            memory = self.memory(c)
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h, _ = block(h, None if memory is None else memory[i], None, None, False,
                         cache=None if caches is None else caches[i], causal=True)
        h = self.ln_f(h[:, h.shape[1] - T:])  # (B, T, W): the caption positions
        logits = h @ self.tok.weight.t()  # (B, T, V): head tied to the token embedding
        return logits.masked_fill(self.never, float("-inf"))

    def forward(self, ids: Tensor, image: Tensor, grid: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, L, V) for ids (B, L) that start with [BOS]."""
        return self.decode(ids, self.conditioning(image, grid))

    # ---- training ---------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Teacher-forced next-token cross-entropy -mean_i log p(w_i | w_<i, c) over the tokens after [BOS]
        up to and including [EOS] (the [PAD] after it ignored) on a batch {"ids" (B, L), "image", "grid"}.
        `generator` is unused (no noise to draw); the CLIP text feature is not read."""
        ids = batch["ids"]  # (B, L)
        logits = self(ids[:, :-1], batch["image"], batch.get("grid"))  # (B, L-1, V)
        target = ids[:, 1:]  # (B, L-1)
        keep = target != self.pad_id  # (B, L-1)
        # only the kept rows: an ignored row's target [PAD] has logit -inf
        ce = F.cross_entropy(logits[keep], target[keep])
        with torch.no_grad():
            acc = (logits[keep].argmax(-1) == target[keep]).float().mean()
        return ce, {"ce": ce.item(), "token_accuracy": acc.item(), "loss": ce.item()}

    @torch.no_grad()
    def sequence_logprob(self, ids: Tensor, cond: dict[str, Tensor]) -> Tensor:
        """log p(w | c) (B,) of captions ids (B, L) = [BOS] w.. [EOS] [PAD].. under eq. (1): the sum over the
        tokens after [BOS] up to [EOS] (all of them when a caption has no [EOS]). For scoring candidates."""
        logp = self(ids[:, :-1], cond["image"], cond.get("grid")).log_softmax(-1)  # (B, L-1, V)
        target = ids[:, 1:]  # (B, L-1)
        tok = logp.gather(-1, target[..., None])[..., 0]  # (B, L-1)
        ended_before = (target == self.eos_id).long().cumsum(1) - (target == self.eos_id).long()  # EOS earlier
        return tok.masked_fill(ended_before > 0, 0.0).sum(1)  # (B,)

    # ---- decoding ---------------------------------------------------------------------------
    def _start(self, cond: dict[str, Tensor], rows: int, max_len: int, prompt: Tensor | None):
        """Conditioning tokens (B*rows, n, W) and the id buffer (B*rows, max_len): [BOS] (or the prompt), [PAD]s."""
        c = self.conditioning(cond["image"], cond.get("grid")).repeat_interleave(rows, 0)  # (N, n_cond, W)
        ids = torch.full((c.shape[0], max_len), self.pad_id, dtype=torch.long, device=c.device)  # (N, max_len)
        if prompt is None:
            ids[:, 0] = self.bos_id
            return c, ids, 1
        if prompt.shape[1] >= max_len:
            raise ValueError(f"a prompt of {prompt.shape[1]} tokens leaves no room in max_len={max_len}")
        ids[:, :prompt.shape[1]] = prompt.to(c.device).repeat_interleave(rows, 0)
        return c, ids, prompt.shape[1]

    def _next_logits(self, ids: Tensor, t: int, t0: int, c: Tensor, caches, memory) -> Tensor:
        """Logits (N, V) of token t given ids[:, :t]: with a cache only the new tokens go in."""
        if caches is None:  # the whole caption so far, every step
            return self.decode(ids[:, :t], c)[:, -1]
        if t == t0:  # first step: the conditioning (prefix) and [BOS] / the prompt
            return self.decode(ids[:, :t], c, 0, caches, memory)[:, -1]
        return self.decode(ids[:, t - 1:t], c, t - 1, caches, memory)[:, -1]

    @torch.no_grad()
    def greedy(self, cond: dict[str, Tensor], max_len: int, use_cache: bool = True,
               prompt: Tensor | None = None) -> tuple[Tensor, int, Tensor]:
        """w_i = argmax p(. | w_<i, c) until [EOS] or max_len; returns (ids (B, max_len), passes, log p (B,))."""
        c, ids, t0 = self._start(cond, 1, max_len, prompt)
        B = ids.shape[0]
        caches = [{} for _ in self.blocks] if use_cache else None
        memory = self.memory(c) if self.is_cross and use_cache else None
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        score = torch.zeros(B, device=ids.device, dtype=c.dtype)
        passes = 0
        for t in range(t0, max_len):
            logp = self._next_logits(ids, t, t0, c, caches, memory).log_softmax(-1)  # (B, V)
            passes += 1
            nxt = logp.argmax(-1)  # (B,)
            score += torch.where(done, 0.0, logp.gather(-1, nxt[:, None])[:, 0])
            ids[:, t] = torch.where(done, self.pad_id, nxt)  # a finished caption is padded
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        return ids, passes, score

    @torch.no_grad()
    def beam_search(self, cond: dict[str, Tensor], beam: int, max_len: int, use_cache: bool = True,
                    length_penalty: float = 0.0, prompt: Tensor | None = None) -> tuple[Tensor, int, Tensor]:
        """Beam search of size `beam` (module docstring); returns (ids (B, max_len), passes, log p (B,)) of
        each picture's pick, the caption maximising log p / n^length_penalty among the final beam."""
        k, V = beam, self.vocab_size
        c, ids, t0 = self._start(cond, k, max_len, prompt)  # rows: picture b's beams are b*k .. b*k + k-1
        N = ids.shape[0]
        B = N // k
        dev = ids.device
        caches = [{} for _ in self.blocks] if use_cache else None
        memory = self.memory(c) if self.is_cross and use_cache else None
        # all k copies start identical: only the first is live, or the beam would hold k copies of one caption
        score = torch.full((B, k), float("-inf"), device=dev, dtype=c.dtype)
        score[:, 0] = 0.0
        score = score.view(N)  # (N,)
        done = torch.zeros(N, dtype=torch.bool, device=dev)
        n_gen = torch.zeros(N, device=dev, dtype=c.dtype)  # generated tokens, [EOS] included
        pad_only = torch.full((V,), float("-inf"), device=dev, dtype=c.dtype)
        pad_only[self.pad_id] = 0.0  # a finished caption continues with [PAD] at no cost
        base = torch.arange(B, device=dev)[:, None] * k  # (B, 1)
        passes = 0
        for t in range(t0, max_len):
            logp = self._next_logits(ids, t, t0, c, caches, memory).log_softmax(-1)  # (N, V)
            passes += 1
            logp = torch.where(done[:, None], pad_only, logp)
            cand = (score[:, None] + logp).view(B, k * V)  # (B, k V)
            top, idx = cand.topk(k, dim=-1)  # (B, k)
            origin = (base + idx // V).view(N)  # the row each new hypothesis extends
            token = (idx % V).view(N)
            ids = ids[origin]
            ids[:, t] = token
            n_gen = n_gen[origin] + (~done[origin]).to(n_gen.dtype)
            done = done[origin] | (token == self.eos_id)
            score = top.view(N)
            done |= torch.isinf(score)  # dead rows: fewer live candidates than k
            if caches is not None:
                for cache in caches:
                    cache["k"], cache["v"] = cache["k"][origin], cache["v"][origin]
            if bool(done.all()):
                break
        final = (score / n_gen.clamp(min=1) ** length_penalty).view(B, k)
        rows = base[:, 0] + final.argmax(-1)  # (B,)
        return ids[rows], passes, score[rows]

    @torch.no_grad()
    def sample(self, cond: dict[str, Tensor], *, beam: int | None = None, max_len: int | None = None,
               use_cache: bool | None = None, length_penalty: float | None = None,
               prompt: Tensor | None = None) -> dict[str, Any]:
        """Captions of the pictures of `cond` {"image" (B, Di), "grid" (B, P, Dg)}; unset arguments come
        from `autoregressive` (beam 1 = greedy). `prompt` (B, T0): ids that start every caption ([BOS]
        first; all of one length), continued by the model (infilling given the left context).

        Returns {"ids" (B, max_len): [BOS] w.. [EOS] [PAD].. (no [EOS] when max_len is reached first),
        "passes": network passes per caption (decoding steps; every step is one pass over the batch),
        "logprob" (B,): log p of each caption under eq. (1)}."""
        a = self.acfg
        beam = a.beam if beam is None else beam
        max_len = self.max_len if max_len is None else max_len
        use_cache = a.use_cache if use_cache is None else use_cache
        length_penalty = a.length_penalty if length_penalty is None else length_penalty
        if not 2 <= max_len <= self.max_len:
            raise ValueError(f"max_len={max_len}: use 2..{self.max_len} (the positions the model was built for)")
        if beam < 1:
            raise ValueError(f"beam={beam}: use 1 (greedy) or more")
        if beam == 1:
            ids, passes, logp = self.greedy(cond, max_len, use_cache, prompt)
        else:
            ids, passes, logp = self.beam_search(cond, beam, max_len, use_cache, length_penalty, prompt)
        return {"ids": ids, "passes": passes, "logprob": logp}


# ---- building, captioning, training ---------------------------------------------------------
def build_ar_captioner(cfg, train) -> ARCaptioner:
    """The model `cfg` describes, sized for the features and vocabulary of `train` (a `SplitFeatures`)."""
    c = cfg.captioner
    return ARCaptioner(train.tokenizer.vocab_size, train.ids.shape[1], train.image.shape[1], train.grid.shape[2],
                       cfg.autoregressive, width=c.width, layers=c.layers, heads=c.heads, dropout=c.dropout,
                       n_grid=train.grid.shape[1], special_ids=train.tokenizer.special_ids)


def ar_caption_fn(tokenizer, drop_repeats: bool = False, **sample_kw):
    """caption_fn(model, cond) -> captions, for the training loop's validation and for evaluation;
    `sample_kw` go to `ARCaptioner.sample` (beam, max_len, use_cache, length_penalty)."""
    return sampling_caption_fn(tokenizer, drop_repeats, **sample_kw)


def training_config(cfg):
    """The decoder's own step budget (`trainer.train` runs this before training):
    ``autoregressive.train_steps``, when set, replaces ``captioner.train_steps`` (its schedule ends there)."""
    if cfg.autoregressive.train_steps:
        return cfg.replace({"captioner.train_steps": cfg.autoregressive.train_steps})
    return cfg


def train_autoregressive(cfg, data, *, progress: bool = True, resume: bool = True, name: str = "autoregressive"):
    """``trainer.train("autoregressive", cfg, data)``: build and train the autoregressive captioner, choosing
    its weights on data["val"] (validated with the configured decoding). Returns (model, training record)."""
    from clipdiff_mini.captioners.trainer import train

    return train("autoregressive", cfg, data, progress=progress, resume=resume, name=name)
