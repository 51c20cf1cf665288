# %% [markdown]
# # 03 · Embeddings and rounding: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 03. This notebook
# runs on its own: it rebuilds the tokenised training captions and the
# random embedding table of section 1 (nothing is trained), then answers
# each exercise with the derivation, the code, and an `assert`.

# %%
import math
import os

import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.data import build_tokenizer, load_split
from clipdiff_mini.diffusion import default_temperature, embed_tokens, rounding_nll, roundtrip_accuracy, sample_x0
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"

# %%
cfg = get_config(PROFILE)
set_seed(cfg.seed)
torch.set_num_threads(1)  # small tensors: one thread is faster
d = cfg.diffusion
sigma0, tau = d.sigma0, default_temperature(d.sigma0)
train = load_split(cfg, "train", progress=False)
tok = build_tokenizer(cfg, train)
L = cfg.data.max_caption_len
ids = tok.batch_encode(train.captions(), max_len=L)  # (N, L)
V = tok.vocab_size
E0 = torch.randn(V, d.embed_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # section 1's table
normal = torch.distributions.Normal
print(f"profile {cfg.profile}: V = {V}, L = {L}, D = {d.embed_dim}, sigma0 = {sigma0}")

# %% [markdown]
# **Exercise 3.1** The distance between two rows for a 99 % round trip.
#
# The round trip succeeds with probability $\Phi(d/2\sigma_0)$, so we need
# $d/2\sigma_0 = \Phi^{-1}(0.99)$, that is
#
# $$\frac{d}{\sigma_0} = 2\,\Phi^{-1}(0.99).$$
#
# The printed value below is between the $2\sigma_0$ and $6\sigma_0$ of
# section 2: two words can be told apart reliably once their rows are
# several blur widths apart, which is what the rounding term pushes towards.
# The check samples $x = e_a + \sigma_0 z$ as section 2 does (five standard errors).

# %%
ratio_99 = 2 * normal(0.0, 1.0).icdf(torch.tensor(0.99, dtype=torch.float64)).item()
E2 = torch.zeros(2, d.embed_dim, dtype=torch.float64)
E2[1, 0] = ratio_99 * sigma0
mc = roundtrip_accuracy(E2, sigma0, n_per_word=50_000, generator=torch.Generator().manual_seed(6))
se = math.sqrt(0.99 * 0.01 / 100_000)
print(f"d / sigma0 = {ratio_99:.4f}; sampled round-trip accuracy {mc:.4f} (tolerance {5 * se:.4f})")
assert abs(mc - 0.99) < 5 * se

# %% [markdown]
# **Exercise 3.2** The rounding term of a collapsed table.
#
# If every row is the same vector $e$, then $\lVert x - e_v\rVert^2$ is the same
# for every word $v$, the softmax is uniform, and $p(w_i\mid x_{0,i}) = 1/V$ at
# every position, whatever $x_0$ is. Over a caption of $L$ positions
#
# $$-\log p(w\mid x_0) = L\log V ,$$
#
# a **finite** value, and the largest the term can be on average: for any
# table, the expected term at one position is $\log V$ minus the KL divergence
# from that word's blur $\mathcal N(e_w, \sigma_0^2 I)$ to the average of all $V$
# blurs, and a KL divergence is never negative. So the rounding term rises
# from about 0 for well-separated rows to $L\log V$ for a collapsed table,
# while the regression terms fall (section 3): the two pull in opposite
# directions, which is how the rounding term resists collapse.

# %%
behaviour, limit = "finite", L * math.log(V)
for c in (1.0, 0.1, 0.01, 0.0):
    E_c = E0[:1] + c * (E0 - E0[:1])  # (V, D) shrunk towards the first row
    x_c = sample_x0(embed_tokens(ids[:8], E_c), sigma0, generator=torch.Generator().manual_seed(7))
    nll_c = rounding_nll(x_c, ids[:8], E_c, temperature=tau)  # (8,)
    print(f"rows shrunk by {c:5.2f}: rounding term per caption {nll_c.mean():.4f} (L log V = {limit:.4f})")
assert torch.allclose(nll_c, torch.full_like(nll_c, limit), rtol=1e-9)

# %% [markdown]
# **Exercise 3.3** The rounding term from a tied linear head.
#
# Expanding the square, $-\lVert x - e_v\rVert^2 = 2\,x\cdot e_v - \lVert e_v\rVert^2 - \lVert x\rVert^2$.
# The last term is the same for every $v$, and a softmax does not change
# when the same number is added to every logit, so the logits
# $(2\,x\cdot e_v - \lVert e_v\rVert^2)/\tau$ give the same $p(w\mid x)$. In code: one
# matrix product $x E^\top$, a bias $-\lVert e_v\rVert^2$, `log_softmax`, and the
# log-probability of each position's word, summed over the caption.

# %%
def rounding_nll_dot(x, ids_, E, tau_):
    """-log p(w | x) per caption from the logits (2 x.e_v - |e_v|^2) / tau_; x (B, L, D), ids_ (B, L) -> (B,)."""
    logits = (2 * x @ E.t() - (E * E).sum(-1)) / tau_  # (B, L, V)
    logp = torch.log_softmax(logits, dim=-1)  # (B, L, V)
    return -logp.gather(-1, ids_[..., None])[..., 0].sum(-1)  # (B,)


blur = 1.0
x_b = sample_x0(embed_tokens(ids[:8], E0), blur, generator=torch.Generator().manual_seed(8))  # (8, L, D)
log_lik_b = normal(E0[None, None], blur).log_prob(x_b[:, :, None, :]).sum(-1)  # (8, L, V)
bayes_b = -(log_lik_b.gather(-1, ids[:8, :, None])[..., 0] - torch.logsumexp(log_lik_b, -1)).sum(-1)  # (8,)
ours_b = rounding_nll_dot(x_b, ids[:8], E0, default_temperature(blur))
print(f"per caption: tied head {ours_b[:3].numpy().round(4)}, Bayes {bayes_b[:3].numpy().round(4)}")
assert torch.allclose(ours_b, bayes_b, rtol=1e-9, atol=1e-9)
