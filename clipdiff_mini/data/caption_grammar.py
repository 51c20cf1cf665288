"""The caption language of the shapes dataset: generating true captions and
reading claims back out of any caption.

Why a grammar and not a template? A single template ("a red circle left of a
blue square") lets a captioner score well on n-gram metrics (BLEU, CIDEr)
while saying false things: in a calibration run on templated captions CIDEr
was 1.95 with only 9% of captions true. Varied references (different orders,
both directions of a relation, optional words, counts) make the n-gram
metrics less gameable, and the exact scene lets us check truth directly
(`clipdiff_mini.evaluation.scene_judge`).

The language
------------
A caption is a sequence of *phrases* separated by "and", commas, colons or
"with", optionally introduced by "there is/are", "a picture of", "an image
of", "an image with", "a scene with". A phrase is

* a **mention** (noun phrase)  ``DET [SIZE] [COLOUR] NOUN``, e.g. "a red circle",
  "two small blue squares", "the large triangle", "three shapes", or
* a **relation** ``MENTION [is|are] REL MENTION``, e.g. "a red circle left of a
  blue square", "the blue square is to the right of the red circle", or
* a **background** phrase "on a light/dark background".

``DET`` is "a"/"an", "the", or a number word "one".."nine"; ``SIZE`` is small
or large; ``COLOUR`` one of `scenes.COLOURS`; ``NOUN`` a shape ("circle(s)",
"cross(es)", ...) or the generic "shape(s)"/"object(s)", which any object
matches. ``REL`` is "left of" / "to the left of" / "on the left of", the same
for right, "above" / "over", "below" / "under". Relations chain: in "A left of
B above C" the claims are A left-of B and B above C.

Truth semantics (what `clipdiff_mini.evaluation.scene_judge` checks)
-------------------------------------------------------------
Let ``match(M)`` be the set of scene objects having every attribute that
mention ``M`` states (omitted attributes are not constrained).

* "a/an X" claims ``|match(X)| >= 1`` (existential: "a red circle" is true in
  a scene with two red circles).
* "the X", "one X" claim ``|match(X)| == 1``; "two X" etc. claim ``|match(X)| == n``
  (exact counts: "two red circles" is false when there are three).
* A relation "X REL Y" is about *referents*: a mention with a number word or
  "the" refers to all of ``match(X)``; an "a/an" mention refers to one object
  of ``match(X)`` that we may choose. The relation is true when some choice
  of the "a"-referents makes ``REL`` hold (`scenes.holds`, centres compared
  with a margin) for every pair of referents. So "two red circles above a
  blue square" says there is a blue square below *both* red circles.
  The count claims of X and Y are separate claims.
* "on a dark background" claims the scene's background tone is dark.
* The list names *different* objects: the singular mentions ("a/an", "the",
  "one") that are not an end of a relation phrase must be given pairwise
  distinct objects of their ``match`` sets, so "a red circle and a large red
  circle" needs two red circles. Counted mentions ("two red circles") and a
  bare count of the whole picture ("three shapes", "one shape") name no
  object of their own, and relation ends may be objects the list names too.
* A mention needs a determiner, number agreement ("two circle" is ill-formed)
  and at most one size and one colour. Anything that is not one of the
  phrases above is an *unparsed piece*; each unparsed piece counts as one
  false claim, so a garbled caption can never be "all true".

How references are generated
----------------------------
`captions_for_scene` writes ``n`` captions per scene, each in one of four
modes (shuffled so every image gets a mix):

* **full** - every object, grouped by identical attributes ("two small red
  circles and a large blue square"), in random order;
* **list** - a random subset, attributes randomly omitted, counts recomputed
  for the shorter description so they stay exact;
* **relation** - one or two relations, each between two mentions whose
  descriptions pick out exactly their referents (no ambiguous "a" when two
  objects fit), stated only along the clearer axis with a generous margin
  (`scenes.clear_relations`), in either direction ("A left of B" or
  "B right of A"), plus optional extra mentions;
* **count** - the total ("three shapes"), optionally followed by a list.

Any of them may end with the background phrase. Captions have at most
``MAX_WORDS`` words. Every generated caption is judged true by the scorer,
distinct referents included: every "a/the/one" mention of a list is written
for an object no earlier mention of the list took. The tests check this on
thousands of fresh scenes.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from clipdiff_mini.data.scenes import COLOURS, SHAPES, SIZES, Scene, SceneObject, clear_relations

MAX_WORDS = 20

NUMBER_WORDS: dict[str, int] = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                                "eight": 8, "nine": 9}
WORD_FOR_NUMBER = {v: k for k, v in NUMBER_WORDS.items()}
PLURAL: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses",
                          "diamond": "diamonds"}
GENERIC_NOUNS = ("shape", "object")
GENERIC_PLURAL = {"shape": "shapes", "object": "objects"}
# surface phrases of each relation (the first is the plain form)
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
INTRO_PHRASES = ("there is", "there are", "a picture of", "an image of", "an image with", "a scene with",
                 "a picture with", "picture of", "image of")
SEPARATORS = ("and", "with", "including", ",", ";", ":", ".")
COPULAS = ("is", "are")

_TOKEN = re.compile(r"[a-z]+|[,;:.]")


# ---- claims ------------------------------------------------------------------
@dataclass(frozen=True)
class Mention:
    """A noun phrase and what it claims. ``count=None`` is "a/an" (at least
    one); otherwise exactly ``count`` objects match. ``shape=None`` is the
    generic noun ("shape"/"object")."""

    count: int | None
    size: str | None = None
    colour: str | None = None
    shape: str | None = None
    determiner: str = "a"  # surface word: "a"/"an"/"the"/number word
    noun: str = ""  # surface noun ("circles", "shape", ...); derived when empty

    def matches(self, obj: SceneObject) -> bool:
        return ((self.size is None or obj.size == self.size) and (self.colour is None or obj.colour == self.colour)
                and (self.shape is None or obj.shape == self.shape))

    def match(self, objects: Sequence[SceneObject]) -> list[int]:
        """Indices of the objects this mention's description fits."""
        return [i for i, o in enumerate(objects) if self.matches(o)]

    @property
    def plural(self) -> bool:
        return self.count is not None and self.count > 1

    def text(self) -> str:
        noun = self.noun or _noun(self.shape, self.plural)
        words = [w for w in (self.size, self.colour, noun) if w]
        det = self.determiner
        if det in ("a", "an"):
            det = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([det, *words])


