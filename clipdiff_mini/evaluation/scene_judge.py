"""Scene accuracy: is a caption *true* of its picture?

n-gram metrics (BLEU, CIDEr) reward captions that share words with the
references, true or not; on a templated language they flatter wrong captions
badly. On the shapes dataset the exact scene is known, so we can check every
claim a caption makes. The claims and their truth conditions are defined in
`clipdiff_mini.data.caption_grammar` (module docstring); in short:

* "a red circle"        - at least one object is red and a circle;
* "two red circles", "the red circle", "one red circle" - exactly 2 / 1 / 1;
* "X left of Y"         - the referents of X and Y stand in the relation
  (`clipdiff_mini.data.scenes.holds`), choosing the "a"-referents freely;
* "on a dark background" - the background tone;
* an unparsed piece of text - a false claim (it states nothing checkable);
* **distinct referents** - the caption's list names different objects. The
  *referring* mentions (`referring_mentions`: "a/an", "the" or "one", not an
  end of a relation phrase, and not a bare count of the whole picture such as
  "one shape") must be given pairwise distinct objects, each one its
  description fits: a bipartite matching, as for object recall below. So
  "a red circle and a large red circle" is false of a picture with one large
  red circle (both need it) and true of one with two red circles, one large.
  Counted mentions ("two red circles", "three shapes") keep their exact-count
  meaning and take no object from the list, so a count followed by a list
  ("three shapes: a red circle, a blue square and a green cross") stays true;
  the ends of relation phrases may be objects the list names too (relations
  chain: "A left of B above C"; a list may restate what a relation named).

Per caption (`judge_caption`) we get the list of claims with their truth and
a reason. Over a set of captions (`scene_accuracy`):

* ``caption_all_true`` - fraction of captions that are well formed (every word
  belongs to a phrase, at least one object mentioned), whose claims are all
  true and whose referring mentions name distinct objects: *the* scene
  accuracy of the course.
* ``repeated_object`` - fraction of captions naming an object twice: their
  referring mentions are each true but cannot all be given different objects.
* ``claim_precision``  - true claims / all claims (unparsed pieces included).
* ``object_recall``    - fraction of scene objects *correctly mentioned*: named
  by a true mention that states the object's shape and colour (its size may be
  left out). An "a" mention covers one object and a counted mention all the
  objects it counts; "a red circle" twice covers two red circles if there are
  two. The best assignment of "a" mentions to objects is found by bipartite
  matching.
* ``well_formed``, ``mention_precision``, ``count_precision`` (mentions with
  "the" or a number word), ``relation_precision``, ``background_precision``,
  ``claims_per_caption``, ``relations_per_caption``, ``n_captions``.
  A precision over no claims is ``nan``. Distinct referents are a condition on
  the whole caption, not a claim: the claim counts do not include it.

`CaptionJudgement.lenient_all_true` is the verdict without distinct referents
(every claim judged alone), kept only to show how repeating one object games
it: "a red circle and a red circle and a red circle" is lenient-true of a
picture with one red circle.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from clipdiff_mini.data.caption_grammar import NUMBER_WORDS, Mention, ParsedCaption, parse_caption
from clipdiff_mini.data.scenes import Scene, SceneObject, holds


@dataclass(frozen=True)
class Claim:
    kind: str  # "mention", "relation", "background" or "unparsed"
    text: str
    true: bool
    why: str


@dataclass
class CaptionJudgement:
    caption: str
    parsed: ParsedCaption
    claims: list[Claim] = field(default_factory=list)
    covered: frozenset[int] = frozenset()  # indices of the scene objects correctly mentioned
    n_objects: int = 0
    repeated: tuple[int, ...] = ()  # true referring mentions (indices into parsed.mentions) sharing too few objects
    referents_why: str = ""  # the distinct-referents verdict in words ("" when fewer than two referring mentions)

    @property
    def well_formed(self) -> bool:
        return self.parsed.well_formed

    @property
    def names_an_object_twice(self) -> bool:
        """Some true referring mentions cannot all be given different objects."""
        return bool(self.repeated)

    @property
    def lenient_all_true(self) -> bool:
        """The verdict with every claim judged alone, distinct referents ignored (gameable by repetition)."""
        return self.well_formed and all(c.true for c in self.claims)

    @property
    def all_true(self) -> bool:
        """Well formed, every claim true, and the referring mentions name distinct objects."""
        return self.lenient_all_true and not self.repeated

    def table(self) -> str:
        """A printable verdict, one claim per line."""
        head = f"{'TRUE ' if self.all_true else 'FALSE'}  {self.caption!r}"
        lines = [head] + [f"  [{'ok' if c.true else '--'}] {c.kind:10s} {c.text}: {c.why}" for c in self.claims]
        if self.referents_why:
            lines.append(f"  [{'--' if self.repeated else 'ok'}] distinct referents: {self.referents_why}")
        lines.append(f"  objects correctly mentioned: {len(self.covered)}/{self.n_objects}")
        return "\n".join(lines)


def _mention_truth(m: Mention, objects: Sequence[SceneObject]) -> tuple[bool, str]:
    n = len(m.match(objects))
    if m.count is None:
        return n >= 1, f"{n} match{'es' if n != 1 else ''} (need at least 1)"
    return n == m.count, f"{n} match{'es' if n != 1 else ''} (need exactly {m.count})"


def _referent_choices(m: Mention, objects: Sequence[SceneObject]) -> list[list[int]]:
    """Possible referent sets: all matches for "the"/number words, any single match for "a"."""
    match = m.match(objects)
    if m.count is None:
        return [[i] for i in match]
    return [match] if match else []


def _relation_truth(p: ParsedCaption, r, objects: Sequence[SceneObject]) -> tuple[bool, str]:
    subj, obj = p.mentions[r.subject], p.mentions[r.obj]
    for s_refs, o_refs in itertools.product(_referent_choices(subj, objects), _referent_choices(obj, objects)):
        if all(holds(r.relation, objects[a], objects[b]) for a in s_refs for b in o_refs):
            return True, f"holds for objects {s_refs} {r.relation} {o_refs}"
    if not _referent_choices(subj, objects) or not _referent_choices(obj, objects):
        return False, "a side has no matching object"
    return False, "no choice of referents satisfies it"


def _matching(slots: Sequence[Sequence[int]], taken: "set[int] | frozenset[int]" = frozenset()
              ) -> tuple[dict[int, int], list[tuple[int, set[int]]]]:
    """Maximum bipartite matching of slots to objects, each slot getting one object of its list and no
    object two slots; objects in ``taken`` are not used (Kuhn's augmenting paths; hand-written because
    it is ten lines). Returns ``(owner, stuck)``: owner maps object -> slot; ``stuck`` holds, for each
    slot left without an object, the objects an alternating path from it reached (Hall's witness: the
    slot, the owners of those objects and nothing else compete for them)."""
    owner: dict[int, int] = {}
    stuck: list[tuple[int, set[int]]] = []

    def augment(s: int, seen: set[int]) -> bool:
        for o in slots[s]:
            if o in taken or o in seen:
                continue
            seen.add(o)
            if o not in owner or augment(owner[o], seen):
                owner[o] = s
                return True
        return False

    for s in range(len(slots)):
        seen: set[int] = set()
        if not augment(s, seen):
            stuck.append((s, seen))
    return owner, stuck


def _covered(p: ParsedCaption, true_mentions: list[Mention], objects: Sequence[SceneObject]) -> frozenset[int]:
    """Objects correctly mentioned (see module docstring): counted mentions
    cover all their matches, each "a" mention one match (maximum matching)."""
    covered: set[int] = set()
    slots: list[list[int]] = []
    for m in true_mentions:
        if m.shape is None or m.colour is None:
            continue
        if m.count is not None:
            covered |= set(m.match(objects))
        else:
            slots.append(m.match(objects))
    owner, _ = _matching(slots, covered)
    return frozenset(covered | set(owner))


def counts_the_picture(m: Mention) -> bool:
    """A number word with a bare generic noun ("one shape", "three objects"): the number of objects in
    the whole picture, a count rather than a name for one of them."""
    return m.determiner in NUMBER_WORDS and m.size is None and m.colour is None and m.shape is None


def referring_mentions(p: ParsedCaption) -> list[int]:
    """Indices of the mentions that must name pairwise distinct objects: singular ("a/an", "the",
    "one"), outside every relation phrase, and not a count of the whole picture ("one shape")."""
    ends = {r.subject for r in p.relations} | {r.obj for r in p.relations}
    return [i for i, m in enumerate(p.mentions)
            if i not in ends and not m.plural and not counts_the_picture(m)]


def _distinct_referents(p: ParsedCaption, truths: Sequence[bool], objects: Sequence[SceneObject]
                        ) -> tuple[tuple[int, ...], str]:
    """(repeated, why): can the true referring mentions be given pairwise distinct objects? ``repeated``
    lists the mentions of a smallest-found group that needs more objects than fit it (empty: they can)."""
    refs = [i for i in referring_mentions(p) if truths[i]]
    if len(refs) < 2:
        return (), ""
    slots = [p.mentions[i].match(objects) for i in refs]
    _, stuck = _matching(slots)
    if not stuck:
        return (), f"{len(refs)} list mentions, {len(refs)} different objects"
    s, seen = stuck[0]
    group = sorted({refs[s]} | {refs[t] for t, sl in enumerate(slots) if set(sl) <= seen})
    names = ", ".join(repr(p.mentions[i].text()) for i in group)
    fit = len(seen)
    return tuple(group), (f"{names} need {len(group)} different objects, "
                          f"{fit} object{'s' if fit != 1 else ''} fit{'s' if fit == 1 else ''} them")


def judge_caption(caption: Any, scene: "Mapping[str, Any] | Scene") -> CaptionJudgement:
    """Every claim of ``caption`` checked against ``scene`` (never raises on bad text)."""
    scene = Scene.from_dict(scene)
    objects = scene.objects
    p = parse_caption(caption)
    claims: list[Claim] = []
    true_mentions = []
    for m in p.mentions:
        ok, why = _mention_truth(m, objects)
        claims.append(Claim("mention", m.text(), ok, why))
        if ok:
            true_mentions.append(m)
    for r in p.relations:
        ok, why = _relation_truth(p, r, objects)
        claims.append(Claim("relation", f"{p.mentions[r.subject].text()} {r.relation} {p.mentions[r.obj].text()}", ok, why))
    for tone in p.backgrounds:
        ok = tone == scene.background.tone
        claims.append(Claim("background", f"{tone} background", ok, f"background is {scene.background.tone}"))
    for piece in p.unparsed:
        claims.append(Claim("unparsed", piece, False, "not a phrase of the caption language"))
    repeated, why = _distinct_referents(p, [c.true for c in claims[:len(p.mentions)]], objects)
    return CaptionJudgement(caption=p.text, parsed=p, claims=claims, covered=_covered(p, true_mentions, objects),
                            n_objects=len(objects), repeated=repeated, referents_why=why)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def scene_accuracy(predictions: Mapping[int, "str | Sequence[str]"], scenes: Mapping[int, Any],
                   return_judgements: bool = False) -> dict[str, Any]:
    """Truth metrics of captions against their scenes (see module docstring).

    ``predictions`` maps an image id to a caption (or a list of captions, for
    example the references); ``scenes`` maps the same ids to scene dicts.
    With ``return_judgements=True`` the result also holds ``"judgements"``:
    image id -> list of `CaptionJudgement`.
    """
    missing = [k for k in predictions if k not in scenes]
    if missing:
        raise KeyError(f"no scene for image ids {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                       "pass the scenes of the same split (CaptionSplit.scenes())")
    judgements: dict[int, list[CaptionJudgement]] = {}
    n = all_true = well = repeated = 0
    covered = objects = 0
    counts = {k: [0, 0] for k in ("claim", "mention", "count", "relation", "background")}  # kind -> [true, total]
    for image_id, caps in predictions.items():
        scene = Scene.from_dict(scenes[image_id])
        caps = list(caps) if isinstance(caps, (list, tuple)) else [caps]  # one caption or several
        judgements[image_id] = []
        for cap in caps:
            j = judge_caption(cap, scene)
            judgements[image_id].append(j)
            n += 1
            all_true += j.all_true
            well += j.well_formed
            repeated += j.names_an_object_twice
            covered += len(j.covered)
            objects += j.n_objects
            for c in j.claims:
                counts["claim"][0] += c.true
                counts["claim"][1] += 1
                if c.kind in counts:
                    counts[c.kind][0] += c.true
                    counts[c.kind][1] += 1
            for m, c in zip(j.parsed.mentions, j.claims):  # mention claims come first, in order
                if m.count is not None:
                    counts["count"][0] += c.true
                    counts["count"][1] += 1
    out: dict[str, Any] = {
        "caption_all_true": _ratio(all_true, n),
        "object_recall": _ratio(covered, objects),
        "repeated_object": _ratio(repeated, n),
        "claim_precision": _ratio(*counts["claim"]),
        "well_formed": _ratio(well, n),
        "mention_precision": _ratio(*counts["mention"]),
        "count_precision": _ratio(*counts["count"]),
        "relation_precision": _ratio(*counts["relation"]),
        "background_precision": _ratio(*counts["background"]),
        "claims_per_caption": _ratio(counts["claim"][1], n),
        "relations_per_caption": _ratio(counts["relation"][1], n),
        "n_captions": n,
    }
    if return_judgements:
        out["judgements"] = judgements
    return out
