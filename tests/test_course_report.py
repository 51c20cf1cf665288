"""The course runner as a student sees it: figures kept in headless runs and written as PNG files,
the HTML report, the kernel's peak memory, the progress lines on the terminal, and a summary that
keeps the notebooks a run of some (--only) did not run.

Two tiny notebooks run through the same runner as the course (`course.run_notebook`),
with MPLBACKEND=Agg in the environment as the test command has it (conftest.py): the
setting that once made every executed notebook lose its figures."""
import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from clipdiff_mini.course import runner as course
from clipdiff_mini.course import NotebookProgress, figures_folder, kernel_environment, run_notebook, write_summary
from clipdiff_mini.course.report import count_figures, render_notebook

ALLOCATE_MIB = 300  # the tiny notebook holds this much for a moment; the kernel's peak must show it


def _notebook(path, cells, headings=None):
    """Code `cells`, the first one the parameters; `headings`: {i: markdown} put before code cell i."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nb.cells = []
    for i, src in enumerate(cells):
        if i in (headings or {}):
            nb.cells.append(nbformat.v4.new_markdown_cell(headings[i]))
        nb.cells.append(nbformat.v4.new_code_cell(src))
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("# Tiny\n\nThe identity $e^{i\\pi} + 1 = 0$."))
    nbformat.write(nb, path)
    return path


FIGURES_CELLS = [
    'PROFILE = "laptop"\nOUT = ""',
    "import time\nimport numpy as np\nimport matplotlib.pyplot as plt\nfrom tqdm.auto import tqdm",
    "plt.plot([0, 1, 4, 9])\nplt.title('first')\nplt.show()",
    "fig, axes = plt.subplots(1, 2)\naxes[0].plot([1, 2])\naxes[1].imshow(np.eye(4))\nplt.show()",
    "print('no figure here')",
    f"block = np.ones({ALLOCATE_MIB} * 2**20 // 8)  # touched: resident\ntime.sleep(1.5)\ndel block",
    "for i in tqdm(range(40), desc='tiny loop', mininterval=0):\n    time.sleep(0.01)",
    "from clipdiff_mini.config import get_config\nfrom clipdiff_mini.course.results import ResultLog\n"
    "log = ResultLog(get_config(PROFILE, {'paths.output_dir': OUT}), 'tiny_figures')\n"
    "log.add('the answer', 42, unit='none')",
]
# the headings above the two figures: they name the figures' files
FIGURES_HEADINGS = {2: "## 2. Two plots\n\nA line, then two panels.", 3: "### The identity `matrix`"}
FIGURE_FILES = ["tiny_figures-fig01-section-2.png", "tiny_figures-fig02-section-2-the-identity-matrix.png"]
STALE_FIGURE = "tiny_figures-fig03-section-9.png"  # left by an earlier run: the new run must remove it
FAILING_CELLS = ['PROFILE = "laptop"\nOUT = ""', "print('before')", "raise ValueError('tiny failure')", "print('never')"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run both tiny notebooks once, as run_course does, and write the summary and the report."""
    tmp = tmp_path_factory.mktemp("course")
    src = tmp / "src"
    src.mkdir()
    base = tmp / "out" / "ci"
    books = [_notebook(src / "tiny_figures.ipynb", FIGURES_CELLS, FIGURES_HEADINGS),
             _notebook(src / "tiny_failing.ipynb", FAILING_CELLS)]
    figures_folder(base, "tiny_figures").mkdir(parents=True)
    (figures_folder(base, "tiny_figures") / STALE_FIGURE).write_bytes(b"\x89PNG\r\n\x1a\nstale")
    terminal = io.StringIO()
    mp = pytest.MonkeyPatch()
    mp.setenv("MPLBACKEND", "Agg")  # what the test command's conftest sets; the kernel must not inherit it
    rows = []
    try:
        for book in books:
            row = run_notebook(book, "ci", base / "notebooks", parameters={"OUT": str(tmp / "out")},
                               progress=terminal, progress_every=3600, figures_dir=figures_folder(base, book.stem))
            rows.append(row)
            render_notebook(base / "notebooks" / book.name, base / "html" / f"{book.stem}.html", profile="ci")
        write_summary(base, "ci", rows)
    finally:
        mp.undo()
    return {"base": base, "rows": {r["notebook"]: r for r in rows}, "terminal": terminal.getvalue()}


def _image_outputs(path):
    """Image outputs counted straight from the notebook JSON (not with the runner's count_figures)."""
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def test_headless_run_keeps_the_figures(run):
    row = run["rows"]["tiny_figures"]
    assert row["status"] == "ok", row["error"]
    images = _image_outputs(run["base"] / "notebooks" / "tiny_figures.ipynb")
    assert len(images) == 2, "plt.show() in a headless run must leave an image/png output per figure"
    assert row["figures"] == 2 == count_figures(run["base"] / "notebooks" / "tiny_figures.ipynb")


