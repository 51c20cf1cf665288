"""Atomic writes, result logs, the course runner's helpers and the torchvision guard."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipdiff_mini import atomic_io
from clipdiff_mini.config import ConfigError, get_config
from clipdiff_mini.course import list_notebooks, write_summary
from clipdiff_mini.course.results import ResultLog, load_results

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "ckpt.bin"
    atomic_io.write_bytes(target, b"old")

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_io.write_with(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"], "temporary file left behind"


def test_atomic_json_and_torch_roundtrip(tmp_path):
    import torch

    atomic_io.write_json(tmp_path / "a" / "x.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"k": [1, 2]}
    atomic_io.torch_save({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt")["w"].tolist() == [0, 1, 2]


def test_result_log_and_summary(tmp_path):
    import numpy as np

    cfg = get_config("ci", {"paths.output_dir": str(tmp_path)})
    log = ResultLog(cfg, "99_demo")
    log.add("recall@1", np.float32(0.5), chance=0.01)
    log.add("loss", float("nan"))
    res = load_results(tmp_path / "ci" / "results")
    assert res["99_demo"]["results"]["recall@1"] == {"value": 0.5, "chance": 0.01}
    assert res["99_demo"]["results"]["loss"]["value"] == "nan"
    write_summary(tmp_path / "ci", "ci", [{"notebook": "99_demo", "status": "ok", "seconds": 1.0, "error": ""}])
    md = (tmp_path / "ci" / "summary.md").read_text()
    assert "| recall@1 | 0.5 | chance=0.01 |" in md


def test_list_notebooks_filters_and_errors():
    books = list_notebooks()
    assert [b.name for b in books] == sorted(b.name for b in books)
    if books:
        assert list_notebooks([books[0].name[:2]])[0] == books[0]
    with pytest.raises(ConfigError, match="no notebook matches"):
        list_notebooks(["no-such-notebook"])


def test_course_cli_rejects_unknown_profile():
    res = subprocess.run([sys.executable, "-m", "clipdiff_mini.course", "--profile", "huge"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and "laptop" in res.stderr


ORIGINAL = '''import torchvision.extension

@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    pass


@torch.library.register_fake("torchvision::qnms")
def meta_qnms(dets, scores, iou_threshold):
    pass
'''


def test_torchvision_patch_guards_both_ops_idempotently(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import patch_torchvision
    finally:
        sys.path.pop(0)
    f = tmp_path / "_meta_registrations.py"
    f.write_text(ORIGINAL)
    assert patch_torchvision.patch(f) is True
    text = f.read_text()
    assert text.count("if torchvision.extension._has_ops() else (lambda fn: fn))") == 2
    assert patch_torchvision.patch(f) is False and f.read_text() == text
    compile(text, str(f), "exec")


def test_torchvision_imports_next_to_cpu_torch():
    # The installed copy was patched by tools/setup.sh; open_clip needs these transforms.
    res = subprocess.run([sys.executable, "-c", "import torchvision, open_clip; from torchvision import transforms; "
                          "print(transforms.Resize(8))"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_atomic_files_get_normal_permissions(tmp_path):
    atomic_io.write_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask
