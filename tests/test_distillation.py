"""Sequence-level distillation (captioners/distillation.py): the student's training split holds the
teacher's captions, one per picture, and a distilled run is another run than one on the references."""
from __future__ import annotations

import json

import pytest
import torch

from clipdiff_mini.captioners import distillation as dist
from clipdiff_mini.captioners import trainer
from clipdiff_mini.captioners.features import load_captioning_data
from clipdiff_mini.captioners.training import make_batch
from clipdiff_mini.config import get_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"captioner.width": 16, "captioner.layers": 1, "captioner.heads": 2, "captioner.batch_size": 8,
        "captioner.eval_images": 10, "captioner.train_steps": 4, "captioner.eval_every": 2,
        "captioner.warmup_steps": 1, "continuous.embed_dim": 8, "continuous.timesteps": 50,
        "continuous.sample_steps": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    cfg = get_config("ci", {**TINY, "paths.checkpoint_dir": str(out)})
    return cfg, load_captioning_data(cfg, progress=False)


def _by_hand(tokenizer, caption: str, length: int) -> list[int]:
    """[BOS] w.. [EOS] [PAD].. looked up word by word in the vocabulary (no tokenizer call)."""
    stoi = {w: i for i, w in enumerate(tokenizer.itos)}
    ids = [tokenizer.bos_id] + [stoi[w] for w in caption.split()] + [tokenizer.eos_id]
    return ids + [tokenizer.pad_id] * (length - len(ids))


def test_distilled_split_holds_one_teacher_caption_per_picture(tiny):
    _, data = tiny
    train = data["train"]
    words = ["a red circle", "two blue squares", "a small green cross"]
    captions = {i: words[k % 3] for k, i in enumerate(train.image_ids)}
    d = dist.distilled_split(train, captions)
    L = train.ids.shape[1]
    assert d.ids.shape == (len(train), L) and torch.equal(d.owner, torch.arange(len(train)))
    for row in (0, 1, 2, len(train) - 1):
        assert d.ids[row].tolist() == _by_hand(train.tokenizer, captions[train.image_ids[row]], L)
    assert torch.equal(d.image, train.image) and torch.equal(d.grid, train.grid)
    # a training batch of the student pairs each picture with its teacher caption
    batch = make_batch(d, torch.tensor([4, 1]), "cpu")
    assert torch.equal(batch["image"], train.image[[4, 1]])
    assert batch["ids"][0].tolist() == _by_hand(train.tokenizer, captions[train.image_ids[4]], L)
    with pytest.raises(ValueError, match="no teacher caption"):
        dist.distilled_split(train, {i: "a red circle" for i in train.image_ids[1:]})


def test_references_leave_the_data_alone(tiny):
    cfg, data = tiny
    same, extra = trainer.with_training_targets(cfg, data, progress=False)
    assert same is data and extra == {}


def test_teacher_captions_are_the_teachers_and_cached(tiny, monkeypatch):
    cfg, data = tiny
    student = cfg.replace({"captioner.targets": "autoregressive", "captioner.teacher_grid": "fine"})
    out = trainer.teacher_captions(student, progress=False)
    train = data["train"]
    assert sorted(out["captions"]) == sorted(train.image_ids)
    # the teacher is the autoregressive decoder trained on the references with the teacher's grid: its
    # checkpoint loads back, and its own greedy captions of a few pictures are the ones handed to the student
    from clipdiff_mini.captioners.checkpoints import load_trained

    ckpts = sorted(p for p in (cfg.path("checkpoint_dir") / "captioners").glob("*autoregressive*.pt"))
    assert len(ckpts) == 1
    teacher = load_trained(ckpts[0])
    assert teacher.cfg.captioner.grid == "fine" and teacher.cfg.captioner.targets == "references"
    tdata = load_captioning_data(dist.teacher_config(student), progress=False)
    rows = torch.arange(5)
    got = teacher.model.sample(tdata["train"].condition(rows))["ids"]
    for r, ids in zip(rows.tolist(), got):
        assert out["captions"][train.image_ids[r]] == train.tokenizer.decode(ids)
    cache = ckpts[0].with_name(ckpts[0].stem + ".train-captions.json")
    assert json.loads(cache.read_text())["stamp"]["key"] == out["key"]

    # the second call reads the cache: captioning again would fail here
    monkeypatch.setattr(trainer, "generate_captions", lambda *a, **k: pytest.fail("captioned again"))
    again = trainer.teacher_captions(student, progress=False)
    assert again["captions"] == out["captions"] and again["key"] == out["key"]


