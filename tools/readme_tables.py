"""Write the measured tables of the README and the teaching guide from a course run's report.

    .venv/bin/python tools/readme_tables.py            # after `bash tools/run_course.sh` (laptop)
    .venv/bin/python tools/readme_tables.py --check    # exit 1 when a file differs from the report

Two blocks of README.md are generated, each between its markers:
- ``timings``: each notebook's status, wall time and the kernel's peak memory, from
  ``outputs/<profile>/summary.json`` of the laptop run and, when present, of the ci run;
- ``results``: notebook 08's test table (the "test table" entry of its result log).

Two blocks of docs/teaching.md (the teacher's guide):
- ``reading``: each notebook's estimated reading time, counted from its source in ``notebooks/src/``
  (words of its markdown at READING_WPM words per minute, plus its non-blank code lines at
  CODE_LINES_PER_MIN lines per minute); written every time, it needs no report;
- ``laptop``: each notebook's wall time, peak memory and figures in the laptop run's ``summary.json``.

Everything else in both files is written by hand. A block whose report is missing is left as it is.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READING_WPM = 200  # words of prose per minute
CODE_LINES_PER_MIN = 20  # non-blank code lines per minute (about three seconds a line)
_CELL = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=\[.*\])?\s*$")

# (key in notebook 08's table, header, format)
RESULT_COLUMNS = (("scene_accuracy", "scene acc.", "{:.3f}"), ("object_recall", "object recall", "{:.3f}"),
                  ("repeated_object", "repeated object", "{:.1%}"), ("well_formed", "well formed", "{:.3f}"),
                  ("CIDEr", "CIDEr", "{:.2f}"), ("passes", "passes per caption", "{:.1f}"),
                  ("b64", "captions/s, batch 64", "{:.0f}"))


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(value, fmt: str) -> str:
    return "-" if value is None or value != value else fmt.format(value)  # None or NaN: not applicable


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def timings_block(laptop: dict | None, ci: dict | None) -> str | None:
    """The per-notebook table of the laptop run, with the ci run's seconds beside it."""
    if laptop is None:
        return None
    ci_rows = {r["notebook"]: r for r in (ci or {}).get("notebooks", [])}
    lines = ["| notebook | laptop: status | laptop: wall time | laptop: peak memory | ci: wall time |",
             "|---|---|---|---|---|"]
    total = 0.0
    if laptop.get("setup_seconds") is not None:
        total += laptop["setup_seconds"]
        lines.append(f"| install (`tools/setup.sh`) | ok | {_minutes(laptop['setup_seconds'])} | - | - |")
    for r in laptop["notebooks"]:
        total += r["seconds"]
        c = ci_rows.get(r["notebook"])
        mem = f"{r['peak_rss_mib'] / 1024:.1f} GiB" if r.get("peak_rss_mib") else "-"
        lines.append(f"| `{r['notebook']}` | {r['status']} | {_minutes(r['seconds'])} | {mem} | "
                     f"{_minutes(c['seconds']) if c else '-'} |")
    lines.append(f"| install and all notebooks | | {_minutes(total)} | | "
                 f"{_minutes(sum(r['seconds'] for r in ci_rows.values())) if ci_rows else '-'} |")
    when = laptop.get("finished") or "?"
    return "\n".join(lines) + (f"\n\nFrom the report of the laptop run that finished {when} "
                               f"({laptop.get('threads', '?')} threads per kernel)."
                               + _earlier_note(laptop["notebooks"]))


def results_block(results: dict | None) -> str | None:
    """Notebook 08's test table: every captioner and baseline, one row each."""
    entry = ((results or {}).get("results") or {}).get("test table")
    if not entry:
        return None
    lines = ["| captioner (test split) | " + " | ".join(h for _, h, _ in RESULT_COLUMNS) + " |",
             "|---|" + "---|" * len(RESULT_COLUMNS)]
    for row in entry["value"]:
        lines.append(f"| {row['row']} | " + " | ".join(_cell(row.get(k), f) for k, _, f in RESULT_COLUMNS) + " |")
    trained = [f"{k.split(': ', 1)[1]} {v['value']} steps in {v['seconds']:.0f} s (best on val at step {v['best_step']})"
               for k, v in results["results"].items() if k.startswith("train steps: ") and "best_step" in v]
    when = f"\n\n(Notebook 08 of the laptop run, {results.get('updated', '')}; split: test, settings chosen on val.)"
    return "\n".join(lines) + when + ("\nTraining: " + "; ".join(trained) + "." if trained else "")


def source_counts(source: str) -> tuple[int, int]:
    """(words of markdown, non-blank code lines) of a percent-format notebook source."""
    words = code = 0
    kind = None
    for line in source.splitlines():
        m = _CELL.match(line)
        if m:
            kind = "markdown" if m["md"] else "code"
        elif kind == "markdown":
            words += sum(1 for w in line[1:].split() if w.strip("#"))  # drop the "# " prefix and heading marks
        elif kind == "code" and line.strip():
            code += 1
    return words, code


