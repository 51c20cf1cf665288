"""Figures every captioner notebook shows: training curves, a grid of pictures
with generated and reference captions, a denoising trajectory, attention
masks and maps (notebook 07), several captioners side by side and the order a
caption's words were decided in (notebook 08)."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np


def plot_training(record: dict, title: str = "", ax=None):
    """Loss per step (smoothed) and validation scene accuracy / object recall at each check."""
    import matplotlib.pyplot as plt

    h = record["history"]
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(11, 3.4))
    loss = np.asarray(h["loss"], dtype=float)
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid") if len(loss) >= k else loss
    ax[0].plot(h["step"][:len(smooth)], smooth)
    ax[0].set(xlabel="step", ylabel="training loss", title=f"{title} loss (mean of {k} steps)")
    steps = [v["step"] for v in h["val"]]
    for key, label in (("scene_accuracy", "scene accuracy"), ("object_recall", "object recall"),
                       ("well_formed", "well formed")):
        ax[1].plot(steps, [v[key] for v in h["val"]], marker="o", label=label)
    if record.get("best"):
        ax[1].axvline(record["best"]["step"], color="grey", ls=":", label="kept (best on val)")
    ax[1].set(xlabel="step", ylim=(0, 1.02), title="validation pictures")
    ax[1].legend(fontsize=8)
    return ax


def plot_token_accuracy(curves: dict[str, dict[float, float]], next_word: float, ax=None):
    """Masked models' teacher-forced accuracy at each mask ratio ({label: {ratio: accuracy}}) against
    the autoregressive decoder's next-word accuracy (a dashed line); prints the same numbers."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    ratios = sorted(next(iter(curves.values())))
    for label, acc in curves.items():
        ax.plot(ratios, [acc[r] for r in ratios], marker="o", label=label)
    ax.axhline(next_word, color="k", ls="--", label="autoregressive: next word")
    ax.set(xlabel="mask ratio", ylabel="token accuracy (val references)", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    width = max(len("mask ratio"), *(len(label) for label in curves))
    print(f"{'mask ratio':{width}s}  " + "  ".join(f"{r:5.2f}" for r in ratios))
    for label, acc in curves.items():
        print(f"{label:{width}s}  " + "  ".join(f"{acc[r]:5.3f}" for r in ratios))
    print(f"autoregressive next-word accuracy: {next_word:.3f}")
    return ax


def caption_grid(images, generated: Sequence[str], references: Sequence[str], verdicts: Sequence[bool] | None = None,
                 ncols: int = 4, title: str = ""):
    """Pictures (N, 3, H, W) uint8 with the generated caption (green: all true, red: not) and one reference."""
    import matplotlib.pyplot as plt

    n = len(generated)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        colour = "black" if verdicts is None else ("green" if verdicts[i] else "red")
        gen = "\n".join(textwrap.wrap("gen: " + generated[i], 34))
        ref = "\n".join(textwrap.wrap("ref: " + references[i], 34))
        ax.set_title(gen, fontsize=8, color=colour, loc="left")
        ax.text(0, 1.0, ref, fontsize=7, color="dimgray", transform=ax.transAxes, va="top", ha="left",
                bbox=dict(facecolor="white", alpha=0.7, lw=0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_trajectory_changes(trajectory, pad_id: int, ax=None, label: str = ""):
    """Per network call: the fraction of caption positions whose rounded word changed since the
    previous call, and the fraction that are padding. Shows when the caption settles."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    ts = [t for t, _ in trajectory]
    changes = [float("nan")] + [(b != a).float().mean().item() for (_, a), (_, b) in zip(trajectory, trajectory[1:])]
    pads = [(ids == pad_id).float().mean().item() for _, ids in trajectory]
    x = np.arange(len(ts))
    ax.plot(x, changes, marker="o", label=f"{label} words changed".strip())
    ax.plot(x, pads, marker=".", ls="--", label=f"{label} padding".strip())
    ax.set_xticks(x, [str(t) for t in ts], rotation=60, fontsize=7)
    ax.set(xlabel="network call (its timestep t)", ylabel="fraction of positions", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return ax


def attention_maps(image, words: Sequence[str], weights, grid_side: int, title: str = "", max_words: int = 8):
    """Where each generated word looked: for word i, the cross-attention weights over the grid tokens
    (weights (n_words, 1 + grid_side**2): the pooled token first, then the grid row by row) upsampled
    and overlaid on the picture (3, H, W) uint8. The pooled token's share is printed in each title: it
    is the part of the attention the map cannot show."""
    import matplotlib.pyplot as plt
    import torch

    n = min(len(words), max_words)
    fig, axes = plt.subplots(1, n + 1, figsize=(1.9 * (n + 1), 2.3))
    axes = np.atleast_1d(axes)
    img = image.permute(1, 2, 0).numpy()
    axes[0].imshow(img)
    axes[0].set_title("picture", fontsize=8)
    H, W = img.shape[:2]
    for i in range(n):
        w = torch.as_tensor(weights[i], dtype=torch.float32)
        grid = w[1:].reshape(1, 1, grid_side, grid_side)
        up = torch.nn.functional.interpolate(grid, size=(H, W), mode="nearest")[0, 0].numpy()
        axes[i + 1].imshow(img)
        axes[i + 1].imshow(up, cmap="magma", alpha=0.6, vmin=0, vmax=max(float(w[1:].max()), 1e-6))
        axes[i + 1].set_title(f"{words[i]}\npooled {float(w[0]):.2f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_attention_mask(allowed, tokens: Sequence[str], ax=None, title: str = ""):
    """A self-attention mask (L, L) of booleans as an image: row = query, column = key, white = allowed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.imshow(np.asarray(allowed, dtype=float), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set(xlabel="key (attended to)", ylabel="query", title=title)
    return ax


def compare_grid(images, captions: dict[str, Sequence[str]], references: Sequence[str],
                 verdicts: dict[str, Sequence[bool]] | None = None, ncols: int = 4, title: str = ""):
    """Pictures (N, 3, H, W) uint8, each with one caption per captioner (`captions` {name: [N captions]};
    green when every claim is true, red when not) in a panel below it, and a reference above it."""
    import matplotlib.pyplot as plt

    n = len(references)
    nrows = (n + ncols - 1) // ncols
    k = len(captions)
    text_h = 0.22 * (k + 1)  # room for k captions of up to three lines each, relative to a picture of height 1
    fig = plt.figure(figsize=(3.9 * ncols, (3.3 + 3.3 * text_h) * nrows))
    gs = fig.add_gridspec(2 * nrows, ncols, height_ratios=[1, text_h] * nrows)
    for i in range(n):
        r, c = divmod(i, ncols)
        ax = fig.add_subplot(gs[2 * r, c])
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        ax.axis("off")
        ax.set_title("\n".join(textwrap.wrap("ref: " + references[i], 44)), fontsize=7, color="dimgray", loc="left")
        tx = fig.add_subplot(gs[2 * r + 1, c])
        tx.axis("off")
        y = 1.0
        for name, caps in captions.items():
            text = "\n".join(textwrap.wrap(f"{name}: {caps[i]}", 44)[:3])
            ok = None if verdicts is None else verdicts[name][i]
            colour = "black" if ok is None else ("green" if ok else "red")
            tx.text(0, y, text, fontsize=7, color=colour, transform=tx.transAxes, va="top", ha="left")
            y -= (text.count("\n") + 1.4) / (3 * (k + 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_commit_order(words: Sequence[str], steps: Sequence[int], ax=None, title: str = ""):
    """One caption's words in their positions (x) against the network call that decided each (y): a masked
    diffusion caption written out of order shows as a scatter that is not a rising staircase."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(words)), 2.6))
    x = np.arange(len(words))
    ax.plot(x, steps, "o", color="tab:blue")
    for i, (w, s) in enumerate(zip(words, steps)):
        ax.annotate(w, (i, s), fontsize=8, xytext=(0, 5), textcoords="offset points", ha="center")
    ax.set_xticks(x, [str(i) for i in x], fontsize=7)
    ax.set(xlabel="position in the caption", ylabel="call that decided it", title=title)
    if len(steps):  # a caption of no words (a barely trained model) leaves an empty panel
        ax.set_ylim(min(steps) - 0.5, max(steps) + 1.5)
    return ax


def plot_errors(errors: dict, by_objects: dict, title: str = ""):
    """Two panels: the fraction of captions showing each error kind (`evaluate.error_profile`) and scene
    accuracy by number of objects in the picture (`evaluate.accuracy_by_objects`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 3.4))
    ax[0].barh(list(errors), list(errors.values()))
    ax[0].set(xlabel="fraction of test captions", title=f"{title} error kinds (a caption can show several)".strip())
    ax[0].invert_yaxis()
    ax[1].bar([str(n) for n in by_objects], list(by_objects.values()))
    ax[1].set(xlabel="objects in the picture", ylabel="scene accuracy", ylim=(0, 1), title="accuracy by scene size")
    fig.tight_layout()
    return fig
