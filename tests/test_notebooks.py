"""Papermill, as the course runner uses it, on two notebooks: the profile is injected after the parameters
cell, and every plt.show() leaves its figure in the executed notebook. (Every notebook is executed at the
ci profile by nbval in the README's test command, tools/run_tests.sh; running all ten twice would cost
the CI budget the captioner notebooks' minutes.)"""
import json

import pytest

from clipdiff_mini.config import get_config
from clipdiff_mini.course import list_notebooks, run_notebook

NOTEBOOKS = list_notebooks(["01", "06"])  # quick, with figures and parameters


@pytest.mark.slow
@pytest.mark.parametrize("book", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_ci_profile(book):
    out = get_config("ci").path("output_dir") / "ci" / "notebooks"
    row = run_notebook(book, "ci", out)
    assert row["status"] == "ok", row["error"]
    executed = json.loads((out / book.name).read_text())
    # papermill injected the profile after the parameters cell
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "PROFILE = \"ci\"" in "".join(injected[0]["source"])
    # every plt.show() in the source leaves at least one figure (image/png), as in JupyterLab
    shows = sum("".join(c["source"]).count("plt.show()") for c in executed["cells"] if c["cell_type"] == "code")
    images = sum("image/png" in o.get("data", {}) for c in executed["cells"] for o in c.get("outputs", []))
    assert images >= shows and row["figures"] == images, (images, shows, row["figures"])
    print(f"{book.stem}: {row['seconds']} s")
