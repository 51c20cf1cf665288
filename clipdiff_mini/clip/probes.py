"""What do CLIP features know? Attribute labels from scenes, linear probes
and zero-shot probes from text prompts.

Labels (from the scene dictionaries stored with the embedded dataset):

* ``colour``, ``shape``, ``size`` of the *largest object*: the object with
  the largest bounding radius. When several objects are equally large,
  "the largest object" does not exist: with ``ties="exclude"`` (default)
  colour and shape get the label -1 there (left out; size is still defined),
  with ``ties="leftmost"`` the leftmost (then topmost) of them counts, a
  harder, positional question.
* ``count``: the number of objects (classes 1..max).
* ``relation``: in two-object scenes, where the first object lies relative
  to the second, along the clearer axis (`scenes.clear_relations`: left of,
  right of, above, below). "First" is the larger one, else the one whose
  colour (then shape) comes first in the dataset's lists, so both objects
  can be told apart by sight. Other scenes, and pairs without a clear
  relation or with identical looks, get the label -1 (left out).

A *linear probe* is multinomial logistic regression on frozen features (fit
on the training split, scored on validation): if it reaches high accuracy
the attribute is linearly readable from the features. A *zero-shot probe*
classifies with text prompts only: the class whose prompt embedding is most
similar to the image embedding wins (``open_clip.build_zero_shot_classifier``
averages the embeddings of several prompt templates per class).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from clipdiff_mini.data.scenes import COLOURS, RELATIONS, SHAPES, SIZES, Scene, clear_relations

ATTRIBUTES = ("colour", "shape", "size", "count", "relation")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ---- labels ------------------------------------------------------------------------
def _objects(scene: Mapping[str, Any] | Scene):
    return Scene.from_dict(scene).objects


def largest_object(scene: Mapping[str, Any] | Scene):
    """The object with the largest radius; ties go to the leftmost, then the topmost."""
    objs = _objects(scene)
    if not objs:
        raise ValueError("the scene has no objects")
    return min(objs, key=lambda o: (-o.r, o.x, o.y))


def largest_is_unique(scene: Mapping[str, Any] | Scene) -> bool:
    """Whether exactly one object has the largest radius."""
    objs = _objects(scene)
    r = max(o.r for o in objs)
    return sum(o.r == r for o in objs) == 1


def _look_order(o) -> tuple:
    return (-o.r, list(COLOURS).index(o.colour), SHAPES.index(o.shape))


def relation_label(scene: Mapping[str, Any] | Scene) -> int:
    """Index in `RELATIONS` of "first REL second" in a two-object scene, or -1 (see module doc)."""
    objs = _objects(scene)
    if len(objs) != 2:
        return -1
    a, b = sorted(objs, key=_look_order)
    if _look_order(a) == _look_order(b):
        return -1  # identical looks: "first" would not be visible
    rel = clear_relations(a, b)
    return RELATIONS.index(rel[0]) if rel else -1


def class_names(attribute: str, max_objects: int = 4) -> list[str]:
    """Names of the classes of `attribute`, in label order."""
    if attribute == "colour":
        return list(COLOURS)
    if attribute == "shape":
        return list(SHAPES)
    if attribute == "size":
        return list(SIZES)
    if attribute == "count":
        return [str(n) for n in range(1, max_objects + 1)]
    if attribute == "relation":
        return list(RELATIONS)
    raise ValueError(f"unknown attribute {attribute!r}; allowed: {', '.join(ATTRIBUTES)}")


def probe_labels(scenes: Sequence[Mapping[str, Any]], max_objects: int | None = None,
                 ties: str = "exclude") -> dict[str, torch.Tensor]:
    """LongTensor (N,) of class indices per attribute (-1 = not applicable).

    Count labels are ``n_objects - 1`` (class "1" is index 0). `ties`:
    "exclude" or "leftmost" (see the module docstring)."""
    if ties not in ("exclude", "leftmost"):
        raise ValueError(f"ties={ties!r}; allowed: 'exclude', 'leftmost'")
    out: dict[str, list[int]] = {a: [] for a in ATTRIBUTES}
    for s in scenes:
        big = largest_object(s)
        defined = ties == "leftmost" or largest_is_unique(s)
        out["colour"].append(list(COLOURS).index(big.colour) if defined else -1)
        out["shape"].append(SHAPES.index(big.shape) if defined else -1)
        out["size"].append(list(SIZES).index(big.size))
        out["count"].append(len(_objects(s)) - 1)
        out["relation"].append(relation_label(s))
    if max_objects is not None and max(out["count"], default=0) >= max_objects:
        raise ValueError(f"a scene has more than max_objects={max_objects} objects")
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


# ---- linear probe -------------------------------------------------------------------
# L2 weights tried by `linear_probe`; one is chosen on held-out training rows.
# A single fixed weight (1e-3) under-fitted the 512-wide CLIP embedding
# (notebook 04): the right amount depends on the feature width and the data.
PROBE_WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)
# Principal axes whose variance is below this share of the largest one are dropped: constant or
# duplicated features, along which a probe can read nothing (the penalty holds their weights at 0).
AXIS_VARIANCE_TOL = 1e-10


def principal_axes(train_x: torch.Tensor, *others: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Standardised features in the basis of their principal axes.

    ``r = (s - mean(s)) V`` with ``s = (x - mu) / sigma`` (mu, sigma: mean
    and std of each feature over the rows of `train_x`, labelled or not) and
    ``V`` the eigenvectors of the covariance of ``s`` on those rows
    (scikit-learn's ``StandardScaler`` and ``PCA``). ``V`` is orthogonal,
    so a linear probe with an L2 penalty reads the same from ``r`` as from
    ``s``; in this basis the features are uncorrelated, which lets
    `linear_probe` precondition its fit. Returns ``[r_train (N, F'),
    *r_others (M, F')]`` (float32) and the variance along each axis (F',),
    axes below `AXIS_VARIANCE_TOL` of the largest dropped.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    pipe = make_pipeline(StandardScaler(), PCA(svd_solver="covariance_eigh"))
    with threadpool_limits(1):  # one BLAS thread, as in _fit_logistic
        rotated = [pipe.fit_transform(train_x.flatten(1).double().numpy())]  # (N, F)
        rotated += [pipe.transform(x.flatten(1).double().numpy()) for x in others]
    variance = torch.from_numpy(pipe[-1].explained_variance_).float()  # (F,), largest first
    keep = int((variance > AXIS_VARIANCE_TOL * variance[0]).sum()) if len(variance) else 0
    return [torch.from_numpy(r[:, :keep]).float() for r in rotated], variance[:keep]


def _fit_logistic(r: torch.Tensor, y: torch.Tensor, k: int, weight_decay: float, variance: torch.Tensor,
                  max_iter: int, init: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """W (F, K), b (K,) minimising ``mean CE(r W + b, y) + weight_decay * |W|^2``
    by full-batch L-BFGS (convex: no learning rate or seed to tune), from
    zero or from `init` (a warm start).

    Preconditioned: the features `r` are uncorrelated with variances
    `variance` (`principal_axes`), so the Hessian of the objective is about
    ``diag(c * variance + 2 * weight_decay)`` (c <= 1/4, the curvature of
    the softmax). L-BFGS runs on ``U = W / d`` with
    ``d = (variance / 4 + 2 * weight_decay)^(-1/2)``, whose Hessian is then
    near the identity: the objective is unchanged, but on correlated
    features the fit converges in tens of steps where the plain one needed
    thousands. It does not help a target the features nearly separate (the
    count of notebook 04): there the curvature vanishes along the
    separating directions, and the fit runs to `max_iter` either way.

    Hand-written on torch's L-BFGS rather than scikit-learn's
    ``LogisticRegression``, which minimises the same objective but cannot
    be preconditioned: on the correlated CLIP features it was as slow as the
    unpreconditioned fit (docs/design_log.md, "Linear probes").
    """
    d = (variance / 4 + 2 * weight_decay).rsqrt()  # (F,)
    u = torch.zeros(r.shape[1], k) if init is None else init[0] / d[:, None]  # (F, K)
    b = torch.zeros(k) if init is None else init[1].clone()
    u.requires_grad_(True)
    b.requires_grad_(True)
    rd = r * d  # (N, F): r W = (r * d) U
    # Stops when no gradient component exceeds 1e-4 (scikit-learn's default tolerance): on notebook 04's
    # features a tighter 1e-6 took 2.5 times longer and moved accuracies by at most 0.6 points either way.
    opt = torch.optim.LBFGS([u, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-4, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        w = d[:, None] * u  # (F, K)
        loss = F.cross_entropy(rd @ u + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    # One thread: on 2 cores shared with another job, two threads made a fit 3-4 times slower
    # (docs/design_log.md, "Linear probes"); alone, one is about as fast on problems this small.
    torch.set_num_threads(1)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return (d[:, None] * u).detach(), b.detach()


def _accuracy(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return ((z @ w + b).argmax(1) == y).float().mean().item()


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, *,
                 n_classes: int | None = None, weight_decay: float | Sequence[float] = PROBE_WEIGHT_DECAYS,
                 holdout: float = 0.2, max_iter: int = 150, seed: int = 0,
                 variance: torch.Tensor | None = None) -> dict[str, Any]:
    """Multinomial logistic regression on frozen features.

    Minimises ``mean CE(W z + b, y) + weight_decay * |W|^2`` over
    standardised features ``z = (x - mu) / sigma`` (mu, sigma from all
    training rows, labelled or not), in the basis of their principal axes
    (`principal_axes`; the basis is orthogonal, so the probe is the same),
    by preconditioned full-batch L-BFGS (`_fit_logistic`). When the
    features come already in that basis (`probe_attributes` computes it
    once per feature set), pass the variances of the axes as `variance`.

    When `weight_decay` lists several values, each is fitted on a random
    (1 - `holdout`) of the labelled training rows and scored on the rest;
    the best (the larger weight on a tie) is refitted on all labelled
    training rows. The fits go from the strongest weight to the weakest,
    each starting from the previous solution (a regularisation path). The
    validation rows never choose anything, as in CLIP's linear-probe
    protocol. Rows labelled -1 are left out of the fits and the scores.
    Returns validation and training accuracy, the chosen weight, the
    held-out accuracy of each weight, chance (1 / classes) and the
    majority-class rate on validation (the best constant guess).
    """
    keep_t, keep_v = train_y >= 0, val_y >= 0
    if not keep_t.any() or not keep_v.any():
        raise ValueError("no labelled rows to probe (all labels are -1)")
    grid = [float(weight_decay)] if isinstance(weight_decay, (int, float)) else sorted(map(float, weight_decay))
    if not grid or min(grid) < 0:
        raise ValueError(f"weight_decay must be a non-negative number or a non-empty list of them, got {weight_decay!r}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if variance is None:
        (train_x, val_x), variance = principal_axes(train_x, val_x)
    zt, yt = train_x.float().flatten(1)[keep_t], train_y[keep_t]  # (N, F)
    zv, yv = val_x.float().flatten(1)[keep_v], val_y[keep_v]
    k = int(n_classes or (max(int(yt.max()), int(yv.max())) + 1))
    held_out: dict[float, float] = {}
    if len(grid) > 1:
        perm = torch.randperm(len(yt), generator=torch.Generator().manual_seed(seed))
        n_hold = max(1, int(round(holdout * len(yt))))
        fit_rows, hold_rows = perm[n_hold:], perm[:n_hold]
        zf, yf, zh, yh = zt[fit_rows], yt[fit_rows], zt[hold_rows], yt[hold_rows]
        solutions, init = {}, None
        for wd in reversed(grid):  # strongest first
            init = solutions[wd] = _fit_logistic(zf, yf, k, wd, variance, max_iter, init)
            held_out[wd] = _accuracy(zh, yh, *init)
        best = max(held_out.values())
        chosen = max(wd for wd in grid if held_out[wd] == best)
        start = solutions[chosen]
    else:
        chosen, start = grid[0], None
    w, b = _fit_logistic(zt, yt, k, chosen, variance, max_iter, start)
    majority = torch.bincount(yv, minlength=k).max().item() / len(yv)
    return {"accuracy": _accuracy(zv, yv, w, b), "train_accuracy": _accuracy(zt, yt, w, b), "weight_decay": chosen,
            "held_out_accuracy": held_out, "chance": 1.0 / k, "majority": majority,
            "n_train": int(len(yt)), "n_val": int(len(yv)), "n_classes": k}


# Every attribute of the largest object among unique-largest pictures, then the
# harder, positional version of colour and shape (the leftmost of equally large ones).
PROBE_TARGETS: tuple[tuple[str, str], ...] = (*((a, "exclude") for a in ATTRIBUTES), ("colour", "leftmost"),
                                             ("shape", "leftmost"))


def probe_target_name(attribute: str, ties: str) -> str:
    """``"shape"`` or ``"shape (ties: leftmost)"``: the row name of a probe target."""
    return attribute if ties == "exclude" else f"{attribute} (ties: {ties})"


def probe_attributes(features: Mapping[str, tuple[torch.Tensor, torch.Tensor]], train_scenes: Sequence[Mapping[str, Any]],
                     val_scenes: Sequence[Mapping[str, Any]], *, targets: Sequence[tuple[str, str]] = PROBE_TARGETS,
                     max_objects: int | None = None, progress: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    """A `linear_probe` of every target on every feature set.

    features: ``{name: (train_x (N, ...), val_x (M, ...))}``, rows in the
    order of `train_scenes` / `val_scenes`; targets: (attribute, ties) pairs.
    Returns ``{(name, probe_target_name(attribute, ties)): linear_probe result}``.
    """
    from tqdm.auto import tqdm

    labels = {ties: (probe_labels(train_scenes, max_objects, ties), probe_labels(val_scenes, max_objects, ties))
              for ties in dict.fromkeys(t for _, t in targets)}
    jobs = [(name, attr, ties) for name in features for attr, ties in targets]
    axes = {name: principal_axes(*features[name]) for name in features}  # once per feature set

    def fit(job):
        name, attr, ties = job
        ((rt, rv), variance), (lt, lv) = axes[name], labels[ties]
        return (name, probe_target_name(attr, ties)), linear_probe(rt, lt[attr], rv, lv[attr], variance=variance)

    # Each fit runs on one thread (`_fit_logistic`), so one fit per core at a time: the fits are independent
    # and torch releases the interpreter lock inside its kernels. Same fits, same results, in about half
    # the time on two cores. The thread count is set once here, not per fit, so no fit resets it under another.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
            done = list(tqdm(pool.map(fit, jobs), total=len(jobs), desc="linear probes", disable=not progress))
    finally:
        torch.set_num_threads(threads)
    return dict(done)


# ---- zero-shot probes -----------------------------------------------------------------
def zero_shot_templates(attribute: str) -> list[Callable[[str], str]]:
    """Prompt templates for a zero-shot probe of `attribute` of the largest
    object (or the count), written in the dataset's own caption language."""
    if attribute == "colour":
        return [lambda c: f"a large {c} shape", lambda c: f"a large {c} object", lambda c: f"a {c} shape"] + \
            [lambda c, s=s: f"a large {c} {s}" for s in SHAPES]
    if attribute == "shape":
        return [lambda s: f"a large {s}", lambda s: f"a {s}"] + [lambda s, c=c: f"a large {c} {s}" for c in COLOURS]
    if attribute == "size":
        return [lambda z: f"a {z} shape", lambda z: f"a {z} object"] + [lambda z, s=s: f"a {z} {s}" for s in SHAPES]
    if attribute == "count":
        def count(n: str, noun: str) -> str:
            k = int(n)
            return f"{NUMBER_WORDS[k]} {noun}{'s' if k > 1 else ''}"
        return [lambda n: count(n, "shape"), lambda n: count(n, "object")]
    raise ValueError(f"no zero-shot templates for {attribute!r}; use one of colour, shape, size, count "
                     "(relations: zero_shot_relation)")


