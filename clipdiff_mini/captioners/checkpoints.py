"""What a captioner checkpoint holds, loading one back, and refusing the wrong one.

A checkpoint written by `clipdiff_mini.captioners.training.train_captioner`
is one ``torch.save`` file (written atomically) holding::

    format, key, name        format number, hash of the run's identity, run name
    run                      the run's identity: captioner/data/clip settings, seed, model section
    config                   the whole config (cfg.to_dict())
    model, optimizer, ...    weights, AdamW state, data-order generator, random states (exact resume)
    state                    step, history, best validation scores and the best weights
    tokenizer                the vocabulary: a word list, or a hub tokenizer's files (self-contained)
    shapes                   feature sizes the model was built for: image D, grid (P, W), caption length L
    meta                     "model" (registry name), "clip" (which CLIP made the features)

`load_trained(path)` rebuilds the model from ``config`` + ``tokenizer`` +
``shapes`` with the registry's build function and loads the best weights:
no data, no training. A checkpoint of another model, config or vocabulary
than the one asked for is refused with a `CheckpointMismatch` that lists
what differs, key by key.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from clipdiff_mini.captioners.registry import CaptionerSpec, get_spec

CHECKPOINT_FORMAT = 1


class CheckpointMismatch(ValueError):
    """A checkpoint that is not the model, config or vocabulary asked for; the message lists the differences."""


# ---- the vocabulary -------------------------------------------------------------------------
def tokenizer_state(tok) -> dict[str, Any]:
    """A self-contained description of a tokenizer: the word list itself (word tokenizer) or the files of a
    Hugging Face tokenizer (BERT WordPiece, GPT-2 BPE) as bytes, so a checkpoint loads offline."""
    d: dict[str, Any] = {"kind": tok.kind, "vocab_size": int(tok.vocab_size), "itos_sha256": itos_digest(tok.itos)}
    if tok.kind == "word":
        d.update(itos=list(tok.itos), counts=dict(getattr(tok, "counts", {}) or {}),
                 min_count=getattr(tok, "min_count", 1))
    else:
        d["source"] = getattr(tok, "source", "")
        with tempfile.TemporaryDirectory() as tmp:
            tok.hf.save_pretrained(tmp)
            d["files"] = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return d


def itos_digest(itos) -> str:
    return hashlib.sha256("\n".join(itos).encode("utf-8")).hexdigest()


def tokenizer_from_state(d: dict[str, Any]):
    """The tokenizer `tokenizer_state` described (no network: hub tokenizers come from the stored files)."""
    from clipdiff_mini.data import tokenizers as T

    if d["kind"] == "word":
        return T.WordTokenizer(d["itos"], counts=d.get("counts"), min_count=d.get("min_count", 1))
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in d["files"].items():
            (Path(tmp) / name).write_bytes(data)
        hf = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    cls = {"bert": T.BertWordPieceTokenizer, "gpt2": getattr(T, "GPT2BPETokenizer", None)}.get(d["kind"])
    if cls is None:
        raise ValueError(f"this checkpoint's tokenizer kind {d['kind']!r} is not known to this version of the library")
    return cls(hf, source=d.get("source", ""))


def tokenizer_differences(stored: dict[str, Any] | None, tok) -> list[str]:
    """What differs between a stored vocabulary and tokenizer `tok` (empty: the same)."""
    if stored is None:
        return []
    out = []
    if stored["kind"] != tok.kind:
        out.append(f"tokenizer kind: checkpoint {stored['kind']!r}, now {tok.kind!r}")
    if stored["vocab_size"] != tok.vocab_size:
        out.append(f"vocabulary size: checkpoint {stored['vocab_size']}, now {tok.vocab_size}")
    if stored["itos_sha256"] != itos_digest(tok.itos):
        first = ""
        if "itos" in stored:
            pairs = [(i, a, b) for i, (a, b) in enumerate(zip(stored["itos"], tok.itos)) if a != b]
            if pairs:
                i, a, b = pairs[0]
                first = f" (first difference: id {i} is {a!r} in the checkpoint, {b!r} now)"
        out.append(f"vocabulary: the tokens differ{first}")
    return out


# ---- comparing runs -------------------------------------------------------------------------
# Settings that do not change what is learned; left out of a run's identity.
_NOT_IDENTITY = ("eval_images", "checkpoint_every")
# Settings that only change how a trained model samples (the config marks them "sampling only"): left out of
# a run's identity, so changing one resamples in seconds and never retrains for minutes. (The validation
# checks during training sample with the values of the run that trained the model.)
SAMPLING_ONLY: dict[str, tuple[str, ...]] = {
    "continuous": ("guidance_scale", "sampler", "sample_steps", "length_choice", "length_beam", "clamp",
                   "drop_repeats"),
    "ddcap": ("order", "tokens_per_step", "sample_tokens", "guidance_scale", "length_choice", "block_size",
              "iterations"),
    "autoregressive": ("beam", "length_penalty", "use_cache"),
}


def training_settings(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A model section's settings less its sampling-only ones: what decides the trained weights."""
    return {k: v for k, v in values.items() if k not in SAMPLING_ONLY.get(section, ())}


