"""Try it yourself: a student's scene is validated, a dataset scene drawn again gives back the stored
picture and its cached CLIP features (a tiny CLIP trained here), and every captioner gets the grid
its setting names."""
import numpy as np
import pytest
import torch

from clipdiff_mini.captioners.try_it import caption_scene, make_scene, scene_features, scene_picture
from clipdiff_mini.clip.feature_cache import extract_features
from clipdiff_mini.clip.training import load_clip
from clipdiff_mini.config import get_config
from clipdiff_mini.data.scenes import COLOURS, SIZES, Scene
from clipdiff_mini.data.splits import load_split
from clipdiff_mini.evaluation.scene_judge import judge_caption

TINY = {"data.n_train": 48, "data.n_val": 8, "data.n_test": 8, "clip.train_steps": 3, "clip.batch_size": 16,
        "clip.warmup_steps": 1, "clip.save_every": 2, "clip.vision_width": 8, "clip.embed_dim": 16,
        "clip.text_width": 32, "clip.text_heads": 2, "clip.text_layers": 1, "clip.feature_batch_size": 8,
        "device": "cpu"}


def test_make_scene_uses_the_named_values_and_refuses_bad_scenes():
    s = make_scene([{"shape": "circle", "colour": "red", "size": "large", "x": 0.3, "y": 0.5},
                    {"shape": "cross", "colour": "blue", "size": "small", "x": 0.8, "y": 0.2}], background="dark")
    assert s.objects[0].rgb == COLOURS["red"] and s.objects[0].r == SIZES["large"]
    assert s.background.tone == "dark"
    # its own plain description is true of it
    assert judge_caption("a large red circle left of a small blue cross on a dark background", s).all_true
    with pytest.raises(ValueError, match="overlap"):
        make_scene([{"shape": "circle", "colour": "red", "size": "large", "x": 0.3, "y": 0.5},
                    {"shape": "square", "colour": "blue", "size": "large", "x": 0.45, "y": 0.5}])
    with pytest.raises(ValueError, match="leaves the picture"):
        make_scene([{"shape": "circle", "colour": "red", "size": "large", "x": 0.05, "y": 0.5}])
    with pytest.raises(ValueError, match="colour"):
        make_scene([{"shape": "circle", "colour": "pink", "size": "large", "x": 0.5, "y": 0.5}])


def test_a_dataset_scene_gives_back_its_picture_and_cached_features(tmp_path):
    cfg = get_config("ci", {"paths.data_dir": str(tmp_path / "data"), "paths.cache_dir": str(tmp_path / "cache"),
                            "paths.checkpoint_dir": str(tmp_path / "ckpt"), **TINY})
    feats = extract_features(cfg, "test", progress=False)  # trains the tiny CLIP first
    bundle = load_clip(cfg, train_if_missing=False)
    split = load_split(cfg, "test", progress=False)
    images = split.load_images(progress=False)
    scenes = split.scenes()
    for row in (0, 5):
        scene = Scene.from_dict(scenes[split.image_ids()[row]])
        pic = scene_picture(scene, cfg.data.image_size)
        assert pic.dtype == torch.uint8 and torch.equal(pic, images[row])
        f = scene_features(bundle, pic)
        torch.testing.assert_close(f["image"], feats["image"][row:row + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(f["grid_fine"], feats["grid_fine"][row:row + 1], atol=2e-2, rtol=1e-2)  # fp16 cache
    # every captioner sees the grid it was trained with
    seen = {}

    def fn(name):
        def caption(model, cond):
            seen[name] = {k: tuple(v.shape) for k, v in cond.items()}
            return [f"caption by {name}"]
        return caption

    scene = make_scene([{"shape": "square", "colour": "green", "size": "large", "x": 0.5, "y": 0.5}])
    out = caption_scene(scene, bundle, {"a": (None, fn("a"), "none"), "b": (None, fn("b"), "fine"),
                                        "c": (None, fn("c"), "coarse")}, cfg.data.image_size)
    assert out["captions"] == {"a": "caption by a", "b": "caption by b", "c": "caption by c"}
    assert seen["a"]["grid"][:2] == (1, 0)
    assert seen["b"]["grid"] == tuple(feats["grid_fine"][:1].shape)
    assert seen["c"]["grid"] == tuple(feats["patches"][:1].shape)
    assert seen["a"]["image"] == (1, feats["image"].shape[1])
    assert np.asarray(out["picture"]).shape == (3, cfg.data.image_size, cfg.data.image_size)
