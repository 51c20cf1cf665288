"""Part 4 of the library: CLIP features of pictures. Imports the data part and the core.

Modules:

- ``model``         -- CLIP on open_clip: the small scratch CLIP, pretrained ones, checkpoints (`ClipBundle`)
- ``training``      -- contrastive training with hard negatives, resumable; ``load_clip`` (load or train)
- ``feature_cache`` -- pooled features and patch tokens of a split, computed once and cached on disk
- ``probes``        -- what the features know: linear and zero-shot probes of scene attributes
- ``retrieval``     -- image-text retrieval recall@k
"""
from clipdiff_mini.clip.feature_cache import compute_features, extract_features
from clipdiff_mini.clip.model import (ClipBundle, PretrainedWeightsUnavailable, build_scratch_model,
                                      load_pretrained_clip, pretrained_tokenizer, scratch_checkpoint_path)
from clipdiff_mini.clip.probes import (ATTRIBUTES, PROBE_TARGETS, probe_attributes, probe_labels, probe_target_name,
                                       zero_shot_accuracy, zero_shot_relation, zero_shot_weights)
from clipdiff_mini.clip.retrieval import retrieval_recall
from clipdiff_mini.clip.training import load_clip, peak_rss_mb, train_clip

__all__ = ["compute_features", "extract_features", "ClipBundle", "PretrainedWeightsUnavailable",
           "build_scratch_model", "load_pretrained_clip", "pretrained_tokenizer", "scratch_checkpoint_path",
           "ATTRIBUTES", "PROBE_TARGETS", "probe_attributes", "probe_labels", "probe_target_name",
           "zero_shot_accuracy", "zero_shot_relation", "zero_shot_weights", "retrieval_recall", "load_clip",
           "peak_rss_mb", "train_clip"]