def captioner_identity(captioner: dict[str, Any]) -> dict[str, Any]:
    """The shared `captioner` section less what does not change the weights: how often checks and snapshots
    run, and a student's settings in a run on the references (only a distilled student reads them)."""
    keep = {k: v for k, v in captioner.items() if k not in _NOT_IDENTITY}
    if keep.get("targets", "references") == "references":
        for k in ("student_steps", "student_init", "student_lr"):
            keep.pop(k, None)
    return keep


def run_identity(cfg, name: str, extra: dict | None = None) -> dict[str, Any]:
    """Everything that defines a training run: run name, seed, the captioner, data and CLIP settings, and
    `extra` (the model's own config section, e.g. ``{"continuous": asdict(cfg.continuous)}``)."""
    keep = {"name": name, "seed": cfg.seed, "captioner": captioner_identity(asdict(cfg.captioner)),
            "data": asdict(cfg.data), "clip": asdict(cfg.clip), **(extra or {})}
    for section in SAMPLING_ONLY:
        if isinstance(keep.get(section), dict):
            keep[section] = training_settings(section, keep[section])
    return keep


def config_identity(config: dict[str, Any], section: str) -> dict[str, Any]:
    """The parts of a config dict (``cfg.to_dict()``) that define what a model of config section `section`
    ("" for none) learns, by the rules of `run_identity`: seed, captioner, data, CLIP, the model's own section."""
    keep = {"seed": config.get("seed"), "captioner": captioner_identity(dict(config.get("captioner", {}))),
            "data": config.get("data"), "clip": config.get("clip")}
    if section:
        keep[section] = training_settings(section, dict(config.get(section) or {}))
    return keep


def run_key(cfg, name: str, extra: dict | None = None) -> str:
    """Hash of `run_identity` (12 hex digits): the checkpoint file name carries it."""
    return hashlib.sha256(json.dumps(run_identity(cfg, name, extra), sort_keys=True, default=str).encode()).hexdigest()[:12]


def dict_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: checkpoint A, now B' for every dotted key whose value differs between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key}: not in the checkpoint, now {new[k]!r}")
            elif k not in new:
                out.append(f"{key}: checkpoint {old[k]!r}, not in this run")
            else:
                out += dict_differences(old[k], new[k], key)
        return out
    return [] if old == new else [f"{prefix}: checkpoint {old!r}, now {new!r}"]


def mismatch_message(path, differences: list[str], what_to_do: str) -> str:
    shown = differences[:12] + ([f"... and {len(differences) - 12} more"] if len(differences) > 12 else [])
    return (f"the checkpoint {path} belongs to another run; it differs in:\n  " + "\n  ".join(shown)
            + f"\n{what_to_do}")


