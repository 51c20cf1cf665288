# %% [markdown]
# # 04 · CLIP: the contrastive objective, a small CLIP, and what its features know
#
# Both captioners of this course look at the picture through **CLIP**:
#
# * CLIP-DiffusionLM conditions its denoiser on the *pooled* CLIP image
#   embedding, one vector per picture;
# * DDCap cross-attends to CLIP's *patch tokens*, one vector per image region.
#
# A captioner can only say what these features carry. If the image embedding
# does not know whether the big object is a circle or a square, no amount of
# diffusion will recover it. So before building captioners we build the
# feature extractor and measure what it knows.
#
# This notebook
#
# 1. derives CLIP's training objective (a symmetric InfoNCE loss with a
#    learned temperature) and checks the derivation against open_clip's
#    `ClipLoss`;
# 2. trains a **small CLIP from scratch** on the embedded shapes dataset
#    (open_clip's model classes with a small convolutional image tower and a
#    text tower over our own word vocabulary), once: later notebooks reuse the
#    checkpoint and the cached features;
# 3. extracts and caches the features every later notebook uses: pooled image
#    embeddings, patch tokens, caption embeddings;
# 4. evaluates them: the image-text similarity matrix, retrieval recall,
#    zero-shot probes from text prompts, and linear probes for colour, shape,
#    size, count and spatial relations;
# 5. shows the pretrained route (ViT-B/32 as in CLIP-DiffusionLM, ViT-B/16 as
#    in DDCap), which needs network access and so runs in the Colab profile.

# %% [markdown]
# After this notebook you can:
#
# * derive CLIP's symmetric InfoNCE loss and its gradient with respect to the
#   learned temperature, and check both against open_clip;
# * explain why the loss bounds the mutual information between a picture and
#   its caption, and why the batch size caps that bound;
# * train a small CLIP on the shapes and cache the features every later
#   notebook reads: pooled image embeddings, the patch grid, caption
#   embeddings;
# * measure what the features know (retrieval recall, zero-shot probes,
#   linear probes against a control of random features) and predict from it
#   which attributes a captioner will get wrong;
# * switch to a pretrained CLIP through the same calls when the machine has
#   network.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import dataclasses

from clipdiff_mini.clip import (ATTRIBUTES, PROBE_TARGETS, PretrainedWeightsUnavailable, build_scratch_model,
                                compute_features, extract_features, load_pretrained_clip, peak_rss_mb,
                                pretrained_tokenizer, probe_attributes, probe_labels, probe_target_name,
                                retrieval_recall, scratch_checkpoint_path, train_clip, zero_shot_accuracy,
                                zero_shot_relation, zero_shot_weights)
from clipdiff_mini.config import get_config
from clipdiff_mini.data import load_split
from clipdiff_mini.course.results import ResultLog
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
VISION_TOWER = None  # None: the profile's choice ("resnet"); "vit" to compare with a small ViT
TRAIN_STEPS = None  # None: the profile's number of training steps
N_HEATMAP = 10  # validation pictures in the similarity matrix

# %%
cfg = get_config(PROFILE, {"clip.vision_tower": VISION_TOWER, "clip.train_steps": TRAIN_STEPS})  # None: the profile's
set_seed(cfg.seed)
log = ResultLog(cfg, "04_clip_features")
# This notebook always trains the small CLIP; cfg.clip.source decides which CLIP
# later notebooks use (the Colab profile switches to a pretrained one).
scfg = cfg.replace({"clip.source": "scratch"})
print(f"profile {cfg.profile}: {cfg.data.n_train} training pictures, CLIP source for later notebooks: "
      f"{cfg.clip.source}, torch threads: {torch.get_num_threads()}")

# %%
train = load_split(cfg, "train")
val = load_split(cfg, "val")
val_images = val.load_images()  # (N, 3, 64, 64) uint8
fig, axes = plt.subplots(1, 6, figsize=(15, 3.2))
for ax, rec, img in zip(axes, val.records, val_images):
    ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_title("\n".join([rec.captions[0][i:i + 28] for i in range(0, min(len(rec.captions[0]), 84), 28)]),
                 fontsize=7)
    ax.axis("off")
plt.suptitle("validation pictures with one of their five captions")
plt.show()
print(train, val, sep="\n")

