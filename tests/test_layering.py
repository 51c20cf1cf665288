"""The library's layers: a part imports only the parts below it, and no two
modules import each other (directly or round a longer circle).

The imports are read from the source with `ast`, not by importing, so a
function-level import (``def f(): from clipdiff_mini.x import y``) counts
like a top-level one: it is a dependency all the same.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import clipdiff_mini
from clipdiff_mini import LAYERS

PACKAGE_DIR = Path(clipdiff_mini.__file__).parent
# Libraries that handle pictures; the diffusion part must stay about vectors and text.
IMAGE_LIBRARIES = ("PIL", "torchvision", "open_clip", "cv2", "matplotlib.image")


def module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_imports(root: Path, package: str) -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported name, line)] for every import statement in the package's files.

    ``from a.b import c`` resolves to ``a.b.c`` when that is a module of the
    package (importing a submodule), else to ``a.b``.
    """
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root, package): f for f in files}
    graph: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        found = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import: resolve against this module's package
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub if sub in modules else base, node.lineno))
        graph[name] = found
    return graph


def part_of(module: str, package: str) -> str:
    """The course part a module belongs to: its subpackage, "course", or "core"."""
    rest = module.split(".")[1:]
    if not rest:
        return "core"
    if rest[0] == "course":
        return "course"
    return rest[0] if rest[0] in LAYERS else "core"


def layer_violations(graph, layers, package: str) -> list[str]:
    bad = []
    for mod, imports in graph.items():
        mine = part_of(mod, package)
        for target, line in imports:
            if target != package and not target.startswith(package + "."):
                continue
            theirs = part_of(target, package)
            if theirs != mine and theirs not in layers[mine]:
                bad.append(f"{mod} (line {line}) imports {target}: part '{mine}' may import only "
                           f"{sorted(layers[mine]) or 'nothing of the library'}, not '{theirs}'")
    return bad


def import_cycles(graph, package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    edges = {m: sorted({t for t, _ in imps if t in graph and t != m}) for m, imps in graph.items()}
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# ---- the real package --------------------------------------------------------------------
def test_every_part_is_a_folder_or_the_core():
    folders = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    commands = {part for part in LAYERS if (PACKAGE_DIR / f"{part}.py").is_file()}  # train, caption
    assert {"train", "caption"} <= commands, commands
    assert folders == set(LAYERS) - {"core"} - commands, folders


def test_no_module_imports_a_higher_part():
    bad = layer_violations(read_imports(PACKAGE_DIR, "clipdiff_mini"), LAYERS, "clipdiff_mini")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    cycles = import_cycles(read_imports(PACKAGE_DIR, "clipdiff_mini"), "clipdiff_mini")
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_diffusion_knows_nothing_of_images():
    graph = read_imports(PACKAGE_DIR, "clipdiff_mini")
    bad = [f"{m} imports {t} (line {line})" for m, imps in graph.items() if part_of(m, "clipdiff_mini") == "diffusion"
           for t, line in imps if t.split(".")[0] in IMAGE_LIBRARIES or t in IMAGE_LIBRARIES]
    assert not bad, bad


def test_every_subpackage_opens_with_its_table_of_contents():
    for pkg in (p for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text())) or ""
        for module in pkg.glob("*.py"):
            if module.name != "__init__.py":
                assert f"``{module.stem}``" in doc, f"{pkg.name}/__init__.py does not list {module.stem}"


# ---- the checker itself catches bad imports ----------------------------------------------
def _write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "fakepkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


def test_checker_flags_a_lower_part_importing_a_higher_one(tmp_path):
    pkg = _write_package(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/splits.py": "def load():\n    from fakepkg.clip.model import Model  # upward, inside a function\n",
        "clip/__init__.py": "",
        "clip/model.py": "from fakepkg.data.splits import load\nclass Model: pass\n",
    })
    bad = layer_violations(read_imports(pkg, "fakepkg"), LAYERS, "fakepkg")
    assert len(bad) == 1 and "fakepkg.data.splits (line 2) imports fakepkg.clip.model" in bad[0]
    assert "part 'data' may import only ['core']" in bad[0]


def test_checker_finds_circles_of_two_and_of_three(tmp_path):
    pkg = _write_package(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/a.py": "from fakepkg.data import b\n",
        "data/b.py": "from . import a\n",          # relative import, resolved
        "data/c.py": "import fakepkg.data.d\n",
        "data/d.py": "from fakepkg.data.e import x\n",
        "data/e.py": "from fakepkg.data.c import y\n",
        "data/f.py": "from fakepkg.data.a import z\n",  # imports into a circle, is not in one
    })
    cycles = import_cycles(read_imports(pkg, "fakepkg"), "fakepkg")
    assert sorted(cycles) == [["fakepkg.data.a", "fakepkg.data.b"],
                              ["fakepkg.data.c", "fakepkg.data.d", "fakepkg.data.e"]]


def test_checker_accepts_a_clean_fake_table(tmp_path):
    pkg = _write_package(tmp_path, {
        "__init__.py": "from fakepkg.config import get\n",
        "config.py": "import os\n",
        "data/__init__.py": "from fakepkg.data.splits import load\n",
        "data/splits.py": "from fakepkg.config import get\n",
        "captioners/__init__.py": "",
        "captioners/ar.py": "from fakepkg.data import load\nfrom fakepkg.clip import model\n",
        "clip/__init__.py": "",
        "clip/model.py": "",
    })
    graph = read_imports(pkg, "fakepkg")
    assert layer_violations(graph, LAYERS, "fakepkg") == [] and import_cycles(graph, "fakepkg") == []
    strict = {**LAYERS, "captioners": ("core", "data")}  # a stricter table turns the same import into an error
    assert len(layer_violations(graph, strict, "fakepkg")) == 1


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_layer_table_has_no_upward_or_circular_entries(part):
    order = list(LAYERS)  # listed lowest first
    for lower in LAYERS[part]:
        assert order.index(lower) < order.index(part), f"{part} may import {lower}, which is not below it"
