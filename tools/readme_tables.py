"""Write the measured tables of the README and the teaching guide from the committed course run.

    .venv/bin/python tools/readme_tables.py                 # write the blocks from results/course_run/
    .venv/bin/python tools/readme_tables.py --check         # exit 1 when a file differs from results/course_run/
    .venv/bin/python tools/readme_tables.py --store         # after `bash tools/run_course.sh` (laptop): copy its
                                                            # report from outputs/ into results/course_run/
    .venv/bin/python tools/readme_tables.py --from-outputs  # write the blocks from your own run in outputs/

The source of the tables is ``results/course_run/``, the laptop run of the course that the README's numbers
come from, committed so that anyone (and CI: ``tests/test_readme_tables.py`` runs ``--check``) can see that the
README and the guide agree with it. It holds the files the blocks read and nothing else:
- ``summary.json``: ``outputs/laptop/summary.json`` of the run, without its ``results`` entry (a copy of every
  notebook's result log, which no block reads; it can hold machine paths);
- ``ci_summary.json``: the same of ``outputs/ci/summary.json``, only when that report exists;
- ``results/08_three_captioners.json``: notebook 08's result log, copied as it is.
``--store`` replaces the folder as a whole (a new folder is written beside it and renamed into place), so it
holds one run, never a mix of two. ``--from-outputs`` reads ``outputs/laptop/`` and ``outputs/ci/`` instead,
for a teacher who wants their own run's numbers in a local copy (do not commit those files then).

Two blocks of README.md are generated, each between its markers:
- ``timings``: each notebook's status, wall time and the kernel's peak memory in the laptop run's summary and,
  when present, the ci run's seconds;
- ``results``: notebook 08's test table (the "test table" entry of its result log).

Two blocks of docs/teaching.md (the teacher's guide):
- ``reading``: each notebook's estimated reading time, counted from its source in ``notebooks/src/``
  (words of its markdown at READING_WPM words per minute, plus its non-blank code lines at
  CODE_LINES_PER_MIN lines per minute); written every time, it needs no report, so ``--check`` fails
  after a notebook's source changes until this script has run again;
- ``laptop``: each notebook's wall time, peak memory and figures in the laptop run's summary.

Everything else in both files is written by hand. A block whose report is missing is left as it is.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / "results" / "course_run"  # the committed laptop run the tables come from
OUTPUTS_DIR = ROOT / "outputs"
RESULT_FILE = "08_three_captioners.json"  # the only notebook result log a block reads
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


def laptop_block(laptop: dict | None, sources: Path, report: str = "results/course_run/summary.json") -> str | None:
    """Each notebook's wall time, peak memory and figures in the laptop run (read from `report`), for the guide."""
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
    note = (f"\n\nFrom `{report}` of the laptop run that finished {when} "
            f"({laptop.get('threads', '?')} threads per kernel).")
    note += _earlier_note(rows.values())
    missing = [n for n in names if n not in rows]
    if missing:
        note += (" That report holds only the notebooks that have run at this profile; run"
                 " `bash tools/run_course.sh`, then this script with `--store`, for every notebook.")
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


class Report(NamedTuple):
    """What the blocks read: the laptop and ci summaries, notebook 08's result log, and where they came from."""
    laptop: dict | None
    ci: dict | None
    results: dict | None
    where: str  # the laptop summary's path, as the teaching guide names it


def _shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def read_run(run: Path = RUN_DIR) -> Report:
    """The committed course run (the layout `store` writes)."""
    return Report(_read(run / "summary.json"), _read(run / "ci_summary.json"),
                  _read(run / "results" / RESULT_FILE), _shown(run / "summary.json"))


def read_outputs(outputs: Path = OUTPUTS_DIR) -> Report:
    """A course run's own report under `outputs/` (what `bash tools/run_course.sh` writes)."""
    return Report(_read(outputs / "laptop" / "summary.json"), _read(outputs / "ci" / "summary.json"),
                  _read(outputs / "laptop" / "results" / RESULT_FILE), _shown(outputs / "laptop" / "summary.json"))


def _summary_to_store(summary: dict) -> dict:
    """A summary without its `results` entry: the notebooks' result logs, which no block reads."""
    return {k: v for k, v in summary.items() if k != "results"}