def test_a_distilled_student_is_another_run(tiny):
    from clipdiff_mini.captioners.ddcap import train_ddcap

    cfg, data = tiny
    _, plain = train_ddcap(cfg, data, progress=False)
    student = cfg.replace({"captioner.targets": "autoregressive"})
    _, distilled = train_ddcap(student, data, progress=False)
    assert distilled["key"] != plain["key"]
    ckpt = torch.load(distilled["path"], map_location="cpu", weights_only=False)
    assert "teacher" in ckpt["run"] and ckpt["run"]["captioner"]["targets"] == "autoregressive"


def test_reference_disagreement_by_hand():
    # picture 0: three references that differ at position 2 only; picture 1: two identical references;
    # picture 2: a single caption (left out). Positions: 0 1 2 3
    ids = torch.tensor([[1, 5, 6, 0], [1, 5, 7, 0], [1, 5, 6, 0],
                        [1, 8, 9, 2], [1, 8, 9, 2],
                        [1, 3, 3, 3]])
    owner = torch.tensor([0, 0, 0, 1, 1, 2])
    got = dist.reference_disagreement(ids, owner)
    assert got.tolist() == [0.0, 0.0, 0.5, 0.0]  # one of the two pictures disagrees at position 2


def test_length_canvas_by_hand():
    from clipdiff_mini.captioners.length import length_canvas

    got = length_canvas(torch.tensor([2, 4, 0]), 5, mask_id=9, pad_id=0)
    assert got.tolist() == [[9, 9, 0, 0, 0], [9, 9, 9, 9, 0], [0, 0, 0, 0, 0]]


def test_reference_length_canvas_uses_each_pictures_first_reference(tiny):
    from clipdiff_mini.captioners.length import reference_length_canvas

    _, data = tiny
    val = data["val"]
    tok = val.tokenizer
    got = reference_length_canvas(val, tok.mask_id, tok.pad_id)
    for i in (0, 1, len(val) - 1):
        first_caption = val.split.records[i].captions[0]  # by hand: [BOS] words [EOS]
        n = len(first_caption.split()) + 2
        assert got[i].tolist() == [tok.mask_id] * n + [tok.pad_id] * (val.ids.shape[1] - n)


def test_the_students_step_budget_leaves_the_teacher_and_the_reference_runs_alone(tiny):
    """captioner.student_steps: the distilled student trains that many steps; its teacher is the same run
    (same key, not retrained) whatever the student's budget, and a run on the references ignores it."""
    from clipdiff_mini.captioners.ddcap import train_ddcap

    cfg, data = tiny
    _, plain = train_ddcap(cfg, data, progress=False)
    _, plain_again = train_ddcap(cfg.replace({"captioner.student_steps": 6}), data, progress=False)
    assert plain_again["key"] == plain["key"] and plain_again["resumed"]
    student = cfg.replace({"captioner.targets": "autoregressive"})
    longer = student.replace({"captioner.student_steps": 6})
    assert dist.teacher_config(longer) == dist.teacher_config(student)
    _, short = train_ddcap(student, data, progress=False)
    _, long = train_ddcap(longer, data, progress=False)
    assert short["steps"] == cfg.captioner.train_steps == 4 and long["steps"] == 6
    assert long["key"] != short["key"]


def test_a_student_from_the_references_starts_from_that_models_best_weights(tiny, monkeypatch):
    """captioner.student_init = "references": the student's weights when its training begins are the best
    weights (on val) stored in the checkpoint of the same captioner trained on the references; the run is
    another run than the scratch student, and a run on the references ignores the setting."""
    from clipdiff_mini.captioners import ddcap

    cfg, data = tiny
    _, plain = ddcap.train_ddcap(cfg, data, progress=False)
    _, plain_again = ddcap.train_ddcap(cfg.replace({"captioner.student_init": "references"}), data, progress=False)
    assert plain_again["key"] == plain["key"] and plain_again["resumed"]
    stored = torch.load(plain["path"], map_location="cpu", weights_only=False)["state"]["best_state"]

    started = {}
    real = trainer.train_captioner

    def spy(model, *args, **kw):  # the last run to start is the student (the teacher and its start come first)
        started.clear()
        started.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kw)

    monkeypatch.setattr(trainer, "train_captioner", spy)  # the entry point's call of the loop
    student = cfg.replace({"captioner.targets": "autoregressive", "captioner.student_init": "references"})
    _, warm = ddcap.train_ddcap(student, data, progress=False)
    assert set(started) == set(stored)
    for name, value in stored.items():
        assert torch.equal(started[name], value), name
    _, cold = ddcap.train_ddcap(student.replace({"captioner.student_init": "scratch"}), data, progress=False)
    assert warm["key"] != cold["key"]
    cold_start = {k: v for k, v in started.items()}  # the spy's last call: the scratch student
    assert any(not torch.equal(cold_start[k], v) for k, v in stored.items())