def zero_shot_weights(bundle, attribute: str, max_objects: int = 4) -> torch.Tensor:
    """(D, C) unit class embeddings from open_clip's ``build_zero_shot_classifier``."""
    from open_clip import build_zero_shot_classifier

    bundle.model.eval()
    return build_zero_shot_classifier(bundle.model, bundle.tokenize, class_names(attribute, max_objects),
                                      zero_shot_templates(attribute), num_classes_per_batch=None,
                                      device=bundle.device).float().cpu()


def zero_shot_accuracy(image_emb: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images (labels >= 0) whose most similar class is the label.
    image_emb (N, D) unit rows; weights (D, C)."""
    keep = labels >= 0
    pred = (image_emb[keep].float() @ weights).argmax(1)  # (n,)
    return (pred == labels[keep]).float().mean().item()


def describe_object(o) -> str:
    return f"a {o.size} {o.colour} {o.shape}"


def zero_shot_relation(bundle, image_emb: torch.Tensor, scenes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-image zero-shot relation test on two-object scenes with a clear relation.

    For each such image, four captions "A REL B" (A, B the full descriptions
    of the first and second object, REL each of the four relations); the
    prediction is the caption most similar to the image. Chance is 1/4. A
    bag-of-words embedding scores chance here: all four captions hold the
    same words except the relation word, and "A left of B" = "B right of A".
    """
    labels = torch.stack([torch.tensor(relation_label(s)) for s in scenes])  # (N,)
    idx = torch.nonzero(labels >= 0).flatten()
    if len(idx) == 0:
        return {"accuracy": float("nan"), "n": 0, "chance": 0.25}
    texts = []
    for i in idx.tolist():
        a, b = sorted(_objects(scenes[i]), key=_look_order)
        texts += [f"{describe_object(a)} {rel} {describe_object(b)}" for rel in RELATIONS]
    text_emb = torch.cat([bundle.encode_texts(texts[j:j + 1024]) for j in range(0, len(texts), 1024)])
    text_emb = text_emb.view(len(idx), len(RELATIONS), -1)  # (n, 4, D)
    sims = torch.einsum("nd,nkd->nk", image_emb[idx].float(), text_emb)  # (n, 4)
    acc = (sims.argmax(1) == labels[idx]).float().mean().item()
    return {"accuracy": acc, "n": int(len(idx)), "chance": 1.0 / len(RELATIONS)}
