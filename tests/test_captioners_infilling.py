"""Infilling helpers: spans found on hand-made captions, candidate fills, the masked encoding against
the tokenizer's own encoding, the prefix-only autoregressive fill against a brute-force greedy loop,
the ranked fill against scoring each candidate alone, DDCap's fill keeping the given words, and the
scores on hand-made fills. Features are random tensors (no CLIP needed)."""
import pytest
import torch

from clipdiff_mini.captioners.autoregressive import build_ar_captioner
from clipdiff_mini.captioners.ddcap import build_ddcap_captioner
from clipdiff_mini.captioners.infilling import (candidate_fills, condition_of, encode_items, fill_ar_prefix,
                                                fill_ar_ranked, fill_ddcap, find_span, infill_items, score_fills)
from clipdiff_mini.data.scenes import COLOURS, SHAPES
from clipdiff_mini.evaluation.scene_judge import judge_caption

from test_captioners_autoregressive import double_cond, fake_split, sharp, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_find_span_on_hand_made_captions():
    w = "a small red circle to the left of two blue squares".split()
    assert find_span(w, "colour") == (2, 3)
    assert find_span(w, "shape") == (3, 4)
    assert find_span(w, "relation") == (4, 8)  # the longest phrase, not "left of" inside it
    w2 = "three shapes on a dark background".split()
    assert find_span(w2, "colour") is None and find_span(w2, "shape") is None and find_span(w2, "relation") is None
    assert find_span("the triangles are above a cross".split(), "shape") == (1, 2)
    assert find_span("the triangles are above a cross".split(), "relation") == (3, 4)
    with pytest.raises(ValueError):
        find_span(w, "size")


def test_candidates_hold_the_reference_and_have_its_length():
    cfg = tiny_cfg()
    data = fake_split(cfg, "test", n=60)
    items = infill_items(data, n_per_kind=40)
    kinds = {it.kind for it in items}
    assert kinds == {"colour", "shape", "relation"}
    for it in items:
        cands = candidate_fills(it.kind, it.span)
        assert it.span in cands and all(len(c) == len(it.span) for c in cands)
        assert len(set(cands)) == len(cands)
    assert len(candidate_fills("colour", ("red",))) == len(COLOURS)
    assert candidate_fills("shape", ("crosses",)) == [("circles",), ("squares",), ("triangles",), ("crosses",),
                                                      ("diamonds",)]
    assert len(candidate_fills("shape", ("cross",))) == len(SHAPES)
    assert set(candidate_fills("relation", ("above",))) == {("above",), ("below",), ("over",), ("under",)}
    # at most n per kind, one item per picture and kind, the first caption with a span
    for kind in kinds:
        rows = [it.row for it in items if it.kind == kind]
        assert len(rows) <= 40 and len(set(rows)) == len(rows)


def test_encoding_matches_the_tokenizer_and_masks_exactly_the_span():
    cfg = tiny_cfg()
    data = fake_split(cfg, "test", n=30)
    tok = data.tokenizer
    items = infill_items(data, n_per_kind=10)
    L = cfg.data.max_caption_len
    enc = encode_items(items, tok, L)
    whole = tok.batch_encode([" ".join(it.words) for it in items], max_len=L)
    assert torch.equal(enc["ids"], whole)
    assert torch.equal(enc["span"].sum(-1), enc["span_len"])
    for i, it in enumerate(items):
        assert tok.decode(enc["masked"][i], skip_special=False).split()[1:1 + len(it.words)] == \
            list(it.words[:it.start]) + ["[MASK]"] * len(it.span) + list(it.words[it.end:])
        assert int(enc["prefix_len"][i]) == 1 + it.start  # one id per word with the word tokenizer


def brute_greedy_from(model, prompt, cond, n):
    """n greedy tokens after `prompt` (1, T0) by full forward passes, one picture at a time; [PAD] after [EOS]."""
    ids = prompt.clone()
    for _ in range(n):
        if (ids[0, prompt.shape[1]:] == model.eos_id).any():
            nxt = torch.tensor(model.pad_id)
        else:
            nxt = model(ids, cond["image"], cond["grid"])[0, -1].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], 1)
    return ids[0, prompt.shape[1]:]


