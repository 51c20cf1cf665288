"""The course report: one page to open in a browser after a run.

``outputs/<profile>/index.html`` lists the run's notebooks (status, wall
time, the kernel's peak memory, figures) with the numbers each one reported
(`clipdiff_mini.results`), and links every executed notebook rendered to
HTML by nbconvert under ``outputs/<profile>/html/``. Figures are embedded in
the pages (base64 PNG), so the report opens from disk, offline, and can be
copied or zipped as one folder.

    render_notebook(executed_ipynb, html_path)       # one page (course.run_course does this)
    write_index(base, profile, rows, results)        # the index of the run
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from clipdiff_mini.atomic_io import write_text

FIGURE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
OPEN_RESULTS_UP_TO = 12  # a notebook's table of numbers starts unfolded when it has at most this many rows


def count_figures(notebook: str | os.PathLike | Mapping) -> int:
    """Outputs that carry an image (a matplotlib figure shown inline) in a notebook or its file."""
    nb = json.loads(Path(notebook).read_text()) if not isinstance(notebook, Mapping) else notebook
    return sum(1 for cell in nb.get("cells", []) for out in cell.get("outputs", [])
               if any(t in out.get("data", {}) for t in FIGURE_TYPES))


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
 &middot; {{ total_seconds }} s in all</p>
<p>Each page below is an executed notebook with its outputs and figures; it opens from disk, without network.
The <code>.ipynb</code> files open in JupyterLab. Peak memory is the notebook kernel's own peak resident memory
(helper processes it starts, such as Java for METEOR, are not counted).</p>
<table>
<tr><th>notebook</th><th>status</th><th>time (s)</th><th>peak memory (MiB)</th><th>figures</th><th>numbers</th><th>files</th></tr>
{% for r in rows -%}
<tr><td>{% if r.page %}<a href="{{ r.page }}">{{ r.notebook }}</a>{% else %}{{ r.notebook }}{% endif %}</td>
 <td class="{{ r.status }}">{{ r.status }}</td><td class="num">{{ r.seconds }}</td>
 <td class="num">{{ r.peak_rss_mib if r.peak_rss_mib is not none else '' }}</td>
 <td class="num">{{ r.figures if r.figures is not none else '' }}</td><td class="num">{{ r.results|length }}</td>
 <td>{% if r.page %}<a href="{{ r.page }}">page</a> &middot; {% endif %}{% if r.ipynb %}<a href="{{ r.ipynb }}">.ipynb</a>{% endif %}</td></tr>
{% endfor -%}
</table>
{% for r in rows %}
<h2 id="{{ r.notebook }}">{% if r.page %}<a href="{{ r.page }}">{{ r.notebook }}</a>{% else %}{{ r.notebook }}{% endif %}
 <span class="{{ r.status }}">{{ r.status }}</span></h2>
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
(the same numbers as text), <code>notebooks/</code> (executed notebooks), <code>results/</code> (each notebook's numbers).</p>
</body></html>
"""


def write_index(base: str | os.PathLike, profile: str, rows: Sequence[Mapping[str, Any]],
                results: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``base/index.html`` for the rows of a run (as `course.run_notebook` returns them).

    Links are relative (``html/NN_name.html``, ``notebooks/NN_name.ipynb``) and
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
                     "peak_rss_mib": r.get("peak_rss_mib"), "figures": r.get("figures"), "error": r.get("error", ""),
                     "results": results.get(name, {}).get("results", {})})
    env = jinja2.Environment(autoescape=True)
    html = env.from_string(_INDEX_TEMPLATE).render(
        profile=profile, rows=view, open_up_to=OPEN_RESULTS_UP_TO,
        n_ok=sum(r["status"] == "ok" for r in rows), n_failed=sum(r["status"] != "ok" for r in rows),
        total_seconds=round(sum(float(r.get("seconds", 0)) for r in rows), 1),
        finished=time.strftime("%Y-%m-%d %H:%M"),
        machine=f"{platform.node() or 'this machine'}, {os.cpu_count()} CPU cores")
    path = base / "index.html"
    write_text(path, html)
    return path