def read_checkpoint(path) -> dict[str, Any]:
    """The checkpoint's dict, with clear errors for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no captioner checkpoint at {path}; train one with "
                                "`python -m clipdiff_mini.train --model clip_diffusionlm --profile ci` (it prints the path)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
                         "is it a captioner checkpoint written by clipdiff_mini.train?") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise ValueError(f"{path} is not a captioner checkpoint of format {CHECKPOINT_FORMAT} "
                         "(written by clipdiff_mini.captioners.training.train_captioner)")
    return ckpt


# ---- loading a trained captioner ------------------------------------------------------------
@dataclass
class TrainedCaptioner:
    """A captioner loaded from its checkpoint, ready to caption CLIP features."""

    name: str  # registry name, e.g. "clip_diffusionlm"
    model: torch.nn.Module
    tokenizer: Any
    cfg: Any  # the Config it was trained with
    spec: CaptionerSpec
    path: Path
    best: dict | None = None  # validation scores of the loaded weights
    steps: int = 0
    finished: bool = False
    meta: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)

    def caption_fn(self, **kw) -> Callable:
        """caption_fn(model, cond) -> list[str] with the settings the captioner was trained with."""
        return self.spec.caption_function(self.tokenizer, self.cfg, **kw)


def _stub_features(tok, shapes: dict[str, Any]):
    """A `SplitFeatures` with no rows but the trained sizes: what the build functions read."""
    from clipdiff_mini.captioners.features import SplitFeatures

    D, (P, W), L = shapes["image"], shapes["grid"], shapes["length"]
    return SplitFeatures("train", None, torch.zeros(0, D), torch.zeros(0, P, W), torch.zeros(0, shapes.get("text", D)),
                         torch.zeros(0, L, dtype=torch.long), torch.zeros(0, dtype=torch.long), tok)


def load_trained(path, *, model: str | None = None, cfg=None, tokenizer=None, device="cpu",
                 weights: str = "best") -> TrainedCaptioner:
    """Rebuild and load the captioner of checkpoint `path`.

    The model is built from the checkpoint's own config, vocabulary and
    feature sizes (no data needed). Optional expectations are checked first:
    `model` (registry name), `cfg` (the run's settings must be those of this
    config) and `tokenizer` (same vocabulary); any difference raises
    `CheckpointMismatch` naming it. `weights`: "best" (chosen on val; what
    training leaves in the model) or "last" (the last step's).
    """
    from clipdiff_mini.config import config_from_dict

    path = Path(path)
    ckpt = read_checkpoint(path)
    meta = dict(ckpt.get("meta") or {})
    name = meta.get("model")
    if name is None or "tokenizer" not in ckpt or "shapes" not in ckpt:
        raise ValueError(f"{path} was written before checkpoints held the model name, vocabulary and feature sizes; "
                         "train it again with `python -m clipdiff_mini.train` (a resumed run rewrites the file)")
    stored_cfg = config_from_dict(ckpt["config"])
    diffs: list[str] = []
    if model is not None and model != name:
        diffs.append(f"model: checkpoint {name!r}, asked for {model!r}")
    if cfg is not None and not diffs:
        section = get_spec(name).section
        diffs += dict_differences(config_identity(ckpt["config"], section), config_identity(cfg.to_dict(), section))
    if tokenizer is not None:
        diffs += tokenizer_differences(ckpt["tokenizer"], tokenizer)
    if diffs:
        raise CheckpointMismatch(mismatch_message(path, diffs, "Pick the checkpoint of this model and config, or "
                                                  "load it without expectations: load_trained(path)."))
    spec = get_spec(name)
    tok = tokenizer_from_state(ckpt["tokenizer"])
    stub = _stub_features(tok, ckpt["shapes"])
    weights_dict = ckpt["model"]
    if weights == "best" and ckpt["state"].get("best_state") is not None:
        weights_dict = ckpt["state"]["best_state"]
    stub.word_vectors = _frozen_word_vectors(weights_dict)  # the build skips recomputing them (may need network)
    net = spec.load("build")(stored_cfg, stub)
    net.load_state_dict(weights_dict)
    net.to(device).eval()
    state = ckpt["state"]
    return TrainedCaptioner(name=name, model=net, tokenizer=tok, cfg=stored_cfg, spec=spec, path=path,
                            best=state.get("best"), steps=state.get("step", 0), finished=bool(state.get("done")),
                            meta=meta, shapes=dict(ckpt["shapes"]))


def _frozen_word_vectors(weights: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """CLIP-DiffusionLM's pretrained word vectors are weights of the checkpoint (``embedding.weight``)."""
    w = weights.get("embedding.weight")
    return w.clone() if w is not None else None


def clip_meta(cfg) -> dict[str, Any]:
    """Which CLIP made the features: the scratch checkpoint (path and SHA-256) or the pretrained name/tag."""
    if cfg.clip.source == "pretrained":
        return {"source": "pretrained", "name": cfg.clip.pretrained_model, "tag": cfg.clip.pretrained_tag}
    from clipdiff_mini.clip.model import file_sha256, scratch_checkpoint_path

    path = scratch_checkpoint_path(cfg)
    return {"source": "scratch", "path": str(path), "sha256": file_sha256(path) if path.exists() else None}
