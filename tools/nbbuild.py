"""Build the course notebooks from their reviewed sources.

Each notebook ``notebooks/NN_name.ipynb`` is generated from
``notebooks/src/NN_name.py``, a plain Python file in the "percent" format
(``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell whose lines
start with ``# ``, ``# %% tags=["parameters"]`` a tagged code cell). Sources
diff and review like code; the builder adds what every notebook shares (the
Open-in-Colab badge and the Colab install cell) and writes notebooks with no
outputs. A test checks that the committed notebooks match their sources.
(Hand-written rather than jupytext to keep the toolchain to the stack.)

The exercise solutions are built the same way, from
``notebooks/solutions/src/NN_name_solutions.py`` to ``notebooks/solutions/``.

    python tools/nbbuild.py            # rebuild every notebook
    python tools/nbbuild.py --check    # exit 1 if a notebook is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
REPO = "clipdiff-course/clipdiff-mini"  # the course's GitHub home, used by the badge and the Colab cell
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name})")
COLAB_CELL = f'''# Colab only: fetch the course and install its library (Colab already has torch).
import os, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("clipdiff-mini"):
        !git clone -q --depth 1 https://github.com/{REPO}.git
        %pip install -q -e clipdiff-mini
    os.chdir("clipdiff-mini/notebooks")
    sys.path.insert(0, os.path.abspath(".."))'''

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse_source(text: str) -> list[dict]:
    """Split a percent-format file into cells: {'type', 'source', 'tags'}."""
    cells: list[dict] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cells.append({"type": "markdown" if m["md"] else "code",
                          "tags": json.loads(m["tags"]) if m["tags"] else [], "lines": []})
        elif cells:
            cells[-1]["lines"].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError("code before the first '# %%' header")
    for c in cells:
        lines = c["lines"]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if c["type"] == "markdown":
            lines = [l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines]
        c["source"] = "\n".join(lines)
    return [c for c in cells if c["source"].strip()]


# (folder of the sources, folder of the notebooks, prefix of the cell ids)
FOLDERS = ((Path("notebooks/src"), Path("notebooks"), ""),
           (Path("notebooks/solutions/src"), Path("notebooks/solutions"), "s"))


def build(src: Path, out_dir: Path = Path("notebooks"), id_prefix: str = "") -> nbformat.NotebookNode:
    name = (out_dir / src.with_suffix(".ipynb").name).relative_to("notebooks").as_posix()
    cells = parse_source(src.read_text())
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    out = [nbformat.v4.new_markdown_cell(BADGE.format(repo=REPO, name=name)),
           nbformat.v4.new_code_cell(COLAB_CELL)]
    for c in cells:
        maker = nbformat.v4.new_markdown_cell if c["type"] == "markdown" else nbformat.v4.new_code_cell
        cell = maker(c["source"])
        if c["tags"]:
            cell.metadata["tags"] = c["tags"]
        out.append(cell)
    for i, cell in enumerate(out):  # stable ids keep diffs small
        cell["id"] = f"{id_prefix}{src.stem[:2]}-{i:03d}"
    nb.cells = out
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build notebooks from notebooks/src/*.py")
    ap.add_argument("--check", action="store_true", help="only check that notebooks are up to date")
    ap.add_argument("names", nargs="*", help="source stems to build (default: all)")
    args = ap.parse_args(argv)
    stale = []
    sources = [(src, out, prefix) for src_dir, out, prefix in FOLDERS
               for src in sorted((ROOT / src_dir).glob("[0-9][0-9]_*.py"))]
    for src, out_dir, prefix in sources:
        if args.names and src.stem not in args.names and src.stem[:2] not in args.names:
            continue
        target = ROOT / out_dir / src.with_suffix(".ipynb").name
        text = render(build(src, out_dir, prefix))
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target.name)
        if not args.check:
            target.write_text(text)
            print(f"built {target.relative_to(ROOT)}")
    if args.check and stale:
        print("out of date (run python tools/nbbuild.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
