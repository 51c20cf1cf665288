"""Part 1 of the library: the data. Pictures, captions, splits and tokens.

Modules (lower ones first; this package imports only the core modules):

- ``scenes``          -- what is in a picture, as data: objects, colours, sizes, relations
- ``render``          -- drawing a scene as a small RGB picture
- ``caption_grammar`` -- the caption language: true captions for a scene, and parsing claims back
- ``shapes_dataset``  -- the embedded dataset: generated once, reused, checked by a manifest
- ``karpathy``        -- reading Karpathy-format split files (Flickr8k/30k, COCO, the shapes dataset)
- ``splits``          -- the front door: ``load_split(cfg, "train")`` returns a ``CaptionSplit``
- ``tokenizers``      -- captions <-> ids: the course's word tokenizer, BERT word pieces, GPT-2 BPE
- ``karpathy_fixture`` -- a small Flickr8k-format copy of the embedded dataset (JPEGs, no scenes), for offline runs
"""
from clipdiff_mini.data.caption_grammar import MAX_WORDS, caption_tokens, captions_for_scene, parse_caption
from clipdiff_mini.data.karpathy import DatasetNotFoundError, ImageRecord, load_karpathy
from clipdiff_mini.data.render import render_scene
from clipdiff_mini.data.scenes import COLOURS, RELATIONS, SHAPES, SIZES, Scene, SceneObject, describe, sample_scene
from clipdiff_mini.data.splits import CaptionSplit, decode_image, load_split
from clipdiff_mini.data.tokenizers import (WordTokenizer, build_tokenizer, load_bert_tokenizer, load_tokenizer,
                                           simple_tokenize)

__all__ = ["MAX_WORDS", "caption_tokens", "captions_for_scene", "parse_caption", "DatasetNotFoundError",
           "ImageRecord", "load_karpathy", "render_scene", "COLOURS", "RELATIONS", "SHAPES", "SIZES", "Scene",
           "SceneObject", "describe", "sample_scene", "CaptionSplit", "decode_image", "load_split",
           "WordTokenizer", "build_tokenizer", "load_bert_tokenizer", "load_tokenizer", "simple_tokenize"]