def test_each_figure_is_written_as_a_png_file_named_by_its_section(run):
    import matplotlib.image

    base, row = run["base"], run["rows"]["tiny_figures"]
    folder = base / "figures" / "tiny_figures"
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == FIGURE_FILES  # the stale figure of an earlier run is gone
    assert len(files) == row["figures"] == row["figure_files"] == 2
    stored = [base64.b64decode("".join(o["data"]["image/png"]))
              for o in _image_outputs(base / "notebooks" / "tiny_figures.ipynb")]
    assert [f.read_bytes() for f in files] == stored  # the notebook's own figures, in order
    for f in files:
        assert f.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        image = matplotlib.image.imread(f)
        assert image.ndim == 3 and min(image.shape[:2]) > 50, image.shape
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert not (base / "figures" / "tiny_failing").exists() and run["rows"]["tiny_failing"]["figure_files"] == 0


def test_summary_and_report_point_to_the_figures_folder(run):
    base = run["base"]
    rows = {r["notebook"]: r for r in json.loads((base / "summary.json").read_text())["notebooks"]}
    assert rows["tiny_figures"]["figures_dir"] == "figures/tiny_figures" and rows["tiny_failing"]["figures_dir"] is None
    assert "| tiny_figures | ok | " in (base / "summary.md").read_text()
    assert "`figures/tiny_figures/`" in (base / "summary.md").read_text()
    index = (base / "index.html").read_text()
    assert 'href="figures/tiny_figures/"' in index and 'href="figures/tiny_failing/"' not in index


def test_kernel_peak_memory_sees_what_the_notebook_allocated(run):
    peak = run["rows"]["tiny_figures"]["peak_rss_mib"]
    assert peak is not None and peak >= ALLOCATE_MIB, peak
    assert peak < ALLOCATE_MIB + 2000, peak  # the kernel's own peak, not the whole machine


def test_a_failing_notebook_is_reported_with_its_error_and_page(run):
    row = run["rows"]["tiny_failing"]
    assert row["status"] == "failed" and "tiny failure" in row["error"]
    page = (run["base"] / "html" / "tiny_failing.html").read_text()
    assert "ValueError" in page and "tiny failure" in page


def test_report_links_every_notebook_and_embeds_the_figures(run):
    base = run["base"]
    index = (base / "index.html").read_text()
    for name in ("tiny_figures", "tiny_failing"):
        assert f'href="html/{name}.html"' in index and f'href="notebooks/{name}.ipynb"' in index
        assert (base / "html" / f"{name}.html").exists()
    assert re.search(r'class="failed">failed<', index) and re.search(r'class="ok">ok<', index)
    assert "the answer" in index and ">42<" in index  # the numbers the notebook logged
    page = (base / "html" / "tiny_figures.html").read_text()
    # every figure of the executed notebook is inside the page, as base64 PNG data
    embedded = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', page)
    stored = ["".join(o["data"]["image/png"]).replace("\n", "") for o in _image_outputs(base / "notebooks" / "tiny_figures.ipynb")]
    assert sorted(e.replace("\n", "") for e in embedded) == sorted(stored)
    assert 'href="../index.html"' in page
    summary = (base / "summary.md").read_text()
    assert "| tiny_figures | ok |" in summary and "index.html" in summary