# %% [markdown]
# ## 1. The contrastive objective
#
# CLIP has two encoders: an image encoder $f$ and a text encoder $g$, each
# ending in a linear map into a shared $D$-dimensional space and a
# normalisation to unit length,
# $u = f(\text{image})/\lVert f(\text{image})\rVert$ and
# $v = g(\text{text})/\lVert g(\text{text})\rVert$. Training never tells the
# model what is in a picture; it only tells it which caption belongs to which
# picture.
#
# Take a batch of $B$ matching pairs $(u_i, v_i)$. Every other caption in the
# batch is a wrong answer for image $i$. Score all $B^2$ combinations by the
# scaled cosine similarity
#
# $$\ell_{ij} = e^{s}\, u_i^\top v_j ,$$
#
# where $e^{s} = 1/\tau$ is an inverse temperature and $s$ is a *learned*
# scalar (open_clip's `logit_scale`). Now read row $i$ as a classification
# problem with $B$ classes ("which caption is mine?") and column $j$ as the
# same problem the other way round ("which picture is mine?"). The softmax
# over a row is
#
# $$p_{i\to j} = \frac{e^{\ell_{ij}}}{\sum_{k} e^{\ell_{ik}}},\qquad
#   p_{j\to i} = \frac{e^{\ell_{ij}}}{\sum_{k} e^{\ell_{kj}}},$$
#
# and the loss is the average cross-entropy of the right answers in both
# directions, the *symmetric InfoNCE* loss:
#
# $$\mathcal L = \tfrac12\Big[-\tfrac1B\sum_i \log p_{i\to i}
#              \; - \; \tfrac1B\sum_j \log p_{j\to j}\Big].$$
#
# Two limits tell us what the numbers mean. With $s\to-\infty$ every logit
# is $0$, every softmax is uniform and $\mathcal L = \log B$: the loss of
# guessing. A perfect model with orthogonal embeddings for different pairs
# and $s\to\infty$ drives $\mathcal L\to 0$.
#
# **The temperature.** Differentiating $-\log p_{i\to i} = -\ell_{ii} + \log\sum_k e^{\ell_{ik}}$
# with respect to $s$ (note $\partial \ell_{ik}/\partial s = \ell_{ik}$) gives
#
# $$\frac{\partial \mathcal L}{\partial s} = \frac{e^{s}}{2}\Big[
#   \tfrac1B\sum_i\big(\mathbb E_{k\sim p_{i\to\cdot}}[u_i^\top v_k] - u_i^\top v_i\big)
# + \tfrac1B\sum_j\big(\mathbb E_{k\sim p_{\cdot\to j}}[u_k^\top v_j] - u_j^\top v_j\big)\Big].$$
#
# Each bracket compares the similarity of the right pair with the
# softmax-weighted average similarity. As long as right pairs are more
# similar than the average, the gradient is negative and training *raises*
# $s$: the softmax gets sharper. A model that cannot yet separate pairs
# keeps the temperature high (soft). CLIP starts at $\tau = 0.07$ and caps
# $e^{s}$ at 100, which we do too.
#
# The check below computes $\mathcal L$ and $\partial\mathcal L/\partial s$ from these formulas
# (float64 NumPy, explicit sums) and compares them with open_clip's
# `ClipLoss` and autograd on random features.

# %%
from open_clip import ClipLoss

rng = np.random.default_rng(0)
B, D = 16, 8
u = rng.normal(size=(B, D)); u /= np.linalg.norm(u, axis=1, keepdims=True)
v = u + 0.3 * rng.normal(size=(B, D)); v /= np.linalg.norm(v, axis=1, keepdims=True)  # related pairs
s0 = 1.7

def infonce_by_hand(u, v, s):
    logits = np.exp(s) * u @ v.T  # (B, B)
    log_p_rows = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # image -> text
    log_p_cols = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))  # text -> image
    loss = 0.5 * (-np.mean(np.diag(log_p_rows)) - np.mean(np.diag(log_p_cols)))
    sims, p_r, p_c = u @ v.T, np.exp(log_p_rows), np.exp(log_p_cols)
    grad_s = np.exp(s) / 2 * (np.mean((p_r * sims).sum(1) - np.diag(sims)) + np.mean((p_c * sims).sum(0) - np.diag(sims)))
    return loss, grad_s

loss_hand, grad_hand = infonce_by_hand(u, v, s0)
s_t = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
loss_oc = ClipLoss()(torch.from_numpy(u), torch.from_numpy(v), s_t.exp())
loss_oc.backward()
print(f"loss: by hand {loss_hand:.10f}   open_clip ClipLoss {loss_oc.item():.10f}")
print(f"dL/ds: by hand {grad_hand:.10f}   autograd {s_t.grad.item():.10f}")
assert abs(loss_hand - loss_oc.item()) < 1e-10 and abs(grad_hand - s_t.grad.item()) < 1e-10
# the guessing limit: s -> -infinity gives log B
assert abs(infonce_by_hand(u, v, -30.0)[0] - np.log(B)) < 1e-9
print(f"related pairs: dL/ds = {grad_hand:.3f} < 0, so training sharpens the softmax")
assert grad_hand < 0

# %% [markdown]
# **Why "InfoNCE".** The one-directional loss is the loss of a
# $B$-way classifier that must find the true partner among $B-1$ decoys.
# A classical result (van den Oord et al. 2018; Poole et al. 2019) says that
# for *any* scoring function, $\log B - \mathcal L_{i\to t}$ is, in
# expectation, a lower bound on the mutual information $I(\text{image};\text{text})$,
# and the best scoring function, $\log \frac{p(\text{text}\mid\text{image})}{p(\text{text})}$
# up to a term that depends on the image only, makes the bound nearly tight when $I \ll \log B$. So minimising the loss
# pushes the encoders to keep information shared by a picture and its
# caption, and the batch size caps how much can be measured: the bound
# never exceeds $\log B$. Large batches (CLIP used 32,768) are not a detail.
#
# A numeric check on a case where the mutual information is known: pairs of
# correlated Gaussians $(x, y)$ with correlation $\rho$ in each of $d$
# dimensions have $I = -\tfrac d2\log(1-\rho^2)$ nats. Scoring with the
# true $\log p(y\mid x) - \log p(y)$, the estimate $\log B - \mathcal L$
# should sit just below $I$ and never clearly above it; when $I$ comes close
# to $\log B$ the estimate falls visibly short: the batch is too small to
# measure that much information.

# %%
def infonce_estimate(rho, d, B, n_batches, gen):
    est = []
    for _ in range(n_batches):
        x = torch.randn(B, d, generator=gen, dtype=torch.float64)
        y = rho * x + (1 - rho**2) ** 0.5 * torch.randn(B, d, generator=gen, dtype=torch.float64)
        # score[i, j] = log p(y_j | x_i) - log p(y_j), up to a constant
        log_cond = -((y[None, :, :] - rho * x[:, None, :]) ** 2).sum(-1) / (2 * (1 - rho**2))  # (B, B)
        log_marg = -(y**2).sum(-1) / 2  # (B,)
        score = log_cond - log_marg[None, :]
        loss = F.cross_entropy(score, torch.arange(B))
        est.append(np.log(B) - loss.item())
    return np.mean(est), np.std(est) / np.sqrt(n_batches)

