import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdiff_mini.data.karpathy import DatasetNotFoundError, ImageRecord, load_karpathy


def make_karpathy_fixture(root: Path, with_filepath: bool = False, size=(12, 8)) -> tuple[Path, Path]:
    """A tiny Karpathy-format dataset: 5 images (train, restval, val, test, test) as PNGs."""
    image_dir = root / "images"
    splits = ["train", "restval", "val", "test", "test"]
    images = []
    for i, split in enumerate(splits):
        sub = "val2014" if with_filepath else ""
        (image_dir / sub).mkdir(parents=True, exist_ok=True)
        name = f"img_{i}.png"
        pixels = np.full((size[1], size[0], 3), 40 * i, dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / sub / name)
        entry = {"filename": name, "imgid": 100 + i, "split": split,
                 "sentences": [{"raw": f"A picture number {i}.", "tokens": ["a", "picture", "number", str(i)]},
                               {"raw": f"Image {i}, in {split}!"}]}  # second one without tokens
        if with_filepath:
            entry["filepath"] = sub
        images.append(entry)
    json_path = root / "dataset_test.json"
    json_path.write_text(json.dumps({"images": images, "dataset": "test"}))
    return json_path, image_dir


def test_loads_records_and_maps_restval_to_train(tmp_path):
    json_path, image_dir = make_karpathy_fixture(tmp_path)
    records = load_karpathy(json_path, image_dir)
    assert [r.split for r in records] == ["train", "train", "val", "test", "test"]
    r = records[2]
    assert isinstance(r, ImageRecord)
    assert (r.image_id, r.filename, r.path) == (102, "img_2.png", image_dir / "img_2.png")
    assert r.captions == ["A picture number 2.", "Image 2, in val!"]
    assert r.tokens == [["a", "picture", "number", "2"], ["image", "2", "in", "val"]]  # file's, then simple_tokenize
    assert r.scene is None
    assert [x.image_id for x in load_karpathy(json_path, image_dir, splits="train")] == [100, 101]
    assert [x.image_id for x in load_karpathy(json_path, image_dir, splits=("restval",))] == [100, 101]
    assert len(load_karpathy(json_path, image_dir, splits=["val", "test"])) == 3


def test_filepath_subfolder_as_in_coco(tmp_path):
    json_path, image_dir = make_karpathy_fixture(tmp_path, with_filepath=True)
    records = load_karpathy(json_path, image_dir)
    assert records[0].path == image_dir / "val2014" / "img_0.png" and records[0].path.is_file()


def test_missing_json_says_where_to_get_and_put_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_karpathy(tmp_path / "dataset_flickr8k.json", tmp_path)
    msg = str(e.value)
    assert "caption_datasets.zip" in msg and "data.karpathy_json" in msg and "data/flickr8k" in msg
    assert str(tmp_path / "dataset_flickr8k.json") in msg
    assert isinstance(e.value, FileNotFoundError)


def test_missing_image_folder_and_files(tmp_path):
    json_path, image_dir = make_karpathy_fixture(tmp_path)
    with pytest.raises(DatasetNotFoundError) as e:
        load_karpathy(json_path, tmp_path / "Flicker8k_Dataset")
    msg = str(e.value)
    assert "data.image_dir" in msg and "Flickr8k" in msg and "Flicker8k_Dataset" in msg
    (image_dir / "img_3.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="1 of 5 image files"):
        load_karpathy(json_path, image_dir)
    assert len(load_karpathy(json_path, image_dir, check_files=False)) == 5


def test_bad_content_and_bad_split_names(tmp_path):
    json_path, image_dir = make_karpathy_fixture(tmp_path)
    with pytest.raises(ValueError, match="allowed: train, val, test"):
        load_karpathy(json_path, image_dir, splits="validation")
    data = json.loads(json_path.read_text())
    data["images"][0]["split"] = "dev"
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="split 'dev'"):
        load_karpathy(json_path, image_dir)
    json_path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="not a Karpathy split file"):
        load_karpathy(json_path, image_dir)
    json_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_karpathy(json_path, image_dir)
