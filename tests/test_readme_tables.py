"""tools/readme_tables.py: the README's measured tables are written from the committed course run
(results/course_run/), and the committed README and teaching guide agree with it."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "tools" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_tables)

README = """intro
<!-- generated: results (x) -->
stale results
<!-- end: results -->
middle
<!-- generated: timings (x) -->
stale timings
<!-- end: timings -->
outro
"""


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_blocks_are_written_from_the_committed_run_and_the_rest_is_kept(tmp_path):
    _write(tmp_path / "summary.json", {
        "profile": "laptop", "finished": "2026-12-03 06:00", "threads": 2, "setup_seconds": 80.0,
        "notebooks": [{"notebook": "00_course_tour", "status": "ok", "seconds": 41.0, "peak_rss_mib": 512},
                      {"notebook": "05_clip_diffusionlm", "status": "ok", "seconds": 600.0, "peak_rss_mib": 1331}]})
    _write(tmp_path / "ci_summary.json", {"notebooks": [{"notebook": "00_course_tour", "seconds": 12.0}]})
    _write(tmp_path / "results" / "08_three_captioners.json", {"updated": "2026-12-03 05:59", "results": {
        "test table": {"value": [{"row": "most frequent caption", "scene_accuracy": 0.238, "object_recall": 0.0,
                                  "repeated_object": 0.0, "well_formed": 1.0, "CIDEr": 0.09, "passes": 0.0,
                                  "b64": None}]},
        "train steps: DDCap": {"value": 6000, "seconds": 292.8, "loaded": True, "best_step": 5500}}})
    out = readme_tables.render(README, readme_tables.read_run(tmp_path))
    assert out.startswith("intro\n") and "\nmiddle\n" in out and out.endswith("outro\n")
    assert "stale" not in out
    # numbers formatted by hand: 0.238 -> "0.238", 0 % repeats, 600 s = 10.0 min, 1331 MiB = 1.3 GiB, no speed -> "-"
    assert "| most frequent caption | 0.238 | 0.000 | 0.0% | 1.000 | 0.09 | 0.0 | - |" in out
    assert "| `05_clip_diffusionlm` | ok | 600 s (10.0 min) | 1.3 GiB | - |" in out
    assert "| `00_course_tour` | ok | 41 s | 0.5 GiB | 12 s |" in out
    assert "| install (`tools/setup.sh`) | ok | 80 s | - | - |" in out
    assert "Training: DDCap 6000 steps in 293 s (best on val at step 5500)." in out
    assert "| install and all notebooks | | 721 s (12.0 min) |" in out  # 80 + 41 + 600


def test_a_missing_report_leaves_the_block_and_the_readme_has_both_blocks(tmp_path):
    assert readme_tables.render(README, readme_tables.read_run(tmp_path)) == README
    assert readme_tables.render(README, readme_tables.read_outputs(tmp_path)) == README
    text = (ROOT / "README.md").read_text()
    for name in ("results", "timings"):
        assert f"<!-- generated: {name} " in text and f"<!-- end: {name} -->" in text


GUIDE = """guide
<!-- generated: reading (x) -->
stale reading
<!-- end: reading -->
between
<!-- generated: laptop (x) -->
stale laptop
<!-- end: laptop -->
end
"""


def test_the_teaching_guide_blocks_are_written_and_checked(tmp_path):
    sources = tmp_path / "src"
    sources.mkdir()
    # 400 words of markdown (heading marks not counted) and 40 non-blank code lines: 400/200 + 40/20 = 4 minutes
    (sources / "00_tour.py").write_text("# %% [markdown]\n# # Title\n" + "# " + "word " * 398 + "\n\n# %%\n"
                                        + "x = 1\n\n" * 40)
    (sources / "01_next.py").write_text("# %% [markdown]\n# two words\n")
    assert readme_tables.source_counts((sources / "00_tour.py").read_text()) == (399, 40)
    _write(tmp_path / "run" / "summary.json", {
        "finished": "2026-12-03 06:00", "threads": 2,
        "notebooks": [{"notebook": "00_tour", "status": "ok", "seconds": 150.0, "peak_rss_mib": 512, "figures": 3}]})
    out = readme_tables.render_teaching(GUIDE, readme_tables.read_run(tmp_path / "run"), sources)
    assert out.startswith("guide\n") and "\nbetween\n" in out and out.endswith("end\n") and "stale" not in out
    assert "| `00_tour` | 399 | 40 | 4 min |" in out
    assert "| `00_tour` | ok | 150 s (2.5 min) | 0.5 GiB | 3 |" in out
    assert "| `01_next` | not in this report | - | - | - |" in out  # never run at this profile
    # without a report the laptop block is kept and the reading block is still written
    kept = readme_tables.render_teaching(GUIDE, readme_tables.read_run(tmp_path / "none"), sources)
    assert "stale laptop" in kept and "stale reading" not in kept
    # --check covers the guide: stale before, up to date after a rewrite
    readme, guide = tmp_path / "README.md", tmp_path / "teaching.md"
    readme.write_text(README)
    guide.write_text(GUIDE)
    args = ["--run", str(tmp_path / "run"), "--outputs", str(tmp_path / "none"), "--readme", str(readme),
            "--teaching", str(guide), "--sources", str(sources)]
    assert readme_tables.main(args + ["--check"]) == 1
    assert readme_tables.main(args) == 0 and guide.read_text() == out
    assert readme_tables.main(args + ["--check"]) == 0


def test_the_teaching_guide_has_both_blocks():
    text = (ROOT / "docs" / "teaching.md").read_text()
    for name in ("reading", "laptop"):
        assert f"<!-- generated: {name} " in text and f"<!-- end: {name} -->" in text


def test_rows_kept_from_earlier_runs_are_said_to_be(tmp_path):
    """After a run with --only the summary keeps the other notebooks' rows (course.write_summary): the
    tables show them all and say which rows come from earlier runs, and when."""
    laptop = {"finished": "2026-12-04 08:00", "threads": 2, "notebooks": [
        {"notebook": "00_tour", "status": "ok", "seconds": 100.0, "peak_rss_mib": 512, "figures": 2,
         "earlier_run": True, "finished": "2026-12-03 06:00"},
        {"notebook": "01_next", "status": "ok", "seconds": 50.0, "peak_rss_mib": 512, "figures": 1,
         "earlier_run": False, "finished": "2026-12-04 08:00"}]}
    timings = readme_tables.timings_block(laptop, None)
    assert "| `00_tour` | ok |" in timings and "| `01_next` | ok |" in timings
    assert "The rows of `00_tour` are from earlier runs (2026-12-03 06:00)" in timings
    assert "`01_next` are" not in timings
    sources = tmp_path / "src"
    sources.mkdir()
    for name in ("00_tour", "01_next"):
        (sources / f"{name}.py").write_text("# %% [markdown]\n# words\n")
    guide = readme_tables.laptop_block(laptop, sources)
    assert "| `00_tour` | ok | 100 s | 0.5 GiB | 2 |" in guide and "The rows of `00_tour` are from earlier runs" in guide
    assert "not in this report" not in guide and readme_tables.timings_block({"notebooks": []}, None)


def _course_outputs(outputs: Path, finished: str, ci: bool = True) -> None:
    """A course run's report as `bash tools/run_course.sh` leaves it, with files the blocks do not read."""
    _write(outputs / "laptop" / "summary.json", {
        "profile": "laptop", "finished": finished, "threads": 2, "setup_seconds": 70.0,
        "notebooks": [{"notebook": "00_tour", "status": "ok", "seconds": 30.0, "peak_rss_mib": 512, "figures": 1},
                      {"notebook": "01_next", "status": "error", "seconds": 5.0, "peak_rss_mib": 256, "figures": 0}],
        "results": {"09_scale_path": {"results": {"test CIDEr": {"value": 1.2, "data": "/machine/path.json"}}}}})
    _write(outputs / "laptop" / "results" / "08_three_captioners.json", {"updated": finished, "results": {
        "test table": {"value": [{"row": "autoregressive", "scene_accuracy": 0.95, "CIDEr": 2.97, "passes": 19.2}]}}})
    _write(outputs / "laptop" / "results" / "07_ddcap.json", {"results": {}})  # read by no block
    (outputs / "laptop" / "figures").mkdir()
    (outputs / "laptop" / "index.html").write_text("<html/>")
    if ci:
        _write(outputs / "ci" / "summary.json", {"profile": "ci", "results": {},
                                                 "notebooks": [{"notebook": "00_tour", "seconds": 9.0}]})