def store(outputs: Path = OUTPUTS_DIR, run: Path = RUN_DIR) -> list[str]:
    """Copy what the blocks read from the laptop (and ci) report under `outputs` into `run`.

    The new folder is written beside `run` and renamed into place, and the old one removed after: `run` holds
    one run, never a mix. Returns lines worth telling (notebooks that did not end ok, rows from earlier runs)."""
    laptop = _read(outputs / "laptop" / "summary.json")
    result_log = outputs / "laptop" / "results" / RESULT_FILE
    if laptop is None:
        raise SystemExit(f"no laptop report at {outputs / 'laptop' / 'summary.json'}: run `bash tools/run_course.sh`")
    if laptop.get("profile", "laptop") != "laptop":
        raise SystemExit(f"{outputs / 'laptop' / 'summary.json'} is a report of profile {laptop['profile']!r}")
    if not result_log.is_file():
        raise SystemExit(f"no {result_log}: the stored run would lack notebook 08's test table")
    ci = _read(outputs / "ci" / "summary.json")
    run.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{run.name}.new.", dir=run.parent))
    old = None
    try:
        (new / "summary.json").write_text(json.dumps(_summary_to_store(laptop), indent=1) + "\n")
        if ci is not None:
            (new / "ci_summary.json").write_text(json.dumps(_summary_to_store(ci), indent=1) + "\n")
        (new / "results").mkdir()
        shutil.copyfile(result_log, new / "results" / RESULT_FILE)
        os.chmod(new, 0o755)  # mkdtemp makes a 0700 folder
        if run.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{run.name}.old.", dir=run.parent)) / run.name
            os.replace(run, old)
        try:
            os.replace(new, run)
        except BaseException:
            if old is not None:
                os.replace(old, run)  # put the previous run back
            raise
    finally:
        shutil.rmtree(new, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
    notes = [f"{r['notebook']}: {r['status']}" for r in laptop.get("notebooks", []) if r.get("status") != "ok"]
    notes += [f"{r['notebook']}: row kept from an earlier run" for r in laptop.get("notebooks", [])
              if r.get("earlier_run")]
    return notes


def render(readme: str, report: Report) -> str:
    """README.md with its timings and results blocks written from `report`."""
    for name, body in (("timings", timings_block(report.laptop, report.ci)), ("results", results_block(report.results))):
        if body is not None:
            readme = replace_block(readme, name, body)
    return readme


def render_teaching(guide: str, report: Report, sources: Path = ROOT / "notebooks" / "src") -> str:
    """The teaching guide with its reading-time block (from `sources`) and laptop block (from `report`)."""
    for name, body in (("reading", reading_block(sources)),
                       ("laptop", laptop_block(report.laptop, sources, report.where))):
        if body is not None:
            guide = replace_block(guide, name, body, where="docs/teaching.md")
    return guide


def _diff(old: str, new: str, path: Path, limit: int = 40) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{_shown(path)} (as it is)",
                                      f"{_shown(path)} (as generated)", n=0, lineterm=""))
    return "\n".join(lines[:limit] + ([f"... ({len(lines) - limit} more lines)"] if len(lines) > limit else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--store", action="store_true",
                      help="copy the laptop (and ci) report from --outputs into --run, and do nothing else")
    mode.add_argument("--check", action="store_true", help="only report whether both files are up to date")
    parser.add_argument("--from-outputs", action="store_true",
                        help="read the report under --outputs (your own run) instead of the committed run")
    parser.add_argument("--run", type=Path, default=RUN_DIR, help="the committed course run (results/course_run/)")
    parser.add_argument("--outputs", type=Path, default=OUTPUTS_DIR, help="the course runs' output folder")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--teaching", type=Path, default=ROOT / "docs" / "teaching.md")
    parser.add_argument("--sources", type=Path, default=ROOT / "notebooks" / "src", help="the notebooks' sources")
    args = parser.parse_args(argv)
    if args.store:
        if args.from_outputs:
            parser.error("--store always reads --outputs; --from-outputs is for writing the blocks")
        notes = store(args.outputs, args.run)
        print(f"stored the laptop run of {_shown(args.outputs)} in {_shown(args.run)}"
              + "".join(f"\n  note: {n}" for n in notes)
              + f"\nnow run `.venv/bin/python tools/readme_tables.py` and commit {_shown(args.run)}/"
                " with README.md and docs/teaching.md")
        return 0
    report = read_outputs(args.outputs) if args.from_outputs else read_run(args.run)
    source = "the report in " + _shown(args.outputs) if args.from_outputs else "the committed run " + _shown(args.run)
    if report.laptop is None:
        print(f"no laptop summary in {source}: the timings and laptop blocks are left as they are"
              + ("" if args.from_outputs else " (store a run with --store)"), file=sys.stderr)
    files = ((args.readme, "README tables", lambda t: render(t, report)),
             (args.teaching, "teaching guide tables", lambda t: render_teaching(t, report, args.sources)))
    stale = False
    for path, label, rewrite in files:
        old = path.read_text()
        new = rewrite(old)
        stale |= new != old
        if args.check:
            print(f"{label}: up to date" if new == old else
                  f"{label}: differ from {source} (run tools/readme_tables.py)\n" + _diff(old, new, path))
        else:
            path.write_text(new)
            print(f"{label}:", f"rewritten from {source}" if new != old else "already up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
