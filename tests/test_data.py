import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipdiff_mini.data import splits as data_module
from clipdiff_mini.config import get_config
from clipdiff_mini.data.splits import CaptionSplit, decode_image, load_split
from clipdiff_mini.data.karpathy import DatasetNotFoundError


def striped_fixture(root: Path) -> tuple[Path, Path]:
    """Karpathy-format fixture: 4 images of 48 x 16 (W x H) whose 8 left columns are
    red, 8 right columns blue, and the middle 32 columns a per-image grey."""
    image_dir = root / "imgs"
    image_dir.mkdir(parents=True)
    images = []
    for i, split in enumerate(["train", "restval", "val", "val"]):
        a = np.zeros((16, 48, 3), dtype=np.uint8)
        a[:, :8] = (255, 0, 0)
        a[:, -8:] = (0, 0, 255)
        a[:, 8:-8] = 50 * (i + 1)
        Image.fromarray(a).save(image_dir / f"{i}.png")
        images.append({"filename": f"{i}.png", "imgid": 10 + i, "split": split,
                       "sentences": [{"raw": f"caption {i} a"}, {"raw": f"caption {i} b"}]})
    json_path = root / "dataset_fixture.json"
    json_path.write_text(json.dumps({"images": images}))
    return json_path, image_dir


def karpathy_cfg(json_path, image_dir, **more):
    return get_config("ci", {"data.source": "karpathy", "data.karpathy_json": str(json_path),
                             "data.image_dir": str(image_dir), **more})


def test_karpathy_split_text_api(tmp_path):
    cfg = karpathy_cfg(*striped_fixture(tmp_path))
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert len(train) == 2 and len(val) == 2  # restval is train
    assert val.image_ids() == [12, 13]
    assert val.captions() == ["caption 2 a", "caption 2 b", "caption 3 a", "caption 3 b"]
    assert val.references() == {12: ["caption 2 a", "caption 2 b"], 13: ["caption 3 a", "caption 3 b"]}
    rows, caps = val.caption_table()
    assert rows.tolist() == [0, 0, 1, 1] and caps == val.captions()
    with pytest.raises(ValueError, match="data.source='shapes'"):
        val.scenes()
    with pytest.raises(ValueError, match="allowed: train, val, test"):
        load_split(cfg, "validation")


def test_karpathy_images_are_resized_and_centre_cropped(tmp_path):
    cfg = karpathy_cfg(*striped_fixture(tmp_path), **{"data.image_size": 16})
    val = load_split(cfg, "val")
    images = val.load_images()  # default: data.image_size = 16
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 16, 16)
    # 48 x 16: shorter side already 16, keep the centre 16 columns: the coloured borders are cut away
    assert (images[0] == 150).all() and (images[1] == 200).all()
    # 48 x 16 -> 24 x 8, centre 8 x 8 = source columns 16..32 (bicubic reach: 4 source pixels)
    small = val.load_images(size=8)
    assert small.shape == (2, 3, 8, 8) and (small[0].float() - 150).abs().max() <= 1


def test_karpathy_missing_files_name_the_config_keys(tmp_path):
    cfg = karpathy_cfg(tmp_path / "nothing.json", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="data.karpathy_json"):
        load_split(cfg, "train")
    json_path, _ = striped_fixture(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="data.image_dir"):
        load_split(karpathy_cfg(json_path, tmp_path / "nowhere"), "train")


@pytest.fixture(scope="module")
def shapes_cfg(tmp_path_factory):
    return get_config("ci", {"paths.data_dir": str(tmp_path_factory.mktemp("data"))})


def test_shapes_split_matches_the_dataset_files(shapes_cfg):
    val = load_split(shapes_cfg, "val", progress=False)
    assert isinstance(val, CaptionSplit) and len(val) == shapes_cfg.data.n_val
    # independent read of the generated JSON
    folder = val.root
    raw = json.loads((folder / "dataset_shapes.json").read_text())
    want = [im for im in raw["images"] if im["split"] == "val"]
    assert val.image_ids() == [im["imgid"] for im in want]
    assert val.references() == {im["imgid"]: [s["raw"] for s in im["sentences"]] for im in want}
    assert val.scenes() == {im["imgid"]: im["scene"] for im in want}
    assert len(val.captions()) == shapes_cfg.data.n_val * shapes_cfg.data.captions_per_image
    train = load_split(shapes_cfg, "train", progress=False)
    assert not set(train.image_ids()) & set(val.image_ids())


def test_shapes_images_cached_and_equal_to_the_pngs(shapes_cfg, monkeypatch):
    val = load_split(shapes_cfg, "val", progress=False)
    images = val.load_images(progress=False)
    s = shapes_cfg.data.image_size
    assert images.dtype == torch.uint8 and images.shape == (len(val), 3, s, s)
    for k in (0, 17, len(val) - 1):  # independent decode with PIL
        png = np.asarray(Image.open(val.records[k].path).convert("RGB"))
        assert np.array_equal(images[k].permute(1, 2, 0).numpy(), png)
    cache_files = sorted(val.cache_dir.glob("*.npy"))
    assert len(cache_files) == 1 and not list(val.cache_dir.glob("*.tmp"))
    assert np.array_equal(np.load(cache_files[0]), images.numpy())

    # the second load must come from the cache: decoding is now forbidden
    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data_module, "decode_image", no_decoding)
    again = load_split(shapes_cfg, "val", progress=False)
    assert torch.equal(again.load_images(), images)
    sub = again.subset([5, 2, 9])
    assert sub.image_ids() == [again.records[i].image_id for i in (5, 2, 9)]
    assert torch.equal(sub.load_images(), images[[5, 2, 9]])
    assert torch.equal(again.subset(4).subset([3, 0]).load_images(), images[[3, 0]])
    monkeypatch.undo()

    # the cache is keyed on the manifest: another manifest, another file
    assert again.cache_tag == val.cache_tag
    other = CaptionSplit(**{**val.__dict__, "cache_tag": "0123456789ab"})
    assert torch.equal(other.load_images(progress=False), images)
    assert len(list(val.cache_dir.glob("*.npy"))) == 2
    # a resized copy is another cache entry, made by PIL resizing
    half = val.load_images(size=s // 2, progress=False)
    assert half.shape == (len(val), 3, s // 2, s // 2)
    assert np.array_equal(half[3].numpy(), decode_image(val.records[3].path, s // 2))
