"""A tiny bidirectional transformer that predicts p(x_0 | x_t) for masked diffusion (notebook 06).

Token and position embeddings, a few pre-norm encoder layers (every position
sees every other: no causal mask), and a linear head over the vocabulary.
There is **no timestep input**: under mask-only diffusion the best prediction
of a masked token depends only on the visible tokens, not on when the mask
arrived (`discrete_toy` shows it exactly; MDLM drops the time input for the
same reason). DDCap's captioner (notebook 07) adds the picture and the
timestep; this one is unconditional, to make the mechanics visible first.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from clipdiff_mini.diffusion.discrete import carry_over_log_probs


class MaskedTokenDenoiser(nn.Module):
    def __init__(self, vocab_size: int, max_len: int, *, width: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, x_t: Tensor) -> Tensor:
        """Logits (B, L, V) of x_0 for ids x_t (B, L)."""
        h = self.tok(x_t) + self.pos[: x_t.shape[1]]  # (B, L, D)
        return self.head(self.norm(self.encoder(h)))  # (B, L, V)

    @torch.no_grad()
    def probs(self, x_t: Tensor, mask_id: int) -> Tensor:
        """p(x_0 | x_t) (B, L, V) with carry-over: [MASK] never predicted, visible tokens copied."""
        return carry_over_log_probs(self(x_t), x_t, mask_id).exp()