@dataclass(frozen=True)
class Relation:
    """``mentions[subject] <relation> mentions[obj]``."""

    subject: int
    relation: str
    obj: int


@dataclass
class ParsedCaption:
    """The claims read from one caption."""

    text: str
    tokens: list[str]
    mentions: list[Mention] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    backgrounds: list[str] = field(default_factory=list)  # claimed background tones
    unparsed: list[str] = field(default_factory=list)  # pieces that are not phrases of the language

    @property
    def well_formed(self) -> bool:
        """Every word belongs to a phrase, and at least one thing is claimed."""
        return not self.unparsed and bool(self.mentions)

    @property
    def n_claims(self) -> int:
        return len(self.mentions) + len(self.relations) + len(self.backgrounds) + len(self.unparsed)


def _noun(shape: str | None, plural: bool, generic: str = "shape") -> str:
    if shape is None:
        return GENERIC_PLURAL[generic] if plural else generic
    return PLURAL[shape] if plural else shape


def caption_tokens(text: str) -> list[str]:
    """Lowercase words of a caption (punctuation dropped): the Karpathy ``tokens``."""
    return re.findall(r"[a-z]+", str(text).lower())


# ---- parsing -------------------------------------------------------------------
_SINGULAR_NOUNS = {**{s: s for s in SHAPES}, "shape": None, "object": None}
_PLURAL_NOUNS = {**{p: s for s, p in PLURAL.items()}, "shapes": None, "objects": None}
_REL_PHRASES = sorted(((tuple(p.split()), rel) for rel, ps in RELATION_PHRASES.items() for p in ps),
                      key=lambda t: -len(t[0]))
