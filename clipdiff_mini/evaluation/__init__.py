"""Part 2 of the library: judging captions. Imports the data part and the core.

Modules:

- ``metrics``         -- the COCO caption metrics (pycocoevalcap): BLEU, METEOR, ROUGE-L, CIDEr, SPICE
- ``scene_judge``     -- scene accuracy: is every claim of a caption true of its picture, its list naming
                         distinct objects? object recall
- ``caption_perturb`` -- wrong captions that look right (one-word edits), to test the metrics
"""
from clipdiff_mini.evaluation.caption_perturb import NoPerturbation, perturb_caption, random_words, shuffle_words
from clipdiff_mini.evaluation.metrics import CaptionScorer, MetricsError, caption_metrics, spice_status
from clipdiff_mini.evaluation.scene_judge import judge_caption, scene_accuracy

__all__ = ["NoPerturbation", "perturb_caption", "random_words", "shuffle_words", "CaptionScorer", "MetricsError",
           "caption_metrics", "spice_status", "judge_caption", "scene_accuracy"]
