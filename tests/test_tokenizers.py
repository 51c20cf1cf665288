import json

import pytest
import torch

from clipdiff_mini.config import get_config
from clipdiff_mini.data.tokenizers import (
    WORD_SPECIALS,
    WordTokenizer,
    bert_vocab_dir,
    build_tokenizer,
    load_bert_tokenizer,
    load_tokenizer,
    simple_tokenize,
)

CAPTIONS = [
    "A red circle left of a blue square.",
    "Two small green triangles, above a RED circle!",
    "a blue square",
    "the man's dog",
]


def test_simple_tokenize_lowercases_and_drops_punctuation():
    assert simple_tokenize("Two small green triangles, above a RED circle!") == \
        ["two", "small", "green", "triangles", "above", "a", "red", "circle"]
    assert simple_tokenize("the man's dog  ran.") == ["the", "man's", "dog", "ran"]
    assert simple_tokenize("") == []
    with pytest.raises(TypeError):
        simple_tokenize(["not", "a", "str"])


def test_word_vocabulary_special_ids_and_order():
    tok = WordTokenizer.build(CAPTIONS)
    assert tok.itos[:5] == list(WORD_SPECIALS)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.unk_id) == (0, 1, 2, 3, 4)
    assert tok.itos[tok.pad_id] == "[PAD]" and tok.itos[tok.mask_id] == "[MASK]"
    # count by hand: "a" appears 4 times, "red"/"circle"/"blue"/"square" twice
    assert tok.itos[5] == "a"
    assert set(tok.itos[6:10]) == {"blue", "circle", "red", "square"}
    words = {w for c in CAPTIONS for w in c.lower().replace(",", " ").replace(".", " ").replace("!", " ").split()}
    assert tok.vocab_size == 5 + len(words)


def test_round_trip_and_unknown_words():
    tok = WordTokenizer.build(CAPTIONS)
    ids = tok.encode("a red circle above a blue square")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == 7 + 2
    assert tok.decode(ids) == "a red circle above a blue square"
    ids = tok.encode("a purple hexagon")
    assert ids[2] == tok.unk_id and ids[3] == tok.unk_id
    assert tok.decode(ids) == "a [UNK] [UNK]"
    assert tok.decode(ids, skip_special=False) == "[BOS] a [UNK] [UNK] [EOS]"


def test_min_count_maps_rare_words_to_unk():
    tok = WordTokenizer.build(CAPTIONS, min_count=2)
    assert set(tok.itos[5:]) == {"a", "red", "circle", "blue", "square"}
    assert tok.encode("two dogs", add_special=False) == [tok.unk_id, tok.unk_id]


def test_truncation_keeps_eos_and_padding():
    tok = WordTokenizer.build(CAPTIONS)
    ids = tok.encode("a red circle left of a blue square", max_len=5)
    assert len(ids) == 5 and ids[-1] == tok.eos_id and tok.decode(ids) == "a red circle"
    batch = tok.batch_encode(["a red circle", "a blue square left of a red circle"], max_len=12)
    assert batch.shape == (2, 12) and batch.dtype == torch.long
    assert batch[0].tolist() == tok.encode("a red circle") + [tok.pad_id] * 7
    assert (batch != tok.pad_id).sum(1).tolist() == [5, 10]
    # without max_len: padded to the longest
    assert tok.batch_encode(["a", "a red circle"]).shape == (2, 5)
    assert tok.batch_decode(batch) == ["a red circle", "a blue square left of a red circle"]
    with pytest.raises(TypeError):
        tok.batch_encode("a red circle")
    with pytest.raises(ValueError, match="max_len"):
        tok.encode("a", max_len=1)


def test_decode_stops_at_eos_and_drops_masks():
    tok = WordTokenizer.build(CAPTIONS)
    a, red = tok.stoi["a"], tok.stoi["red"]
    assert tok.decode([tok.bos_id, a, tok.mask_id, red, tok.eos_id, red, tok.pad_id]) == "a red"
    assert tok.decode(torch.tensor([tok.bos_id, a, tok.eos_id, red]), stop_at_eos=False) == "a red"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([999])


def test_save_load_round_trip(tmp_path):
    tok = WordTokenizer.build(CAPTIONS, min_count=1)
    path = tmp_path / "tok" / "vocab.json"
    tok.save(path)
    assert json.loads(path.read_text())["itos"] == tok.itos
    assert not [p for p in path.parent.iterdir() if p.name != "vocab.json"], "no temporary files left"
    for again in (WordTokenizer.load(path), load_tokenizer(path)):
        assert again.itos == tok.itos
        assert again.encode("two green triangles") == tok.encode("two green triangles")
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        WordTokenizer.load(bad)
    with pytest.raises(ValueError, match="special tokens"):
        WordTokenizer(["a", "b"])


def test_bert_vocabulary_loads_offline_and_maps_roles():
    tok = load_bert_tokenizer()
    # independent check against the shipped vocab.txt: the id of a token is its line number
    lines = (bert_vocab_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tok.vocab_size == len(lines) == 30522
    for role, token in (("pad", "[PAD]"), ("bos", "[CLS]"), ("eos", "[SEP]"), ("mask", "[MASK]"), ("unk", "[UNK]")):
        assert lines[tok.special_ids[role]] == token
    ids = tok.encode("A red circle left of a blue square")
    assert ids[1:-1] == [lines.index(w) for w in ["a", "red", "circle", "left", "of", "a", "blue", "square"]]
    assert tok.decode(ids) == "a red circle left of a blue square"
    # a word split into word pieces comes back whole
    pieces = tok.tokenize("hexagons")
    assert len(pieces) > 1 and pieces[1].startswith("##")
    assert tok.decode(tok.encode("two hexagons")) == "two hexagons"
    batch = tok.batch_encode(["a dog", "a red circle"], max_len=6)
    assert batch.shape == (2, 6) and batch[0, -1].item() == tok.pad_id == 0


def test_build_tokenizer_selects_by_config(tmp_path):
    word = build_tokenizer(get_config("ci", {"data.min_word_count": 2}), CAPTIONS)
    assert isinstance(word, WordTokenizer) and word.min_count == 2
    bert = build_tokenizer(get_config("ci", {"data.tokenizer": "bert"}))
    assert bert.kind == "bert" and bert.eos_id == bert.hf.sep_token_id
    bert.save(tmp_path / "bert.json")
    assert load_tokenizer(tmp_path / "bert.json").vocab_size == bert.vocab_size
    with pytest.raises(ValueError, match="pass them"):  # the builder never loads a split itself
        build_tokenizer(get_config("ci"))


def test_bert_default_length_holds_every_ci_caption():
    from clipdiff_mini.config import BERT_MAX_CAPTION_LEN
    from clipdiff_mini.data.splits import load_split

    cfg = get_config("ci", {"data.tokenizer": "bert"})
    assert cfg.data.max_caption_len == BERT_MAX_CAPTION_LEN
    assert get_config("ci", {"data.tokenizer": "bert", "data.max_caption_len": 20}).data.max_caption_len == 20
    assert get_config("ci").data.max_caption_len == 24  # the word tokenizer keeps its own length
    tok = build_tokenizer(cfg)
    captions = load_split(cfg, "train").captions()
    longest = max(len(tok.encode(c)) for c in captions)  # pieces with [CLS]/[SEP], not truncated
    assert 24 < longest <= cfg.data.max_caption_len, longest
