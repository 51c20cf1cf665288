"""A small real-format dataset made from the embedded one: the offline stand-in for Flickr8k.

    json_path, image_dir = write_karpathy_fixture(get_config("ci"), root, sizes=(40, 10, 10))
    cfg = get_config("ci", {"data.source": "karpathy", "data.karpathy_json": str(json_path),
                            "data.image_dir": str(image_dir)})

The pictures are written as JPEG files (as Flickr's are) into ``root/images/``
and the captions into ``root/dataset_flickr8k.json`` in Karpathy's format
(``filename``, ``imgid``, ``split``, ``sentences[].raw/tokens``), *without* the
scenes: code that reads it sees what it would see on Flickr8k, so the whole
real-data path (loader, features, training, evaluation against references)
runs on a machine without network. The first images of each split of the
embedded dataset are taken (train, val, test); the fixture is rewritten only
when missing.
"""
from __future__ import annotations

import json
from pathlib import Path

from clipdiff_mini.atomic_io import write_json
from clipdiff_mini.data.tokenizers import simple_tokenize

JSON_NAME = "dataset_flickr8k.json"
IMAGE_DIR = "images"


def write_karpathy_fixture(cfg, root: str | Path, sizes: tuple[int, int, int] = (40, 10, 10),
                           quality: int = 95) -> tuple[Path, Path]:
    """Write (or reuse) the fixture under `root` from the embedded dataset of `cfg` (its ``data`` section
    must be the shapes one); returns (split file, image folder)."""
    from PIL import Image

    from clipdiff_mini.data.splits import load_split

    root = Path(root)
    json_path, image_dir = root / JSON_NAME, root / IMAGE_DIR
    if json_path.is_file():
        data = json.loads(json_path.read_text())
        if data.get("sizes") == list(sizes) and all((image_dir / i["filename"]).is_file() for i in data["images"]):
            return json_path, image_dir
    if cfg.data.source != "shapes":
        raise ValueError("the fixture is made from the embedded dataset: pass a config with data.source='shapes'")
    image_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for split, n in zip(("train", "val", "test"), sizes):
        src = load_split(cfg, split, progress=False)
        if n > len(src):
            raise ValueError(f"the embedded {split} split has {len(src)} pictures, fewer than the {n} asked for")
        for rec in src.records[:n]:
            name = f"{split}_{rec.image_id:06d}.jpg"
            with Image.open(rec.path) as im:
                im.convert("RGB").save(image_dir / name, quality=quality)
            images.append({"filename": name, "imgid": len(images), "split": split,
                           "sentences": [{"raw": c, "tokens": simple_tokenize(c)} for c in rec.captions]})
    write_json(json_path, {"images": images, "dataset": "flickr8k-fixture", "sizes": list(sizes)})
    return json_path, image_dir