def test_a_repeat_draws_other_weights_under_another_key(tiny, monkeypatch):
    """captioner.repeat: 0 is the reference run; k is another run of the same settings under its own key,
    whose initial weights are drawn with the seed moved by 1000 k."""
    from clipdiff_mini.captioners.checkpoints import run_identity
    from clipdiff_mini.captioners.ddcap import build_ddcap_captioner, train_ddcap

    cfg, data = tiny
    again = cfg.replace({"captioner.repeat": 1})
    assert run_identity(cfg, "ddcap")["captioner"]["repeat"] == 0
    assert run_identity(again, "ddcap")["captioner"]["repeat"] == 1
    started = {}
    real = trainer.train_captioner

    def spy(model, *args, **kw):
        started[kw["name"], args[2].captioner.repeat] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real(model, *args, **kw)

    monkeypatch.setattr(trainer, "train_captioner", spy)  # the entry point's call of the loop
    _, first = train_ddcap(cfg, data, progress=False)
    _, second = train_ddcap(again, data, progress=False)
    assert first["key"] != second["key"] and not second["resumed"]
    for repeat, seed in ((0, cfg.seed), (1, cfg.seed + 1_000)):  # the initial weights drawn here by hand
        torch.manual_seed(seed)
        by_hand = build_ddcap_captioner(cfg, data["train"]).state_dict()
        assert all(torch.equal(started["ddcap", repeat][k], v) for k, v in by_hand.items()), repeat
    assert any(not torch.equal(started["ddcap", 0][k], started["ddcap", 1][k]) for k in by_hand)


def test_the_autoregressive_step_budget_is_its_own(tiny):
    """autoregressive.train_steps: the decoder trains that many steps (its schedule ends there) under another
    key; 0 leaves it at captioner.train_steps, and the diffusion captioners never read it."""
    from clipdiff_mini.captioners.autoregressive import train_autoregressive
    from clipdiff_mini.captioners.ddcap import train_ddcap

    cfg, data = tiny
    _, plain = train_autoregressive(cfg, data, progress=False)
    _, short = train_autoregressive(cfg.replace({"autoregressive.train_steps": 2}), data, progress=False)
    assert plain["steps"] == cfg.captioner.train_steps == 4 and short["steps"] == 2
    assert short["key"] != plain["key"]
    assert short["history"]["val"][-1]["step"] == 2  # finished at its own budget, validated there
    _, masked = train_ddcap(cfg, data, progress=False)
    _, masked_again = train_ddcap(cfg.replace({"autoregressive.train_steps": 2}), data, progress=False)
    assert masked_again["key"] == masked["key"] and masked_again["steps"] == 4


def test_the_students_learning_rate_is_its_own(tiny):
    """captioner.student_lr: a distilled student's peak learning rate (0: the captioner's own); the teacher
    and a run on the references do not read it."""
    cfg, _ = tiny
    student = cfg.replace({"captioner.targets": "autoregressive", "captioner.student_lr": 5e-4})
    assert dist.student_config(student).captioner.lr == 5e-4
    assert dist.student_config(student.replace({"captioner.student_lr": 0.0})).captioner.lr == cfg.captioner.lr
    from clipdiff_mini.captioners.checkpoints import run_key

    teachers = [dist.teacher_config(c) for c in (student, student.replace({"captioner.student_lr": 0.0}))]
    assert run_key(teachers[0], "autoregressive") == run_key(teachers[1], "autoregressive")  # the same teacher run
    refs = cfg.replace({"captioner.student_lr": 5e-4})
    assert dist.student_config(refs).captioner.lr == cfg.captioner.lr