gen = torch.Generator().manual_seed(0)
for rho, d in [(0.5, 1), (0.8, 2), (0.95, 4)]:
    true_mi = -d / 2 * np.log(1 - rho**2)
    est, se = infonce_estimate(rho, d, B=256, n_batches=40, gen=gen)
    print(f"rho={rho}, d={d}: I = {true_mi:.3f} nats, InfoNCE estimate {est:.3f} +- {se:.3f}, log B = {np.log(256):.2f}")
    assert est <= true_mi + 4 * se + 1e-3, "the InfoNCE estimate must not exceed the mutual information"
    if true_mi < np.log(256) - 3:  # far below log B: nearly tight
        assert est >= true_mi - 4 * se - 0.03, "with the best critic and I << log B the bound is nearly tight"
    else:
        print(f"   I is close to log B: the estimate falls short by {true_mi - est:.2f} nats")

# %% [markdown]
# ## 2. A small CLIP, trained here
#
# We use open_clip's own `CLIP` class, its towers and its `ClipLoss`; only
# the sizes, and two training choices, are ours.
#
# * **Image tower: a small convolutional network.** A first attempt with a
#   small ViT learned colours and counts but barely recognised the *shape*
#   of an object in a CPU budget: a transformer has to learn from data what
#   edges and corners are. A convolution has that prior built in. open_clip's
#   `ModifiedResNet` (the tower of the original CLIP RN50: a 3-convolution
#   stem, four stages of bottleneck blocks, attention pooling instead of
#   average pooling) with one block per stage and a 16-channel stem is small
#   and fast.
# * **Text tower: our own vocabulary.** open_clip's tokenizer has 49,408
#   byte-pair pieces; the shapes captions use a few dozen words. A one-layer
#   causal transformer over the course's `WordTokenizer` ids is enough. The
#   caption embedding is read at the `[EOS]` token (open_clip
#   `pool_type="eos"`), the last position that has seen the whole caption.
# * **Hard negative captions.** Each caption also enters the batch with one
#   word swapped within its group (a colour for another colour, circle for
#   square, left for right, two for three), and the picture must prefer its
#   true caption over that near miss (the NegCLIP recipe). In a batch of
#   random pictures most captions can be told apart by colour alone; the
#   swapped captions make the other attributes pay.
# * **Temperature** starts at 0.02 instead of CLIP's 0.07 and is learned.
#   With Adam the log-temperature moves about one learning rate per step, so
#   in a few thousand steps it stays near where it starts; a sharper start
#   lets fine differences (circle against square) count sooner.
# * **Training:** batches of 128 pictures, each with one of its five
#   captions at random; AdamW with warm-up and cosine decay; snapshots every
#   `clip.save_every` steps, so an interrupted run resumes where it stopped.
#   The finished checkpoint is written once; running this cell again (or a
#   later notebook) just loads it.
#
# **What limits it: shape.** Colour, size and count are learned within a
# few hundred steps whatever the settings. Shape is learned last, and only
# once the text tower tells "circle" from "square" (early on the model
# treats them as one word). The same tower trained on the shape label
# directly learns it quickly, so the bottleneck is the contrastive signal,
# not the architecture: in a random batch almost every caption is already
# singled out by its colours and counts, and shape words add little to the
# loss. What helps is what sharpens that signal (hard negatives, a sharper
# softmax, bigger batches), more steps, and a joint embedding wide enough to
# keep which shape belongs to which object: a narrow pooled vector lost the
# shape that the tower's own grid still held, so the embedding is as wide
# as ViT-B/32's (`clip.embed_dim`), which costs only the last linear maps.
# The variants that were tried, with their commands and probes, are in the
# course's design log (`docs/design_log.md`). The cell below prints this
# run's steps, seconds and memory.

# %%
ckpt_path = scratch_checkpoint_path(scfg)
existed = ckpt_path.exists()
t0 = time.perf_counter()
bundle = train_clip(scfg)
wall = time.perf_counter() - t0
info = bundle.info
print(f"{'reused' if existed else 'trained'} {ckpt_path.name} ({wall:.1f} s in this cell)")
print(f"architecture: {bundle.name}, {info['n_params'] / 1e6:.2f} M parameters, input {bundle.image_size} px, "
      f"embedding {bundle.embed_dim}")
print(f"training: {info['steps']} steps of batch {scfg.clip.batch_size} = "
      f"{info['steps'] * scfg.clip.batch_size / info['n_train_images']:.1f} epochs over {info['n_train_images']} pictures, "
      f"{info['seconds']:.0f} s ({info['steps_per_second']:.2f} steps/s on {info['device']}, {info['threads']} threads), "
      f"peak memory {info['peak_rss_mb']:.0f} MiB")
log.add("clip train seconds", round(info["seconds"], 1), steps=info["steps"], threads=info["threads"],
        device=info["device"], reused_checkpoint=existed)
log.add("clip train steps/s", round(info["steps_per_second"], 3))
log.add("clip parameters (M)", round(info["n_params"] / 1e6, 3))
log.add("clip training peak RSS (MiB)", round(info["peak_rss_mb"]))

