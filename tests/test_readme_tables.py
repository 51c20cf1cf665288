"""tools/readme_tables.py: the README's measured tables are written from a course run's report."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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


def test_blocks_are_written_from_the_report_and_the_rest_is_kept(tmp_path):
    _write(tmp_path / "laptop" / "summary.json", {
        "profile": "laptop", "finished": "2026-12-03 06:00", "threads": 2, "setup_seconds": 80.0,
        "notebooks": [{"notebook": "00_course_tour", "status": "ok", "seconds": 41.0, "peak_rss_mib": 512},
                      {"notebook": "05_clip_diffusionlm", "status": "ok", "seconds": 600.0, "peak_rss_mib": 1331}]})
    _write(tmp_path / "ci" / "summary.json", {"notebooks": [{"notebook": "00_course_tour", "seconds": 12.0}]})
    _write(tmp_path / "laptop" / "results" / "08_three_captioners.json", {"updated": "2026-12-03 05:59", "results": {
        "test table": {"value": [{"row": "most frequent caption", "scene_accuracy": 0.238, "object_recall": 0.0,
                                  "repeated_object": 0.0, "well_formed": 1.0, "CIDEr": 0.09, "passes": 0.0,
                                  "b64": None}]},
        "train steps: DDCap": {"value": 6000, "seconds": 292.8, "loaded": True, "best_step": 5500}}})
    out = readme_tables.render(README, tmp_path)
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
    assert readme_tables.render(README, tmp_path) == README
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
    _write(tmp_path / "out" / "laptop" / "summary.json", {
        "finished": "2026-12-03 06:00", "threads": 2,
        "notebooks": [{"notebook": "00_tour", "status": "ok", "seconds": 150.0, "peak_rss_mib": 512, "figures": 3}]})
    out = readme_tables.render_teaching(GUIDE, tmp_path / "out", sources)
    assert out.startswith("guide\n") and "\nbetween\n" in out and out.endswith("end\n") and "stale" not in out
    assert "| `00_tour` | 399 | 40 | 4 min |" in out
    assert "| `00_tour` | ok | 150 s (2.5 min) | 0.5 GiB | 3 |" in out
    assert "| `01_next` | not in this report | - | - | - |" in out  # never run at this profile
    # without a report the laptop block is kept and the reading block is still written
    kept = readme_tables.render_teaching(GUIDE, tmp_path / "none", sources)
    assert "stale laptop" in kept and "stale reading" not in kept
    # --check covers the guide: stale before, up to date after a rewrite
    readme, guide = tmp_path / "README.md", tmp_path / "teaching.md"
    readme.write_text(README)
    guide.write_text(GUIDE)
    args = ["--outputs", str(tmp_path / "out"), "--readme", str(readme), "--teaching", str(guide),
            "--sources", str(sources)]
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
