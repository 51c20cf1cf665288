"""Part 3 of the library: diffusion itself, on vectors and on text. Knows
nothing of pictures, CLIP or captioners; imports only the core modules.

Modules (lower ones first):

- ``noise_schedules``    -- beta_t and alpha-bar_t: linear, cosine, sqrt schedules (notebook 01)
- ``gaussian_diffusion`` -- q(x_t | x_0), the posterior, the variational bound terms (notebooks 01-02)
- ``samplers``           -- ancestral DDPM and DDIM sampling, with optional clamping (notebook 02)
- ``toy_distributions``  -- a Gaussian mixture whose optimal denoiser is known in closed form (notebook 02)
- ``text_embedding``     -- text as vectors: embedding, rounding, clamping (notebook 03)
- ``text_diffusion``     -- a small text-only Diffusion-LM with the rounding loss (notebook 03)
- ``discrete``           -- masked and mask-and-replace diffusion on token ids: Q_t, Qbar_t, q(x_t | x_0),
  the posterior, the masked cross-entropy and its 1/t weight, best-first and ancestral unmasking (notebook 06)
- ``discrete_toy``       -- short token sequences whose exact masked denoiser and bound are computable (notebook 06)
- ``masked_lm``          -- a tiny bidirectional transformer predicting p(x_0 | x_t), no time input (notebook 06)
"""
from clipdiff_mini.diffusion.gaussian_diffusion import (posterior_mean_from_x0, predict_x0, q_mean_variance,
                                                        q_posterior, q_sample, q_step, variational_bound)
from clipdiff_mini.diffusion.noise_schedules import SCHEDULES, Schedule, make_schedule, schedule_from_config
from clipdiff_mini.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample
from clipdiff_mini.diffusion.text_embedding import (clamp_to_embeddings, default_temperature, embed_tokens,
                                                    make_clamp_fn, nearest_tokens, rounding_nll, rounding_recovery,
                                                    roundtrip_accuracy,
                                                    sample_x0)
from clipdiff_mini.diffusion.text_diffusion import (TextDiffusionLM, TextDiffusionTrainer, decode_samples,
                                                    exact_row_fraction, repeated_word_rate)
from clipdiff_mini.diffusion.toy_distributions import GaussianMixture, exact_bound_1d
# The discrete q_sample is clipdiff_mini.diffusion.discrete.q_sample: the name q_sample here is the Gaussian one.
from clipdiff_mini.diffusion.discrete import (MASK_SCHEDULES, MaskSchedule, ancestral_step, carry_over_log_probs,
                                              mask_elbo_weight, mask_schedule, masked_cross_entropy, posterior,
                                              qbar_matrix, q_probs, step_matrix, unmask_best_first, sample_masked)
from clipdiff_mini.diffusion.discrete_toy import ToySequences
from clipdiff_mini.diffusion.masked_lm import MaskedTokenDenoiser

__all__ = ["posterior_mean_from_x0", "predict_x0", "q_mean_variance", "q_posterior", "q_sample", "q_step",
           "variational_bound", "SCHEDULES", "Schedule", "make_schedule", "schedule_from_config", "ddim_sample",
           "ddim_timesteps", "ddpm_sample", "clamp_to_embeddings", "default_temperature", "embed_tokens",
           "make_clamp_fn", "nearest_tokens", "rounding_nll", "rounding_recovery", "roundtrip_accuracy", "sample_x0",
           "TextDiffusionLM", "TextDiffusionTrainer", "decode_samples", "exact_row_fraction",
           "repeated_word_rate", "GaussianMixture", "exact_bound_1d", "MASK_SCHEDULES", "MaskSchedule",
           "ancestral_step", "carry_over_log_probs", "mask_elbo_weight", "mask_schedule", "masked_cross_entropy",
           "posterior", "qbar_matrix", "q_probs", "step_matrix", "unmask_best_first", "sample_masked",
           "ToySequences", "MaskedTokenDenoiser"]