# %%
losses = np.array(info["losses"])
B = scfg.clip.batch_size
# the loss of guessing: log B per direction; with a hard negative per caption the
# image-to-text softmax has (nearly) 2B candidates
guess = 0.5 * (np.log(2 * B) + np.log(B)) if scfg.clip.negative_captions else np.log(B)
window = max(1, len(losses) // 50)
smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.5))
a1.plot(losses, alpha=0.3, label="per step")
a1.plot(np.arange(window - 1, len(losses)), smooth, label=f"mean of {window}")
a1.axhline(guess, color="grey", ls="--", label="guessing")
a1.set_xlabel("step"); a1.set_ylabel("symmetric InfoNCE loss"); a1.legend()
a2.plot(np.exp(-np.array(info["logit_scale"])))
a2.set_xlabel("step"); a2.set_ylabel("temperature tau = exp(-s)"); a2.set_yscale("log")
plt.tight_layout(); plt.show()
print(f"loss: first steps {losses[:10].mean():.3f} (guessing: {guess:.3f}), "
      f"last steps {losses[-max(1, len(losses) // 20):].mean():.3f}; final temperature {np.exp(-info['logit_scale'][-1]):.4f}")
log.add("clip final train loss", round(float(losses[-max(1, len(losses) // 20):].mean()), 4),
        guessing=round(float(guess), 4))

# %% [markdown]
# ## 3. Features for the whole dataset, cached
#
# Later notebooks never run the CLIP towers during training: they read the
# features from disk. `extract_features(cfg, split)` stores, per split,
#
# * `image`: the pooled image embedding (N, D), unit length: the input of
#   CLIP-DiffusionLM;
# * `patches`: the patch tokens (N, P, W): for the convolutional tower the
#   final feature map, a 2 x 2 grid for a 64-pixel picture (each cell sees the
#   whole picture through its receptive field); for a ViT the last layer's
#   patch tokens. DDCap cross-attends to these;
# * `text`: the embedding of every caption (M, D), with `text_owner` giving
#   each caption's picture.
#
# The cache file name carries a hash of the model (the checkpoint's SHA-256,
# or the pretrained name and tag) and of the split (image ids, file names,
# captions, dataset manifest). Same model and data: the file is read back.
# Retrain the CLIP or regenerate the data: the hash changes and the features
# are rebuilt (the stale file is deleted).

# %%
feats, times = {}, {}
for name in ("train", "val"):
    t0 = time.perf_counter()
    feats[name] = extract_features(scfg, name, bundle=bundle)
    times[name] = time.perf_counter() - t0
    f = feats[name]
    size_mb = sum(f[k].numel() * f[k].element_size() for k in ("image", "patches", "text")) / 2**20
    print(f"{name}: image {tuple(f['image'].shape)}, patches {tuple(f['patches'].shape)}, text {tuple(f['text'].shape)}; "
          f"{'read from cache' if f['reused'] else 'computed'} in {times[name]:.1f} s; {size_mb:.0f} MiB in memory")
    log.add(f"feature extraction seconds ({name})", round(f["build_seconds"] or times[name], 2),
            images=len(f["image_ids"]), captions=len(f["captions"]))
t0 = time.perf_counter()
again = extract_features(scfg, "val", bundle=bundle)
print(f"second request for val: reused={again['reused']}, {time.perf_counter() - t0:.2f} s")
assert again["reused"]
print(f"peak memory of this process so far: {peak_rss_mb():.0f} MiB")
log.add("peak RSS after features (MiB)", round(peak_rss_mb()))

# %% [markdown]
# ## 4. What did it learn?
#
# ### The similarity matrix
#
# Rows: validation pictures; columns: one caption of each picture, in the
# same order. A good model puts the largest value of each row on the
# diagonal. Off-diagonal bright cells are informative too: they are captions
# that are *also true* of another picture (short captions such as "a red
# circle" fit many pictures), or near misses.

# %%
fv = feats["val"]
first_caption = [int(torch.nonzero(fv["text_owner"] == i)[0]) for i in range(N_HEATMAP)]
sim = (fv["image"][:N_HEATMAP] @ fv["text"][first_caption].T).numpy()  # (n, n) cosine similarities
fig = plt.figure(figsize=(12, 6.5))
grid = fig.add_gridspec(2, N_HEATMAP, height_ratios=[1, 5])
for i in range(N_HEATMAP):
    ax = fig.add_subplot(grid[0, i]); ax.imshow(val_images[i].permute(1, 2, 0).numpy()); ax.axis("off")
    ax.set_title(str(i), fontsize=8)
ax = fig.add_subplot(grid[1, :])
im = ax.imshow(sim, cmap="viridis")
ax.set_yticks(range(N_HEATMAP), [f"{i}: picture" for i in range(N_HEATMAP)], fontsize=7)
ax.set_xticks(range(N_HEATMAP), [f"{i}: {fv['captions'][j][:38]}" for i, j in enumerate(first_caption)],
              rotation=70, ha="right", fontsize=7)
plt.colorbar(im, ax=ax, label="cosine similarity")
plt.tight_layout(); plt.show()
print(f"rows whose best caption is their own: {(sim.argmax(1) == np.arange(N_HEATMAP)).mean():.2f} "
      f"(chance {1 / N_HEATMAP:.2f})")

# %% [markdown]
# ### Retrieval recall on the validation split
#
# Image to text: for each picture, are any of its five captions among the
# $k$ captions most similar to it? Text to image: for each caption, is its
# picture among the $k$ most similar pictures? Chance is what a random
# ranking gets (see `clipdiff_mini.clip.retrieval`). Note that many validation
# captions are true of several pictures ("two shapes"), so even a perfect
# model cannot reach R@1 = 1 from text to image.

# %%
rec = retrieval_recall(fv["image"], fv["text"], fv["text_owner"])
print(f"{'':8s}" + "".join(f"{'R@' + str(k):>16s}" for k in (1, 5, 10)))
for d, label in (("i2t", "img->txt"), ("t2i", "txt->img")):
    print(f"{label:8s}" + "".join(f"{rec[f'{d}_R@{k}']:9.3f} ({rec[f'{d}_R@{k}_chance']:.3f})" for k in (1, 5, 10)))
print("(chance in brackets)")
for d in ("i2t", "t2i"):
    for k in (1, 5, 10):
        log.add(f"val {d} R@{k}", round(rec[f"{d}_R@{k}"], 4), chance=round(rec[f"{d}_R@{k}_chance"], 4))

# %% [markdown]
# ### Zero-shot probes
#
# CLIP can classify without any labelled training: write a prompt per class,
# embed the prompts with the text tower and pick the class whose prompt is
# most similar to the picture. open_clip's `build_zero_shot_classifier`
# averages several prompt templates per class ("a large red shape", "a large
# red circle", ...) into one class vector. We ask about the **largest
# object** (pictures whose largest object is not unique are left out) and
# the **number of objects**. For **relations** we use one question per
# two-object picture: of the four captions "A left of B", "A right of B",
# "A above B", "A below B" (A and B fully described), which is most similar?
# All four contain the same words except one, so a model that embeds
# captions as a bag of words cannot beat chance (1/4) there.

# %%
labels_val = probe_labels([fv_scene for fv_scene in val.scenes().values()], max_objects=cfg.data.max_objects)
zs = {}
for attr in ("colour", "shape", "size", "count"):
    w = zero_shot_weights(bundle, attr, cfg.data.max_objects)  # (D, C)
    zs[attr] = (zero_shot_accuracy(fv["image"], w, labels_val[attr]), 1 / w.shape[1])
rel = zero_shot_relation(bundle, fv["image"], list(val.scenes().values()))
zs["relation"] = (rel["accuracy"], rel["chance"])
for attr, (acc, chance) in zs.items():
    print(f"zero-shot {attr:9s} {acc:.3f}   (chance {chance:.3f})")
    log.add(f"zero-shot {attr}", round(acc, 4), chance=round(chance, 4))

# %% [markdown]
# ### Linear probes
#
# A zero-shot probe mixes two questions: does the *image* embedding hold the
# attribute, and does the *text* tower map the prompt to the same place? A
# **linear probe** asks only the first: fit a logistic regression from the
# frozen features of the training pictures to the attribute, score it on
# validation pictures. We probe the pooled embedding (what CLIP-DiffusionLM
# sees) and the patch tokens concatenated (what DDCap can attend to). As a
# control we also probe the pooled embedding of the *same network before
# training* (random weights): random convolutional features already carry a
# surprising amount (colour is a few averaged pixels), and only the gap above
# that control is what contrastive training added.
#
# A probe needs one setting, the strength of its L2 penalty, and the answer
# depends on it: too strong and the probe under-reads the features. A fixed
# weight of 1e-3, which we used at first, read the shape of the largest
# object a few points lower than a weaker penalty on the same features
# (the design log has the numbers). So `linear_probe` chooses the weight itself, from
# 1e-5 to 1e-2, on a fifth of the *training* pictures held out for the
# purpose, then refits on all of them (CLIP's linear-probe protocol). The
# validation pictures never choose anything; they only score.
#
# The fit is the logistic regression of CLIP's probes, solved by L-BFGS in
# the basis of the features' principal axes, each axis scaled by its
# curvature: the same objective, better conditioned on correlated features.
# A closed form, ridge regression to one-hot targets, would be faster but
# under-reads ordered classes such as the count (a middle class is never the
# largest output: the "masking" of linear regression on indicators); the
# design log has the comparison.
#
# Targets: colour, shape and size of the largest object, the number of
# objects, and the relation between the two objects of two-object pictures
# (where the first, the larger or else the one whose colour comes first in the
# colour list, lies relative to the other). With `ties="leftmost"` we also ask
# about pictures with several equally large objects, taking the leftmost of
# them: a harder, positional question.

# %%
ft = feats["train"]
torch.manual_seed(cfg.seed)
untrained = dataclasses.replace(bundle, model=build_scratch_model(bundle.arch).eval(), identity="untrained")
t0 = time.perf_counter()
rand_t = compute_features(untrained, train.load_images(), [], batch_size=cfg.clip.feature_batch_size)["image"]
rand_v = compute_features(untrained, val_images, [], batch_size=cfg.clip.feature_batch_size)["image"]
print(f"features of the untrained network: {time.perf_counter() - t0:.1f} s")
t0 = time.perf_counter()
probe = probe_attributes({"pooled": (ft["image"], fv["image"]), "patches": (ft["patches"], fv["patches"]),
                          "untrained": (rand_t, rand_v)},
                         list(train.scenes().values()), list(val.scenes().values()), max_objects=cfg.data.max_objects)
print(f"probes fitted in {time.perf_counter() - t0:.1f} s")
rows = [probe_target_name(a, ties) for a, ties in PROBE_TARGETS]
print(f"{'target':26s}{'pooled':>9s}{'patches':>9s}{'untrained':>10s}{'chance':>9s}{'majority':>9s}{'n val':>7s}"
      f"{'L2 (pooled)':>12s}")
for attr in rows:
    p, q, r = probe["pooled", attr], probe["patches", attr], probe["untrained", attr]
    print(f"{attr:26s}{p['accuracy']:9.3f}{q['accuracy']:9.3f}{r['accuracy']:10.3f}{p['chance']:9.3f}"
          f"{p['majority']:9.3f}{p['n_val']:7d}{p['weight_decay']:12.0e}")
    log.add(f"linear probe {attr} (pooled)", round(p["accuracy"], 4), chance=round(p["chance"], 4),
            majority=round(p["majority"], 4), n_val=p["n_val"], weight_decay=p["weight_decay"])
    log.add(f"linear probe {attr} (patches)", round(q["accuracy"], 4), chance=round(q["chance"], 4),
            weight_decay=q["weight_decay"])
    log.add(f"linear probe {attr} (untrained network, pooled)", round(r["accuracy"], 4))

fig, ax = plt.subplots(figsize=(11, 3.8))
x = np.arange(len(rows))
ax.bar(x - 0.27, [probe["untrained", a]["accuracy"] for a in rows], 0.27, label="untrained network (pooled)",
       color="lightgrey")
ax.bar(x, [probe["pooled", a]["accuracy"] for a in rows], 0.27, label="pooled embedding")
ax.bar(x + 0.27, [probe["patches", a]["accuracy"] for a in rows], 0.27, label="patch tokens")
ax.scatter(x, [probe["pooled", a]["majority"] for a in rows], color="k", marker="_", s=400, label="majority class", zorder=3)
ax.axhline(0.9, color="grey", ls=":", label="0.9")
ax.set_xticks(x, rows, rotation=20, ha="right"); ax.set_ylabel("validation accuracy"); ax.set_ylim(0, 1.02)
ax.legend(loc="lower left", fontsize=8); plt.tight_layout(); plt.show()

# %%
main_targets = ("colour", "shape", "size", "count")
best = {a: max(probe["pooled", a]["accuracy"], probe["patches", a]["accuracy"]) for a in ATTRIBUTES}
for a in ATTRIBUTES:
    verdict = "carried well" if best[a] >= 0.9 else ("partly" if best[a] > probe["pooled", a]["majority"] + 0.1 else "barely")
    print(f"{a:9s} best linear probe {best[a]:.3f}: {verdict}")
print("pooled-embedding probes at 0.9 or more for colour, shape, size and count:",
      all(probe["pooled", a]["accuracy"] >= 0.9 for a in main_targets))

# %% [markdown]
# ### Reading the probes
#
# The pattern to look for, and what it means for the captioners:
#
# * **Size and count** are global properties of the picture (how much of it
#   is coloured, how many blobs), and the contrastive objective rewards them
#   early: many captions state a count or begin with the big object.
# * **Colour and shape of the largest object** need the tower to bind two
#   properties to one object. Colour comes first (it is one pixel's worth of
#   evidence); shape needs edges and corners, which is why the convolutional
#   tower was chosen. If the shape probe stays low, every caption the later
#   notebooks produce will get shapes wrong however good the text model is.
# * **Relations** are the hardest, and usually the weakest. Nothing in the
#   contrastive loss forces them: in a batch of random pictures, "a red circle
#   left of a blue square" is already told apart from the other captions by
#   its words, without checking the direction. The zero-shot relation test
#   makes this visible: near chance means the text tower embeds "A left of B"
#   and "A right of B" almost alike. For captioning this means a captioner
#   conditioned on the pooled embedding can learn to *say* relations fluently
#   but will often get the direction wrong, and n-gram metrics will hardly
#   notice (one word differs). The patch tokens keep more of the layout (each
#   cell of the grid covers a part of the picture), which is one argument for
#   DDCap's cross-attention over a single pooled vector. The scene-accuracy
#   checks in notebooks 05 and 07 will show whether the captioners inherit this
#   weakness.
# * In the `ci` profile the model has trained for a few seconds and all of
#   this is noise; run the `laptop` profile for real numbers.
#
# **What this run measured**, printed from its own variables (a different
# profile, seed or machine changes the numbers; earlier runs are in the
# design log):

# %%
shape_p, shape_n = probe["pooled", "shape"]["accuracy"], probe["pooled", "shape"]["n_val"]
rel = {k: probe[k, "relation"]["accuracy"] for k in ("pooled", "patches", "untrained")}
print("\n".join([
    f"- CLIP: {info['steps']} steps of batch {scfg.clip.batch_size} in {info['seconds']:.0f} s "
    f"({info['steps_per_second']:.2f} steps/s on {info['threads']} threads, peak memory {info['peak_rss_mb']:.0f} MiB"
    f"{'; checkpoint reused' if existed else ''}); features: train {times['train']:.1f} s, val {times['val']:.1f} s.",
    f"- Retrieval on val, R@1/5/10: image to text " + "/".join(f"{rec[f'i2t_R@{k}']:.2f}" for k in (1, 5, 10)) +
    ", text to image " + "/".join(f"{rec[f't2i_R@{k}']:.2f}" for k in (1, 5, 10)) +
    " (chance " + "/".join(f"{rec[f'i2t_R@{k}_chance']:.3f}" for k in (1, 5, 10)) + ").",
    "- Linear probes of the pooled embedding: " + ", ".join(
        f"{a} {probe['pooled', a]['accuracy']:.2f}" for a in main_targets) +
    "; patch tokens: " + ", ".join(f"{a} {probe['patches', a]['accuracy']:.2f}" for a in main_targets) + ".",
    f"- Shape of the largest object: {shape_p:.2f} on {shape_n} val pictures, a standard error of about "
    f"{(shape_p * (1 - shape_p) / shape_n) ** 0.5:.3f}; the untrained network reads it at "
    f"{probe['untrained', 'shape']['accuracy']:.2f} (colour {probe['untrained', 'colour']['accuracy']:.2f}, "
    f"size {probe['untrained', 'size']['accuracy']:.2f}).",
    f"- Relations: pooled {rel['pooled']:.2f}, patch tokens {rel['patches']:.2f}, untrained {rel['untrained']:.2f} "
    f"(majority class {probe['pooled', 'relation']['majority']:.2f}); zero-shot {zs['relation'][0]:.2f} "
    f"against chance {zs['relation'][1]:.2f}.",
    f"- So the patch tokens {'hold' if rel['patches'] > rel['pooled'] + 0.05 else 'do not clearly hold'} more of the "
    f"layout than the pooled vector, and contrastive training added "
    f"{shape_p - probe['untrained', 'shape']['accuracy']:+.2f} to the shape probe over the untrained network.",
]))

# %% [markdown]
# For the captioners: colours, sizes and counts are easy for both kinds of
# features; shape is what contrastive training adds over random features,
# and the last attribute it learns; relations are the weak point, weakest in
# the pooled vector that CLIP-DiffusionLM sees, so expect captions whose
# words are right and whose "left of" is often wrong, and check the lines
# above for how much the patch tokens that DDCap attends to recover. On a
# GPU, raise `TRAIN_STEPS`; the `colab` profile also offers the pretrained
# CLIPs below.

# %% [markdown]
# ## 5. Pretrained CLIP
#
# With network access, open_clip downloads pretrained CLIPs by name and tag:
# `ViT-B-32` / `openai` is what CLIP-DiffusionLM uses (pooled 512-d
# embedding), `ViT-B-16` / `openai` what DDCap uses (196 patch tokens of a
# 224-pixel picture cut into 16-pixel patches). These models use open_clip's
# own byte-pair tokenizer (`open_clip.get_tokenizer(name)`), which needs no
# download. Our 64-pixel pictures are upsampled to 224 pixels.
#
# Set `clip.source = "pretrained"` (the Colab profile does) and later
# notebooks use the pretrained model through the same `load_clip(cfg)` and
# `extract_features(cfg, split)` calls. Without network, loading the weights
# fails with a `PretrainedWeightsUnavailable` error that names the offline
# alternative, the small CLIP trained above.

# %%
bpe = pretrained_tokenizer(cfg.clip.pretrained_model)
ids = bpe(["a large red circle left of a small blue square"])[0]
n_used = int((ids != 0).sum())
print(f"open_clip tokenizer for {cfg.clip.pretrained_model}: {n_used} ids of a fixed context of {len(ids)}: "
      f"{ids[:n_used].tolist()}")
print(f"our word tokenizer: {bundle.tokenize(['a large red circle left of a small blue square'])[0].tolist()}")

if cfg.clip.source == "pretrained":
    try:
        t0 = time.perf_counter()
        pre = load_pretrained_clip(cfg)
        pf = extract_features(cfg, "val", bundle=pre)
        prec = retrieval_recall(pf["image"], pf["text"], pf["text_owner"])
        print(f"{pre.name}: loaded and encoded val in {time.perf_counter() - t0:.1f} s; patches {tuple(pf['patches'].shape)}")
        for d in ("i2t", "t2i"):
            print(d, {k: round(prec[f"{d}_R@{k}"], 3) for k in (1, 5, 10)})
            log.add(f"pretrained {pre.name} val {d} R@1", round(prec[f"{d}_R@1"], 4))
        for attr in ("colour", "shape", "size", "count"):
            acc = zero_shot_accuracy(pf["image"], zero_shot_weights(pre, attr, cfg.data.max_objects), labels_val[attr])
            print(f"pretrained zero-shot {attr}: {acc:.3f}")
            log.add(f"pretrained zero-shot {attr}", round(acc, 4))
    except PretrainedWeightsUnavailable as err:
        print(err)
else:
    print(f"clip.source = {cfg.clip.source!r}: the pretrained model is not loaded in this profile "
          "(it needs network access; the Colab profile uses it).")

# %% [markdown]
# ## Exercises
#
# Each exercise has one cell to complete. As shipped, the cell only says that
# it has not been attempted; put your answer where it says `None` and run the
# cell again: a right answer passes its check, a wrong one stops with an
# assertion error that says what went wrong. The cells reuse what this
# notebook has computed and retrain nothing. Worked answers are in
# `notebooks/solutions/04_clip_features_solutions.ipynb`.

# %% [markdown]
# **Exercise 4.1** (predict, then check). In section 1 the caption embeddings
# were noisy copies of the picture embeddings, and $\partial\mathcal L/\partial s$
# came out negative: training sharpens the softmax. Now take captions that have
# nothing to do with their pictures (drawn independently, `v_unrelated` below)
# at the same $s$. From the formula for $\partial\mathcal L/\partial s$ (each
# bracket compares the softmax-weighted average similarity with the similarity
# of the right pair), predict whether training would **raise** or **lower**
# $s$. The check averages the gradient over many independent draws, so the
# answer does not hang on one lucky batch.

# %%
prediction_4_1 = None  # your answer: "raise" (dL/ds < 0) or "lower" (dL/ds > 0)

rng_ex = np.random.default_rng(1)
grads_unrelated = []
for _ in range(200):
    v_unrelated = rng_ex.normal(size=u.shape)
    v_unrelated /= np.linalg.norm(v_unrelated, axis=1, keepdims=True)
    grads_unrelated.append(infonce_by_hand(u, v_unrelated, s0)[1])
if prediction_4_1 is None:
    print("Exercise 4.1: not attempted yet")
else:
    mean_grad = float(np.mean(grads_unrelated))
    truth = "raise" if mean_grad < 0 else "lower"
    assert prediction_4_1 == truth, f"the mean dL/ds over unrelated batches is {mean_grad:+.3f}: training would {truth} s"
    print(f"right: dL/ds = {mean_grad:+.3f} on average for unrelated pairs, so training would {truth} s")

# %% [markdown]
# **Exercise 4.2** (predict, then check). Take the correlated Gaussians of
# section 1 with the correlation close to one (`RHO_EX`, `D_EX` below), so that
# their mutual information is larger than $\log B$ for every batch size tried.
# Predict (a) whether the InfoNCE estimate rises when the batch size doubles,
# and (b) a ceiling, as a function of $B$, that the estimate can never pass.
# The check computes the estimate at a few batch sizes (a fraction of a second).

# %%
rises_4_2 = None  # your answer to (a): True or False
ceiling_4_2 = None  # your answer to (b): a function, e.g. lambda B: ...

RHO_EX, D_EX, B_EX = 0.99, 4, (32, 64, 128)
gen_ex = torch.Generator().manual_seed(1)
true_mi_ex = -D_EX / 2 * np.log(1 - RHO_EX**2)
est_ex = [infonce_estimate(RHO_EX, D_EX, B=b, n_batches=10, gen=gen_ex)[0] for b in B_EX]
if rises_4_2 is None or ceiling_4_2 is None:
    print("Exercise 4.2: not attempted yet")
else:
    rising = all(b > a for a, b in zip(est_ex, est_ex[1:]))
    assert rises_4_2 == rising, f"estimates for B = {B_EX}: {np.round(est_ex, 3)}"
    for b, e in zip(B_EX, est_ex):
        assert e <= ceiling_4_2(b) + 1e-9, f"B = {b}: the estimate {e:.3f} passes your ceiling {ceiling_4_2(b):.3f}"
        assert ceiling_4_2(b) - e < 0.3, (f"B = {b}: the estimate {e:.3f} stays far below your ceiling "
                                          f"{ceiling_4_2(b):.3f}; a tighter ceiling holds")
    print(f"right: I = {true_mi_ex:.2f} nats, estimates {np.round(est_ex, 3)} for B = {B_EX}, "
          f"ceilings {np.round([ceiling_4_2(b) for b in B_EX], 3)}")

# %% [markdown]
# **Exercise 4.3** (derive, then check). Section 4 prints the chance level of
# image-to-text retrieval next to each recall. Derive it: a random ranking of
# the $M$ captions puts a uniformly random set of $k$ of them on top; a
# picture with $c$ captions of its own scores a hit if at least one of them is
# among those $k$. Write `i2t_chance(counts, M, k)`, the hit probability
# averaged over pictures (`counts[i]` is the number of captions of picture $i$),
# and compare it with `rec` for $k$ = 1, 5 and 10.

# %%
def i2t_chance(counts, M, k):
    """Chance image-to-text R@k of a random ranking; counts (N,) captions per picture, M captions in all."""
    return None  # your code here


counts_val = torch.bincount(fv["text_owner"], minlength=len(fv["image"]))  # (N,)
M_val = len(fv["text"])
if i2t_chance(counts_val, M_val, 1) is None:
    print("Exercise 4.3: not attempted yet")
else:
    for k in (1, 5, 10):
        mine, lib = float(i2t_chance(counts_val, M_val, k)), rec[f"i2t_R@{k}_chance"]
        assert abs(mine - lib) < 1e-9, f"R@{k}: yours {mine:.6f}, retrieval_recall's {lib:.6f}"
    print("right: " + ", ".join(f"R@{k} chance {float(i2t_chance(counts_val, M_val, k)):.4f}" for k in (1, 5, 10)))

# %% [markdown]
# **Exercise 4.4** (implement, then check). Compute the image-to-text R@1 of
# the validation features yourself, from `fv["image"]`, `fv["text"]` and
# `fv["text_owner"]` alone: the fraction of pictures whose most similar caption
# is one of their own. Compare with `rec["i2t_R@1"]` (the two may differ by a
# picture at most, where two captions tie exactly).

# %%
def i2t_recall_at_1(image_emb, text_emb, owner):
    """Fraction of pictures whose most similar caption belongs to them. image_emb (N, D), text_emb (M, D)."""
    return None  # your code here


r1_mine = i2t_recall_at_1(fv["image"], fv["text"], fv["text_owner"])
if r1_mine is None:
    print("Exercise 4.4: not attempted yet")
else:
    assert abs(float(r1_mine) - rec["i2t_R@1"]) <= 1 / len(fv["image"]) + 1e-9, \
        f"yours {float(r1_mine):.4f}, retrieval_recall's {rec['i2t_R@1']:.4f}"
    print(f"right: image-to-text R@1 = {float(r1_mine):.4f}")

# %% [markdown]
# ## Summary
#
# * CLIP's loss is a symmetric $B$-way classification (InfoNCE) with a
#   learned temperature; we checked the formula and its temperature gradient
#   against open_clip, and the mutual-information bound on Gaussians.
# * A small convolutional CLIP trained for minutes on a CPU retrieves
#   captions far above chance; its checkpoint and features are cached for the
#   next notebooks.
# * The probes say which attributes a captioner can get from these features
#   and which it cannot. Keep the relation numbers in mind when the captioners
#   of notebooks 05 and 07 describe spatial layout.

# %%
print(log.table())
