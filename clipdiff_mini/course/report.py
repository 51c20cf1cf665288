"""The course report: one page to open in a browser after a run.

``outputs/<profile>/index.html`` lists the run's notebooks (status, wall
time, the kernel's peak memory, figures) with the numbers each one reported
(`clipdiff_mini.course.results`), and links every executed notebook rendered to
HTML by nbconvert under ``outputs/<profile>/html/``. Figures are embedded in
the pages (base64 PNG), so the report opens from disk, offline, and can be
copied or zipped as one folder; they are also written as PNG files under
``outputs/<profile>/figures/<notebook>/``, for slides (`save_figures`).

    render_notebook(executed_ipynb, html_path)       # one page (course.run_course does this)
    save_figures(executed_ipynb, folder)             # its figures as PNG files (course.run_notebook)
    write_index(base, profile, rows, results)        # the index of the run
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from clipdiff_mini.atomic_io import write_bytes, write_text

FIGURE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
OPEN_RESULTS_UP_TO = 12  # a notebook's table of numbers starts unfolded when it has at most this many rows


def count_figures(notebook: str | os.PathLike | Mapping) -> int:
    """Outputs that carry an image (a matplotlib figure shown inline) in a notebook or its file."""
    nb = json.loads(Path(notebook).read_text()) if not isinstance(notebook, Mapping) else notebook
    return sum(1 for cell in nb.get("cells", []) for out in cell.get("outputs", [])
               if any(t in out.get("data", {}) for t in FIGURE_TYPES))


_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SECTION_NUMBER = re.compile(r"^(\d+\.(?=\s)|\d+(?:\.\d+)+\.?(?=\s))")  # "5. Evaluation", "5.2 The loss"
SLUG_CHARS = 40  # a heading's slug in a figure's file name is cut to at most this many characters


def _slug(text: str) -> str:
    text = re.sub(r"[`*_$\\]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", text)  # markup, links
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > SLUG_CHARS:
        slug = slug[:SLUG_CHARS].rsplit("-", 1)[0]
    return slug


def _headings(source: str) -> Iterator[tuple[int, str]]:
    """The (level, text) of each markdown heading in `source`, outside fenced code."""
    fenced = False
    for line in source.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            yield len(m.group(1)), m.group(2)


def _section_tag(stack: Sequence[tuple[int, str]]) -> str:
    """The part of a figure's file name that says where it is, from the open headings (outermost first).

    ``section-5`` under "## 5. Evaluation"; ``section-4-zero-shot-probes`` under "### Zero-shot probes"
    inside "## 4. ..."; the slug of the nearest heading when no open heading is numbered
    (``the-caption-metrics``); empty under the notebook's title alone (a level-1 heading), which the
    notebook's name already says."""
    numbered = [i for i, (_, text) in enumerate(stack) if _SECTION_NUMBER.match(text)]
    if numbered:
        i = numbered[-1]
        tag = "section-" + _SECTION_NUMBER.match(stack[i][1]).group(1).rstrip(".").replace(".", "-")
        return tag + (f"-{_slug(stack[-1][1])}" if i < len(stack) - 1 and _slug(stack[-1][1]) else "")
    if stack and stack[-1][0] > 1:
        return _slug(stack[-1][1])
    return ""


def figure_names(notebook: str | os.PathLike | Mapping, prefix: str) -> list[tuple[str, bytes]]:
    """(file name, PNG bytes) of each image/png output of the notebook's code cells, in order.

    Named ``<prefix>-figNN[-<section>].png``: NN counts the notebook's figures from 01, the section
    comes from the markdown headings above the figure (`_section_tag`), e.g.
    ``07_ddcap-fig03-section-5.png``."""
    import base64

    nb = json.loads(Path(notebook).read_text()) if not isinstance(notebook, Mapping) else notebook
    stack: list[tuple[int, str]] = []
    figures = []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "markdown":
            for level, text in _headings(source):
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, text))
        elif cell.get("cell_type") == "code":
            for out in cell.get("outputs", []):
                png = out.get("data", {}).get("image/png")
                if png is None:
                    continue
                png = "".join(png) if isinstance(png, list) else png
                tag = _section_tag(stack)
                name = f"{prefix}-fig{len(figures) + 1:02d}{'-' + tag if tag else ''}.png"
                figures.append((name, base64.b64decode(png)))
    return figures