_INTROS = sorted((tuple(p.split()) for p in INTRO_PHRASES), key=len, reverse=True)


def _match_phrase(tokens: list[str], i: int, phrase: tuple[str, ...]) -> bool:
    return tuple(tokens[i:i + len(phrase)]) == phrase


def _parse_background(tokens: list[str], i: int) -> tuple[str, int] | None:
    """"on a dark background" (also "against a ...", "on the ...", or bare
    "dark background"): returns (tone, consumed) or None."""
    for lead in (("on", "a"), ("against", "a"), ("on", "the"), ()):
        j = i + len(lead)
        if _match_phrase(tokens, i, lead) and tokens[j:j + 1] in (["light"], ["dark"]) \
                and tokens[j + 1:j + 2] == ["background"]:
            return tokens[j], j + 2 - i
    return None


def _parse_mention(tokens: list[str], i: int) -> tuple[Mention | None, int]:
    """Try a noun phrase at ``tokens[i]``. Returns (mention, consumed); a
    ``None`` mention with ``consumed > 0`` is an ill-formed noun phrase."""
    det = tokens[i]
    if det in ("a", "an"):
        count, plural_ok = None, False
    elif det in ("the", "one"):
        count, plural_ok = 1, False
    elif det in NUMBER_WORDS:
        count, plural_ok = NUMBER_WORDS[det], True
    else:
        return None, 0
    j = i + 1
    size = colour = None
    ok = True
    while j < len(tokens) and (tokens[j] in SIZES or tokens[j] in COLOURS):
        if tokens[j] in SIZES:
            ok &= size is None
            size = tokens[j]
        else:
            ok &= colour is None
            colour = tokens[j]
        j += 1
    if j < len(tokens) and (tokens[j] in _SINGULAR_NOUNS or tokens[j] in _PLURAL_NOUNS):
        noun = tokens[j]
        is_plural = noun in _PLURAL_NOUNS
        shape = _PLURAL_NOUNS[noun] if is_plural else _SINGULAR_NOUNS[noun]
        ok &= is_plural == plural_ok
        if ok:
            return Mention(count, size, colour, shape, det, noun), j + 1 - i
        return None, j + 1 - i
    if j == i + 1:
        return None, 0  # a lone determiner: let the caller decide (it may start an intro phrase)
    return None, j - i  # determiner + adjectives without a noun