def test_report_typesets_formulas_from_its_own_folder_when_mathjax_is_installed(run):
    pytest.importorskip("jupyter_server_mathjax")
    page = (run["base"] / "html" / "tiny_figures.html").read_text()
    src = re.search(r'<script src="([^"]*MathJax\.js[^"]*)"', page).group(1)
    assert src.startswith("../mathjax/MathJax.js")  # offline, relative: the folder can move
    assert (run["base"] / "mathjax" / "MathJax.js").exists()
    assert (run["base"] / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").exists()


def test_terminal_shows_cells_and_the_final_state_of_each_bar(run):
    lines = run["terminal"].splitlines()
    cells = [ln for ln in lines if ln.startswith("[course] tiny_figures ")]
    assert len(cells) == len(FIGURES_CELLS) + 1  # + the cell papermill injects with the parameters
    assert "cell  2/9  # Parameters" in cells[1]  # papermill's injected cell comes second
    assert "cell  4/9  plt.plot([0, 1, 4, 9])" in cells[3]
    bars = [ln for ln in lines if "tiny loop:" in ln]
    assert len(bars) == 1 and "40/40" in bars[0], bars  # 40 redraws, one line: the final state


def test_progress_throttles_bar_redraws_by_time():
    """The bar logic on its own, with a fake clock: a line per `every` seconds and the final state."""
    now = [0.0]
    out = io.StringIO()
    p = NotebookProgress("nb", out, n_cells=3, every=10, clock=lambda: now[0])
    p.write("a warning line\n")  # not a bar: stays in the notebook
    for step in range(1, 101):  # one redraw a second for 100 s
        now[0] = float(step)
        p.write(f"\rtrain: {step}/100")
    p.write("\n")
    bars = [ln.strip() for ln in out.getvalue().splitlines()]
    assert "a warning line" not in out.getvalue()
    # printed when 10 s had passed since the bar began or since its last line; the final state once
    assert bars[-1] == "train: 100/100" and bars.count("train: 100/100") == 1
    assert 9 <= len(bars) <= 11, bars
    p.on_cell_execute(cell=nbformat.v4.new_code_cell("\n\nx = 1  # first line\ny = 2"), cell_index=4)
    assert out.getvalue().splitlines()[-1].endswith("cell  1/3  x = 1  # first line")


def test_kernel_environment_is_restored(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    with kernel_environment({"MPLBACKEND": "inline", "TQDM_MININTERVAL": "1"}):
        import os

        assert os.environ["MPLBACKEND"] == "inline" and os.environ["TQDM_MININTERVAL"] == "1"
    assert os.environ["MPLBACKEND"] == "Agg" and "TQDM_MININTERVAL" not in os.environ


def test_a_run_of_some_notebooks_keeps_the_others_in_the_summary(tmp_path, monkeypatch, capsys):
    """Two runs with different --only selections: the summary holds the notebooks of both, in the
    course's order, the ones not run in the latest run marked with the time their run finished."""
    (tmp_path / "notebooks").mkdir()
    for name in ("00_a", "01_b", "02_c"):
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    monkeypatch.setenv("CLIPDIFF_HOME", str(tmp_path))
    monkeypatch.delenv("CLIPDIFF_SETUP_SECONDS", raising=False)
    clock = {"now": ""}

    def fake_run(book, profile, out_dir, progress=None, figures_dir=None, **_):  # no kernel: a row as it returns
        return {"notebook": Path(book).stem, "status": "ok", "seconds": 1.5, "peak_rss_mib": 100, "figures": 0,
                "figure_files": 0, "error": "", "finished": clock["now"]}

    monkeypatch.setattr(course, "run_notebook", fake_run)
    base = tmp_path / "outputs" / "ci"

    def summary():
        return {r["notebook"]: r for r in json.loads((base / "summary.json").read_text())["notebooks"]}

    clock["now"] = "2030-01-01 09:00"
    assert course.main(["--profile", "ci", "--only", "00", "02"]) == 0
    assert list(summary()) == ["00_a", "02_c"]
    clock["now"] = "2030-01-02 10:00"
    assert course.main(["--profile", "ci", "--only", "01"]) == 0
    rows = summary()
    assert list(rows) == ["00_a", "01_b", "02_c"]  # both runs, in the notebooks' order
    assert [rows[n]["earlier_run"] for n in rows] == [True, False, True]
    assert rows["00_a"]["finished"] == rows["02_c"]["finished"] == "2030-01-01 09:00"
    assert rows["01_b"]["finished"] == "2030-01-02 10:00"
    md, index = (base / "summary.md").read_text(), (base / "index.html").read_text()
    assert "| 00_a | ok (earlier run, 2030-01-01 09:00) |" in md and "| 01_b | ok |" in md
    assert all(f'id="{n}"' in index for n in rows) and "earlier run, 2030-01-01 09:00" in index

    # a third run: 00 again; 02 no longer in the course (renamed): its row goes
    (tmp_path / "notebooks" / "02_c.ipynb").unlink()
    clock["now"] = "2030-01-03 11:00"
    assert course.main(["--profile", "ci", "--only", "00"]) == 0
    rows = summary()
    assert list(rows) == ["00_a", "01_b"] and not rows["00_a"]["earlier_run"] and rows["01_b"]["earlier_run"]
    assert rows["00_a"]["finished"] == "2030-01-03 11:00" and rows["01_b"]["finished"] == "2030-01-02 10:00"


def test_earlier_rows_of_a_summary_without_their_own_times_take_its_time(tmp_path):
    """A summary.json written before rows recorded when they finished: its rows get the run's time."""
    (tmp_path / "summary.json").write_text(json.dumps({
        "profile": "ci", "finished": "2030-01-01 09:00", "setup_seconds": 60.0,
        "notebooks": [{"notebook": n, "status": "ok", "seconds": 2.0, "peak_rss_mib": None, "figures": 1,
                       "error": ""} for n in ("01_b", "00_a")]}))
    rows = write_summary(tmp_path, "ci", [{"notebook": "01_b", "status": "failed", "seconds": 3.0,
                                           "peak_rss_mib": None, "figures": 0, "error": "boom"}])
    assert [(r["notebook"], r["status"], r["earlier_run"]) for r in rows] == [("00_a", "ok", True),
                                                                              ("01_b", "failed", False)]
    assert rows[0]["finished"] == "2030-01-01 09:00"
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["notebooks"] == rows and written["setup_seconds"] == 60.0  # the install time stays
