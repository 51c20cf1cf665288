"""The course runner as a student sees it: figures kept in headless runs, the HTML report,
the kernel's peak memory and the progress lines on the terminal.

Two tiny notebooks run through the same runner as the course (`course.run_notebook`),
with MPLBACKEND=Agg in the environment as the test command has it (conftest.py): the
setting that once made every executed notebook lose its figures."""
import io
import json
import re
import sys

import nbformat
import pytest

from clipdiff_mini.course import NotebookProgress, kernel_environment, run_notebook, write_summary
from clipdiff_mini.report import count_figures, render_notebook

ALLOCATE_MIB = 300  # the tiny notebook holds this much for a moment; the kernel's peak must show it


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
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
    "from clipdiff_mini.config import get_config\nfrom clipdiff_mini.results import ResultLog\n"
    "log = ResultLog(get_config(PROFILE, {'paths.output_dir': OUT}), 'tiny_figures')\n"
    "log.add('the answer', 42, unit='none')",
]
FAILING_CELLS = ['PROFILE = "laptop"\nOUT = ""', "print('before')", "raise ValueError('tiny failure')", "print('never')"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run both tiny notebooks once, as run_course does, and write the summary and the report."""
    tmp = tmp_path_factory.mktemp("course")
    src = tmp / "src"
    src.mkdir()
    base = tmp / "out" / "ci"
    books = [_notebook(src / "tiny_figures.ipynb", FIGURES_CELLS), _notebook(src / "tiny_failing.ipynb", FAILING_CELLS)]
    terminal = io.StringIO()
    mp = pytest.MonkeyPatch()
    mp.setenv("MPLBACKEND", "Agg")  # what the test command's conftest sets; the kernel must not inherit it
    rows = []
    try:
        for book in books:
            row = run_notebook(book, "ci", base / "notebooks", parameters={"OUT": str(tmp / "out")},
                               progress=terminal, progress_every=3600)
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