def test_store_copies_what_the_blocks_read_and_replaces_the_whole_run(tmp_path, capsys):
    outputs, run = tmp_path / "outputs", tmp_path / "results" / "course_run"
    _course_outputs(outputs, "2026-12-03 10:58")
    assert readme_tables.main(["--store", "--outputs", str(outputs), "--run", str(run)]) == 0
    assert "01_next: error" in capsys.readouterr().out  # a notebook that did not end ok is told
    stored = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert stored == ["ci_summary.json", "results/08_three_captioners.json", "summary.json"]
    summary = json.loads((run / "summary.json").read_text())
    assert "results" not in summary and summary["notebooks"][0]["notebook"] == "00_tour"
    assert "/machine/" not in (run / "summary.json").read_text()
    assert (run / "results" / "08_three_captioners.json").read_bytes() == \
        (outputs / "laptop" / "results" / "08_three_captioners.json").read_bytes()
    # the stored run gives the same blocks as the report it came from
    from_run, from_outputs = readme_tables.read_run(run), readme_tables.read_outputs(outputs)
    assert readme_tables.render(README, from_run) == readme_tables.render(README, from_outputs) != README
    assert "| `00_tour` | ok | 30 s | 0.5 GiB | 9 s |" in readme_tables.render(README, from_run)

    # a second store replaces the folder as a whole: no ci report now, so no ci summary is left behind
    (run / "stray.txt").write_text("not part of a run")
    _course_outputs(tmp_path / "outputs2", "2026-12-04 09:00", ci=False)
    readme_tables.main(["--store", "--outputs", str(tmp_path / "outputs2"), "--run", str(run)])
    assert sorted(p.name for p in run.iterdir()) == ["results", "summary.json"]
    assert json.loads((run / "summary.json").read_text())["finished"] == "2026-12-04 09:00"
    assert sorted(p.name for p in run.parent.iterdir()) == ["course_run"]  # no temporary folder left

    # a report without notebook 08's result log is refused, and the stored run is kept
    (tmp_path / "outputs2" / "laptop" / "results" / "08_three_captioners.json").unlink()
    with pytest.raises(SystemExit, match="08_three_captioners"):
        readme_tables.main(["--store", "--outputs", str(tmp_path / "outputs2"), "--run", str(run)])
    assert (run / "results" / "08_three_captioners.json").is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == ["course_run"]


