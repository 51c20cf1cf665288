"""The caption grammar: parsing by hand-checked examples, variety of the generated captions, robustness."""
import collections
import random

import numpy as np
import pytest

from clipdiff_mini.data.caption_grammar import (MAX_WORDS, Mention, caption_tokens, captions_for_scene, parse_caption)
from clipdiff_mini.data.scenes import COLOURS, SHAPES, sample_scene

SCENES = [sample_scene(np.random.default_rng(1000 + i), max_objects=4) for i in range(300)]
CAPTIONS = [captions_for_scene(s, np.random.default_rng(i), n=5) for i, s in enumerate(SCENES)]


def _m(p):
    return [(m.count, m.size, m.colour, m.shape) for m in p.mentions]


def test_parse_mentions_by_hand():
    p = parse_caption("There are two small red circles and a large blue square.")
    assert _m(p) == [(2, "small", "red", "circle"), (None, "large", "blue", "square")]
    assert p.relations == [] and p.unparsed == [] and p.well_formed
    p = parse_caption("an orange object, the cross: three shapes")
    assert _m(p) == [(None, None, "orange", None), (1, None, None, "cross"), (3, None, None, None)]


def test_parse_relations_by_hand():
    p = parse_caption("the blue square is to the right of a red circle")
    assert _m(p) == [(1, None, "blue", "square"), (None, None, "red", "circle")]
    assert [(r.subject, r.relation, r.obj) for r in p.relations] == [(0, "right of", 1)]
    # chains: A left of B above C  ->  A left-of B, B above C
    p = parse_caption("a circle left of a square over a triangle and a cross under the diamond")
    assert [(r.subject, r.relation, r.obj) for r in p.relations] == [(0, "left of", 1), (1, "above", 2), (3, "below", 4)]
    assert p.well_formed


def test_parse_background_and_intro():
    p = parse_caption("a picture of one green triangle on a dark background")
    assert _m(p) == [(1, None, "green", "triangle")] and p.backgrounds == ["dark"] and p.well_formed


@pytest.mark.parametrize("text,n_unparsed", [
    ("two red circle", 1),            # number agreement
    ("red circle", 1),                # no determiner
    ("a red blue circle", 1),         # two colours
    ("a red circle left of", 1),      # relation without a second mention
    ("left of a red circle", 1),      # relation without a first mention
    ("a red circle [UNK] [UNK] a blue square", 1),
    ("a large red", 1),               # no noun
    ("", 0),
])
def test_ill_formed_captions(text, n_unparsed):
    p = parse_caption(text)
    assert len(p.unparsed) == n_unparsed, p.unparsed
    assert not p.well_formed


def test_parser_never_crashes_on_noise():
    words = ["a", "an", "the", "two", "red", "small", "circle", "circles", "left", "of", "above", "and", ",", "is",
             "there", "background", "dark", "[PAD]", "[MASK]", "xyz", "on", "to", "right", "picture", ".", "9"]
    rnd = random.Random(0)
    for _ in range(2000):
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 25)))
        p = parse_caption(text)
        assert p.n_claims >= 0
    for odd in (None, 17, "   ", "\n", "A RED CIRCLE", "ümlaut ☃"):
        parse_caption(odd)


def test_tokens():
    assert caption_tokens("Two red circles, and a cross.") == ["two", "red", "circles", "and", "a", "cross"]


def test_mention_text_articles():
    assert Mention(None, None, "orange", "circle", "a").text() == "an orange circle"
    assert Mention(3, "large", None, None, "three", "shapes").text() == "three large shapes"


# ---- generated captions --------------------------------------------------------------
def test_generated_captions_parse_completely():
    for caps in CAPTIONS:
        assert len(caps) == 5
        for c in caps:
            p = parse_caption(c)
            assert p.well_formed, (c, p.unparsed)


def test_length_spread():
    lengths = [len(caption_tokens(c)) for caps in CAPTIONS for c in caps]
    assert min(lengths) <= 5 and max(lengths) >= 15 and max(lengths) <= MAX_WORDS
    assert len(set(lengths)) >= 12, "lengths should spread, not cluster"


def test_variety():
    """Both directions of each relation, counts, omitted attributes, generic nouns, intros and backgrounds occur."""
    flat = [c for caps in CAPTIONS for c in caps]
    parsed = [parse_caption(c) for c in flat]
    rels = collections.Counter(r.relation for p in parsed for r in p.relations)
    assert all(rels[r] > 20 for r in ("left of", "right of", "above", "below")), rels
    mentions = [m for p in parsed for m in p.mentions]
    assert sum(m.count is not None and m.count >= 2 for m in mentions) > 50, "counts"
    assert sum(m.colour is None for m in mentions) > 50, "colour omitted"
    assert sum(m.size is None for m in mentions) > 200 and sum(m.size is not None for m in mentions) > 200
    assert sum(m.shape is None for m in mentions) > 50, "generic nouns"
    assert {m.colour for m in mentions} >= set(COLOURS) and {m.shape for m in mentions} >= set(SHAPES)
    assert sum(p.backgrounds != [] for p in parsed) > 50
    assert sum(c.startswith(("there ", "a picture", "an image", "a scene")) for c in flat) > 100
    # the five captions of an image differ
    assert np.mean([len(set(caps)) == 5 for caps in CAPTIONS]) > 0.95
    # the first word is not always the same
    assert len(collections.Counter(c.split()[0] for c in flat)) >= 6


def test_captions_are_seeded():
    s = SCENES[0]
    assert captions_for_scene(s, np.random.default_rng(5)) == captions_for_scene(s, np.random.default_rng(5))
