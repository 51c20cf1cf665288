# %% [markdown]
# # 00 · Course tour: the data, the tokens and the metrics
#
# This course builds image captioners whose text comes out of a **diffusion
# model** instead of a left-to-right decoder, and takes the two main recipes
# apart piece by piece:
#
# * **continuous** diffusion on word embeddings, conditioned on a CLIP image
#   embedding (CLIP-DiffusionLM, built on Diffusion-LM), and
# * **discrete** diffusion on the tokens themselves, where words are masked
#   and unmasked (DDCap, in the family of VQ-Diffusion and MDLM).
#
# Everything is small enough to train on a laptop CPU, and every formula is
# checked numerically right after it is written down. This first notebook
# trains nothing. It shows
#
# 1. the plan of the course and how to run it,
# 2. the **embedded dataset** every later notebook uses: pictures of coloured
#    shapes with captions, generated on your machine, with the exact scene
#    behind every picture,
# 3. the two **tokenizers** that turn captions into ids, and
# 4. the **caption metrics** captioning papers report (BLEU, METEOR,
#    ROUGE-L, CIDEr), and an experiment that shows why, on this dataset, we
#    also check whether a caption is *true*.

# %% [markdown]
# After this notebook you can:
#
# * run one notebook of the course, or all of them, in each of the three
#   profiles (`ci`, `laptop`, `colab`), and find the numbers each run reports;
# * describe the embedded dataset (a picture, its five captions, the scene
#   stored behind it) and load its splits with `load_split`;
# * turn a caption into token ids and back with the course's word tokenizer
#   and with BERT's WordPiece, and say what each special token is for;
# * write down corpus BLEU (clipped n-gram precisions, the brevity penalty)
#   and recompute sentence BLEU by hand against `pycocoevalcap`;
# * judge whether a caption is true of its picture with the scene judge, and
#   show by an experiment why n-gram metrics barely punish a caption with one
#   wrong word.

# %% [markdown]
# ## The plan
#
# | notebook | what it teaches |
# |---|---|
# | 00 | this tour: the dataset, tokenizers and metrics |
# | 01 | the forward (noising) process of DDPM and the noise schedules |
# | 02 | the variational bound, the posterior q(x_{t-1} given x_t, x_0), the simple losses, DDPM and DDIM sampling |
# | 03 | text as continuous vectors: embeddings, the rounding loss, why embeddings collapse without it, clamping |
# | 04 | CLIP: the contrastive loss, a small CLIP trained here on the shapes, pretrained CLIP |
# | 05 | CLIP-DiffusionLM: a continuous diffusion captioner and the paper's ablations |
# | 06 | discrete diffusion: masking (absorbing) and mask-and-replace; the MDLM view of the loss |
# | 07 | DDCap: a discrete diffusion captioner with each of its tricks switchable |
# | 08 | continuous against discrete against autoregressive: quality and speed |
# | 09 | scaling up: real datasets (Flickr8k, COCO), pretrained CLIP, a GPU |
#
# ## Three sizes of every run
#
# One switch, `PROFILE`, sets every size in the course (see `clipdiff_mini/config.py`):
#
# * `"ci"`: tiny data and models; each notebook runs in seconds. The automatic
#   tests use it, so the numbers are only there to show the code works.
# * `"laptop"` (the default): real results in minutes on a 2-core CPU, on the
#   embedded dataset (10,000 training pictures).
# * `"colab"`: larger settings for a GPU (mixed precision), and the way to the
#   real datasets.
#
# How to run: open the notebooks in order in Jupyter (or on Colab with the
# badge at the top), or run them all headless with `bash tools/run_course.sh`
# (`bash tools/run_course.sh ci` for the quick version). One notebook:
# `python -m clipdiff_mini.course --profile laptop --only 00`. The numbers each
# notebook reports are collected in `outputs/<profile>/summary.md`.

# %%
import os
import textwrap
import time
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

from clipdiff_mini.config import get_config
from clipdiff_mini.data import (COLOURS, RELATIONS, SHAPES, SIZES, WordTokenizer, describe,
                                load_bert_tokenizer, load_split, simple_tokenize)
from clipdiff_mini.evaluation import (CaptionScorer, NoPerturbation, judge_caption, perturb_caption,
                                      random_words, scene_accuracy, shuffle_words, spice_status)
from clipdiff_mini.course.results import ResultLog
from clipdiff_mini.seeding import set_seed