def parse_caption(text: Any) -> ParsedCaption:
    """Read the claims of a caption (any string; never raises).

    Scans left to right: intro phrases, separators and copulas are skipped,
    mentions and background phrases become claims, a relation phrase links
    the mention just before it to the mention just after it. Words that fit
    nowhere are collected into unparsed pieces (consecutive words form one
    piece).
    """
    text = "" if text is None else str(text)
    tokens = _TOKEN.findall(text.lower())
    out = ParsedCaption(text=text, tokens=[t for t in tokens if t.isalpha()])
    i = 0
    last: int | None = None  # mention that can be the left side of a relation
    pending: tuple[int, str, int] | None = None  # (subject mention, relation, token position)
    piece: list[str] = []

    def flush():
        if piece:
            out.unparsed.append(" ".join(piece))
            piece.clear()

    def drop_pending():
        nonlocal pending
        if pending is not None:
            out.unparsed.append(" ".join(tokens[pending[2]:pending[2] + 1]) + " (relation without a second mention)")
            pending = None

    while i < len(tokens):
        tok = tokens[i]
        bg = _parse_background(tokens, i)
        if bg:
            flush(); drop_pending()
            out.backgrounds.append(bg[0])
            i += bg[1]
            last = None
            continue
        intro = next((p for p in _INTROS if _match_phrase(tokens, i, p)), None)
        if intro:
            flush(); drop_pending()
            i += len(intro)
            last = None
            continue
        if tok in SEPARATORS:
            flush(); drop_pending()
            i += 1
            last = None
            continue
        if tok in COPULAS and last is not None and not piece:
            i += 1
            continue
        rel = next(((p, r) for p, r in _REL_PHRASES if _match_phrase(tokens, i, p)), None)
        if rel:
            flush()
            if last is None or pending is not None:
                drop_pending()
                out.unparsed.append(" ".join(rel[0]) + " (relation without a first mention)")
            else:
                pending = (last, rel[1], i)
            i += len(rel[0])
            last = None
            continue
        mention, used = _parse_mention(tokens, i)
        if mention is not None:
            flush()
            out.mentions.append(mention)
            idx = len(out.mentions) - 1
            if pending is not None:
                out.relations.append(Relation(pending[0], pending[1], idx))
                pending = None
            last = idx
            i += used
            continue
        # not a phrase: part of an unparsed piece
        drop_pending()
        used = max(used, 1)
        piece.extend(tokens[i:i + used])
        i += used
        last = None
    flush()
    drop_pending()
    return out


# ---- generation ------------------------------------------------------------------
@dataclass(frozen=True)
class _Desc:
    size: str | None
    colour: str | None
    shape: str | None


def _matches(desc: _Desc, objects: Sequence[SceneObject]) -> frozenset[int]:
    return frozenset(i for i, o in enumerate(objects)
                     if (desc.size is None or o.size == desc.size) and (desc.colour is None or o.colour == desc.colour)
                     and (desc.shape is None or o.shape == desc.shape))


def _mention(desc: _Desc, n_matches: int, rng: np.random.Generator, *, existential_ok: bool,
             definite_ok: bool) -> Mention:
    """A mention of ``desc`` whose quantifier is true given ``n_matches``."""
    generic = ("shape", "object")[int(rng.integers(2))]
    if n_matches == 1:
        # "the" where the description is unique and it reads naturally (relations); "one" now and then
        u = rng.random()
        if definite_ok:
            det = "the" if u < 0.55 else ("a" if u < 0.93 else "one")
        else:
            det = "a" if u < 0.88 else "one"
        count = None if det == "a" else 1
        noun = _noun(desc.shape, False, generic)
    elif existential_ok and rng.random() < 0.2:
        det, count, noun = "a", None, _noun(desc.shape, False, generic)
    else:
        det, count, noun = WORD_FOR_NUMBER[n_matches], n_matches, _noun(desc.shape, True, generic)
    return Mention(count, desc.size, desc.colour, desc.shape, det, noun)


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    if len(parts) == 2:
        return f"{parts[0]} {('and', 'and', 'with')[int(rng.integers(3))]} {parts[1]}"
    oxford = "," if rng.random() < 0.3 else ""
    return ", ".join(parts[:-1]) + f"{oxford} and {parts[-1]}"


def _intro(first: Mention, rng: np.random.Generator) -> str:
    options = ["", "", "", "there are" if first.plural else "there is", "a picture of", "an image of",
               "an image with", "a scene with"]
    return options[int(rng.integers(len(options)))]


def _random_desc(obj: SceneObject, rng: np.random.Generator, p_size: float, p_colour: float,
                 p_shape: float) -> _Desc:
    size = obj.size if rng.random() < p_size else None
    colour = obj.colour if rng.random() < p_colour else None
    shape = obj.shape if rng.random() < p_shape else None
    if shape is None and colour is None:
        colour = obj.colour  # "a small shape" says too little
    return _Desc(size, colour, shape)


