"""Reading caption datasets in the Karpathy split format.

Andrej Karpathy's split files (``dataset_flickr8k.json``,
``dataset_flickr30k.json``, ``dataset_coco.json``) are the standard way
image-captioning papers split Flickr8k/30k and COCO. Each file holds::

    {"images": [{"filename": "1000268201_693b08cb0e.jpg",
                 "filepath": "val2014",          # COCO only: the sub-folder
                 "imgid": 0, "split": "train",   # train | val | test | restval
                 "sentences": [{"raw": "A child in a pink dress ...",
                                "tokens": ["a", "child", ...]}, ...]},
                ...],
     "dataset": "flickr8k"}

The embedded dataset of this course is written in the same format (with an
extra ``scene`` per image), so one loader serves both.

Splits: ``restval`` (COCO's 30,504 validation images Karpathy moved into
training) is returned as ``train``; choose checkpoints on ``val`` and report
on ``test``.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from clipdiff_mini.data.tokenizers import simple_tokenize

SPLITS = ("train", "val", "test")
# Karpathy's "restval" images are extra training images (COCO).
SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}

KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"


@dataclass
class ImageRecord:
    """One image and its reference captions.

    `split` is one of train/val/test (``restval`` counted as train); `path`
    is where the image file is; `scene` is the ground-truth scene (a JSON-safe
    dict) on the embedded dataset and None on real datasets; `tokens` are the
    words of each caption (the file's ``tokens`` or `simple_tokenize`).
    """

    image_id: int
    filename: str
    path: Path
    split: str
    captions: list[str]
    scene: dict | None = None
    tokens: list[list[str]] = field(default_factory=list, repr=False)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file or folder is missing; the message says how to get it."""


def missing_json_message(json_path: Path) -> str:
    return (
        f"Karpathy split file not found: {json_path}\n"
        f"(data/README.md, step 1) Get the Karpathy splits (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json) from\n"
        f"  {KARPATHY_URL}\n"
        f"unzip it and put the file at {json_path}, or point the config key data.karpathy_json at it\n"
        f"(default: data/flickr8k/dataset_flickr8k.json). Or use the embedded dataset: data.source='shapes'."
    )


def missing_images_message(image_dir: Path) -> str:
    return (
        f"image folder not found: {image_dir}\n"
        f"(data/README.md, step 2) Get the images of the dataset, for Flickr8k e.g. {FLICKR8K_URL}\n"
        f"(it unzips to Flicker8k_Dataset/), and put them at {image_dir}, or point the config key\n"
        f"data.image_dir at the folder (default: data/flickr8k/Flicker8k_Dataset; for COCO the folder\n"
        f"that holds train2014/ and val2014/)."
    )


def read_karpathy_json(json_path: str | Path) -> dict:
    """The parsed split file, with a clear error when it is missing or not in the format."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DatasetNotFoundError(missing_json_message(json_path))
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path} is not valid JSON ({exc}); re-download the Karpathy split file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path} is not a Karpathy split file: expected a JSON object with a list 'images'")
    return data


def load_karpathy(json_path: str | Path, image_dir: str | Path, splits: str | tuple[str, ...] | None = None,
                  check_files: bool = True, data: dict | None = None) -> list[ImageRecord]:
    """Image records of a Karpathy-format split file.

    `splits` keeps only those splits (train/val/test; ``restval`` is part of
    train). The image of a record is ``image_dir / filepath / filename``
    (``filepath`` only when the file has it, as COCO's does). With
    `check_files`, missing image files are an error. `data` may pass an
    already parsed file (then `json_path` only names it in messages).
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    if data is None:
        data = read_karpathy_json(json_path)
    if not image_dir.is_dir():
        raise DatasetNotFoundError(missing_images_message(image_dir))
    wanted = _wanted_splits(splits)

    records: list[ImageRecord] = []
    no_captions: list[str] = []
    for index, img in enumerate(data["images"]):
        try:
            filename = img["filename"]
            raw_split = img["split"]
            sentences = img.get("sentences", [])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{json_path}: image #{index} lacks the field {exc}; "
                             f"each image needs 'filename', 'split' and 'sentences'") from exc
        if raw_split not in SPLIT_ALIASES:
            raise ValueError(f"{json_path}: image {filename!r} has split {raw_split!r}; "
                             f"allowed: {', '.join(SPLIT_ALIASES)}")
        split = SPLIT_ALIASES[raw_split]
        if split not in wanted:
            continue
        captions, tokens = [], []
        for s in sentences:
            raw = s.get("raw")
            if raw is None and s.get("tokens"):
                raw = " ".join(s["tokens"])
            if raw is None or not raw.strip():
                continue
            captions.append(raw.strip())
            tokens.append(list(s["tokens"]) if s.get("tokens") else simple_tokenize(raw))
        if not captions:
            no_captions.append(filename)
            continue
        folder = image_dir / img["filepath"] if img.get("filepath") else image_dir
        image_id = int(img["imgid"]) if "imgid" in img else index
        records.append(ImageRecord(image_id=image_id, filename=filename, path=folder / filename, split=split,
                                   captions=captions, scene=img.get("scene"), tokens=tokens))
    if no_captions:
        warnings.warn(f"{json_path}: skipped {len(no_captions)} image(s) without captions, e.g. {no_captions[:3]}")
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{json_path}: image ids ('imgid') are not unique")
    if check_files:
        missing = [r.path for r in records if not r.path.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} of {len(records)} image files listed in {json_path.name} are missing, "
                f"e.g. {[str(p) for p in missing[:3]]}.\n" + missing_images_message(image_dir))
    return records


def _wanted_splits(splits) -> set[str]:
    if splits is None:
        return set(SPLITS)
    if isinstance(splits, str):
        splits = (splits,)
    bad = [s for s in splits if s not in SPLIT_ALIASES]
    if bad:
        raise ValueError(f"unknown split(s) {bad}; allowed: {', '.join(SPLITS)} (restval is part of train)")
    return {SPLIT_ALIASES[s] for s in splits}
