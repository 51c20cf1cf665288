# %% [markdown]
# # 05 · CLIP-DiffusionLM: solutions to the exercises
#
# Worked answers to the exercises at the end of notebook 05. This notebook
# stands on its own: it reloads the captioning data, loads the trained
# captioner from the checkpoint notebook 05 wrote (or trains it when there is
# none: seconds at the CI size, minutes at laptop size), samples the test
# captions again, then answers each exercise with the derivation, the code,
# and the same check as the exercise cell.

# %%
import os

import numpy as np
import torch

from clipdiff_mini.captioners import (build_continuous_captioner, continuous_caption_fn, generate_captions,
                                      load_captioning_data, train_continuous)
from clipdiff_mini.captioners.decoding import drop_consecutive_repeats
from clipdiff_mini.config import get_config
from clipdiff_mini.diffusion import make_schedule, rounding_recovery
from clipdiff_mini.evaluation import judge_caption
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"

# %%
cfg = get_config(PROFILE)  # the course's recipe, as notebook 05 runs it with its parameters left at None
set_seed(cfg.seed)
cc = cfg.continuous
data = load_captioning_data(cfg)
train, test = data["train"], data["test"]
tok = train.tokenizer
E = build_continuous_captioner(cfg, train).E.detach()  # (V, D) the frozen word vectors
sched = make_schedule(cc.schedule, cc.timesteps)
ids = train.ids[:512]  # (B, L) the captions of notebook 05, section 2
ts = np.unique(np.linspace(1, sched.T, 25).astype(int))
recovered = rounding_recovery(sched, ids, E, ts, mask=ids != tok.pad_id, generator=torch.Generator().manual_seed(0))
snr_cross = 1 / cc.embed_scale ** 2
t_cross = int(np.argmin(np.abs(sched.snr[1:].numpy() - snr_cross))) + 1
model, record = train_continuous(cfg, data)  # loads the checkpoint when notebook 05 has run
raw = generate_captions(model, continuous_caption_fn(tok, drop_repeats=False), test)  # as the model wrote them
passes = model.sample({k: v[:1] for k, v in test.condition().items()})["passes"]
scenes = test.scenes()
print(f"profile {cfg.profile}: D = {cc.embed_dim}, embed_scale = {cc.embed_scale}, {len(E)} word vectors; "
      f"captioner {'loaded' if record['resumed'] else 'trained'} ({record['steps']} steps); "
      f"{len(raw)} test captions, {passes} passes each")

# %% [markdown]
# ## Exercise 5.1: how far apart are two word vectors?
#
# *Question:* the length of a word vector and the typical distance between two
# of them, from `embed_dim` $D$ and `embed_scale` $\sigma$.
#
# **Answer.** A row with root-mean-square $\sigma$ per coordinate has
# $\lVert e\rVert^2 = \sum_i e_i^2 = D\sigma^2$, so every row has length exactly
# $\sigma\sqrt D$ (the library rescales each row to it). For two rows,
#
# $$\lVert e_a - e_b\rVert^2 = \lVert e_a\rVert^2 + \lVert e_b\rVert^2 - 2\,e_a^\top e_b
#   = 2D\sigma^2\,(1 - \cos\theta_{ab}).$$
#
# Two random directions in $D$ dimensions have a cosine of mean zero and
# standard deviation $1/\sqrt D$, so the distance is about $\sigma\sqrt{2D}$,
# with a relative spread of order $1/(2\sqrt D)$.

# %%
row_length_5_1 = cc.embed_scale * cc.embed_dim ** 0.5
distance_5_1 = cc.embed_scale * (2 * cc.embed_dim) ** 0.5

lengths_E = E.norm(dim=-1)  # (V,)
dist_E = torch.cdist(E, E)[~torch.eye(len(E), dtype=torch.bool)]  # (V (V-1),) distances between distinct rows
assert torch.allclose(lengths_E, torch.full_like(lengths_E, row_length_5_1), rtol=1e-3)
assert abs(float(dist_E.mean()) / distance_5_1 - 1) < 0.1
print(f"length {row_length_5_1:.4f} (rows {float(lengths_E.min()):.4f}..{float(lengths_E.max()):.4f}); "
      f"distance: formula {distance_5_1:.4f}, mean over pairs {float(dist_E.mean()):.4f} "
      f"(spread: measured std {float(dist_E.std()):.4f}, predicted formula/(2 sqrt D) = "
      f"{distance_5_1 / (2 * cc.embed_dim ** 0.5):.4f})")

