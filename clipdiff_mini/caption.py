"""Caption your own pictures with a trained captioner.

    python -m clipdiff_mini.caption photo.jpg --checkpoint data/checkpoints/captioners/ci-clip_diffusionlm-....pt
    python -m clipdiff_mini.caption my_pictures/ --checkpoint PATH --trajectory

The checkpoint says everything needed (`clipdiff_mini.captioners.checkpoints`):
which captioner, its config and vocabulary, and which CLIP made its training
features (the course's small CLIP by checkpoint path and SHA-256, or a
pretrained open_clip name). Each picture is read with PIL and prepared as the
features were in training: resized (shorter side) and centre-cropped to
``data.image_size`` (`clipdiff_mini.data.splits.decode_image`), then the CLIP
bundle's own resize and normalisation; its pooled feature and grid are the
captioner's condition.

A folder is captioned file by file (image suffixes only, sorted by name). A
file that is not an image or cannot be read is reported and skipped; the
others are captioned. The random draw is reset to ``--seed`` before each
picture, so a picture's caption does not depend on the other files (and
matches notebook 09's cell for the same checkpoint). ``--trajectory`` prints,
for the diffusion captioners, the caption as it condenses out of noise.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from clipdiff_mini.captioners.checkpoints import TrainedCaptioner, load_trained
from clipdiff_mini.captioners.decoding import trajectory_rows
from clipdiff_mini.clip.feature_cache import compute_features
from clipdiff_mini.clip.model import PretrainedWeightsUnavailable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class CaptionInputError(ValueError):
    """A path that cannot be captioned (missing, no pictures in a folder, not an image)."""


@dataclass
class CaptionResult:
    """One file's outcome: a caption, or the error that stopped it."""

    path: Path
    caption: str | None = None
    error: str | None = None
    trajectory: list[tuple[int, str]] = field(default_factory=list)


def image_files(target: str | Path) -> list[Path]:
    """The pictures `target` names: the file itself, or a folder's image files sorted by name."""
    target = Path(target)
    if not target.exists():
        raise CaptionInputError(f"{target} does not exist; give an image file or a folder of images")
    if target.is_file():
        return [target]
    files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CaptionInputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder {target}")
    return files


def read_image(path: Path, size: int) -> torch.Tensor:
    """uint8 (3, size, size) of one file, as the training features were made; clear errors otherwise."""
    from PIL import UnidentifiedImageError

    from clipdiff_mini.data.splits import decode_image

    try:
        return torch.from_numpy(decode_image(path, size))
    except UnidentifiedImageError:
        raise CaptionInputError(f"{path.name}: not an image file PIL can read") from None
    except (OSError, ValueError) as exc:
        raise CaptionInputError(f"{path.name}: cannot be read ({type(exc).__name__}: {exc})") from None


def load_clip_for(trained: TrainedCaptioner, clip_path: str | Path | None = None, device="cpu"):
    """The CLIP that made the captioner's training features (a different one would give it features it never saw)."""
    cfg = trained.cfg
    info = trained.meta.get("clip") or {}
    if cfg.clip.source == "pretrained":
        from clipdiff_mini.clip.model import load_pretrained_clip

        return load_pretrained_clip(cfg, device=device)
    from clipdiff_mini.clip.model import file_sha256, load_scratch_checkpoint, scratch_checkpoint_path

    candidates = [Path(clip_path)] if clip_path else [Path(p) for p in (info.get("path"),) if p] + \
        [scratch_checkpoint_path(cfg)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CaptionInputError(f"the small CLIP this captioner was trained with is not at {candidates[0]}; "
                                "pass its checkpoint with --clip PATH (a clip_scratch_*.pt file)")
    want = info.get("sha256")
    if want and file_sha256(path) != want:
        raise CaptionInputError(f"the CLIP checkpoint {path} is not the one this captioner was trained with "
                                f"(SHA-256 differs from {want[:12]}...); pass the right one with --clip PATH")
    return load_scratch_checkpoint(path, device=device, precision=cfg.precision)  # as the training features


def image_condition(bundle, images: torch.Tensor, grid: str) -> dict[str, torch.Tensor]:
    """The captioner's condition of uint8 images (B, 3, H, W): pooled (B, D) and grid (B, P, W), chosen
    and rounded exactly as `clipdiff_mini.captioners.features.from_features` does with cached features."""
    feats = compute_features(bundle, images, [], progress=False)
    g = feats["grid_fine" if grid == "fine" else "patches"].float()  # stored as fp16 in the cache
    if grid == "none":
        g = g[:, :0]  # (B, 0, W)
    return {"image": feats["image"].float(), "grid": g}


def caption_files(paths: Sequence[Path], trained: TrainedCaptioner, bundle, *, seed: int | None = None,
                  trajectory: bool = False, n_rows: int = 8) -> list[CaptionResult]:
    """A `CaptionResult` per file: unreadable files get an error, the others a caption (and trajectory)."""
    seed = trained.cfg.seed if seed is None else seed
    fn = trained.caption_fn()
    model = trained.model
    out = []
    for path in paths:
        try:
            image = read_image(Path(path), trained.cfg.data.image_size)
        except CaptionInputError as exc:
            out.append(CaptionResult(Path(path), error=str(exc)))
            continue
        cond = image_condition(bundle, image[None], trained.cfg.captioner.grid)
        res = CaptionResult(Path(path))
        torch.manual_seed(seed)
        res.caption = fn(model, cond)[0]
        if trajectory and trained.spec.kind == "diffusion" and hasattr(model, "sample"):
            dev = next(model.parameters()).device
            torch.manual_seed(seed)  # the same draw as the caption's
            traj = model.sample({k: v.to(dev) for k, v in cond.items()}, trajectory=True)["trajectory"]
            res.trajectory = trajectory_rows(traj, trained.tokenizer, 0, n_rows)
        out.append(res)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipdiff_mini.caption", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="an image file or a folder of images")
    parser.add_argument("--checkpoint", required=True, help="a captioner checkpoint written by clipdiff_mini.train")
    parser.add_argument("--clip", default=None, help="the small CLIP's checkpoint, if not where training left it")
    parser.add_argument("--trajectory", action="store_true", help="show the denoising trajectory (diffusion models)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the sampler (default: the config's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        files = image_files(args.target)
        trained = load_trained(args.checkpoint, device=args.device)
        bundle = load_clip_for(trained, args.clip, device=args.device)
    except (CaptionInputError, OSError, ValueError, PretrainedWeightsUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# {trained.name} from {trained.path} (step {trained.steps}), CLIP {bundle.name}")
    results = caption_files(files, trained, bundle, seed=args.seed, trajectory=args.trajectory)
    for r in results:
        if r.error:
            print(f"{r.path.name}\tERROR: {r.error}", file=sys.stderr)
            continue
        print(f"{r.path.name}\t{r.caption}")
        for t, text in r.trajectory:
            print(f"    t={t:>5}  {text}")
    bad = sum(r.error is not None for r in results)
    if bad:
        print(f"# {bad} of {len(results)} file(s) could not be captioned (see above)", file=sys.stderr)
    return 1 if bad == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