def save_figures(notebook: str | os.PathLike | Mapping, folder: str | os.PathLike,
                 prefix: str | None = None) -> list[Path]:
    """Write every figure (image/png output) of an executed notebook as a PNG file in `folder`.

    Names as `figure_names` gives them (`prefix`: the notebook's stem by default). Each file is
    written atomically; PNG files already in `folder` that this run did not write (the figures of an
    earlier run of the notebook) are removed afterwards, so the folder holds this run's figures only."""
    if prefix is None:
        if isinstance(notebook, Mapping):
            raise ValueError("save_figures: give a prefix for a notebook that is not a file")
        prefix = Path(notebook).stem
    folder = Path(folder)
    written = []
    for name, data in figure_names(notebook, prefix):
        write_bytes(folder / name, data)
        written.append(folder / name)
    if folder.is_dir():
        keep = {p.name for p in written}
        for stale in folder.glob("*.png"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
    return written


# A page of the report is nbconvert's JupyterLab template plus a bar linking back to the index, and,
# when the package jupyter-server-mathjax is installed, MathJax 2 from the report's own folder instead of
# nbconvert's CDN, so that formulas are typeset offline too (HTML-CSS output with the STIX web fonts,
# the only output and fonts that package ships).
_PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_mathjax -%}
{%- if resources.course.mathjax_src -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], webFont: "STIX-Web", imageFont: null, linebreaks: {automatic: true}},
  displayAlign: "center", messageStyle: "none"
});
</script>
<script src="{{ resources.course.mathjax_src }}?config=TeX-AMS-MML_HTMLorMML-full"></script>
{%- else -%}
{{ super() }}
{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
<nav style="font: 14px sans-serif; padding: 8px 12px; margin-bottom: 12px; background: #f3f5f7;
            border-bottom: 1px solid #d0d7de;">
  <a href="{{ resources.course.index_href }}">&larr; course run ({{ resources.course.profile }})</a>
  &nbsp;&middot;&nbsp; <b>{{ resources.course.title }}</b>
  &nbsp;&middot;&nbsp; {{ resources.course.line }}
  &nbsp;&middot;&nbsp; <a href="{{ resources.course.ipynb_href }}">executed .ipynb</a>
</nav>
{%- endblock body_header -%}
"""


def install_mathjax(folder: str | os.PathLike) -> Path | None:
    """Copy the parts of MathJax 2 the pages use (TeX input, HTML-CSS output, STIX web fonts) from the
    package jupyter-server-mathjax into `folder` (once; about 3 MB); None when it is not installed."""
    try:
        from importlib.resources import files

        source = Path(str(files("jupyter_server_mathjax") / "static"))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None
    folder = Path(folder)
    if (folder / "MathJax.js").exists():
        return folder
    if not (source / "MathJax.js").exists():
        return None
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mathjax.", dir=folder.parent))
    try:  # copied aside, then renamed into place: never a half-copied MathJax (cf. atomic_io)
        shutil.copytree(source, tmp / "m", ignore=shutil.ignore_patterns(
            "localization", "a11y", "SVG", "*.md"))
        os.replace(tmp / "m", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def render_notebook(ipynb: str | os.PathLike, html: str | os.PathLike, *, profile: str = "",
                    line: str = "", index_href: str = "../index.html") -> Path:
    """Render an executed notebook to a self-contained HTML page (nbconvert, JupyterLab look).

    Consecutive stream outputs are merged and carriage-return redraws (tqdm)
    collapsed to their final state, as JupyterLab shows them. Figures are
    inside the file. Formulas are typeset by MathJax from ``../mathjax/``
    (`install_mathjax`, offline) or, without the package jupyter-server-mathjax,
    from nbconvert's CDN (offline they then show as LaTeX source).
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    ipynb, html = Path(ipynb), Path(html)
    exporter = HTMLExporter(
        config=Config({"CoalesceStreamsPreprocessor": {"enabled": True}}),
        template_name="lab", template_file="course_page.html.j2",
        extra_loaders=[jinja2.DictLoader({"course_page.html.j2": _PAGE_TEMPLATE})],
    )
    nb = nbformat.read(ipynb, as_version=4)
    ipynb_href = os.path.relpath(ipynb, html.parent)
    mathjax = install_mathjax(html.parent.parent / "mathjax")
    mathjax_src = os.path.relpath(mathjax / "MathJax.js", html.parent) if mathjax else ""
    body, _ = exporter.from_notebook_node(nb, resources={
        "metadata": {"name": ipynb.stem},
        "course": {"profile": profile, "title": ipynb.stem, "line": line, "index_href": index_href,
                   "ipynb_href": ipynb_href, "mathjax_src": mathjax_src}})
    write_text(html, body)
    return html


_INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Course run: {{ profile }}</title>
<style>
 body { font: 15px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 72em;
        padding: 0 1em; color: #1f2328; }
 h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin: 1.6em 0 .4em; }
 .meta { color: #59636e; margin-top: 0; }
 table { border-collapse: collapse; margin: .5em 0; }
 th, td { border-bottom: 1px solid #d0d7de; padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
 th { font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .ok { color: #1a7f37; font-weight: 600; } .failed { color: #cf222e; font-weight: 600; }
 pre.error { background: #fff1f0; border: 1px solid #ffccc7; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
 details summary { cursor: pointer; color: #0969da; } .ctx { color: #59636e; font-size: .9em; }
 a { color: #0969da; }
</style></head>
<body>
<h1>Course run, profile <code>{{ profile }}</code></h1>
<p class="meta">{{ finished }} &middot; {{ machine }} &middot; {{ rows|length }} notebook{{ 's' if rows|length != 1 }},
 {{ n_ok }} ok{% if n_failed %}, <span class="failed">{{ n_failed }} failed</span>{% endif %}
 &middot; {{ total_seconds }} s in all{% if n_earlier %} &middot; {{ n_earlier }} of them from an earlier run
 (not run this time; the time each finished is beside it){% endif %}</p>
<p>Each page below is an executed notebook with its outputs and figures; it opens from disk, without network.
The <code>.ipynb</code> files open in JupyterLab. Each notebook's figures are also PNG files, ready for
slides, in <code>figures/&lt;notebook&gt;/</code>, named by their number in the notebook and their section. Peak memory is the notebook kernel's own peak resident memory
(helper processes it starts, such as Java for METEOR, are not counted).</p>
<table>
<tr><th>notebook</th><th>status</th><th>time (s)</th><th>peak memory (MiB)</th><th>figures</th><th>numbers</th><th>files</th></tr>
{% for r in rows -%}
<tr><td>{% if r.page %}<a href="{{ r.page }}">{{ r.notebook }}</a>{% else %}{{ r.notebook }}{% endif %}</td>
 <td><span class="{{ r.status }}">{{ r.status }}</span>{% if r.earlier_run %} <span class="ctx">earlier run{% if r.finished %}, {{ r.finished }}{% endif %}</span>{% endif %}</td>
 <td class="num">{{ r.seconds }}</td>
 <td class="num">{{ r.peak_rss_mib if r.peak_rss_mib is not none else '' }}</td>
 <td class="num">{{ r.figures if r.figures is not none else '' }}</td><td class="num">{{ r.results|length }}</td>
 <td>{% if r.page %}<a href="{{ r.page }}">page</a> &middot; {% endif %}{% if r.ipynb %}<a href="{{ r.ipynb }}">.ipynb</a>{% endif %}{% if r.figures_href %} &middot; <a href="{{ r.figures_href }}">figures</a>{% endif %}</td></tr>
{% endfor -%}
</table>
{% for r in rows %}
<h2 id="{{ r.notebook }}">{% if r.page %}<a href="{{ r.page }}">{{ r.notebook }}</a>{% else %}{{ r.notebook }}{% endif %}
 <span class="{{ r.status }}">{{ r.status }}</span>{% if r.earlier_run %} <span class="ctx">(earlier run{% if r.finished %}, {{ r.finished }}{% endif %})</span>{% endif %}</h2>
{% if r.error %}<pre class="error">{{ r.error }}</pre>{% endif %}
{% if r.results %}
<details{% if r.results|length <= open_up_to %} open{% endif %}>
<summary>{{ r.results|length }} number{{ 's' if r.results|length != 1 }} reported by the notebook</summary>
<table>
<tr><th>result</th><th>value</th><th>context</th></tr>
{% for key, entry in r.results.items() -%}
<tr><td>{{ key }}</td><td class="num">{{ entry.value }}</td>
 <td class="ctx">{% for k, v in entry.items() if k != 'value' %}{{ k }}={{ v }}{{ ', ' if not loop.last }}{% endfor %}</td></tr>
{% endfor -%}
</table></details>
{% else %}<p class="ctx">No numbers reported.</p>{% endif %}
{% endfor %}
<p class="ctx">Also in this folder: <a href="summary.md">summary.md</a> and <a href="summary.json">summary.json</a>
(the same numbers as text), <code>notebooks/</code> (executed notebooks), <code>figures/</code> (each notebook's figures as PNG files),
<code>results/</code> (each notebook's numbers).</p>
</body></html>
"""


def write_index(base: str | os.PathLike, profile: str, rows: Sequence[Mapping[str, Any]],
                results: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``base/index.html`` for the rows of a run (as `course.run_notebook` returns them; a row
    with ``"earlier_run": true`` is shown as kept from an earlier run, `course.write_summary`).

    Links are relative (``html/NN_name.html``, ``notebooks/NN_name.ipynb``, ``figures/NN_name/``) and
    only made for files that exist, so the folder can be moved or zipped.
    """
    import jinja2

    base = Path(base)
    view = []
    for r in rows:
        name = r["notebook"]
        page, ipynb = base / "html" / f"{name}.html", base / "notebooks" / f"{name}.ipynb"
        view.append({**r, "page": f"html/{name}.html" if page.exists() else "",
                     "ipynb": f"notebooks/{name}.ipynb" if ipynb.exists() else "",
                     "figures_href": f"figures/{name}/" if (base / "figures" / name).is_dir() else "",
                     "peak_rss_mib": r.get("peak_rss_mib"), "figures": r.get("figures"), "error": r.get("error", ""),
                     "results": results.get(name, {}).get("results", {})})
    env = jinja2.Environment(autoescape=True)
    html = env.from_string(_INDEX_TEMPLATE).render(
        profile=profile, rows=view, open_up_to=OPEN_RESULTS_UP_TO,
        n_ok=sum(r["status"] == "ok" for r in rows), n_failed=sum(r["status"] != "ok" for r in rows),
        n_earlier=sum(bool(r.get("earlier_run")) for r in rows),
        total_seconds=round(sum(float(r.get("seconds", 0)) for r in rows), 1),
        finished=time.strftime("%Y-%m-%d %H:%M"),
        machine=f"{platform.node() or 'this machine'}, {os.cpu_count()} CPU cores")
    path = base / "index.html"
    write_text(path, html)
    return path
