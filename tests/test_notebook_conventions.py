"""The course's notebook conventions, checked on every committed notebook."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/(work|tmp|root|opt|content|Users|mnt)/|/home/\w+|[A-Za-z]:\\\\)")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("book", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(book):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", book.name), "name must be NN_lowercase_words.ipynb"
    cells = json.loads(book.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    for c in code:
        assert not c.get("outputs") and c.get("execution_count") is None, "outputs must be stripped"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert "PROFILE" in "".join(params[0]["source"]), "the parameters cell must set PROFILE"
    first_md = "".join(cells[0]["source"])
    assert f"notebooks/{book.name}" in first_md and "colab-badge" in first_md, "Open-in-Colab badge first"
    assert "google.colab" in "".join(code[0]["source"]), "first code cell installs the library on Colab"
    text = "\n".join("".join(c["source"]) for c in cells)
    assert not MACHINE_PATH.search(text), f"machine path in notebook: {MACHINE_PATH.search(text)[0]}"
    assert "set_seed(" in text, "seeds must be set (clipdiff_mini.seeding.set_seed)"


def test_notebooks_match_their_sources():
    srcs = sorted(p.stem for p in (ROOT / "notebooks" / "src").glob("*.py"))
    assert srcs == [b.stem for b in NOTEBOOKS], "every notebook has a source in notebooks/src and vice versa"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "nbbuild.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