def _full(scene: Scene, rng: np.random.Generator) -> list[Mention]:
    """Every object once, identical objects grouped with their exact count."""
    objs = scene.objects
    keep_size = rng.random() < 0.85
    descs: list[_Desc] = []
    for o in objs:
        d = _Desc(o.size if keep_size else None, o.colour, o.shape)
        if d not in descs:
            descs.append(d)
    order = rng.permutation(len(descs))
    return [_mention(descs[k], len(_matches(descs[k], objs)), rng, existential_ok=False, definite_ok=False)
            for k in order]


def _list(scene: Scene, rng: np.random.Generator, exclude: frozenset[int] = frozenset()) -> list[Mention]:
    """A random subset of the objects (not in ``exclude``) with some attributes left out."""
    objs = scene.objects
    pool = [int(i) for i in rng.permutation(len(objs)) if int(i) not in exclude]
    k = int(rng.integers(1, len(pool) + 1)) if pool else 0
    covered: set[int] = set()
    out: list[Mention] = []
    for idx in pool[:k]:
        if idx in covered:
            continue
        d = _random_desc(objs[idx], rng, 0.4, 0.85, 0.9)
        m = _matches(d, objs)
        mention = _mention(d, len(m), rng, existential_ok=True, definite_ok=False)
        covered |= set(m) if mention.count is not None else {idx}
        out.append(mention)
    return out


def _relation_candidates(scene: Scene) -> dict[tuple[frozenset, str, frozenset], tuple[list[_Desc], list[_Desc]]]:
    """All clearly true relation clauses, keyed by (subject referents, relation,
    object referents), each with the descriptions that pick out exactly those
    referents. A description is used only if it fits exactly the objects meant
    (so an "a"-mention never has two candidates)."""
    objs = scene.objects
    descs: dict[_Desc, frozenset[int]] = {}
    for o in objs:
        for size, colour, shape in itertools.product((None, o.size), (None, o.colour), (None, o.shape)):
            if colour is None and shape is None:
                continue
            d = _Desc(size, colour, shape)
            if d not in descs:
                descs[d] = _matches(d, objs)
    # the referent sets a description can pick: the matches of the description
    by_set: dict[frozenset[int], list[_Desc]] = {}
    for d, m in descs.items():
        by_set.setdefault(m, []).append(d)
    out: dict[tuple[frozenset, str, frozenset], tuple[list[_Desc], list[_Desc]]] = {}
    for m1, m2 in itertools.permutations(by_set, 2):
        if m1 & m2:
            continue
        rels = None
        for a, b in itertools.product(m1, m2):
            r = set(clear_relations(objs[a], objs[b]))
            rels = r if rels is None else rels & r
            if not rels:
                break
        for rel in sorted(rels or ()):
            out[(m1, rel, m2)] = (by_set[m1], by_set[m2])
    return out


def _pick_desc(descs: list[_Desc], rng: np.random.Generator) -> _Desc:
    """Prefer naming the shape (generic "shape"/"object" one time in five)."""
    named = [d for d in descs if d.shape is not None]
    pool = named if named and (rng.random() < 0.8 or len(named) == len(descs)) else [d for d in descs if d.shape is None] or named
    return pool[int(rng.integers(len(pool)))]


def _relation_clause(key, descs: tuple[list[_Desc], list[_Desc]], rng: np.random.Generator,
                     copula_ok: bool = True) -> tuple[str, Mention]:
    """"X [is] REL Y" for one relation candidate; returns the text and X."""
    m1, rel, m2 = key
    d1, d2 = _pick_desc(descs[0], rng), _pick_desc(descs[1], rng)
    a = _mention(d1, len(m1), rng, existential_ok=False, definite_ok=True)
    b = _mention(d2, len(m2), rng, existential_ok=False, definite_ok=True)
    phrases = RELATION_PHRASES[rel]
    phrase = phrases[int(rng.integers(len(phrases)))]
    copula = ""
    if copula_ok and rng.random() < 0.35:
        copula = "are " if a.plural else "is "
    return f"{a.text()} {copula}{phrase} {b.text()}", a