# %% tags=["parameters"]
PROFILE = os.environ.get("CLIPDIFF_PROFILE", "laptop")  # "ci" | "laptop" | "colab"
N_GRID = 12  # pictures shown with their captions
N_DEMO_IMAGES = None  # validation images in the metrics experiment; None: 100 in ci, 500 otherwise
TOP_WORDS = 30  # bars in the word-frequency chart

# %%
cfg = get_config(PROFILE)
set_seed(cfg.seed)
rng = np.random.default_rng(cfg.seed)
log = ResultLog(cfg, "00_course_tour")
t_start = time.perf_counter()
n_demo = N_DEMO_IMAGES or (100 if cfg.profile == "ci" else 500)
# METEOR (one of the metrics at the end) is a Java program that needs several
# seconds to start: start it now, it loads in the background while we look at the data.
scorer = CaptionScorer()
print(f"profile {cfg.profile}: {cfg.data.n_train}/{cfg.data.n_val}/{cfg.data.n_test} images "
      f"of {cfg.data.image_size} px, {cfg.data.captions_per_image} captions each")

# %% [markdown]
# ## The embedded dataset
#
# Real captioning datasets (Flickr8k, COCO) are large downloads, and a model
# has to train for hours before its captions mean anything. The course instead
# *generates* its dataset: each picture holds one to four objects, each with a
# **shape**, a **colour** and a **size**, on a grey background with a faint
# gradient or texture. Five captions per picture are written by a small
# grammar, in varied forms: full listings ("two small red circles and a
# large blue square"), partial ones, counts ("three shapes"), and spatial
# relations ("the red circle is to the left of the blue square").
#
# Two things make this dataset useful for teaching:
#
# * it is small and quick to learn, so a CPU can train a real captioner on it;
# * the **scene** behind every picture is stored with it, so we can check
#   whether a generated caption is *true*, not only whether it shares words
#   with the references.
#
# It is stored in the same JSON layout as the standard Karpathy splits of
# Flickr8k and COCO, so the same loader reads both (`data.source="karpathy"`
# switches to a real dataset, notebook 09). The first call generates it
# (seconds in ci, about a minute at laptop size) and later calls reuse it.

# %%
t0 = time.perf_counter()
splits = {name: load_split(cfg, name) for name in ("train", "val", "test")}
train, val = splits["train"], splits["val"]
print(f"loaded in {time.perf_counter() - t0:.1f} s from {train.root.name}")
for name, split in splits.items():
    print(f"{name:5s}: {len(split):6d} images, {len(split.captions()):6d} captions")
    log.add(f"{name} images", len(split))
log.add("captions per image", cfg.data.captions_per_image)
print("vocabulary of the scenes:", SHAPES, tuple(COLOURS), tuple(SIZES), RELATIONS, sep="\n  ")

# %%
t0 = time.perf_counter()
val_images = val.load_images()  # torch.uint8 (N, 3, H, W); cached as .npy after the first call
print(f"val images {tuple(val_images.shape)} {val_images.dtype} in {time.perf_counter() - t0:.2f} s")
assert val_images.shape == (len(val), 3, cfg.data.image_size, cfg.data.image_size)

