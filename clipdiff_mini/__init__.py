"""clipdiff_mini: the small, tested library behind the course on diffusion
models for image captioning. Its folders are the parts of the course:

- core (this folder): ``config`` (profiles and parameters), ``presets`` (the
  papers' settings), ``atomic_io`` (crash-safe writes), ``seeding``, ``hub``
  (downloads that fail fast offline)
- ``data/``        -- scenes, pictures, captions, splits, tokenizers (notebook 00)
- ``diffusion/``   -- schedules, Gaussian diffusion, samplers, text embeddings
  and the text-only Diffusion-LM (notebooks 01-03); discrete diffusion (06)
- ``evaluation/``  -- COCO metrics, scene accuracy, caption perturbations (00)
- ``clip/``        -- the small CLIP, its training, features, probes (04)
- ``captioners/``  -- the captioners of notebooks 05-08 and what they share
- ``train``        -- the one training command for every captioner (one process or torchrun)
- ``caption``      -- caption your own image files with a trained captioner
- ``course/``      -- the course's tooling, not its machine learning: the notebook runner, the
  numbers each notebook reports, the HTML report of a run

`LAYERS` below says which part may import which: a part imports only the
parts listed for it (lower ones), never a higher one; the test
``tests/test_layering.py`` reads every module's imports and enforces it.
"""
from clipdiff_mini.config import ConfigError, get_config

__version__ = "0.1.0"
__all__ = ["get_config", "ConfigError", "LAYERS", "__version__"]

# part -> the parts it may import (besides itself). "core" is the top-level
# modules config, presets, atomic_io, seeding, hub; "train" and "caption" are top-level command modules (files,
# not folders) above the captioners, and "course" the tooling that runs and reports the notebooks.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": (),
    "data": ("core",),
    "diffusion": ("core",),
    "evaluation": ("core", "data"),
    "clip": ("core", "data"),
    "captioners": ("core", "data", "diffusion", "evaluation", "clip"),
    "train": ("core", "data", "diffusion", "evaluation", "clip", "captioners"),
    "caption": ("core", "data", "diffusion", "evaluation", "clip", "captioners"),
    "course": ("core", "data", "diffusion", "evaluation", "clip", "captioners"),
}