def _background(scene: Scene) -> str:
    return f"on a {scene.background.tone} background"


def _n_words(text: str) -> int:
    return len(caption_tokens(text))


def _one_caption(scene: Scene, mode: str, rng: np.random.Generator, relations, max_words: int) -> str:
    objs = scene.objects
    if mode == "relation" and relations:
        keys = list(relations)
        first = keys[int(rng.integers(len(keys)))]
        intro = ("there is", "a picture of", "an image of", "")[int(rng.integers(4))] if rng.random() < 0.3 else ""
        clause, subject = _relation_clause(first, relations[first], rng, copula_ok=not intro)
        if intro == "there is" and subject.determiner == "the":
            intro = ""  # "there is the ..." is not English
        elif intro == "there is" and subject.plural:
            intro = "there are"
        parts = [clause]
        chosen = [first]
        if len(keys) > 1 and rng.random() < 0.35:
            others = [k for k in keys if {k[0], k[2]} != {first[0], first[2]}]  # another pair
            if others:
                second = others[int(rng.integers(len(others)))]
                parts.append(_relation_clause(second, relations[second], rng, copula_ok=not intro)[0])
                chosen.append(second)
        if rng.random() < 0.3:  # and some of the objects the relations did not mention
            used = frozenset().union(*(k[0] | k[2] for k in chosen))
            extra = _list(scene, rng, exclude=used)
            if extra:
                parts.append(_join([m.text() for m in extra], rng))
        text = " and ".join(parts) if rng.random() < 0.7 else ", ".join(parts)
        if intro:
            text = f"{intro} {text}"
    elif mode == "count":
        generic = ("shapes", "objects") if len(objs) > 1 else ("shape", "object")
        text = f"{WORD_FOR_NUMBER[len(objs)]} {generic[int(rng.integers(2))]}"
        if rng.random() < (0.6 if len(objs) > 1 else 0.85):  # "one shape" alone says little
            mentions = _full(scene, rng) if rng.random() < 0.5 else _list(scene, rng)
            text += ": " + _join([m.text() for m in mentions], rng)
        if rng.random() < 0.3:
            text = "there " + ("are " if len(objs) > 1 else "is ") + text
    else:
        mentions = _full(scene, rng) if mode == "full" else _list(scene, rng)
        text = _join([m.text() for m in mentions], rng)
        intro = _intro(mentions[0], rng)
        if intro:
            text = f"{intro} {text}"
    if rng.random() < 0.2:
        text += " " + _background(scene)
    return text


def captions_for_scene(scene: "Scene | Mapping[str, Any]", rng: np.random.Generator, n: int = 5,
                       max_words: int = MAX_WORDS) -> list[str]:
    """``n`` different true captions of a scene (see the module docstring).

    Modes are dealt so that an image gets a full listing, relations (when the
    scene has a clear one) and shorter lists; a caption longer than
    ``max_words`` is redrawn (falling back to a short list).
    """
    scene = Scene.from_dict(scene)
    if not scene.objects:
        raise ValueError("a scene needs at least one object to be captioned")
    relations = _relation_candidates(scene)
    base = ["full", "relation", "list", "relation", "count", "list", "relation", "full"]
    modes = [base[k % len(base)] for k in range(n)]
    modes = [modes[int(k)] for k in rng.permutation(n)]
    out: list[str] = []
    for mode in modes:
        text = None
        for attempt in range(12):
            cand = _one_caption(scene, mode if attempt < 8 else "list", rng, relations, max_words)
            if _n_words(cand) <= max_words and cand not in out:
                text = cand
                break
        if text is None:  # tiny scenes have few different captions: allow a repeat, keep it short
            text = next(c for c in (_one_caption(scene, "list", rng, relations, max_words) for _ in range(50))
                        if _n_words(c) <= max_words)
        out.append(text)
    return out