def test_prefix_fill_is_the_greedy_continuation_and_ranked_fill_the_best_candidate():
    cfg = tiny_cfg()
    data = fake_split(cfg, "test", n=20)
    tok = data.tokenizer
    model = sharp(build_ar_captioner(cfg, data), seed=2)
    items = infill_items(data, n_per_kind=6)
    enc = encode_items(items, tok, cfg.data.max_caption_len)
    cond = {k: v.double() for k, v in condition_of(data, items).items()}
    filled = fill_ar_prefix(model, enc, cond)
    assert torch.equal(filled[~enc["span"]], enc["ids"][~enc["span"]])  # only the gap is written
    for i in range(len(items)):
        p, n = int(enc["prefix_len"][i]), int(enc["span_len"][i])
        one = {k: v[i:i + 1] for k, v in cond.items()}
        want = brute_greedy_from(model, enc["ids"][i:i + 1, :p], one, n)
        assert torch.equal(filled[i, p:p + n], want)
    ranked = fill_ar_ranked(model, enc, items, tok, cond, batch_size=7)  # batches that split an item's candidates
    for i, it in enumerate(items):
        one = {k: v[i:i + 1] for k, v in cond.items()}
        scored = []
        for fill in candidate_fills(it.kind, it.span):
            ids = tok.batch_encode([" ".join(it.words[:it.start] + fill + it.words[it.end:])],
                                   max_len=cfg.data.max_caption_len)
            scored.append((float(model.sequence_logprob(ids, one)), ids[0]))
        assert torch.equal(ranked[i], max(scored, key=lambda s: s[0])[1])


def test_ddcap_fill_keeps_the_given_words_and_scores_by_hand():
    cfg = tiny_cfg()
    data = fake_split(cfg, "test", n=20)
    tok = data.tokenizer
    model = build_ddcap_captioner(cfg, data).eval()
    items = infill_items(data, n_per_kind=5)
    enc = encode_items(items, tok, cfg.data.max_caption_len)
    filled = fill_ddcap(model, enc, condition_of(data, items))
    assert torch.equal(filled[~enc["span"]], enc["ids"][~enc["span"]])
    assert not (filled == tok.mask_id).any()
    scenes = data.scenes()
    # the reference itself: every fill exact; scene accuracy that of the references (judged directly)
    s = score_fills(enc["ids"], enc, items, tok, scenes)
    assert s["exact_fill"] == 1.0
    want = sum(judge_caption(" ".join(it.words), scenes[it.image_id]).all_true for it in items) / len(items)
    assert s["scene_accuracy"] == pytest.approx(want)
    # break the first item's span and a word outside the second item's span
    bad = enc["ids"].clone()
    j = int(enc["span"][0].nonzero()[0])
    bad[0, j] = tok.stoi["red"] if tok.itos[int(bad[0, j])] != "red" else tok.stoi["blue"]
    k = int((~enc["span"][1] & (enc["ids"][1] != tok.pad_id)).nonzero()[1])
    bad[1, k] = tok.stoi["purple"] if tok.itos[int(bad[1, k])] != "purple" else tok.stoi["green"]
    s2 = score_fills(bad, enc, items, tok, scenes)
    assert s2["exact_fill"] == pytest.approx(1 - 2 / len(items))
    assert sum(v["n"] for v in s2["per_kind"].values()) == len(items)
    assert s2["no_word"] == 0.0
    # a gap filled with [PAD] (the word dropped) or [EOS] (the caption cut) has no word: never true
    empty = enc["ids"].clone()
    empty[0][enc["span"][0]] = tok.pad_id
    empty[1][enc["span"][1]] = tok.eos_id
    s3 = score_fills(empty, enc, items, tok, scenes)
    assert s3["no_word"] == pytest.approx(2 / len(items))
    true_rest = sum(judge_caption(" ".join(it.words), scenes[it.image_id]).all_true for it in items[2:])
    assert s3["scene_accuracy"] == pytest.approx(true_rest / len(items))
