"""The generated dataset folder: format, determinism, splits, reuse and rebuild."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from clipdiff_mini.data import shapes_dataset as sd
from clipdiff_mini.config import get_config
from clipdiff_mini.data.render import render_scene
from clipdiff_mini.evaluation.scene_judge import scene_accuracy

SIZES = {"data.n_train": 24, "data.n_val": 8, "data.n_test": 8}


def _cfg(folder, **more):
    return get_config("ci", {"paths.data_dir": str(folder), **SIZES, **more})


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return sd.build_shapes_dataset(_cfg(root), progress=False)


def test_karpathy_format(built):
    data = json.loads((built / sd.JSON_NAME).read_text())
    assert data["dataset"] == "shapes" and len(data["images"]) == 40
    sentids = []
    for k, im in enumerate(data["images"]):
        assert set(im) >= {"filename", "imgid", "split", "sentences", "sentids", "scene"}
        assert im["imgid"] == k and im["split"] in ("train", "val", "test")
        assert len(im["sentences"]) == 5 and im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s in im["sentences"]:
            assert s["imgid"] == k and s["tokens"] == s["raw"].replace(",", " ").replace(":", " ").split()
        sentids += im["sentids"]
        img = Image.open(built / sd.IMAGE_DIR / im["filename"])
        assert img.mode == "RGB" and img.size == (64, 64)
        # the stored scene is exactly what was drawn
        assert np.array_equal(np.asarray(img), np.asarray(render_scene(im["scene"], 64)))
    assert sentids == list(range(200))
    assert [im["split"] for im in data["images"]].count("val") == 8
    manifest = json.loads((built / sd.MANIFEST_NAME).read_text())
    assert manifest["counts"] == {"train": 24, "val": 8, "test": 8, "images": 40, "sentences": 200}
    assert manifest["json_sha256"] == hashlib.sha256((built / sd.JSON_NAME).read_bytes()).hexdigest()


def test_references_are_true_of_their_images(built):
    data = json.loads((built / sd.JSON_NAME).read_text())
    refs = {im["imgid"]: [s["raw"] for s in im["sentences"]] for im in data["images"]}
    scenes = {im["imgid"]: im["scene"] for im in data["images"]}
    assert scene_accuracy(refs, scenes)["caption_all_true"] == 1.0


def test_splits_are_disjoint(built):
    data = json.loads((built / sd.JSON_NAME).read_text())
    by_split = {}
    for im in data["images"]:
        digest = hashlib.sha256((built / sd.IMAGE_DIR / im["filename"]).read_bytes()).hexdigest()
        by_split.setdefault(im["split"], []).append((im["filename"], digest))
    names = [set(n for n, _ in v) for v in by_split.values()]
    pixels = [set(d for _, d in v) for v in by_split.values()]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not names[a] & names[b] and not pixels[a] & pixels[b]


def test_byte_identical_in_two_folders(built, tmp_path):
    again = sd.build_shapes_dataset(_cfg(tmp_path), progress=False)
    assert again.name == built.name
    a, b = _files(built), _files(again)
    assert a.keys() == b.keys() and len(a) == 42
    assert all(a[k] == b[k] for k in a)


def test_order_independent_examples(built):
    """Picture i of a split depends only on (seed, split, i): rebuild one alone."""
    data = json.loads((built / sd.JSON_NAME).read_text())
    im = next(im for im in data["images"] if im["split"] == "val" and im["filename"].endswith("000005.png"))
    scene, captions, png = sd.make_example(0, "val", 5, 64, 4, 5)
    assert scene == im["scene"] and captions == [s["raw"] for s in im["sentences"]]
    assert png == (built / sd.IMAGE_DIR / im["filename"]).read_bytes()


def test_val_and_test_do_not_depend_on_train_size(built, tmp_path):
    other = sd.build_shapes_dataset(_cfg(tmp_path, **{"data.n_train": 10}), progress=False)
    assert other.name != built.name
    for split in ("val", "test"):
        for i in range(8):
            name = f"{sd.IMAGE_DIR}/shapes_{split}_{i:06d}.png"
            assert (other / name).read_bytes() == (built / name).read_bytes()


def test_reuse_and_rebuild(tmp_path):
    cfg = _cfg(tmp_path)
    first = sd.build_shapes_dataset(cfg, progress=False)
    count, mtime = sd.build_count, (first / sd.JSON_NAME).stat().st_mtime_ns
    assert sd.build_shapes_dataset(cfg, progress=False) == first
    assert sd.build_count == count and (first / sd.JSON_NAME).stat().st_mtime_ns == mtime  # reused
    # a damaged dataset is rebuilt, to the same bytes
    good = (first / sd.JSON_NAME).read_bytes()
    (first / sd.JSON_NAME).write_bytes(good.replace(b"circle", b"circus", 1))
    assert sd.build_shapes_dataset(cfg, progress=False) == first
    assert sd.build_count == count + 1 and (first / sd.JSON_NAME).read_bytes() == good
    # a missing picture too
    next((first / sd.IMAGE_DIR).iterdir()).unlink()
    sd.build_shapes_dataset(cfg, progress=False)
    assert sd.build_count == count + 2
    # new parameters: a new folder with the new counts; no temporary folders left behind
    cfg2 = _cfg(tmp_path, **{"data.max_objects": 2, "data.captions_per_image": 3})
    second = sd.build_shapes_dataset(cfg2, progress=False)
    assert second != first and sd.build_count == count + 3
    data = json.loads((second / sd.JSON_NAME).read_text())
    assert all(len(im["scene"]["objects"]) <= 2 and len(im["sentences"]) == 3 for im in data["images"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])


def test_bad_parameters_are_explained(tmp_path):
    with pytest.raises(ValueError, match="max_objects"):
        sd.build_shapes_dataset(_cfg(tmp_path, **{"data.max_objects": 9}), progress=False)
    with pytest.raises(ValueError, match="image_size"):
        sd.build_shapes_dataset(_cfg(tmp_path, **{"data.image_size": 8}), progress=False)
