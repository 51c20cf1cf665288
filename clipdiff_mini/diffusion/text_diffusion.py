"""A small text-only Diffusion-LM: learned word embeddings, a transformer
denoiser that predicts x0, the rounding term, and the clamping trick.

The objective (Li et al. 2022, x0-parameterisation, the paper's "L_simple^e2e"),
written with the course's indexing (t = 1..T, x_0 the clean embedding)::

    x0  ~ N(EMB(w), sigma0^2 I)                           (embedding step)
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps           (forward process)
    L   = E_t [ |f(x_t, t) - x0|^2       for t >= 2         (regression)
                |f(x_1, 1) - EMB(w)|^2   for t = 1 ]        (the t = 1 term)
          + |sqrt(abar_T) x0|^2                              (prior term)
          + lambda_eff * (-log p(w | x0))                    (rounding term)

with t uniform on 1..T, squared errors averaged over positions and
coordinates (as Diffusion-LM's code does) and the rounding term averaged over
positions, so that ``lambda = 1`` weighs one token's log-likelihood like one
coordinate's squared error. ``p(w | x0)`` is the tied softmax of
`clipdiff_mini.diffusion.text_embedding` (negative squared distances, temperature
2 sigma0^2). Every position of the fixed-length sequence, padding included,
is modelled: the sampler has to write ``[PAD]`` after ``[EOS]`` to end a
caption, as in Diffusion-LM, so padding is a word like any other here.
(`rounding_nll` can leave padding out with a mask; the trainer does not.)
With ``cfg.diffusion.rounding_on = "prediction"`` the rounding term reads the
denoiser's output f(x_t, t) instead of x0, as CLIP-DiffusionLM's "certainty"
term does; then it trains the denoiser as well as the embeddings.

**Adaptive ratio.** With ``adaptive=True`` the weight is rescaled each step to
keep the rounding term at a fixed share of the loss::

    m_k   = beta m_{k-1} + (1 - beta) stop_grad(L_reg,k)      (L_reg = regression + prior)
    n_k   = beta n_{k-1} + (1 - beta) stop_grad(L_round,k)    (m_1, n_1 = first values)
    lambda_eff,k = lambda * clip(m_k / n_k, 1/cap, cap)

with beta = 0.9 and cap = 100. Then ``lambda_eff * L_round ~ lambda * L_reg``:
the rounding term carries about lambda / (1 + lambda) of the loss whatever
the two terms' natural scales. The clip stops the weight from exploding when
the rounding loss is ~0 (well-separated embeddings).
Without it, ``lambda_eff = lambda``; ``rounding_weight = 0`` switches the
rounding term off.

Embeddings have no weight decay (decay alone would shrink them, the very
collapse this module is used to study).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from clipdiff_mini.atomic_io import torch_save
from clipdiff_mini.diffusion.text_embedding import (default_temperature, embedding_stats, make_clamp_fn, nearest_tokens,
                                          rounding_nll, roundtrip_accuracy)

Tensor = torch.Tensor

ROUNDING_ON = ("x0", "prediction")  # what the rounding term reads words from
ADAPTIVE_BETA = 0.9  # EMA decay of the two loss magnitudes
ADAPTIVE_CAP = 100.0  # lambda_eff / lambda stays in [1/cap, cap]


# ---- the denoiser --------------------------------------------------------------
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of integer timesteps t (B,) -> (B, dim) (Transformer / DDPM).

    (Hand-written: transformers has no standalone timestep embedding and
    diffusers is not part of the course's stack.)
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (B, dim)


class TextDenoiser(nn.Module):
    """f(x_t, t) -> x0_hat for sequences of word vectors (B, L, D).

    A randomly initialised DistilBERT (transformers' `DistilBertModel`, fed
    through ``inputs_embeds``; it adds its own position embeddings) between an
    up-projection D -> width and a down-projection width -> D, with a
    timestep embedding added to every position. No attention mask: padding
    is part of what is generated.
    """

    def __init__(self, embed_dim: int, max_len: int, width: int = 128, layers: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        from transformers import DistilBertConfig, DistilBertModel

        if width % heads:
            raise ValueError(f"denoiser width {width} must be divisible by the number of heads {heads}")
        self.width = width
        self.up = nn.Sequential(nn.Linear(embed_dim, width), nn.Tanh(), nn.Linear(width, width))
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        config = DistilBertConfig(vocab_size=1, dim=width, n_layers=layers, n_heads=heads, hidden_dim=4 * width,
                                  max_position_embeddings=max_len, dropout=dropout, attention_dropout=dropout)
        self.encoder = DistilBertModel(config)
        self.down = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, embed_dim))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        h = self.up(x_t) + self.time(timestep_embedding(t, self.width))[:, None, :]  # (B, L, W)
        h = self.encoder(inputs_embeds=h).last_hidden_state  # (B, L, W)
        return self.down(h)  # (B, L, D)


class TextDiffusionLM(nn.Module):
    """The learned embedding table EMB (V, D) and the denoiser, trained jointly."""

    def __init__(self, vocab_size: int, embed_dim: int, max_len: int, *, width: int, layers: int, heads: int,
                 init_std: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        nn.init.normal_(self.embedding.weight, std=init_std)  # Diffusion-LM: N(0, 1)
        self.denoiser = TextDenoiser(embed_dim, max_len, width, layers, heads, dropout)
        self.max_len = max_len

    @property
    def E(self) -> Tensor:
        return self.embedding.weight  # (V, D)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.denoiser(x_t, t)


# ---- the objective -------------------------------------------------------------
def diffusion_lm_losses(model: TextDiffusionLM, sched, ids: Tensor, *, sigma0: float,
                        temperature: float | None = None, t: Tensor | None = None,
                        generator: torch.Generator | None = None,
                        rounding_mask: Tensor | None = None, rounding_on: str = "x0") -> dict[str, Tensor]:
    """The terms of the Diffusion-LM objective for a batch of token ids (B, L).

    Returns batch means: ``mse`` (regression, the t = 1 term included),
    ``prior``, ``rounding`` (per-token -log p(w | x0), `rounding_mask`
    selects positions, None = all) and ``reg = mse + prior``.
    ``t`` (B,) fixes the timesteps (default uniform on 1..T).
    ``rounding_on``: "x0" rounds the sampled x0 (Diffusion-LM; only the
    embeddings get its gradient) or "prediction" rounds the denoiser's output
    f(x_t, t) (CLIP-DiffusionLM's "certainty" term; it trains the denoiser too).
    """
    if rounding_on not in ROUNDING_ON:
        raise ValueError(f"rounding_on must be one of {ROUNDING_ON}, got {rounding_on!r}")
    from clipdiff_mini.diffusion.gaussian_diffusion import q_sample

    B, L = ids.shape
    device = ids.device
    emb = model.embedding(ids)  # (B, L, D) EMB(w)
    x0 = emb + sigma0 * torch.randn(emb.shape, generator=generator, device=device)  # (B, L, D)
    if t is None:
        t = torch.randint(1, sched.T + 1, (B,), generator=generator, device=device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    x_t = q_sample(sched, x0, t, noise=noise)  # (B, L, D)
    pred = model(x_t, t)  # (B, L, D)
    target = torch.where((t == 1)[:, None, None], emb, x0)  # the t = 1 term regresses onto EMB(w)
    mse = ((pred - target) ** 2).mean(dim=(1, 2))  # (B,)
    abar_T = float(sched.alpha_bar[sched.T])
    prior = (abar_T * x0 ** 2).mean(dim=(1, 2))  # (B,) |sqrt(abar_T) x0|^2, the KL to N(0, I) up to constants
    tau = default_temperature(sigma0) if temperature is None else temperature
    rounded = x0 if rounding_on == "x0" else pred
    rounding = rounding_nll(rounded, ids, model.E, temperature=tau, mask=rounding_mask, reduction="mean")  # (B,)
    out = {"mse": mse.mean(), "prior": prior.mean(), "rounding": rounding.mean()}
    out["reg"] = out["mse"] + out["prior"]
    return out


class AdaptiveRoundingWeight:
    """lambda_eff = lambda * clip(EMA(L_reg) / EMA(L_round), 1/cap, cap) (see the module docstring)."""

    def __init__(self, weight: float, adaptive: bool, beta: float = ADAPTIVE_BETA, cap: float = ADAPTIVE_CAP):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.weight, self.adaptive, self.beta, self.cap = float(weight), bool(adaptive), float(beta), float(cap)
        self.m: float | None = None
        self.n: float | None = None

    def __call__(self, reg: float, rounding: float) -> float:
        """Update the running magnitudes with this step's (detached) values; return lambda_eff."""
        if not self.adaptive or self.weight == 0.0:
            return self.weight
        b = self.beta
        self.m = reg if self.m is None else b * self.m + (1 - b) * reg
        self.n = rounding if self.n is None else b * self.n + (1 - b) * rounding
        ratio = self.m / max(self.n, 1e-12)
        return self.weight * min(max(ratio, 1.0 / self.cap), self.cap)

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m, "n": self.n}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.m, self.n = d["m"], d["n"]