def reading_block(sources: Path) -> str | None:
    """Each notebook's estimated reading time, from its source's word and code-line counts."""
    files = sorted(sources.glob("[0-9][0-9]_*.py"))
    if not files:
        return None
    lines = ["| notebook | words of text | lines of code | reading time (estimate) |", "|---|---|---|---|"]
    total = 0.0
    for f in files:
        words, code = source_counts(f.read_text())
        minutes = words / READING_WPM + code / CODE_LINES_PER_MIN
        total += minutes
        lines.append(f"| `{f.stem}` | {words} | {code} | {minutes:.0f} min |")
    lines.append(f"| all notebooks | | | {total:.0f} min ({total / 60:.1f} h) |")
    how = (f"Counted from `notebooks/src/` by `tools/readme_tables.py`: the markdown's words at {READING_WPM} "
           f"words per minute plus the non-blank code lines at {CODE_LINES_PER_MIN} lines per minute.")
    return "\n".join(lines) + "\n\n" + how


def laptop_block(laptop: dict | None, sources: Path) -> str | None:
    """Each notebook's wall time, peak memory and figures in the laptop run, for the teaching guide."""
    if laptop is None:
        return None
    rows = {r["notebook"]: r for r in laptop.get("notebooks", [])}
    names = [f.stem for f in sorted(sources.glob("[0-9][0-9]_*.py"))] or list(rows)
    names += [n for n in rows if n not in names]
    lines = ["| notebook | laptop: status | laptop: run time | laptop: peak memory | figures |",
             "|---|---|---|---|---|"]
    for name in names:
        r = rows.get(name)
        if r is None:
            lines.append(f"| `{name}` | not in this report | - | - | - |")
            continue
        mem = f"{r['peak_rss_mib'] / 1024:.1f} GiB" if r.get("peak_rss_mib") else "-"
        figures = _cell(r.get("figures"), "{}")
        lines.append(f"| `{name}` | {r['status']} | {_minutes(r['seconds'])} | {mem} | {figures} |")
    total = sum(r["seconds"] for r in rows.values())
    lines.append(f"| all notebooks in this report | | {_minutes(total)} | | |")
    when = laptop.get("finished") or "?"
    note = (f"\n\nFrom `outputs/laptop/summary.json` of the laptop run that finished {when} "
            f"({laptop.get('threads', '?')} threads per kernel).")
    note += _earlier_note(rows.values())
    missing = [n for n in names if n not in rows]
    if missing:
        note += (" That report holds only the notebooks that have run at this profile; run"
                 " `bash tools/run_course.sh` and this script again for every notebook.")
    return "\n".join(lines) + note


def _earlier_note(rows) -> str:
    """A sentence for the rows a run with `--only` kept from earlier runs (`clipdiff_mini.course.write_summary`)."""
    earlier = sorted(r["notebook"] for r in rows if r.get("earlier_run"))
    if not earlier:
        return ""
    times = sorted({r["finished"] for r in rows if r.get("earlier_run") and r.get("finished")})
    span = f" ({times[0]}{' to ' + times[-1] if len(times) > 1 else ''})" if times else ""
    return (f" The rows of {', '.join(f'`{n}`' for n in earlier)} are from earlier runs{span}: that run did not"
            " execute them.")


def replace_block(text: str, name: str, body: str, where: str = "README.md") -> str:
    """`text` with the lines between ``<!-- generated: name -->`` and ``<!-- end: name -->`` replaced."""
    pattern = re.compile(rf"(<!-- generated: {name} [^\n]*-->\n)(.*?)(<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{where} has no block '<!-- generated: {name} ... -->' ... '<!-- end: {name} -->'")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text)


def render(readme: str, outputs: Path) -> str:
    laptop = _read(outputs / "laptop" / "summary.json")
    ci = _read(outputs / "ci" / "summary.json")
    results = _read(outputs / "laptop" / "results" / "08_three_captioners.json")
    for name, body in (("timings", timings_block(laptop, ci)), ("results", results_block(results))):
        if body is not None:
            readme = replace_block(readme, name, body)
    return readme


def render_teaching(guide: str, outputs: Path, sources: Path = ROOT / "notebooks" / "src") -> str:
    """The teaching guide with its reading-time block (from `sources`) and laptop block (from the report)."""
    laptop = _read(outputs / "laptop" / "summary.json")
    for name, body in (("reading", reading_block(sources)), ("laptop", laptop_block(laptop, sources))):
        if body is not None:
            guide = replace_block(guide, name, body, where="docs/teaching.md")
    return guide


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="the course runs' output folder")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--teaching", type=Path, default=ROOT / "docs" / "teaching.md")
    parser.add_argument("--sources", type=Path, default=ROOT / "notebooks" / "src", help="the notebooks' sources")
    parser.add_argument("--check", action="store_true", help="only report whether both files are up to date")
    args = parser.parse_args(argv)
    files = ((args.readme, "README tables", lambda t: render(t, args.outputs)),
             (args.teaching, "teaching guide tables", lambda t: render_teaching(t, args.outputs, args.sources)))
    stale = False
    for path, label, rewrite in files:
        old = path.read_text()
        new = rewrite(old)
        stale |= new != old
        if args.check:
            print(f"{label}: up to date" if new == old else f"{label}: differ from the report")
        else:
            path.write_text(new)
            print(f"{label}:", "rewritten from the report" if new != old else "already up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