# %% [markdown]
# ## Exercise 5.2: half-size word vectors
#
# *Question:* with the word vectors halved, does the point where rounding
# $x_t$ stops recovering the caption move earlier or later in the schedule?
#
# **Answer: earlier.** Rounding fails when the noise per coordinate of
# $x_t/\sqrt{\bar\alpha_t}$, $\sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$, reaches about the
# vectors' scale: at $\text{SNR}_t = 1/\sigma^2$. Halving $\sigma$ makes that
# threshold four times larger, and since the SNR falls with $t$, a larger SNR
# is reached at a smaller $t$. Equivalently, the same noise now covers the
# smaller distances between the vectors sooner. So fewer timesteps are
# trivial for the denoiser and the decisions spread over more of the schedule
# (the first lever of notebook 05, section 11).

# %%
direction_5_2 = "earlier"

recovered_half = rounding_recovery(sched, ids, E / 2, ts, mask=ids != tok.pad_id,
                                   generator=torch.Generator().manual_seed(0))
t_cross_half = int(np.argmin(np.abs(sched.snr[1:].numpy() - 4 * snr_cross))) + 1  # SNR = 1/(scale/2)^2
assert direction_5_2 == ("earlier" if t_cross_half < t_cross else "later")
assert np.mean(recovered_half) < np.mean(recovered)
print(f"the crossing moves from t = {t_cross} to t = {t_cross_half} of T = {sched.T}; words recovered, averaged "
      f"over the probed t: {np.mean(recovered):.3f} at full scale, {np.mean(recovered_half):.3f} at half scale")

# %% [markdown]
# ## Exercise 5.3: network passes per caption
#
# *Question:* the passes per test caption, from the sampling settings.
#
# **Answer.** The feed-back sampler calls the network once per step, so one
# candidate caption costs `sample_steps` passes. With the length head and a
# length beam of $k$, the $k$ most likely lengths are each denoised in full and
# the best kept: $k$ times the passes. (Guidance would compute two outputs per
# call; at $s = 1$ it is off.) So passes $=$ `sample_steps` $\times$ `length_beam`,
# and a feed-back row of section 8 with $n$ steps and beam $b$ costs $nb$.

# %%
passes_5_3 = cc.sample_steps * (cc.length_beam if cc.length_prediction else 1)
feedback_passes_5_3 = lambda steps, beam: steps * beam  # noqa: E731

assert passes_5_3 == passes
cond1 = {k: v[:1] for k, v in test.condition().items()}
for steps, beam in ((1, 1), (5, 1), (10, 1), (20, 1), (5, 3), (5, 5), (10, 5)):
    p = model.sample(cond1, sampler="feedback", steps=steps, length_beam=beam)["passes"]
    assert feedback_passes_5_3(steps, beam) == p, (steps, beam, p)
print(f"{passes} passes per test caption = {cc.sample_steps} steps x a length beam of {cc.length_beam}")

# %% [markdown]
# ## Exercise 5.4: deleting consecutive repeats
#
# *Question:* write the post-processing; does it lower the number of captions
# that name one object twice?
#
# **Answer.** Keep a word unless it equals the word kept just before it. It
# cannot fix "a red circle and a red circle": that caption repeats a whole
# phrase, and no word in it follows itself. What it fixes are stutters such as
# "a red red circle", which the scene judge reads as malformed rather than as
# a second object. So on the model's captions the number that name an object
# twice does not fall (the check below counts it on this run's captions).

# %%
def my_drop_repeats(caption):
    """'a a red red circle' -> 'a red circle'."""
    words = caption.split()
    return " ".join(w for i, w in enumerate(words) if i == 0 or w != words[i - 1])


fixes_repeated_object_5_4 = False

for k, c in raw.items():
    assert my_drop_repeats(c) == " ".join(drop_consecutive_repeats(c.split())), c
changed = [k for k, c in raw.items() if my_drop_repeats(c) != c]
twice = lambda c, k: judge_caption(c, scenes[k]).names_an_object_twice  # noqa: E731
before = sum(twice(raw[k], k) for k in changed)
after = sum(twice(my_drop_repeats(raw[k]), k) for k in changed)
assert fixes_repeated_object_5_4 == (after < before)
print(f"post-processing changed {len(changed)} of {len(raw)} test captions; of those, {before} named an object "
      f"twice before and {after} after")
for k in changed[:4]:
    print(f"   {raw[k]!r} -> {my_drop_repeats(raw[k])!r}")