# ---- training ------------------------------------------------------------------
_SETTING_KEYS = ("schedule", "timesteps", "embed_dim", "sigma0", "rounding_weight", "rounding_on", "adaptive_rounding",
                 "embed_init_std", "denoiser_width", "denoiser_layers", "denoiser_heads", "batch_size", "lr")


def run_settings(cfg, vocab_size: int, max_len: int, data_tag: str = "") -> dict[str, Any]:
    """What identifies a training run (a checkpoint resumes only into the same settings)."""
    d = cfg.diffusion
    return {"seed": cfg.seed, "vocab_size": int(vocab_size), "max_len": int(max_len), "data": str(data_tag),
            **{k: getattr(d, k) for k in _SETTING_KEYS}}


def checkpoint_path(cfg, vocab_size: int, max_len: int, tag: str, data_tag: str = "") -> Path:
    """``<checkpoint_dir>/<profile>/text_dlm_<tag>_<hash of the settings>.pt``."""
    key = json.dumps(run_settings(cfg, vocab_size, max_len, data_tag), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cfg.path("checkpoint_dir") / cfg.profile / f"text_dlm_{tag}_{digest}.pt"


class TextDiffusionTrainer:
    """Train a `TextDiffusionLM` on token ids (N, L), log, checkpoint, resume, sample.

    Settings come from ``cfg.diffusion`` (schedule, timesteps, embed_dim,
    sigma0, rounding_weight, adaptive_rounding, embed_init_std, denoiser_*,
    train_steps, batch_size, lr, sample_steps) and ``cfg.seed``. All randomness
    of training (batches, t, noise) comes from the trainer's own generator,
    whose state is checkpointed, so a resumed run continues exactly where an
    uninterrupted one would be.

    Training runs in float32 on every device, also where ``cfg.precision``
    asks for bf16/fp16 elsewhere: the model is tiny, and the rounding logits
    are divided by 2 sigma0^2 = 0.02, where bf16's 8-bit mantissa would blur
    the differences between rows.

    ``ckpt_path``: if the file exists the trainer resumes from it (after
    checking it was written with the same settings, `run_settings`); `train`
    writes it atomically every ``ckpt_every`` steps and at the end.
    `checkpoint_path` names a file after the settings, so a changed setting
    starts a new run instead of clashing with an old file. ``data_tag`` names
    the training data (it is part of the settings).
    """

    def __init__(self, cfg, vocab_size: int, max_len: int, *, ckpt_path: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, data_tag: str = ""):
        from clipdiff_mini.diffusion.noise_schedules import make_schedule

        self.cfg = cfg if not overrides else cfg.replace(overrides)
        d = self.cfg.diffusion
        self.device = self.cfg.torch_device()
        self.sched = make_schedule(d.schedule, d.timesteps)
        self.vocab_size, self.max_len, self.data_tag = int(vocab_size), int(max_len), str(data_tag)
        with torch.random.fork_rng(devices=[]):  # initialise from cfg.seed without touching the global RNG
            torch.manual_seed(self.cfg.seed)
            self.model = TextDiffusionLM(vocab_size, d.embed_dim, max_len, width=d.denoiser_width,
                                         layers=d.denoiser_layers, heads=d.denoiser_heads,
                                         init_std=d.embed_init_std).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=d.lr, weight_decay=0.0)
        self.generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1)
        self.lam = AdaptiveRoundingWeight(d.rounding_weight, d.adaptive_rounding)
        self.temperature = default_temperature(d.sigma0)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._acc: dict[str, float] = {}  # sums of the loss terms since the last history row
        self._acc_n = 0
        self.ckpt_path = Path(ckpt_path) if ckpt_path else None
        if self.ckpt_path is not None and self.ckpt_path.exists():
            self.load(self.ckpt_path)

    # -- identity of a run, checked on resume
    def settings(self) -> dict[str, Any]:
        return run_settings(self.cfg, self.vocab_size, self.max_len, self.data_tag)

    def train(self, ids: Tensor, steps: int | None = None, *, log_every: int = 25, ckpt_every: int = 200,
              progress: bool = True, stats_exclude: list[int] | None = None) -> list[dict[str, float]]:
        """Train until ``self.step == steps`` (default cfg.diffusion.train_steps).

        ``ids`` (N, L) are the encoded training captions. Every ``log_every``
        steps a row goes to `history`: the loss terms, lambda_eff and the
        rounding term's share of the loss (averages over those steps), and the
        embedding diagnostics (mean norm, mean/min pairwise distance, spread,
        round-trip accuracy at sigma0) over the words in ``ids`` unless
        ``stats_exclude`` says otherwise.
        """
        from tqdm.auto import tqdm

        if ids.dim() != 2 or ids.shape[1] != self.max_len:
            raise ValueError(f"ids must be (N, {self.max_len}) token ids (the trainer's max_len), got {tuple(ids.shape)}")
        if int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"ids must lie in [0, {self.vocab_size}) (the trainer's vocabulary)")
        d = self.cfg.diffusion
        steps = d.train_steps if steps is None else int(steps)
        if stats_exclude is None:
            used = torch.zeros(self.vocab_size, dtype=torch.bool)
            used[ids.unique()] = True
            stats_exclude = torch.nonzero(~used).flatten().tolist()
        self._stats_exclude = stats_exclude
        data = ids.to(self.device)
        self.model.train()
        if self.step == 0 and not self.history:
            self._log(None, stats_exclude)
        bar = tqdm(total=steps, initial=min(self.step, steps), desc="text diffusion", disable=not progress)
        while self.step < steps:
            idx = torch.randint(0, data.shape[0], (d.batch_size,), generator=self.generator, device=self.device)
            terms = diffusion_lm_losses(self.model, self.sched, data[idx], sigma0=d.sigma0,
                                        temperature=self.temperature, generator=self.generator,
                                        rounding_on=d.rounding_on)
            lam = self.lam(terms["reg"].item(), terms["rounding"].item())
            loss = terms["reg"] + lam * terms["rounding"] if lam else terms["reg"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.step += 1
            bar.update(1)
            vals = {**{k: v.item() for k, v in terms.items()}, "loss": loss.item(), "lambda_eff": lam}
            vals["rounding_share"] = lam * vals["rounding"] / max(vals["loss"], 1e-12)  # weighted term / total
            for k, v in vals.items():  # averaged over the steps since the last row
                self._acc[k] = self._acc.get(k, 0.0) + v
            self._acc_n += 1
            if self.step % log_every == 0:  # multiples only, so a resumed run logs the same rows
                row = self._log({k: v / self._acc_n for k, v in self._acc.items()}, stats_exclude)
                self._acc, self._acc_n = {}, 0
                bar.set_postfix(loss=f"{row['loss']:.3f}", norm=f"{row['mean_norm']:.2f}")
            if self.ckpt_path is not None and (self.step % ckpt_every == 0 or self.step == steps):
                self.save(self.ckpt_path)
        bar.close()
        return self.history

    def _log(self, terms: dict[str, float] | None, exclude: list[int]) -> dict[str, float]:
        E = self.model.E.detach()
        g = torch.Generator(device=self.device).manual_seed(12345)  # fixed: comparable over steps, no effect on training
        row = {"step": self.step, **(terms or {}), **embedding_stats(E, exclude=exclude)}
        keep = [i for i in range(self.vocab_size) if i not in set(exclude)]
        row["roundtrip_acc"] = roundtrip_accuracy(E, self.cfg.diffusion.sigma0, 32, g,
                                                  ids=torch.tensor(keep, device=self.device))
        self.history.append(row)
        return row

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"settings": self.settings(), "step": self.step, "model": self.model.state_dict(),
                "opt": self.opt.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "lambda": self.lam.state_dict(), "history": self.history,
                "acc": (self._acc, self._acc_n)}

    def save(self, path: str | Path) -> None:
        """Write the whole training state atomically (never a half-written file)."""
        torch_save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["settings"] != self.settings():
            diff = {k: (state["settings"].get(k), v) for k, v in self.settings().items() if state["settings"].get(k) != v}
            raise ValueError(f"checkpoint {path} was trained with other settings {diff} (saved, now); "
                             "delete it or pass another ckpt_path")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors on any device
        torch.set_rng_state(state["torch_rng"].cpu())
        self.lam.load_state_dict(state["lambda"])
        self.step, self.history = state["step"], state["history"]
        self._acc, self._acc_n = dict(state["acc"][0]), state["acc"][1]

    # -- sampling
    @torch.no_grad()
    def sample(self, n: int, *, clamp: bool = False, sampler: str = "ddim", steps: int | None = None,
               generator: torch.Generator | None = None, progress: bool = False) -> tuple[Tensor, Tensor]:
        """Draw ``n`` captions from N(0, I): returns (x0 (n, L, D), token ids (n, L)).

        ``clamp=True`` snaps each predicted x0 to its nearest embedding row
        before the next step (Diffusion-LM's clamping trick). ``sampler``:
        "ddim" (``steps`` = cfg.diffusion.sample_steps, eta = 0) or "ddpm"
        (all T steps). The final x0 is rounded to the nearest words.
        """
        from clipdiff_mini.diffusion.samplers import ddim_sample, ddpm_sample

        if generator is not None and generator.device != self.device:  # e.g. a CPU generator, model on CUDA
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
            generator = torch.Generator(device=self.device).manual_seed(seed)
        self.model.eval()
        E = self.model.E.detach()
        shape = (n, self.max_len, E.shape[1])
        clamp_fn = make_clamp_fn(E) if clamp else None
        if sampler == "ddim":
            x0 = ddim_sample(self.model, self.sched, shape, timesteps=steps or self.cfg.diffusion.sample_steps,
                             eta=0.0, prediction="x0", clamp_fn=clamp_fn, generator=generator, progress=progress,
                             device=self.device)
        elif sampler == "ddpm":
            x0 = ddpm_sample(self.model, self.sched, shape, prediction="x0", clamp_fn=clamp_fn,
                             generator=generator, progress=progress, device=self.device)
        else:
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        self.model.train()
        return x0, nearest_tokens(x0, E)


# ---- sample diagnostics ------------------------------------------------------------
def decode_samples(ids: Tensor, tokenizer) -> list[str]:
    """Texts of sampled ids (n, L): a leading [BOS] and everything from the first [EOS] on are dropped,
    other special tokens removed (`tokenizer.decode` does this)."""
    return tokenizer.batch_decode(ids, skip_special=True, stop_at_eos=True)


def repeated_word_rate(texts: list[str]) -> float:
    """Fraction of adjacent word pairs that repeat a word ("a red red circle" -> 1/3)."""
    pairs = rep = 0
    for text in texts:
        words = text.split()
        pairs += max(len(words) - 1, 0)
        rep += sum(a == b for a, b in zip(words, words[1:]))
    return rep / pairs if pairs else 0.0


def exact_row_fraction(x: Tensor, E: Tensor, atol: float = 1e-5) -> float:
    """Fraction of vectors x (..., D) that are an embedding row to within ``atol`` (max-abs)."""
    flat = x.reshape(-1, x.shape[-1])  # (N, D)
    nearest = E[nearest_tokens(flat, E)]  # (N, D)
    return ((flat - nearest).abs().amax(-1) <= atol).float().mean().item()
