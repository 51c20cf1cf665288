"""The course's transformer block, written once: pre-LayerNorm self-attention, an optional
cross-attention to a memory, an MLP (Vaswani et al. 2017, with GPT-2's pre-norm placement), and
adaptive LayerNorm on a timestep (DDCap, after DiT).

One network for the three captioners, told apart by their masks and their conditioning:

* DDCap (notebook 07): bidirectional, or the concentrated mask (a per-sample boolean mask); the CLIP
  memory as cross-attention or as prefix tokens; adaptive LayerNorm on the timestep;
* the autoregressive decoder (notebook 06, section 7): the causal mask, with a key-value cache for
  decoding word by word; the CLIP memory as prefix tokens or cross-attention; no timestep;
* CLIP-DiffusionLM (notebook 05): bidirectional over prefix tokens, its default
  (``continuous.backbone = "course"``; the paper's DistilBERT is the other choice).

Attention (`attend`) goes through `F.scaled_dot_product_attention` (one fused call where the device has
a kernel for it) with an optional per-sample boolean mask or the causal mask. The module is our own
rather than `nn.MultiheadAttention` so that the attention weights can be returned for the attention maps
(computed beside the fused output, only when asked for), a memory's keys and values passed in
precomputed (computed once per caption, not once per pass) and a causal layer's keys and values kept
from one decoding step to the next (the cache: `nn.MultiheadAttention` does not expose them).
Dropout (``captioner.dropout``, 0 in every profile) acts on each sub-layer's output, not on the
attention weights, so the fused kernel serves training too.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None, need_weights: bool = False,
           causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T / sqrt(d) + M) v (Vaswani et al. 2017, eq. 1) for q (B, H, Lq, d), k, v (B, H, Lk, d),
    with M = -inf where `allowed` (B, Lq, Lk) is False (every row keeps at least one key: under the
    concentrated mask the query's own position), or with `causal` where a key lies after its query: the
    Lq queries are the last Lq of the Lk positions (the earlier ones are cached keys), so query t sees keys
    0 .. Lk - Lq + t. Returns (out (B, H, Lq, d), weights (B, H, Lq, Lk) or None).

    The output always comes from `F.scaled_dot_product_attention`; with `need_weights` the softmax weights
    are also computed by hand beside it (for the attention maps), so asking for them never changes the output."""
    Lq, Lk = q.shape[2], k.shape[2]
    if causal and allowed is not None:
        raise ValueError("attend: give a per-sample mask or causal=True, not both")
    mask = None if allowed is None else allowed[:, None]  # (B, 1, Lq, Lk), True = may attend
    if causal and Lq == Lk and not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, Lq, d)
        return out, None
    if causal and Lq > 1:  # (a single query is the newest position: it sees every key)
        mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)  # (Lq, Lk)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Lq, d)
    if not need_weights:
        return out, None
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return out, scores.softmax(-1)


class Attention(nn.Module):
    """Multi-head attention of queries x (B, Lq, W) over keys/values m (B, Lk, W) with an optional
    boolean mask (B, Lq, Lk) of allowed pairs or the causal mask; returns (out, weights (B, Lq, Lk) mean
    over heads or None). `kv`: the keys and values of m precomputed by `keys_values` (then m is not read).
    `cache`: a dict that holds this layer's keys and values of the earlier positions ({} at the first
    step); the new ones are appended to it and attended over with them (causal decoding)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def keys_values(self, m: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, Lk, d) each of m (B, Lk, W)."""
        B, Lk, W = m.shape
        k, v = self.kv(m).view(B, Lk, 2, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, m: Tensor | None, allowed: Tensor | None = None, need_weights: bool = False,
                kv: tuple[Tensor, Tensor] | None = None, cache: dict | None = None, causal: bool = False):
        B, Lq, W = x.shape
        H = self.heads
        q = self.q(x).view(B, Lq, H, W // H).transpose(1, 2)  # (B, H, Lq, d)
        k, v = self.keys_values(m) if kv is None else kv  # (B, H, Lk, d) each
        if cache is not None:
            if "k" in cache:  # the earlier positions' keys and values, then the new ones
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)  # (B, H, S, d)
            cache["k"], cache["v"] = k, v
        out, weights = attend(q, k, v, allowed, need_weights, causal)  # (B, H, Lq, d), (B, H, Lq, Lk)
        out = out.transpose(1, 2).reshape(B, Lq, W)  # (B, Lq, W)
        return self.out(out), (weights.mean(1) if need_weights else None)


class Block(nn.Module):
    """Pre-norm block: self-attention over the caption, cross-attention to the CLIP memory (``cross``), MLP.
    With a timestep, each LayerNorm is adaptive: x_hat (1 + scale(t)) + shift(t) (DDCap's AdaLN).
    Without ``cross`` (prefix conditioning) the memory tokens sit in the sequence and the block is
    self-attention and MLP only."""

    def __init__(self, width: int, heads: int, dropout: float, adaptive: bool, cross: bool = True):
        super().__init__()
        n_norms = 3 if cross else 2
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=not adaptive) for _ in range(n_norms))
        self.ada = nn.Linear(width, 2 * n_norms * width) if adaptive else None
        if self.ada is not None:  # start as a plain LayerNorm
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)
        self.self_attn = Attention(width, heads)
        self.cross_attn = Attention(width, heads) if cross else None
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def _norm(self, i: int, x: Tensor, mod: Tensor | None) -> Tensor:
        h = self.norms[i](x)
        if mod is None:
            return h
        scale, shift = mod[:, None, 2 * i * x.shape[-1]:(2 * i + 2) * x.shape[-1]].chunk(2, -1)  # (B, 1, W) each
        return h * (1 + scale) + shift

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor] | None, allowed: Tensor | None,
                temb: Tensor | None, need_weights: bool, cache: dict | None = None, causal: bool = False):
        """x (B, L, W); memory_kv: this block's cross-attention keys and values (B, H, P, d) of the
        memory (None without cross-attention); `allowed` (B, L, L) or `causal`: the self-attention mask;
        `cache`: the self-attention's keys and values of earlier positions (`Attention`). Returns
        (x, weights): the cross-attention weights (B, L, P), or without cross-attention the self-attention
        weights (B, S, S) over the whole sequence (memory and caption), when asked."""
        mod = self.ada(temb) if self.ada is not None and temb is not None else None  # (B, 2 n_norms W)
        h = self._norm(0, x, mod)
        a, w = self.self_attn(h, h, allowed, need_weights and self.cross_attn is None, cache=cache, causal=causal)
        x = x + self.drop(a)
        if self.cross_attn is not None:
            a, w = self.cross_attn(self._norm(1, x, mod), None, None, need_weights, kv=memory_kv)
            x = x + self.drop(a)
        x = x + self.drop(self.mlp(self._norm(len(self.norms) - 1, x, mod)))
        return x, w
