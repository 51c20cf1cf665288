"""Part 5 of the library: the captioners of notebooks 05-08 and what they
share. May import every lower part: core, data, evaluation, diffusion, clip.

Modules:

- ``base``       -- what every captioner is (`Captioner`: loss and sample) and the glue they share (heads, guidance)
- ``features``   -- a split as captioners see it: CLIP features (pooled, grid, text) and caption token ids
- ``training``   -- the one training loop: progress, validation on val, best weights, resumable checkpoints,
  several processes (DDP), mixed precision on CUDA
- ``distributed`` -- the processes of a torchrun launch: rank, process group, barriers, shards of a batch
- ``checkpoints`` -- what a checkpoint holds, `load_trained`, refusing another model/config/vocabulary
- ``registry``   -- every captioner by name: its module, build and caption functions, config section
- ``trainer``    -- `train(name, cfg, data)`: every captioner trains through it (targets, seed, model, the loop)
- ``evaluate``   -- the one evaluation: COCO metrics, scene accuracy, object recall, error kinds, baselines
- ``decoding``   -- ids to captions, repeated words, the denoising trajectory as text
- ``display``    -- figures: training curves, caption grids, how a trajectory settles, attention masks and maps
- ``backbone``   -- the course's transformer block, shared by the three captioners (pre-LN, attention through
  SDPA under a per-sample or causal mask, a key-value cache, adaptive LayerNorm, cross or prefix)
- ``length``     -- the caption length from the picture: DDCap's length head, also a CLIP-DiffusionLM switch
- ``continuous`` -- CLIP-DiffusionLM, continuous diffusion over word vectors (notebook 05)
- ``ddcap``      -- DDCap, masked discrete diffusion with cross-attention to the CLIP grid (notebook 07)
- ``diagnosis``  -- teacher-forced accuracies: a masked model at each mask ratio, the autoregressive next word
- ``distillation`` -- sequence-level distillation: a diffusion captioner trained on the autoregressive decoder's captions
- ``autoregressive`` -- the baseline: the course's block under a causal mask, greedy and beam search with a
  key-value cache (notebooks 06 and 08)
- ``ablations``  -- the papers' ablation tables rerun, one trained model per row (a command)
- ``benchmark``  -- fair timing: warm-up runs, the median of timed runs, the device and thread count (notebook 08)
- ``infilling``  -- a span of a reference hidden (colour, shape, relation) and filled by each captioner, scored (notebook 08)
- ``refinement`` -- reading trajectories: the order words were decided in, same-call repeats, length errors (notebook 08)
- ``try_it``     -- a student's scene -> the picture -> its CLIP features -> every captioner's caption (notebook 08)
"""
from clipdiff_mini.captioners.autoregressive import (ARCaptioner, ar_caption_fn, build_ar_captioner,
                                                     train_autoregressive)
from clipdiff_mini.captioners.continuous import (ContinuousCaptioner, build_continuous_captioner,
                                                 continuous_caption_fn, train_continuous)
from clipdiff_mini.captioners.ddcap import DDCapCaptioner, build_ddcap_captioner, ddcap_caption_fn, train_ddcap
from clipdiff_mini.captioners.evaluate import (accuracy_by_objects, error_profile, evaluate_captions,
                                               generate_captions, most_frequent_caption, nearest_neighbour_captions, trivial_captions)
from clipdiff_mini.captioners.features import SplitFeatures, load_captioning_data
from clipdiff_mini.captioners.checkpoints import CheckpointMismatch, TrainedCaptioner, load_trained
from clipdiff_mini.captioners.registry import CAPTIONERS, get_spec
from clipdiff_mini.captioners.training import train_captioner

__all__ = ["ARCaptioner", "ar_caption_fn", "build_ar_captioner", "train_autoregressive",
           "ContinuousCaptioner", "build_continuous_captioner", "continuous_caption_fn", "train_continuous",
           "DDCapCaptioner", "build_ddcap_captioner", "ddcap_caption_fn", "train_ddcap", "accuracy_by_objects", "error_profile", "evaluate_captions", "generate_captions", "most_frequent_caption",
           "nearest_neighbour_captions", "trivial_captions", "SplitFeatures", "load_captioning_data",
           "train_captioner", "CheckpointMismatch", "TrainedCaptioner", "load_trained", "CAPTIONERS",
           "get_spec"]
