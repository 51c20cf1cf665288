"""Execute every notebook in the CI profile with papermill, as the course runner does."""
import json

import pytest

from clipdiff_mini.config import get_config
from clipdiff_mini.course import list_notebooks, run_notebook

NOTEBOOKS = list_notebooks()


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