fig, axes = plt.subplots(3, N_GRID // 3, figsize=(3.2 * (N_GRID // 3), 10))
for k, ax in enumerate(axes.flat):
    rec = val.records[k]
    ax.imshow(val_images[k].permute(1, 2, 0).numpy())  # (H, W, 3) for matplotlib
    ax.set_title("\n".join(textwrap.wrap(rec.captions[k % len(rec.captions)], 30)), fontsize=8)
    ax.axis("off")
fig.suptitle("validation pictures, one of their five captions each")
plt.tight_layout()
plt.show()

# %% [markdown]
# Every picture comes with its scene: the objects with their attributes and
# centres (as fractions of the picture side, `y` growing downwards), and the
# background. Here is one, with all five of its captions and, for one caption,
# the claims a parser reads from it and whether each holds in the scene
# (`clipdiff_mini.evaluation.scene_judge`).

# %%
rec = val.records[1]
print(describe(rec.scene))
print()
for c in rec.captions:
    print(" -", c)
print()
print(judge_caption(max(rec.captions, key=len), rec.scene).table())

# %% [markdown]
# The generator promises that every reference caption is true of its picture.
# That is a claim we can check on the whole validation split: the strictest
# measure, the fraction of captions whose every claim holds
# (`caption_all_true`), must be exactly 1.

# %%
ref_truth = scene_accuracy(val.references(), val.scenes())
print({k: round(v, 3) for k, v in ref_truth.items() if isinstance(v, float)})
assert ref_truth["caption_all_true"] == 1.0
log.add("val references all true", ref_truth["caption_all_true"])

# %% [markdown]
# A caption's list must also name *different* objects: "a red circle and a
# red circle" says there are two. Judged claim by claim (the *lenient*
# verdict, `lenient_all_true`), a caption that repeats the one object it is
# sure of would pass, and a captioner could raise its score by repeating
# itself. Scene accuracy gives each "a/the/one" mention of the list its own
# object (a matching); a count ("three shapes") and the ends of a relation
# may name objects the list names too.

# %%
rec_r, obj = next((r, o) for r in val.records for o in r.scene["objects"]
                  if sum((p["size"], p["colour"], p["shape"]) == (o["size"], o["colour"], o["shape"])
                         for p in r.scene["objects"]) == 1)  # an object no other object of its picture looks like
name = f"a {obj['size']} {obj['colour']} {obj['shape']}"
repeated = judge_caption(f"{name}, {name} and {name}", rec_r.scene)
print(describe(rec_r.scene))
print()
print(repeated.table())
print(f"\nlenient verdict (each claim alone): {repeated.lenient_all_true}; scene accuracy's verdict: {repeated.all_true}")
assert repeated.lenient_all_true and not repeated.all_true

# %% [markdown]
# ### Numbers
#
# How many objects a picture holds, how long the captions are, and which
# words they use. The caption language is small: a few dozen words in all.

# %%
n_objects = Counter(len(s["objects"]) for s in train.scenes().values())
train_caps = train.captions()
lengths = np.array([len(simple_tokenize(c)) for c in train_caps])
words = Counter(w for c in train_caps for w in simple_tokenize(c))

fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
axes[0].bar(sorted(n_objects), [n_objects[k] for k in sorted(n_objects)])
axes[0].set_xticks(sorted(n_objects))
axes[0].set(xlabel="objects in the picture", ylabel="training pictures", title="objects per picture")
axes[1].hist(lengths, bins=np.arange(lengths.min(), lengths.max() + 2) - 0.5)
axes[1].set(xlabel="words", ylabel="training captions", title="caption length")
top = words.most_common(TOP_WORDS)
axes[2].bar(range(len(top)), [n for _, n in top])
axes[2].set_xticks(range(len(top)), [w for w, _ in top], rotation=90, fontsize=8)
axes[2].set(ylabel="count in training captions", title=f"the {TOP_WORDS} most frequent words")
plt.tight_layout()
plt.show()
print(f"caption length: mean {lengths.mean():.1f} words, max {lengths.max()}, distinct words {len(words)}")
log.add("caption length mean (words)", round(float(lengths.mean()), 2))
log.add("caption length max (words)", int(lengths.max()))

# %% [markdown]
# ## Tokens
#
# A model sees ids, not words. The course uses two tokenizers with one
# interface (`clipdiff_mini.data.tokenizers`):
#
# * `WordTokenizer`: one id per word, built from the training captions, plus
#   five special tokens: `[PAD]` (id 0, fills a caption up to a fixed
#   length), `[BOS]`/`[EOS]` (begin and end), `[MASK]` (the absorbing state of
#   discrete diffusion, notebook 06) and `[UNK]` (a word never seen in training).
# * the BERT-uncased WordPiece tokenizer (30,522 pieces), the vocabulary of
#   the DistilBERT denoiser in CLIP-DiffusionLM. Its `[CLS]` and `[SEP]` play
#   the roles of `[BOS]` and `[EOS]`. It splits rarer words into pieces
#   ("cyan" becomes "cy", "##an") and keeps punctuation, so the same caption
#   takes more positions. On the shapes the word tokenizer is enough; BERT's
#   vocabulary matters for real datasets.
#
# Every model in the course works with captions of a fixed length
# `cfg.data.max_caption_len` (specials included), so the longest training
# caption must fit.

# %%
tok = WordTokenizer.build(train_caps, min_count=cfg.data.min_word_count)
example = val.records[0].captions[0]
ids = tok.encode(example)
print(f"word vocabulary: {tok.vocab_size} ids ({tok.vocab_size - 5} words + 5 specials)")
print(example, "->", ids, "->", repr(tok.decode(ids)))
batch = tok.batch_encode(val.captions()[:3], max_len=cfg.data.max_caption_len)  # (B, L)
print("a batch, padded with [PAD]=0:", tuple(batch.shape))
print(batch)
assert tok.decode(ids) == " ".join(simple_tokenize(example))  # the round trip loses only punctuation and case
longest = max(len(tok.encode(c)) for c in train_caps)
assert longest <= cfg.data.max_caption_len, "a caption would be cut: raise data.max_caption_len"
log.add("word vocabulary size", tok.vocab_size)
log.add("longest caption (tokens with BOS/EOS)", longest, max_caption_len=cfg.data.max_caption_len)

bert = load_bert_tokenizer(cfg.data.bert_name)
print(f"\nBERT vocabulary: {bert.vocab_size} pieces;",
      f"pad={bert.pad_id} bos(CLS)={bert.bos_id} eos(SEP)={bert.eos_id} mask={bert.mask_id} unk={bert.unk_id}")
print(bert.tokenize(example), "->", bert.encode(example))
print("cyan ->", bert.tokenize("cyan"), "| punctuation is kept:", bert.tokenize("two shapes: a circle, a cross"))
bert_longest = max(len(bert.encode(c)) for c in train_caps[:500])
bert_len = get_config(PROFILE, {"data.tokenizer": "bert"}).data.max_caption_len
print(f"longest of the first 500 training captions in BERT pieces (CLS/SEP included): {bert_longest};"
      f" with data.tokenizer='bert' the default max_caption_len is {bert_len} instead of 24")
assert bert_longest <= bert_len
log.add("longest caption in BERT pieces (first 500)", bert_longest)

# %% [markdown]
# ## The caption metrics
#
# Captioning papers compare a generated caption with the human references of
# the same image using the COCO evaluation code (the `pycocoevalcap`
# package). All captions are first tokenized the same way (the Stanford PTB
# tokenizer: lower case, punctuation dropped). Then:
#
# * **BLEU-n** multiplies modified n-gram precisions. For a candidate $c$ and
#   references $R$, the clipped precision of order $k$ is
#   $$p_k = \frac{\sum_{g \in k\text{-grams}(c)} \min\big(\#_c(g),\ \max_{r\in R} \#_r(g)\big)}{\max(|c| - k + 1,\ 0)},$$
#   and BLEU-n $= \mathrm{BP}\cdot\big(\prod_{k=1}^{n} p_k\big)^{1/n}$ with the
#   brevity penalty $\mathrm{BP} = \min\big(1, e^{1 - \ell_r/|c|}\big)$, where
#   $\ell_r$ is the reference length closest to $|c|$. Over a test set the
#   counts are summed over all images before dividing (corpus BLEU).
# * **METEOR** aligns unigrams, allowing stems, synonyms and paraphrases, and
#   combines recall-weighted F-mean with a penalty for scattered matches.
# * **ROUGE-L** is an F-measure of the longest common subsequence.
# * **CIDEr** compares TF-IDF weighted n-gram vectors (n = 1..4) by cosine
#   similarity; n-grams common to all images of the test set weigh little.
# * **SPICE** compares scene graphs parsed from the captions. It needs the
#   Stanford CoreNLP models, downloaded on first use; without network it is
#   reported as unavailable here, never guessed.

# %%
print("SPICE:", spice_status()[1])

# %% [markdown]
# ### Do the metrics notice a wrong caption?
#
# The shapes captions come from a grammar, so a captioner can learn their
# form long before it learns to see. Its typical mistake is a fluent caption
# with one wrong word: a wrong colour, a wrong shape, a wrong count, left
# instead of right. How do the n-gram metrics score such captions?
#
# For each of `N_DEMO_IMAGES` validation pictures we hold out one reference
# caption and score several "predictions" against the remaining four
# references:
#
# * **held-out reference**: a true caption written by the same grammar (the
#   best a model can hope for);
# * **one word wrong**: the held-out caption with one word changed so that it
#   is false (`clipdiff_mini.evaluation.caption_perturb`: a colour or shape that is not
#   in the picture, another count, the opposite direction);
# * **caption of another picture**: the held-out caption of the next
#   picture: fluent, true of *some* picture, rarely of this one;
# * **shuffled words**: the held-out caption's words in random order;
# * **random words**: words drawn at random from the vocabulary.
#
# Next to the n-gram metrics we put the scene accuracy: the fraction of
# captions whose every claim is true of the picture.

# %%
assert cfg.data.captions_per_image >= 2, "the experiment holds out one of several references per picture"
demo = val.subset(n_demo)
vocab_words = tok.itos[5:]
held_out, remaining, wrong = {}, {}, {}
for rec in demo.records:
    for k in rng.permutation(len(rec.captions)):  # hold out a caption that has a word to change
        try:
            p = perturb_caption(rec.captions[int(k)], rec.scene, rng)
        except NoPerturbation:
            continue
        held_out[rec.image_id] = rec.captions[int(k)]
        remaining[rec.image_id] = [c for j, c in enumerate(rec.captions) if j != int(k)]
        wrong[rec.image_id] = p
        break
ids_ = list(held_out)
print(f"{len(ids_)} of {len(demo)} pictures have a caption with a word to change")
conditions = {
    "held-out reference": dict(held_out),
    "one word wrong": {i: wrong[i].text for i in ids_},
    "caption of another picture": {i: held_out[ids_[(n + 1) % len(ids_)]] for n, i in enumerate(ids_)},
    "shuffled words": {i: shuffle_words(held_out[i], rng) for i in ids_},
    "random words": {i: random_words(vocab_words, len(simple_tokenize(held_out[i])), rng) for i in ids_},
}
print("edits by kind:", dict(Counter(wrong[i].kind for i in ids_)))
i0 = ids_[0]
for name, preds in conditions.items():
    print(f"{name:28s} {preds[i0]}")
print(f"{'(references)':28s} {remaining[i0]}")

# %%
t0 = time.perf_counter()
scene_dict = demo.scenes()
ngram = scorer.score_many(conditions, remaining, per_image=True)  # {condition: {metric: value}}
scorer.close()
rows = {}
for name, preds in conditions.items():
    s = scene_accuracy(preds, scene_dict)
    rows[name] = {**ngram[name], "caption_all_true": s["caption_all_true"], "object_recall": s["object_recall"],
                  "claim_precision": s["claim_precision"]}
print(f"scored {len(conditions)} x {len(ids_)} captions in {time.perf_counter() - t0:.1f} s (METEOR start included)")

columns = ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "caption_all_true", "object_recall"]
print(f"{'':28s}" + "".join(f"{c:>17s}" for c in columns))
for name, r in rows.items():
    print(f"{name:28s}" + "".join(f"{r[c]:17.3f}" for c in columns))