def test_the_default_source_is_the_committed_run_and_from_outputs_reads_outputs(tmp_path):
    outputs, run = tmp_path / "outputs", tmp_path / "run"
    _course_outputs(outputs, "2026-12-03 10:58")
    readme_tables.main(["--store", "--outputs", str(outputs), "--run", str(run)])
    _course_outputs(tmp_path / "mine", "2026-12-05 12:00")  # a teacher's own, later run
    readme, guide = tmp_path / "README.md", tmp_path / "teaching.md"
    readme.write_text(README)
    guide.write_text(GUIDE)
    args = ["--run", str(run), "--outputs", str(tmp_path / "mine"), "--readme", str(readme), "--teaching", str(guide),
            "--sources", str(tmp_path / "no_sources")]
    assert readme_tables.main(args) == 0
    assert "finished 2026-12-03 10:58" in readme.read_text() and "finished 2026-12-03 10:58" in guide.read_text()
    assert readme_tables.main(args + ["--check"]) == 0
    assert readme_tables.main(args + ["--check", "--from-outputs"]) == 1  # the own run differs from the committed
    assert readme_tables.main(args + ["--from-outputs"]) == 0
    assert "finished 2026-12-05 12:00" in readme.read_text()
    assert readme_tables.main(args + ["--check"]) == 1


def test_the_readme_and_the_teaching_guide_agree_with_the_committed_run():
    """The real files: README.md and docs/teaching.md are what `tools/readme_tables.py` writes from
    results/course_run/ and notebooks/src/. On failure run `.venv/bin/python tools/readme_tables.py`
    (after a notebook's source changed, or after storing a new run with `--store`) and commit the files."""
    if not (readme_tables.RUN_DIR / "summary.json").is_file():
        pytest.skip("results/course_run/summary.json is not committed: store the laptop run with "
                    "`tools/readme_tables.py --store` and commit it, so that the README's tables can be checked")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_tables.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr
                                  + "\nRun `.venv/bin/python tools/readme_tables.py` and commit README.md and"
                                  " docs/teaching.md.")
