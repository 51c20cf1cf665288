"""Wrong captions that look right: one-word edits of true captions.

A captioner trained on the shapes dataset can learn the caption language
perfectly and still name the wrong colour or put a shape on the wrong side.
To see how the n-gram metrics treat such captions, `perturb_caption` takes a
true caption of a scene and changes exactly one word so that it becomes
false while staying a well-formed caption:

* ``colour``   - a colour word becomes a colour that *no object in the scene*
  has ("a red circle" -> "a green circle"); the mention then matches nothing,
  so it is false whatever else the caption says;
* ``shape``    - likewise a shape noun becomes a shape absent from the scene
  (number kept: "circles" -> "crosses");
* ``count``    - a number word two..nine becomes another one (still plural);
  counts in the captions are exact, so the new count is false;
* ``relation`` - the direction word of a relation flips (left <-> right,
  above <-> below, over <-> under). False when the two mentions pick out
  their objects exactly, as the generated references guarantee; not by
  itself for any caption.

``a``/``an`` in front of the edited word is fixed ("an orange circle").
`shuffle_words` (word salad with the same words) and `random_words` are
the garbage baselines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from clipdiff_mini.data.caption_grammar import NUMBER_WORDS, PLURAL, WORD_FOR_NUMBER
from clipdiff_mini.data.scenes import COLOURS, SHAPES, Scene

KINDS = ("colour", "shape", "count", "relation")
FLIP = {"left": "right", "right": "left", "above": "below", "below": "above", "over": "under", "under": "over"}
_SINGULAR = {p: s for s, p in PLURAL.items()}
_WORD = re.compile(r"[A-Za-z]+")


class NoPerturbation(ValueError):
    """The caption has no word that one of the requested edits could change."""


@dataclass(frozen=True)
class Perturbation:
    original: str
    text: str
    kind: str  # one of KINDS
    old: str  # the word replaced
    new: str  # its replacement

    def __str__(self) -> str:
        return f"{self.text}   [{self.kind}: {self.old} -> {self.new}]"


def _edits(words: list[str], scene: Scene, kinds: Sequence[str]) -> list[tuple[int, str, list[str]]]:
    """Every possible edit: (word position, kind, allowed replacements)."""
    present_colours = {o.colour for o in scene.objects}
    present_shapes = {o.shape for o in scene.objects}
    absent_colours = [c for c in COLOURS if c not in present_colours]
    absent_shapes = [s for s in SHAPES if s not in present_shapes]
    out = []
    for i, w in enumerate(words):
        lw = w.lower()
        if "colour" in kinds and lw in COLOURS and absent_colours:
            out.append((i, "colour", absent_colours))
        elif "shape" in kinds and lw in SHAPES and absent_shapes:
            out.append((i, "shape", absent_shapes))
        elif "shape" in kinds and lw in _SINGULAR and absent_shapes:
            out.append((i, "shape", [PLURAL[s] for s in absent_shapes]))
        elif "count" in kinds and NUMBER_WORDS.get(lw, 0) >= 2:
            n = NUMBER_WORDS[lw]
            out.append((i, "count", [WORD_FOR_NUMBER[m] for m in (n - 1, n + 1) if 2 <= m <= 9]))
        elif "relation" in kinds and lw in FLIP and (lw not in ("left", "right") or _next(words, i) == "of"):
            out.append((i, "relation", [FLIP[lw]]))
    return out


def _next(words: list[str], i: int) -> str:
    return words[i + 1].lower() if i + 1 < len(words) else ""


def perturb_caption(caption: str, scene: "Scene | Mapping[str, Any]", rng: np.random.Generator,
                    kinds: Sequence[str] = KINDS) -> Perturbation:
    """A one-word edit of `caption` that makes it false of `scene` (see the
    module docstring); the edit is drawn uniformly from all possible ones.
    Raises `NoPerturbation` when the caption offers none."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown perturbation kind(s) {bad}; allowed: {', '.join(KINDS)}")
    scene = Scene.from_dict(scene)
    spans = [(m.start(), m.end()) for m in _WORD.finditer(caption)]
    words = [caption[a:b] for a, b in spans]
    edits = _edits(words, scene, kinds)
    if not edits:
        raise NoPerturbation(f"no {'/'.join(kinds)} word to change in {caption!r}")
    i, kind, options = edits[int(rng.integers(len(edits)))]
    new = options[int(rng.integers(len(options)))]
    new_words = list(words)
    new_words[i] = new
    if i > 0 and words[i - 1].lower() in ("a", "an"):  # article agreement with the new word
        new_words[i - 1] = "an" if new[0] in "aeiou" else "a"
    out, last = [], 0
    for (a, b), w in zip(spans, new_words):  # keep the punctuation and spacing of the original
        out.append(caption[last:a] + w)
        last = b
    text = "".join(out) + caption[last:]
    return Perturbation(original=caption, text=text, kind=kind, old=words[i], new=new)


def perturb_any(captions: Sequence[str], scene: "Scene | Mapping[str, Any]", rng: np.random.Generator,
                kinds: Sequence[str] = KINDS) -> Perturbation:
    """`perturb_caption` of the first caption (in random order) that can be edited."""
    for k in rng.permutation(len(captions)):
        try:
            return perturb_caption(captions[int(k)], scene, rng, kinds)
        except NoPerturbation:
            continue
    raise NoPerturbation(f"none of the {len(captions)} captions has a {'/'.join(kinds)} word to change")


def shuffle_words(caption: str, rng: np.random.Generator) -> str:
    """The words of `caption` in random order: the same unigrams, no sentence."""
    words = _WORD.findall(caption)
    return " ".join(words[int(k)] for k in rng.permutation(len(words)))


def random_words(vocabulary: Sequence[str], n_words: int, rng: np.random.Generator) -> str:
    """`n_words` words drawn uniformly from `vocabulary`."""
    if not vocabulary:
        raise ValueError("random_words needs a non-empty vocabulary")
    return " ".join(vocabulary[int(k)] for k in rng.integers(len(vocabulary), size=n_words))