print("\nas a fraction of the held-out references' score:")
for name, r in rows.items():
    print(f"{name:28s}" + "".join(f"{r[c] / rows['held-out reference'][c]:17.0%}" for c in columns[:5]))
for name, r in rows.items():
    for c in columns:
        log.add(f"{name}: {c}", round(float(r[c]), 4), n_images=len(ids_))

# %%
fig, ax = plt.subplots(figsize=(11, 4))
x = np.arange(len(rows))
shown = ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "caption_all_true"]
for j, c in enumerate(shown):
    ax.bar(x + (j - 2) * 0.16, [rows[n][c] for n in rows], width=0.16,
           label="scene accuracy (all claims true)" if c == "caption_all_true" else c,
           hatch="//" if c == "caption_all_true" else None)
ax.set_xticks(x, list(rows), fontsize=9)
ax.set_ylabel("score")
ax.set_title(f"n-gram metrics against truth, {len(ids_)} validation pictures")
ax.legend(ncol=5, fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What must hold, whatever the sizes (checked in the next cell):
#
# * the held-out references are all true (scene accuracy exactly 1) and every
#   one-word edit makes its caption false (exactly 0);
# * yet a one-word edit costs little n-gram credit: a caption of about ten
#   words loses one or two of its matched words, so the wrong captions keep
#   most of the true captions' BLEU-1, METEOR and ROUGE-L (we check at least
#   70%), and they beat the true-elsewhere captions of other pictures on every
#   n-gram metric;
# * shuffling keeps every word and only changes the order. Corpus BLEU-1
#   counts words regardless of order, so it is *exactly* the same as for the
#   unshuffled captions, while BLEU-4, which needs four words in a row,
#   loses most of its value (we check: at least three quarters; a short
#   caption shuffled can keep a 4-gram by chance).
#
# Look also at what is not asserted but printed: CIDEr, the metric captioning
# papers lead with, gives the wrong captions a large share of the true
# captions' score, and gives word salad about as much as the wrong captions;
# METEOR hardly notices the shuffling at all.
#
# So on a templated language an n-gram score can look excellent while the
# captions are wrong about the picture. This is not hypothetical: in a
# calibration run outside this course, a captioner trained on templated
# captions reached CIDEr 1.95 and BLEU-4 0.40 while only 9% of its captions
# were true of their image. The later notebooks therefore report scene
# accuracy next to BLEU and CIDEr.

# %%
true_r, wrong_r, other_r = rows["held-out reference"], rows["one word wrong"], rows["caption of another picture"]
shuf_r, rand_r = rows["shuffled words"], rows["random words"]
assert true_r["caption_all_true"] == 1.0
assert wrong_r["caption_all_true"] == 0.0
for c in ("BLEU-1", "METEOR", "ROUGE-L"):
    assert wrong_r[c] >= 0.7 * true_r[c], c
for c in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
    assert wrong_r[c] > other_r[c] and wrong_r[c] > rand_r[c], c
assert abs(shuf_r["BLEU-1"] - true_r["BLEU-1"]) < 1e-12  # order-blind: an identity, not an approximation
assert shuf_r["BLEU-4"] < 0.25 * true_r["BLEU-4"]
print(f"one word wrong keeps {wrong_r['CIDEr'] / true_r['CIDEr']:.0%} of the CIDEr of true captions "
      f"with {wrong_r['caption_all_true']:.0%} of them true; shuffled words keep {shuf_r['CIDEr'] / true_r['CIDEr']:.0%}")
log.add("CIDEr ratio one-word-wrong / true", round(wrong_r["CIDEr"] / true_r["CIDEr"], 3))
log.add("CIDEr ratio shuffled / true", round(shuf_r["CIDEr"] / true_r["CIDEr"], 3))

# %% [markdown]
# ### Checking the BLEU formula
#
# The formula above is easy to get subtly wrong (clipping, the choice of
# reference length), so we recompute the sentence-level BLEU-1..4 of the
# held-out captions by hand and compare with the per-image values
# `pycocoevalcap` returned. (Its code adds $10^{-15}$ to each matched count
# and $10^{-9}$ to each n-gram count, which changes nothing at the stated
# tolerance except that a precision of 0 becomes a tiny positive number.)

# %%
def sentence_bleu(candidate, references, n_max=4):
    c = simple_tokenize(candidate)
    refs = [simple_tokenize(r) for r in references]
    scores, prod = [], 1.0
    for k in range(1, n_max + 1):
        grams = Counter(tuple(c[i:i + k]) for i in range(len(c) - k + 1))
        best = Counter()
        for r in refs:
            for g, n in Counter(tuple(r[i:i + k]) for i in range(len(r) - k + 1)).items():
                best[g] = max(best[g], n)
        matched = sum(min(n, best[g]) for g, n in grams.items())
        prod *= (matched + 1e-15) / (max(len(c) - k + 1, 0) + 1e-9)
        scores.append(prod ** (1 / k))
    closest = min((len(r) for r in refs), key=lambda L: (abs(L - len(c)), L))
    bp = min(1.0, np.exp(1 - closest / len(c)))
    return [s * bp for s in scores]


per_image = rows["held-out reference"]["per_image"]
worst = 0.0
for i in ids_:
    mine = sentence_bleu(held_out[i], remaining[i])
    for k in range(4):
        worst = max(worst, abs(mine[k] - per_image[f"BLEU-{k + 1}"][i]))
print(f"largest difference, hand-computed vs pycocoevalcap sentence BLEU: {worst:.2e}")
assert worst < 1e-6

# %% [markdown]
# ## Summary
#
# * The course's data are generated scenes whose every caption can be
#   checked against the picture, so a caption is judged by **scene
#   accuracy** (every claim true, one object never named twice) with
#   **object recall** beside it.
# * Words become token ids with a small word vocabulary (or BERT
#   pieces); every later notebook reads them.
# * The n-gram metrics the papers report barely notice a wrong word.
#
# What this run measured:

# %%
print("\n".join([
    f"- {len(lengths)} training captions of {lengths.mean():.1f} words on average (at most {lengths.max()}), "
    f"{tok.vocab_size} tokens in the vocabulary.",
    f"- A held-out reference is true of its picture in {ref_truth['caption_all_true']:.1%} of validation pictures.",
    f"- One wrong word keeps {wrong_r['CIDEr'] / true_r['CIDEr']:.0%} of the CIDEr of a true caption while "
    f"{wrong_r['caption_all_true']:.0%} of those captions are true; shuffled words keep "
    f"{shuf_r['CIDEr'] / true_r['CIDEr']:.0%}.",
]))

# %%
total = time.perf_counter() - t_start
log.add("notebook seconds", round(total, 1))
print(f"done in {total:.1f} s")
print(log.table())
