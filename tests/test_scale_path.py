"""The scale path (issue 13): two processes with DDP, exact resume for every registered captioner,
checkpoints that refuse another run, captioning image files, and the real-data path on a
Karpathy-format fixture. Everything at ci size with a tiny model, on the CPU."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipdiff_mini.captioners.checkpoints import CheckpointMismatch, load_trained
from clipdiff_mini.captioners.features import load_captioning_data
from clipdiff_mini.captioners.registry import CAPTIONERS
from clipdiff_mini.config import get_config
from clipdiff_mini.data.tokenizers import WordTokenizer
from clipdiff_mini.train import parse_overrides, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = {"captioner.width": 16, "captioner.layers": 1, "captioner.heads": 2, "continuous.embed_dim": 8,
        "continuous.timesteps": 50, "captioner.batch_size": 8, "captioner.eval_images": 10,
        "continuous.sample_steps": 2, "captioner.warmup_steps": 2}


def tiny_cfg(**over):
    return get_config("ci", {**TINY, **over})


@pytest.fixture(scope="module")
def ci_data():
    return load_captioning_data(tiny_cfg(), progress=False)


def same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def quiet(name, cfg, **kw):
    return train_model(name, cfg, progress=False, verbose=False, evaluate=False, **kw)


# ---- two processes ---------------------------------------------------------------------------
WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from clipdiff_mini.config import get_config
    from clipdiff_mini.train import train_model

    out, over = sys.argv[1], json.loads(sys.argv[2])
    rank = int(os.environ["RANK"])
    cfg = get_config("ci", over)
    ckpt = os.path.join(out, "ddp.pt")
    # 20 steps, stopped there: each process keeps the weights it trained (nothing is broadcast)
    first = train_model("clip_diffusionlm", cfg, checkpoint=ckpt, stop_at=20, evaluate=False, progress=False,
                        verbose=False)
    torch.save({"state": first["model"].state_dict(), "loss": first["record"]["history"]["loss"],
                "world": first["world_size"], "finished": first["record"]["finished"]},
               os.path.join(out, f"stopped{rank}.pt"))
    # resumed to the end: final validation on process 0, its choice of weights on every process
    second = train_model("clip_diffusionlm", cfg, checkpoint=ckpt, evaluate=False, progress=False, verbose=False)
    torch.save({"state": second["model"].state_dict(), "record": second["record"]}, os.path.join(out, f"final{rank}.pt"))
    # a loss without randomness: two processes must take the steps one process takes on the whole batch
    from clipdiff_mini.captioners.training import train_captioner

    class Deterministic(torch.nn.Module):
        def __init__(self, d, length):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(d, length)

        def loss(self, batch, generator=None):
            loss = (self.lin(batch["image"]) - batch["ids"].float()).pow(2).mean()
            return loss, {}

    train = second["data"]["train"]
    model = Deterministic(train.image.shape[1], train.ids.shape[1])
    det = get_config("ci", {**over, "captioner.train_steps": 5, "captioner.grad_accum": 1})
    train_captioner(model, train, second["data"]["val"], det, name="deterministic", progress=False,
                    caption_fn=lambda m, cond: ["a red circle"] * len(cond["image"]),
                    checkpoint=os.path.join(out, "det.pt"))
    torch.save(model.state_dict(), os.path.join(out, f"det{rank}.pt"))
''')


def test_two_processes_train_and_hold_identical_weights(tmp_path, ci_data):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    over = {**TINY, "captioner.train_steps": 22, "captioner.eval_every": 100, "captioner.grad_accum": 2}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path), json.dumps(over)], env=env, capture_output=True, text=True,
                          timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s0, s1 = (torch.load(tmp_path / f"stopped{r}.pt", weights_only=False) for r in (0, 1))
    assert s0["world"] == 2 and not s0["finished"] and len(s0["loss"]) == 20
    same_weights(s0["state"], s1["state"])  # gradients were averaged: both processes took the same steps
    assert s0["loss"] == s1["loss"]  # the logged loss is the global batch's, the same on both
    losses = s0["loss"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses  # it trains
    f0, f1 = (torch.load(tmp_path / f"final{r}.pt", weights_only=False) for r in (0, 1))
    same_weights(f0["state"], f1["state"])
    assert f0["record"]["resumed"] and f0["record"]["steps"] == 22 and f0["record"]["finished"]
    ckpt = torch.load(tmp_path / "ddp.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["rank_rng"]) == 2 and ckpt["state"]["done"]
    # the two processes drew different diffusion noise (else a process's half batch would repeat the other's)
    assert not torch.equal(ckpt["rank_rng"][0]["cpu"], ckpt["rank_rng"][1]["cpu"])
    # the global batch does not depend on the number of processes: one process, same deterministic loss
    from clipdiff_mini.captioners.training import train_captioner

    train = ci_data["train"]
    one = _DeterministicCaptioner(train.image.shape[1], train.ids.shape[1])
    det = tiny_cfg(**{"captioner.train_steps": 5, "captioner.eval_every": 100})
    train_captioner(one, train, ci_data["val"], det, name="deterministic", progress=False,
                    caption_fn=lambda m, cond: ["a red circle"] * len(cond["image"]), checkpoint=tmp_path / "one.pt")
    for r in (0, 1):
        two = torch.load(tmp_path / f"det{r}.pt", weights_only=False)
        for k, v in one.state_dict().items():
            torch.testing.assert_close(two[k], v, atol=1e-5, rtol=1e-5)


# ---- exact resume, for every captioner ----------------------------------------------------------
# The laptop switches of each captioner are the config's defaults, which the ci profile keeps (image-free
# training and guidance dropout, self-conditioning, the length head, the concentrated mask, ...); only the
# width, data and steps are tiny. "budget": the wall-clock cap is on (as at laptop size) but never reached,
# and the plateau stop is on: neither may change the learning rates or the steps a resumed run takes.
RESUME_SETTINGS = {"plain": {}, "budget": {"captioner.train_minutes": 30.0, "captioner.patience": 2}}


@pytest.mark.parametrize("setting", sorted(RESUME_SETTINGS))
@pytest.mark.parametrize("name", sorted(CAPTIONERS))
def test_n_steps_stop_n_more_equals_2n_steps(name, setting, tmp_path, ci_data):
    # stopped at step 4, in the middle of an evaluation interval (checks at 3, 6)
    cfg = tiny_cfg(**{"captioner.train_steps": 8, "captioner.eval_every": 3, "captioner.checkpoint_every": 100,
                      **RESUME_SETTINGS[setting]})
    whole = quiet(name, cfg, data=ci_data, checkpoint=tmp_path / "whole.pt")
    cut = quiet(name, cfg, data=ci_data, checkpoint=tmp_path / "cut.pt", stop_at=4)
    assert not cut["record"]["finished"] and cut["record"]["steps"] == 4
    rest = quiet(name, cfg, data=ci_data, checkpoint=tmp_path / "cut.pt")
    assert rest["record"]["resumed"] and rest["record"]["steps"] == 8 and rest["record"]["finished"]
    assert rest["record"]["history"]["loss"] == whole["record"]["history"]["loss"]
    same_weights(whole["model"].state_dict(), rest["model"].state_dict())  # the kept (best) weights
    a, b = (torch.load(tmp_path / f, weights_only=False) for f in ("whole.pt", "cut.pt"))
    same_weights(a["model"], b["model"])  # the last step's weights
    assert torch.equal(a["generator"], b["generator"])


# ---- a trained checkpoint: refusing other runs, loading it back, captioning files ----------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, ci_data):
    path = tmp_path_factory.mktemp("trained") / "clip_diffusionlm.pt"
    cfg = tiny_cfg(**{"captioner.train_steps": 6, "captioner.eval_every": 3})
    result = quiet("clip_diffusionlm", cfg, data=ci_data, checkpoint=path)
    return cfg, path, result


def test_a_checkpoint_of_another_config_model_or_vocabulary_is_refused(trained, ci_data):
    cfg, path, _ = trained
    other = replace(cfg, captioner=replace(cfg.captioner, lr=2e-3))
    with pytest.raises(CheckpointMismatch, match=r"captioner\.lr: checkpoint 0\.001, now 0\.002"):
        quiet("clip_diffusionlm", other, data=ci_data, checkpoint=path)
    with pytest.raises(CheckpointMismatch, match="model: checkpoint 'clip_diffusionlm', asked for 'ddcap'"):
        load_trained(path, model="ddcap")
    with pytest.raises(CheckpointMismatch, match="model: checkpoint 'clip_diffusionlm', now 'ddcap'"):  # another model
        quiet("ddcap", cfg, data=ci_data, checkpoint=path)
    wider = get_config("ci", {**TINY, "continuous.embed_dim": 12})
    with pytest.raises(CheckpointMismatch, match=r"continuous\.embed_dim: checkpoint 8, now 12"):
        load_trained(path, cfg=wider)
    small = WordTokenizer.build(["a red circle"])
    with pytest.raises(CheckpointMismatch, match=f"vocabulary size: checkpoint {ci_data['train'].tokenizer.vocab_size}, "
                                                 f"now {small.vocab_size}"):
        load_trained(path, tokenizer=small)
    # the same config on data whose vocabulary differs: refused before any weight is loaded
    data = {**ci_data, "train": replace(ci_data["train"], tokenizer=small)}
    with pytest.raises(CheckpointMismatch, match="vocabulary size"):
        quiet("clip_diffusionlm", cfg, data=data, checkpoint=path)


def test_load_trained_rebuilds_the_model_from_the_checkpoint_alone(trained, ci_data):
    cfg, path, result = trained
    back = load_trained(path, model="clip_diffusionlm", cfg=cfg, tokenizer=ci_data["train"].tokenizer)
    assert back.name == "clip_diffusionlm" and back.steps == 6 and back.finished
    assert back.tokenizer.itos == ci_data["train"].tokenizer.itos
    same_weights(back.model.state_dict(), result["model"].state_dict())  # the weights chosen on val
    cond = ci_data["test"].condition(torch.arange(5))
    torch.manual_seed(0)
    want = CAPTIONERS["clip_diffusionlm"].caption_function(ci_data["train"].tokenizer, cfg)(result["model"], cond)
    torch.manual_seed(0)
    assert back.caption_fn()(back.model, cond) == want


def test_caption_command_captions_files_and_reports_bad_ones(trained, ci_data, tmp_path, capsys):
    from clipdiff_mini import caption

    cfg, path, _ = trained
    test = ci_data["test"]
    for k in (0, 1):
        shutil.copy(test.split.records[k].path, tmp_path / f"pic{k}.png")
    (tmp_path / "broken.png").write_bytes(b"this is not a picture")
    (tmp_path / "notes.txt").write_text("not an image suffix: left alone")
    assert caption.main([str(tmp_path), "--checkpoint", str(path), "--trajectory"]) == 0
    out, err = capsys.readouterr()
    lines = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
    assert set(lines) == {"pic0.png", "pic1.png"}
    assert "broken.png" in err and "not an image" in err and "notes.txt" not in out + err
    assert "t=" in out  # the trajectory rows
    # independently: the cached features of the same pictures (made from the dataset's arrays, in batches)
    back = load_trained(path)
    bundle = caption.load_clip_for(back)
    for k in (0, 1):
        img = caption.read_image(tmp_path / f"pic{k}.png", cfg.data.image_size)
        cond = caption.image_condition(bundle, img[None], cfg.captioner.grid)
        torch.testing.assert_close(cond["image"], test.image[k:k + 1], atol=1e-5, rtol=1e-4)
        torch.manual_seed(cfg.seed)
        assert lines[f"pic{k}.png"] == back.caption_fn()(back.model, test.condition(torch.tensor([k])))[0]
    # bad inputs: a file that is not a checkpoint, a folder without pictures
    assert caption.main([str(tmp_path), "--checkpoint", str(tmp_path / "notes.txt")]) == 2
    assert "cannot be read as a PyTorch checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert caption.main([str(empty), "--checkpoint", str(path)]) == 2
    assert "no image files" in capsys.readouterr().err


# ---- the real-data path on a Karpathy-format fixture -----------------------------------------------
def test_real_data_path_on_a_karpathy_fixture(tmp_path):
    from clipdiff_mini.data.karpathy import DatasetNotFoundError
    from clipdiff_mini.data.karpathy_fixture import write_karpathy_fixture
    from clipdiff_mini.data.splits import load_split

    json_path, image_dir = write_karpathy_fixture(get_config("ci"), tmp_path / "flickr8k", sizes=(40, 10, 10))
    raw = json.loads(json_path.read_text())
    assert not any("scene" in i for i in raw["images"]) and len(list(image_dir.glob("*.jpg"))) == 60
    real = {"data.source": "karpathy", "data.karpathy_json": str(json_path), "data.image_dir": str(image_dir),
            "paths.checkpoint_dir": str(tmp_path / "checkpoints"), "paths.cache_dir": str(tmp_path / "cache"),
            "clip.train_steps": 10, "captioner.train_steps": 10, "captioner.eval_every": 5}
    cfg = tiny_cfg(**real)
    # metrics="quick": pycocoevalcap's Python BLEU/CIDEr-D (the Java path, metrics="coco", is
    # CaptionScorer.score, tested in test_metrics.py; its JVM start would double this test's time)
    result = train_model("clip_diffusionlm", cfg, metrics="quick", splits=("test",), progress=False, verbose=False)
    assert result["record"]["finished"] and result["record"]["best"]["step"] in (5, 10)
    assert "CIDEr" in result["record"]["best"]  # chosen on val by CIDEr-D: no scenes on a real dataset
    assert list((tmp_path / "checkpoints").glob("clip_scratch_ci_*.pt"))  # the small CLIP, trained on the fixture
    # test scores against all five references per picture, read here straight from the split file
    # (lower-cased, and their commas and colons dropped: the words alone, as the quick scorer reads them)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    refs = {i["imgid"]: [" ".join(re.findall(r"[a-z0-9]+", s["raw"].lower())) for s in i["sentences"]]
            for i in raw["images"] if i["split"] == "test"}
    preds = result["captions"]["test"]
    assert set(preds) == set(refs) and all(len(r) == 5 for r in refs.values())
    res = {k: [preds[k]] for k in refs}
    scores = result["scores"]["test"]
    assert scores["BLEU-4"] == pytest.approx(Bleu(4).compute_score(refs, res, verbose=0)[0][3], abs=1e-9)
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(refs, res)[0], abs=1e-9)
    # a missing file names the download step
    broken = get_config("ci", {**real, "data.karpathy_json": str(tmp_path / "nowhere.json")})
    with pytest.raises(DatasetNotFoundError, match="data/README.md, step 1"):
        load_split(broken, "train")


def test_overrides_are_read_as_literals():
    assert parse_overrides(["captioner.lr=1e-4", "continuous.clamp=true", "data.source=karpathy",
                            "captioner.layers=3", "paths.data_dir=/content/drive/x"]) == {
        "captioner.lr": 1e-4, "continuous.clamp": True, "data.source": "karpathy", "captioner.layers": 3,
        "paths.data_dir": "/content/drive/x"}


# ---- DDCap's vocabulary: GPT-2 BPE through transformers ------------------------------------------
def _toy_byte_level_bpe(folder: Path):
    """A GPT-2-format tokenizer (byte-level BPE) with 256 byte symbols and three merges, written here:
    the real GPT-2 files come from the hub, which the tests cannot reach."""
    from transformers import AutoTokenizer

    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    table, n = {}, 0
    for b in range(256):  # GPT-2's byte -> printable character table (bytes_to_unicode)
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    vocab = {c: i for i, c in enumerate(table[b] for b in range(256))}
    merges = ["Ġ r", "Ġr e", "Ġre d"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", **{
        k: "<|endoftext|>" for k in ("unk_token", "bos_token", "eos_token")}}))
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def test_gpt2_tokenizer_adds_specials_round_trips_and_is_stored_in_checkpoints(tmp_path):
    from clipdiff_mini.captioners.checkpoints import tokenizer_from_state, tokenizer_state
    from clipdiff_mini.data.tokenizers import GPT2BPETokenizer

    tok = GPT2BPETokenizer(_toy_byte_level_bpe(tmp_path / "toy"), source="toy")
    n = 256 + 3 + 1  # bytes, merges, <|endoftext|>
    assert tok.vocab_size == n + 3 and tok.eos_id == n - 1  # [PAD] [BOS] [MASK] appended
    assert {tok.pad_id, tok.bos_id, tok.mask_id} == {n, n + 1, n + 2}
    ids = tok.encode("a red circle")
    # by hand: "a" is byte 97; " red" is one merged piece (id 258); then " circle" byte by byte
    assert ids[:3] == [tok.bos_id, 97, 258] and ids[-1] == tok.eos_id and len(ids) == 3 + len(" circle") + 1
    assert tok.decode(ids) == "a red circle"
    back = tokenizer_from_state(tokenizer_state(tok))  # from the stored files, no hub
    assert back.itos == tok.itos and back.special_ids == tok.special_ids


def test_gpt2_vocabulary_offline_fails_at_once_with_the_hub_reason():
    from clipdiff_mini.data.tokenizers import build_tokenizer

    try:
        tok = build_tokenizer(get_config("ci", {"data.tokenizer": "gpt2"}))
    except OSError as exc:
        assert "HF_HUB_OFFLINE" in str(exc) and "data.tokenizer='word'" in str(exc)
    else:  # a machine with GPT-2 in its Hugging Face cache
        assert tok.vocab_size == 50_257 + 3


def test_paper_presets_carry_the_papers_settings():
    from clipdiff_mini.presets import preset_overrides

    c = get_config("colab", preset_overrides("paper_clip_diffusionlm"))
    assert (c.clip.source, c.clip.pretrained_model) == ("pretrained", "ViT-B-32")
    assert (c.captioner.width, c.captioner.layers, c.captioner.heads) == (768, 6, 12)  # DistilBERT's size
    assert c.continuous.embeddings == "pretrained" and c.data.bert_name == "distilbert-base-uncased"
    assert c.continuous.fusion == "concat" and c.continuous.certainty_weight == 0.3
    assert (c.captioner.lr, c.captioner.lr_final, c.data.max_caption_len) == (1e-4, 5e-5, 16)
    assert (c.continuous.schedule, c.continuous.timesteps, c.continuous.sample_steps) == ("cosine", 1000, 5)
    assert (c.continuous.output, c.continuous.target, c.continuous.timestep_input) == ("regress", "x0", False)
    d = get_config("colab", preset_overrides("paper_ddcap"))
    assert (d.clip.pretrained_model, d.data.tokenizer, d.data.max_caption_len) == ("ViT-B-16", "gpt2", 20)
    assert (d.captioner.lr, d.captioner.lr_schedule, d.captioner.lr_final) == (2e-4, "cosine", 0.0)
    assert d.captioner.weight_decay == 0.01 and d.captioner.batch_size == 512 and d.ddcap.timesteps == 20
    assert d.captioner.batch_size % d.captioner.grad_accum == 0
    # 30 epochs of COCO's Karpathy train split (113,287 images, 5 captions each) at 512, 5 of them warm-up
    assert d.captioner.train_steps == round(30 * 113_287 * 5 / 512)
    assert d.captioner.warmup_steps == round(5 * 113_287 * 5 / 512)


# ---- gradient accumulation keeps the global batch ------------------------------------------------
class _DeterministicCaptioner(torch.nn.Module):
    """A loss with no randomness (mean squared error of a linear map of the image feature against the
    ids): micro-batching may then change nothing but the order of float sums."""

    def __init__(self, d: int, length: int):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(d, length)

    def loss(self, batch, generator=None):
        err = self.lin(batch["image"]) - batch["ids"].float()  # (B, L)
        loss = err.pow(2).mean()
        return loss, {"loss": loss.item()}


def test_gradient_accumulation_takes_the_same_steps_as_the_whole_batch(tmp_path, ci_data):
    from clipdiff_mini.captioners.training import train_captioner

    train = ci_data["train"]
    weights, losses = {}, {}
    for accum in (1, 3):  # 8 rows as 3 + 3 + 2: uneven micro-batches, each weighted by its share
        cfg = tiny_cfg(**{"captioner.train_steps": 5, "captioner.eval_every": 100, "captioner.grad_accum": accum})
        model = _DeterministicCaptioner(train.image.shape[1], train.ids.shape[1])
        record = train_captioner(model, train, ci_data["val"], cfg, name=f"accum{accum}", progress=False,
                                 caption_fn=lambda m, cond: ["a red circle"] * len(cond["image"]),
                                 checkpoint=tmp_path / f"accum{accum}.pt")
        weights[accum], losses[accum] = model.state_dict(), record["history"]["loss"]
    # (AdamW does not see a constant factor on all gradients; unequal weights of the rows it does see)
    assert losses[3] == pytest.approx(losses[1], rel=1e-5)  # the logged loss is the whole batch's mean
    for k in weights[1]:
        torch.testing.assert_close(weights[3][k], weights[1][k], atol=1e-5, rtol=1e-5)
    # and the steps moved the weights (the comparison is not between two untrained models)
    assert not torch.allclose(weights[1]["lin.weight"], _DeterministicCaptioner(train.image.shape[1],
                                                                               train.ids.shape[1]).lin.weight)


def test_a_plateau_stops_the_run_at_the_same_step_whether_or_not_it_was_cut_off(tmp_path, ci_data):
    """Validation scores that never improve (a model whose captions do not change): with patience 2 and
    checks every 2 steps, the checks at 2, 4 and 6 make a plateau, and the run ends at step 6 of 20, with
    the weights of step 2. Cut off at step 5 (between checks) or at 6 (the plateau's own step) and run again,
    it ends at the same step with the same weights, and running a finished run again trains nothing."""
    from clipdiff_mini.captioners.training import train_captioner

    train = ci_data["train"]
    cfg = tiny_cfg(**{"captioner.train_steps": 20, "captioner.eval_every": 2, "captioner.patience": 2,
                      "captioner.train_minutes": 30.0, "captioner.checkpoint_every": 100})

    def run(path, **kw):
        model = _DeterministicCaptioner(train.image.shape[1], train.ids.shape[1])
        rec = train_captioner(model, train, ci_data["val"], cfg, name="plateau", progress=False, checkpoint=path,
                              caption_fn=lambda m, cond: ["a red circle"] * len(cond["image"]), **kw)
        return model, rec

    whole_model, whole = run(tmp_path / "whole.pt")
    assert whole["steps"] == 6 and whole["finished"] and whole["stopped_by"] == "plateau"
    assert [v["step"] for v in whole["history"]["val"]] == [2, 4, 6] and whole["best"]["step"] == 2
    for cut in (5, 6):
        path = tmp_path / f"cut{cut}.pt"
        _, first = run(path, stop_at=cut)
        assert first["steps"] == cut
        model, rest = run(path)
        assert rest["steps"] == 6 and rest["stopped_by"] == "plateau"
        assert rest["history"]["loss"] == whole["history"]["loss"]
        same_weights(model.state_dict(), whole_model.state_dict())
    _, again = run(tmp_path / "whole.pt")
    assert again["steps"] == 6 and again["history"]["loss"] == whole["history"]["loss"]


# ---- sampling-only switches never retrain -----------------------------------------------------
SAMPLING_CHANGE = {"clip_diffusionlm": {"continuous.guidance_scale": 2.0, "continuous.sample_steps": 3},
                   "ddcap": {"ddcap.guidance_scale": 2.0, "ddcap.tokens_per_step": 2, "ddcap.order": "random"},
                   "autoregressive": {"autoregressive.beam": 2}}
TRAINING_CHANGE = {"clip_diffusionlm": {"continuous.cond_dropout": 0.2}, "ddcap": {"ddcap.image_free_p": 0.1},
                   "autoregressive": {"autoregressive.prefix_length": 2}}


@pytest.mark.parametrize("name", sorted(CAPTIONERS))
def test_a_sampling_only_change_reuses_the_checkpoint_and_a_training_change_does_not(name, tmp_path, ci_data):
    from clipdiff_mini.captioners.checkpoints import SAMPLING_ONLY

    base = {"captioner.train_steps": 4, "captioner.eval_every": 4, "paths.checkpoint_dir": str(tmp_path)}
    first = quiet(name, tiny_cfg(**base), data=ci_data)
    assert not first["record"]["resumed"]
    sampled = quiet(name, tiny_cfg(**base, **SAMPLING_CHANGE[name]), data=ci_data)
    assert sampled["record"]["resumed"] and sampled["path"] == first["path"]  # loaded, not trained again
    same_weights(sampled["model"].state_dict(), first["model"].state_dict())
    # the registry gives a trained model another config's sampling switches (what the ablation rows do)
    spec = CAPTIONERS[name]
    model = spec.with_sampling(first["model"], tiny_cfg(**base, **SAMPLING_CHANGE[name]))
    for key, value in SAMPLING_CHANGE[name].items():
        assert getattr(getattr(model, spec.settings), key.split(".")[1]) == value
    retrained = quiet(name, tiny_cfg(**base, **TRAINING_CHANGE[name]), data=ci_data)
    assert not retrained["record"]["resumed"] and retrained["path"] != first["path"]
    # every field named sampling-only exists in its section and is marked so in the config's comments
    section = CAPTIONERS[name].section
    cfg_source = (ROOT / "clipdiff_mini" / "config.py").read_text()
    for field in SAMPLING_ONLY[section]:
        assert hasattr(getattr(tiny_cfg(), section), field)
    marked = cfg_source.count("# sampling only:")
    assert marked == sum(len(v) for v in SAMPLING_ONLY.values())
