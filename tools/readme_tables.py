"""Write the README's measured tables from a course run's report, so they cannot drift from it.

    .venv/bin/python tools/readme_tables.py            # after `bash tools/run_course.sh` (laptop)
    .venv/bin/python tools/readme_tables.py --check    # exit 1 when the README differs from the report

Two blocks of README.md are generated, each between its markers:
- ``timings``: each notebook's status, wall time and the kernel's peak memory, from
  ``outputs/<profile>/summary.json`` of the laptop run and, when present, of the ci run;
- ``results``: notebook 08's test table (the "test table" entry of its result log).

Everything else in the README is written by hand. A block whose report is missing is left as it is.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
                               f"({laptop.get('threads', '?')} threads per kernel).")


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


def replace_block(text: str, name: str, body: str) -> str:
    """`text` with the lines between ``<!-- generated: name -->`` and ``<!-- end: name -->`` replaced."""
    pattern = re.compile(rf"(<!-- generated: {name} [^\n]*-->\n)(.*?)(<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no block '<!-- generated: {name} ... -->' ... '<!-- end: {name} -->'")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text)


def render(readme: str, outputs: Path) -> str:
    laptop = _read(outputs / "laptop" / "summary.json")
    ci = _read(outputs / "ci" / "summary.json")
    results = _read(outputs / "laptop" / "results" / "08_three_captioners.json")
    for name, body in (("timings", timings_block(laptop, ci)), ("results", results_block(results))):
        if body is not None:
            readme = replace_block(readme, name, body)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="the course runs' output folder")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="only report whether the README is up to date")
    args = parser.parse_args(argv)
    old = args.readme.read_text()
    new = render(old, args.outputs)
    if args.check:
        print("README tables: up to date" if new == old else "README tables: differ from the report")
        return 0 if new == old else 1
    args.readme.write_text(new)
    print("README tables:", "rewritten from the report" if new != old else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
