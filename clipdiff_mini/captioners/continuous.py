"""CLIP-DiffusionLM: continuous diffusion over caption word vectors,
conditioned on a CLIP image feature (notebook 05).

A caption w = (w_1..w_L) becomes x0 = E[w] (B, L, D), a sequence of word
vectors; the forward process of notebook 01 noises it,
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``; a DistilBERT-architecture
denoiser (transformers' `DistilBertModel`, randomly initialised, fed through
``inputs_embeds``) reads x_t and the CLIP features and predicts the clean
caption. Every experiment of the paper is a switch of `ContinuousConfig`:

* fusion (5.1): ``"concat"`` puts the projected CLIP image feature (and in
  training the caption's CLIP text feature, and optionally the spatial grid)
  in front of the caption as extra tokens, each kind with its own segment
  embedding; ``"add"`` adds the projected feature to every caption position.
* certainty term (5.2): ``lambda * -log softmax(head(f))_w``, the rounding
  cross-entropy of the prediction, lambda fixed or rescaled by the adaptive
  ratio of notebook 03 (`AdaptiveRoundingWeight`).
* classifier-free guidance (5.3): with probability ``cond_dropout`` the image
  (and text) features are replaced by learned null vectors; sampling
  combines ``out = out_uncond + s (out_cond - out_uncond)``.
* target (5.5): ``"x0"``, or ``"x_t-n"``: the deterministic DDIM jump
  ``x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps`` with s = max(t - n, 0)
  and eps the noise that made x_t (eq. 12 of DDIM with eta = 0).
* feed-back sampling (5.6): predict x0 from noise and feed it back as the
  next input k times without re-noising; ``"renoise"``: predict x0, then draw
  the next input afresh from q(x_s | x0_hat) at a lower level s (the inputs
  the network was trained on); or DDIM / DDPM with the samplers of notebook
  02 and, optionally, the clamp of notebook 03.
* settled words and the commit sampler (the course's, after DDCap and
  Diffusion Forcing): ``settled_words`` gives a random share of each training
  caption's words clean, at noise level 0 (the timestep input is then one
  level per position), and scores the noisy ones; ``sampler="commit"`` fixes
  the surest words pass by pass, the others re-noised from the last estimate,
  as DDCap's best-first decoding fixes tokens.
* backbone (``continuous.backbone``): the paper's DistilBERT (``"distilbert"``, transformers'
  `DistilBertModel`, post-LN) or the course's pre-LN block that DDCap stacks (``"course"``,
  `captioners.backbone`), so that the two diffusion captioners can be compared on one network.
* length prediction (borrowed from DDCap, notebook 07): a head on the pooled
  CLIP feature picks the caption length n; [EOS] and the [PAD]s after it are
  given as clean word vectors in training and sampling, so the network
  denoises only the caption's own positions.

Levers from the literature, also switches (``docs/references.md``, "Making
continuous text diffusion learn"): ``output="logits"`` predicts a word
distribution per position, trained by cross-entropy, and the denoised vector
is its mean embedding ``x0_hat = softmax(logits) @ E`` (CDCD's score
interpolation); ``self_condition`` feeds the previous x0 estimate back as an
extra input (Analog Bits); ``t_min_frac`` truncates training to the noisy
part of the schedule; ``embed_scale`` sets the word vectors' size against
the unit noise; frozen word vectors cannot collapse (the paper freezes
pretrained ones for the same reason): ``embeddings="frozen"`` draws random
ones, ``"pretrained"`` copies a BERT-family model's (offline: the MiniLM
package the course installs), ``"learned"`` trains them with the model.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipdiff_mini.captioners.backbone import Block
from clipdiff_mini.captioners.base import check_heads, every_row_image_free, guidance_mix, image_free_rows
from clipdiff_mini.captioners.length import LengthHead, caption_lengths
from clipdiff_mini.diffusion.gaussian_diffusion import eps_from_x0, q_sample
from clipdiff_mini.diffusion.noise_schedules import make_schedule
from clipdiff_mini.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from clipdiff_mini.diffusion.text_diffusion import AdaptiveRoundingWeight, timestep_embedding
from clipdiff_mini.diffusion.text_embedding import clamp_to_embeddings, nearest_tokens

Tensor = torch.Tensor


class ContinuousCaptioner(nn.Module):
    """f(x_t, t, image) for caption vectors x_t (B, L, D); see the module docstring.

    ``forward`` returns a dict with ``"x0"`` (B, L, D), the model's clean
    caption vectors (or its x_{t-n} for ``target="x_t-n"``), and
    ``"logits"`` (B, L, V), word logits of that prediction.
    """

    def __init__(self, vocab_size: int, max_len: int, image_dim: int, grid_dim: int, ccfg, *, width: int,
                 layers: int, heads: int, dropout: float = 0.0, n_grid: int = 0,
                 word_vectors: Tensor | None = None, pad_id: int | None = None, eos_id: int | None = None):
        super().__init__()
        from transformers import DistilBertConfig, DistilBertModel

        check_heads(width, heads)
        if ccfg.settled_words and ccfg.target != "x0":
            raise ValueError("continuous.settled_words gives some words clean: use continuous.target='x0' with it")
        if ccfg.target == "x_t-n" and ccfg.output == "logits":
            raise ValueError("continuous.target='x_t-n' predicts a noisy vector, not words: use continuous.output="
                             "'regress' with it (the paper's setting)")
        self.ccfg, self.max_len, self.width, self.vocab_size = ccfg, max_len, width, vocab_size
        if ccfg.length_prediction and (pad_id is None or eos_id is None):
            raise ValueError("continuous.length_prediction needs the tokenizer's pad_id and eos_id")
        self.pad_id, self.eos_id = pad_id, eos_id
        D = ccfg.embed_dim
        self.sched = make_schedule(ccfg.schedule, ccfg.timesteps)
        # Word vectors: rows rescaled to rms embed_scale per coordinate, so their size against the unit noise
        # is a parameter and cannot drift (the collapse of notebook 03 needs the rows to shrink or merge).
        if word_vectors is not None:  # pretrained vectors (V, D'), frozen: their width sets D
            D = word_vectors.shape[1]
            self.embedding = nn.Embedding.from_pretrained(word_vectors.float().clone(), freeze=True)
        else:
            self.embedding = nn.Embedding(vocab_size, D)
            nn.init.normal_(self.embedding.weight)
            self.embedding.weight.requires_grad_(ccfg.embeddings == "learned")
        self.embed_dim = D
        in_dim = 2 * D if ccfg.self_condition else D
        self.up = nn.Sequential(nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, width))
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        # CLIP features -> width; null vectors replace them for guidance (cond_dropout)
        self.image_proj = nn.Linear(image_dim, width)
        self.text_proj = nn.Linear(image_dim, width)  # the CLIP text feature lives in the same joint space
        self.use_grid = ccfg.fusion == "concat" and n_grid > 0  # "add" fusion has no place for a grid
        self.grid_proj = nn.Linear(grid_dim, width) if self.use_grid else None
        # pooled CLIP vectors are unit length (0.04 per coordinate) and grid activations about 20 times larger:
        # a LayerNorm brings every projected condition to the size of the caption tokens (DDCap's memory norm)
        self.cond_norm = nn.LayerNorm(width) if ccfg.cond_norm else nn.Identity()
        self.null_image = nn.Parameter(torch.zeros(image_dim))
        self.null_grid = nn.Parameter(torch.zeros(grid_dim)) if self.use_grid else None
        self.n_prefix = (2 + (n_grid if self.use_grid else 0)) if ccfg.fusion == "concat" else 0
        self.segment = nn.Embedding(4, width)  # 0 caption, 1 image, 2 text, 3 grid
        if ccfg.backbone == "distilbert":  # the paper's: DistilBERT's post-LN blocks, randomly initialised
            config = DistilBertConfig(vocab_size=1, dim=width, n_layers=layers, n_heads=heads, hidden_dim=4 * width,
                                      max_position_embeddings=self.n_prefix + max_len, dropout=dropout,
                                      attention_dropout=dropout)
            self.encoder = DistilBertModel(config)
        elif ccfg.backbone == "course":  # DDCap's pre-LN block (captioners.backbone), its positions learned
            self.encoder = None
            self.pos = nn.Parameter(torch.randn(self.n_prefix + max_len, width) * 0.02)
            self.blocks = nn.ModuleList(Block(width, heads, dropout, adaptive=False, cross=False)
                                        for _ in range(layers))
        else:
            raise ValueError(f"continuous.backbone={ccfg.backbone!r}; allowed: 'distilbert', 'course'")
        self.out_norm = nn.LayerNorm(width)
        if ccfg.output == "logits":
            self.head = nn.Linear(width, vocab_size)
        else:
            self.head = nn.Linear(width, D)
        self.rounding_weight = AdaptiveRoundingWeight(ccfg.certainty_weight, ccfg.adaptive_certainty)
        self.length_head = LengthHead(image_dim, 2 * width, max_len) if ccfg.length_prediction else None

    # ---- word vectors -----------------------------------------------------------------------
    @property
    def E(self) -> Tensor:
        """The word vectors (V, D), each row of rms `embed_scale` per coordinate."""
        w = self.embedding.weight
        return self.ccfg.embed_scale * w * torch.rsqrt(w.pow(2).mean(-1, keepdim=True) + 1e-8)

    def embed(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.E)  # (B, L, D)

    def word_logits(self, x: Tensor) -> Tensor:
        """Tied rounding head for vectors x (..., D): logits -||x - e_v||^2 (up to a per-row constant)."""
        E = self.E
        return 2 * x @ E.t() - (E * E).sum(-1)  # (..., V)

    # ---- the denoiser -----------------------------------------------------------------------
    def forward(self, x_t: Tensor, t: Tensor, image: Tensor, grid: Tensor | None = None, text: Tensor | None = None,
                x0_prev: Tensor | None = None, drop: Tensor | None = None) -> dict[str, Tensor]:
        """x_t (B, L, D), t (B,) or per position (B, L), image (B, Di), grid (B, P, Dg), text (B, Di) or None;
        x0_prev (B, L, D) self-conditioning input (None: zeros); drop (B,) bool: use the null image."""
        B, L, _ = x_t.shape
        if drop is not None and drop.any():
            image = torch.where(drop[:, None], self.null_image.expand_as(image), image)
            if text is not None:
                text = torch.where(drop[:, None], self.null_image.expand_as(text), text)
            if grid is not None and self.use_grid:
                grid = torch.where(drop[:, None, None], self.null_grid.expand_as(grid), grid)
        if self.ccfg.self_condition:
            prev = x0_prev if x0_prev is not None else torch.zeros_like(x_t)
            x_in = torch.cat([x_t, prev], dim=-1)  # (B, L, 2D)
        else:
            x_in = x_t
        h = self.up(x_in) + self.segment.weight[0]  # (B, L, W)
        if self.ccfg.timestep_input:  # one level per caption (B,) or one per position (B, L)
            temb = self.time(timestep_embedding(t.reshape(-1), self.width)).view(*t.shape, self.width)
            h = h + (temb[:, None, :] if t.dim() == 1 else temb)
        img = self.cond_norm(self.image_proj(image))  # (B, W)
        txt = self.cond_norm(self.text_proj(text if text is not None else image))  # at sampling the image stands in
        if self.ccfg.fusion == "add":
            h = h + img[:, None, :] + txt[:, None, :]
        else:
            prefix = [img[:, None] + self.segment.weight[1], txt[:, None] + self.segment.weight[2]]
            if self.use_grid:
                prefix.append(self.cond_norm(self.grid_proj(grid)) + self.segment.weight[3])  # (B, P, W)
            h = torch.cat(prefix + [h], dim=1)  # (B, n_prefix + L, W)
        h = self.encode(h)[:, self.n_prefix:]  # (B, L, W)
        out = self.head(self.out_norm(h))
        if self.ccfg.output == "logits":
            logits = out  # (B, L, V)
            x0 = torch.softmax(logits, -1) @ self.E  # (B, L, D): mean word vector (score interpolation)
        else:
            x0 = out  # (B, L, D)
            logits = self.word_logits(x0)
        return {"x0": x0, "logits": logits}

    def encode(self, h: Tensor) -> Tensor:
        """The transformer over the whole sequence h (B, S, W) -> (B, S, W): DistilBERT (which adds its
        positions and a LayerNorm itself) or the course's blocks (positions added here; every block
        normalises its own input, and `out_norm` the last output)."""
        if self.encoder is not None:
            return self.encoder(inputs_embeds=h).last_hidden_state
        h = h + self.pos[:h.shape[1]]
        for block in self.blocks:
            h, _ = block(h, None, None, None, False)
        return h

    # ---- training ---------------------------------------------------------------------------
    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        T = self.sched.T
        lo = max(1, int(math.ceil(self.ccfg.t_min_frac * T)))
        return torch.randint(lo, T + 1, (n,), generator=generator, device=device)

    def target(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output: x0, or the DDIM jump x_{t-n} (see module docstring)."""
        if self.ccfg.target == "x0":
            return x0
        s = (t - self.ccfg.target_n).clamp(min=0)
        ab_s = self.sched.alpha_bar.to(x0.device)[s].to(x0.dtype)[:, None, None]  # (B, 1, 1)
        eps = eps_from_x0(self.sched, x_t, t, x0)
        return ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * eps

    def given_positions(self, n: Tensor) -> Tensor:
        """(B, L) bool: with length prediction, the positions a caption of n tokens does not denoise:
        its [EOS] (at n - 1) and the [PAD]s after it; they enter the network as clean word vectors."""
        return torch.arange(self.max_len, device=n.device)[None] >= (n[:, None] - 1)

    @staticmethod
    def settled_positions(given: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, L) bool: the words a training caption gives clean (``settled_words``): each caption draws a
        share r ~ U(0, 1) and each of its own positions (not `given` (B, L)) is settled with probability r,
        so the network sees every mix from all noisy to all settled, as a committing sampler shows it."""
        B, L = given.shape
        share = torch.rand(B, 1, generator=generator, device=given.device)  # (B, 1)
        return (torch.rand(B, L, generator=generator, device=given.device) < share) & ~given

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """The training loss on a batch {"ids" (B, L), "image", "grid", "text"}; returns (loss, logs)."""
        ids = batch["ids"]
        B = ids.shape[0]
        dev = ids.device
        x0 = self.embed(ids)  # (B, L, D)
        t = self.sample_t(B, generator, dev)  # (B,)
        x_t = q_sample(self.sched, x0, t, torch.randn(x0.shape, generator=generator, device=dev))
        given = None
        if self.length_head is not None:  # [EOS] and [PAD]s are given, as the sampler will give them
            given = self.given_positions(caption_lengths(ids, self.pad_id))  # (B, L)
            x_t = torch.where(given[..., None], x0, x_t)
        if self.ccfg.settled_words:  # some words clean, at level 0; the rest at the caption's level t
            clean = self.settled_positions(given if given is not None else torch.zeros_like(ids, dtype=torch.bool),
                                           generator)  # (B, L)
            x_t = torch.where(clean[..., None], x0, x_t)
            given = clean if given is None else given | clean
            t = torch.where(given, 0, t[:, None])  # (B, L): every clean position says so
        drop = image_free_rows(B, self.ccfg.cond_dropout, generator, dev)
        text = batch.get("text") if self.ccfg.text_feature else None
        args = dict(image=batch["image"], grid=batch.get("grid"), text=text, drop=drop)
        x0_prev = None
        if self.ccfg.self_condition:
            # half of the steps first predict without a hint and feed that (detached) estimate back
            use = torch.rand(B, generator=generator, device=dev) < 0.5
            if use.any():
                with torch.no_grad():
                    first = self(x_t, t, **args)["x0"]
                    if given is not None:
                        first = torch.where(given[..., None], x0, first)
                x0_prev = torch.where(use[:, None, None], first, torch.zeros_like(first))
        out = self(x_t, t, x0_prev=x0_prev, **args)
        # (B, L) weights of the positions the loss counts: all, or with length prediction the denoised ones
        weight = torch.ones_like(ids, dtype=x0.dtype) if given is None else (~given).to(x0.dtype)
        count = weight.sum().clamp_min(1)
        ce_tok = F.cross_entropy(out["logits"].reshape(-1, self.vocab_size), ids.reshape(-1), reduction="none")
        ce = (ce_tok * weight.reshape(-1)).sum() / count
        logs = {"ce": ce.item()}
        if self.ccfg.output == "logits":
            loss = ce
        else:
            target = self.target(x0.detach() if self.ccfg.embeddings == "frozen" else x0, x_t, t)
            diff = out["x0"] - target
            per_pos = (diff.abs() if self.ccfg.loss == "l1" else diff.pow(2)).mean(-1)  # (B, L)
            reg = (per_pos * weight).sum() / count
            lam = self.rounding_weight(reg.item(), ce.item())
            loss = reg + lam * ce
            logs.update(reg=reg.item(), certainty_weight=lam)
        if self.length_head is not None:
            length_ce = F.cross_entropy(self.length_head(batch["image"]), caption_lengths(ids, self.pad_id))
            loss = loss + length_ce
            logs["length_ce"] = length_ce.item()
        logs["loss"] = loss.item()
        return loss, logs

    # ---- sampling ---------------------------------------------------------------------------
    def _guided(self, x: Tensor, t: Tensor, cond: dict, x0_prev: Tensor | None, scale: float) -> dict[str, Tensor]:
        out = self(x, t, image=cond["image"], grid=cond.get("grid"), x0_prev=x0_prev)
        if scale == 1.0:
            return out
        drop = every_row_image_free(x.shape[0], x.device)
        un = self(x, t, image=cond["image"], grid=cond.get("grid"), x0_prev=x0_prev, drop=drop)
        key = "logits" if self.ccfg.output == "logits" else "x0"
        mixed = guidance_mix(out[key], un[key], scale)
        if key == "logits":
            return {"logits": mixed, "x0": torch.softmax(mixed, -1) @ self.E}
        return {"x0": mixed, "logits": self.word_logits(mixed)}

    @torch.no_grad()
    def sample(self, cond: dict[str, Tensor], *, length_beam: int | None = None, **kw) -> dict[str, Any]:
        """Caption ids for the pictures of `cond` {"image" (B, Di), "grid" (B, P, Dg)}; the keywords
        are those of `sample_once`.

        With length prediction and ``length_beam`` k > 1 (Mask-Predict's length beam, Ghazvininejad et
        al. 2019): the k most likely lengths of each picture are denoised side by side and the caption
        whose words have the highest mean log-probability under the last network call is kept; k times
        the network passes. Returns what `sample_once` returns (``"passes"`` counts every candidate).
        """
        k = self.ccfg.length_beam if length_beam is None else length_beam
        if k <= 1 or self.length_head is None or kw.get("known") is not None or kw.get("lengths") is not None:
            return self.sample_once(cond, **kw)
        B = cond["image"].shape[0]
        lengths = self.length_head.most_likely(cond["image"], k)  # (B, k)
        k = lengths.shape[1]
        rep = {key: v.repeat_interleave(k, 0) for key, v in cond.items()}  # each picture k times, (B k, ...)
        out = self.sample_once(rep, lengths=lengths.reshape(-1), **kw)
        if "token_logp" in out:  # "commit": each word's log-probability when it was fixed (the last call sees
            logp = out["token_logp"]  # them all as clean input and would be sure of every one)
        else:
            logp = torch.log_softmax(out["logits"].float(), -1).gather(-1, out["ids"][..., None])[..., 0]  # (B k, L)
        own = ~self.given_positions(out["lengths"])  # (B k, L): the positions each candidate denoised
        score = ((logp * own).sum(-1) / own.sum(-1).clamp_min(1)).reshape(B, k)
        best = score.argmax(-1) + torch.arange(B, device=score.device) * k  # (B,) rows of the kept candidates
        kept = {"ids": out["ids"][best], "passes": out["passes"] * k, "lengths": out["lengths"][best],
                "logits": out["logits"][best], "length_scores": score}
        if "trajectory" in out:
            kept["trajectory"] = [(t, ids[best.cpu()]) for t, ids in out["trajectory"]]
        return kept

    @torch.no_grad()
    def sample_once(self, cond: dict[str, Tensor], *, sampler: str | None = None, steps: int | None = None,
                    clamp: bool | None = None, guidance_scale: float | None = None,
                    generator: torch.Generator | None = None, trajectory: bool = False,
                    known_ids: Tensor | None = None, known: Tensor | None = None,
                    lengths: Tensor | None = None) -> dict[str, Any]:
        """Caption ids for the pictures of `cond` {"image" (B, Di), "grid" (B, P, Dg)}, one run of the
        sampler. With length prediction the head picks each caption's length n, or ``lengths`` (B,)
        gives them.

        Infilling by the *replacement method* (Song et al. 2021, "imputation"): `known_ids` (B, L)
        and `known` (B, L) bool, True where the word is given. At every network call the given
        positions of the input are replaced by what the forward process makes of their word
        vectors, a fresh draw of q(x_t | E[w]) at the call's t (the feed-back sampler's later
        inputs are x0 estimates, so there they are E[w] itself); the given positions of the x0
        estimate are replaced by E[w] (so self-conditioning, which starts from E[w] at the given
        positions and zeros elsewhere, and the next step see them); the returned ids keep them.

        Returns {"ids" (B, L), "passes": network passes per caption, and with
        `trajectory` "trajectory": [(t, ids (B, L))] of the rounded x0 estimate
        at every network call}.
        """
        c = self.ccfg
        sampler = sampler or c.sampler
        steps = steps or c.sample_steps
        clamp = c.clamp if clamp is None else clamp
        scale = c.guidance_scale if guidance_scale is None else guidance_scale
        B = cond["image"].shape[0]
        dev = cond["image"].device
        shape = (B, self.max_len, self.embed_dim)
        E = self.E
        state: dict[str, Any] = {"prev": None, "calls": 0, "traj": []}
        if (known_ids is None) != (known is None):
            raise ValueError("infilling needs both known_ids (B, L) and known (B, L) bool")
        if known is not None:
            known = known.to(dev).bool()[..., None]  # (B, L, 1)
            x_known = F.embedding(known_ids.to(dev), E)  # (B, L, D): the given words' vectors
            if c.self_condition:
                state["prev"] = torch.where(known, x_known, torch.zeros_like(x_known))
        fed_back = c.target == "x0" and sampler == "feedback"
        given, x_given, given_ids = None, None, None
        if self.length_head is None or known is not None:
            lengths = None  # no length to fix: without the head, or infilling (the given words say it)
        else:
            # the predicted length fixes [EOS] and the [PAD]s after it: clean vectors, as in training
            if lengths is None:
                lengths = self.length_head.choose(cond["image"], c.length_choice, generator)  # (B,)
            given = self.given_positions(lengths)[..., None]  # (B, L, 1)
            pos = torch.arange(self.max_len, device=dev)[None]
            given_ids = torch.where(pos == lengths[:, None] - 1, self.eos_id, self.pad_id)  # (B, L)
            x_given = F.embedding(given_ids, E)  # (B, L, D)
            if c.self_condition:
                state["prev"] = torch.where(given, x_given, torch.zeros_like(x_given))

        def model_x0(x: Tensor, t: Tensor) -> Tensor:
            if given is not None:
                x = torch.where(given, x_given, x)
            if known is not None and not (fed_back and state["calls"] > 0):  # the input x_t: q(x_t | E[w])
                noisy = q_sample(self.sched, x_known, t, torch.randn(x.shape, generator=generator, device=dev))
                x = torch.where(known, noisy, x)
            elif known is not None:  # a feed-back input is an x0 estimate: the given words themselves
                x = torch.where(known, x_known, x)
            out = self._guided(x, t, cond, state["prev"], scale)
            if known is not None and c.target == "x0":
                out = {"x0": torch.where(known, x_known, out["x0"]), "logits": out["logits"]}
            if given is not None and c.target == "x0":
                out = {"x0": torch.where(given, x_given, out["x0"]), "logits": out["logits"]}
            x0 = clamp_to_embeddings(out["x0"], E) if clamp else out["x0"]
            state["prev"] = x0 if c.self_condition else None
            state["calls"] += 1
            if trajectory:
                ids_t = out["logits"].argmax(-1)
                if known is not None:
                    ids_t = torch.where(known[..., 0], known_ids.to(dev), ids_t)
                if given is not None:
                    ids_t = torch.where(given[..., 0], given_ids, ids_t)
                state["traj"].append((int(t[0]), ids_t.cpu()))
            state["last_logits"] = out["logits"]
            return out["x0"]  # the samplers clamp through clamp_fn themselves

        clamp_fn = (lambda v: clamp_to_embeddings(v, E)) if clamp else None
        if c.target == "x_t-n":
            x = torch.randn(shape, generator=generator, device=dev)
            t = self.sched.T
            while t > 0:
                x = model_x0(x, torch.full((B,), t, device=dev, dtype=torch.long))
                t = max(t - c.target_n, 0)
            final = x
        elif sampler == "feedback":
            # paper 5.6: x0 predicted from noise, then fed back as the input `steps - 1` more times
            x = torch.randn(shape, generator=generator, device=dev)
            T = self.sched.T
            for k in range(steps):
                t = max(1, round(T * (1 - k / steps)))  # with a timestep input: the pass's nominal noise level
                x = model_x0(x, torch.full((B,), t, device=dev, dtype=torch.long))
                if clamp:
                    x = clamp_to_embeddings(x, E)
            final = x
        elif sampler == "renoise":
            # x0 estimate, then a fresh draw of q(x_s | x0_hat) at the next level s: the network always
            # sees inputs of the training distribution (were its estimate right); the noise at each
            # step lets positions that agreed on the same word part ways
            ts = list(reversed(ddim_timesteps(self.sched.T, steps)))
            x = torch.randn(shape, generator=generator, device=dev)
            for i, t in enumerate(ts):
                x0 = model_x0(x, torch.full((B,), t, device=dev, dtype=torch.long))
                if clamp:
                    x0 = clamp_to_embeddings(x0, E)
                if i + 1 < len(ts):
                    s_next = torch.full((B,), ts[i + 1], device=dev, dtype=torch.long)
                    x = q_sample(self.sched, x0, s_next, torch.randn(shape, generator=generator, device=dev))
            final = x0
        elif sampler == "ddim":
            final = ddim_sample(model_x0, self.sched, shape, timesteps=steps, prediction="x0", clamp_fn=clamp_fn,
                                generator=generator, progress=False, device=dev)
        elif sampler == "commit":
            if known is not None:
                raise ValueError("infilling goes through the other samplers; continuous.sampler='commit' does not "
                                 "take known words")
            final = None
            committed, commit_pass, token_logp = self._commit(cond, steps, scale, given, given_ids, state, trajectory,
                                                              generator)
        elif sampler == "ddpm":
            final = ddpm_sample(model_x0, self.sched, shape, prediction="x0", clamp_fn=clamp_fn,
                                generator=generator, progress=False, device=dev)
        else:
            raise ValueError(f"continuous.sampler={sampler!r}; allowed: 'feedback', 'renoise', 'ddim', 'ddpm'")
        if sampler == "commit":
            ids = committed  # every word as it was fixed
        elif c.output == "logits" and c.target == "x0":
            ids = state["last_logits"].argmax(-1)  # the last prediction's most likely words
        else:
            ids = nearest_tokens(final, E)  # (B, L) rounding
        if known is not None:
            ids = torch.where(known[..., 0], known_ids.to(dev), ids)
        if given is not None:
            ids = torch.where(given[..., 0], given_ids, ids)
        out = {"ids": ids, "passes": state["calls"], "logits": state["last_logits"]}
        if sampler == "commit":
            out.update(commit_pass=commit_pass, token_logp=token_logp)
        if lengths is not None:
            out["lengths"] = lengths
        if trajectory:
            out["trajectory"] = state["traj"]
        return out


    @torch.no_grad()
    def _commit(self, cond: dict, steps: int, scale: float, given: Tensor | None, given_ids: Tensor | None,
                state: dict, trajectory: bool, generator: torch.Generator | None):
        """The "commit" sampler: DDCap's best-first decoding carried over to word vectors. Pass k of
        `steps` noises the words not yet fixed to level t_k = T (1 - k / steps) (from the last x0 estimate;
        pure noise at k = 0), gives the fixed ones as clean vectors at level 0, and fixes for good the
        ceil(open / (steps - k)) open positions whose most likely word is surest; the last pass fixes the
        rest (with more passes than words, one word a pass, and no pass once all are fixed). Returns (ids (B, L), commit_pass (B, L): the pass that fixed each position (-1: given),
        token_logp (B, L): each word's log-probability when it was fixed (0 where given))."""
        c, E, T = self.ccfg, self.E, self.sched.T
        if c.output != "logits" or c.target != "x0":
            raise ValueError("continuous.sampler='commit' fixes each position's most likely word: it needs "
                             "continuous.output='logits' and continuous.target='x0'")
        B, L, dev = cond["image"].shape[0], self.max_len, cond["image"].device
        done = given[..., 0].clone() if given is not None else torch.zeros(B, L, dtype=torch.bool, device=dev)
        ids = given_ids.clone() if given is not None else torch.zeros(B, L, dtype=torch.long, device=dev)
        commit_pass = torch.full((B, L), -1, dtype=torch.long, device=dev)
        token_logp = torch.zeros(B, L, device=dev)
        x0_hat = None
        clean = F.embedding(ids, E)  # (B, L, D): the word vectors of the fixed (and given) positions
        for k in range(steps):
            if done.all():  # more passes than words: the rest would fix nothing
                break
            t_k = max(1, round(T * (1 - k / steps)))
            noise = torch.randn(B, L, self.embed_dim, generator=generator, device=dev)
            noisy = noise if x0_hat is None else q_sample(self.sched, x0_hat, torch.full((B,), t_k, device=dev), noise)
            x = torch.where(done[..., None], clean, noisy)  # (B, L, D)
            t = torch.where(done, 0, t_k)  # (B, L): the fixed words are clean
            out = self._guided(x, t, cond, state["prev"], scale)
            logp = torch.log_softmax(out["logits"].float(), -1)  # (B, L, V)
            best_logp, best = logp.max(-1)  # (B, L)
            open_ = ~done
            take = (open_.sum(-1) + (steps - k) - 1) // (steps - k)  # (B,) ceil(open / passes left)
            score = best_logp.masked_fill(done, float("-inf"))
            rank = score.argsort(-1, descending=True).argsort(-1)  # (B, L): 0 = surest open position
            new = (rank < take[:, None]) & open_
            ids = torch.where(new, best, ids)
            token_logp = torch.where(new, best_logp, token_logp)
            commit_pass = torch.where(new, k, commit_pass)
            done = done | new
            clean = F.embedding(ids, E)
            x0_hat = torch.where(done[..., None], clean, out["x0"])
            state["prev"] = x0_hat if c.self_condition else None
            state["calls"] += 1
            state["last_logits"] = out["logits"]
            if trajectory:
                state["traj"].append((t_k, torch.where(done, ids, best).cpu()))
        return ids, commit_pass, token_logp


# ---- building, captioning, training ---------------------------------------------------------
def pretrained_word_vectors(tokenizer, bert_name: str = "") -> Tensor:
    """Word vectors (V, D) of `tokenizer`'s vocabulary from a pretrained BERT-family model's input
    embedding table: the offline MiniLM package (``bert_name`` empty, D = 384) or a hub model such as
    ``distilbert-base-uncased`` (D = 768, needs network). A word of the course's word tokenizer that
    BERT splits into pieces gets the mean of its pieces' vectors; [BOS]/[EOS] take [CLS]/[SEP].
    (CLIP-DiffusionLM copies DistilBERT's pretrained word embeddings in and freezes them.)"""
    from transformers import AutoModel, AutoTokenizer

    from clipdiff_mini.data.tokenizers import bert_vocab_dir

    source = bert_name or str(bert_vocab_dir())
    hf_tok = AutoTokenizer.from_pretrained(source, local_files_only=not bert_name)
    table = AutoModel.from_pretrained(source, local_files_only=not bert_name).get_input_embeddings().weight.detach()
    if getattr(tokenizer, "kind", "") == "bert":  # same vocabulary: the rows themselves
        if tokenizer.vocab_size != table.shape[0]:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but {source} has {table.shape[0]} rows")
        return table.clone()
    specials = {tokenizer.pad_id: hf_tok.pad_token_id, tokenizer.bos_id: hf_tok.cls_token_id,
                tokenizer.eos_id: hf_tok.sep_token_id, tokenizer.mask_id: hf_tok.mask_token_id,
                tokenizer.unk_id: hf_tok.unk_token_id}
    rows = []
    for i, word in enumerate(tokenizer.itos):
        pieces = [specials[i]] if i in specials else hf_tok(word, add_special_tokens=False)["input_ids"]
        rows.append(table[pieces].mean(0))
    return torch.stack(rows)  # (V, D)


def build_continuous_captioner(cfg, train) -> ContinuousCaptioner:
    """The model `cfg` describes, sized for the features and vocabulary of `train` (a `SplitFeatures`)."""
    c = cfg.captioner
    vectors = None
    if cfg.continuous.embeddings == "pretrained":  # a loaded checkpoint brings its own (load_trained)
        vectors = getattr(train, "word_vectors", None)
        if vectors is None:
            vectors = pretrained_word_vectors(train.tokenizer, cfg.data.bert_name)
    return ContinuousCaptioner(train.tokenizer.vocab_size, train.ids.shape[1], train.image.shape[1],
                               train.grid.shape[2], cfg.continuous, width=c.width, layers=c.layers, heads=c.heads,
                               dropout=c.dropout, n_grid=train.grid.shape[1], word_vectors=vectors,
                               pad_id=train.tokenizer.pad_id, eos_id=train.tokenizer.eos_id)


def continuous_caption_fn(tokenizer, drop_repeats: bool = True, **sample_kw):
    """caption_fn(model, cond) -> captions, for the training loop's validation and for evaluation."""
    from clipdiff_mini.captioners.decoding import sampling_caption_fn

    return sampling_caption_fn(tokenizer, drop_repeats, **sample_kw)


def training_config(cfg):
    """CLIP-DiffusionLM's check before training (`trainer.train` runs it): the caption's CLIP text
    feature exists only for the references."""
    if cfg.continuous.text_feature and cfg.captioner.targets != "references":
        raise ValueError("continuous.text_feature needs the CLIP text features of the training captions, which a "
                         "teacher's captions do not have; use captioner.targets='references' or text_feature=False")
    return cfg


def train_continuous(cfg, data, *, progress: bool = True, resume: bool = True, name: str = "clip_diffusionlm"):
    """``trainer.train("clip_diffusionlm", cfg, data)``: build and train CLIP-DiffusionLM, choosing its
    weights on data["val"]. Returns (model, training record) (see `training.train_captioner`)."""
    from clipdiff_mini.captioners.trainer import train

    return train("clip_diffusionlm", cfg, data, progress=progress, resume=resume, name=name)
