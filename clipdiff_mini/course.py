"""Run the course headlessly: every notebook through papermill in one profile.

    python -m clipdiff_mini.course --profile laptop            # the whole course
    python -m clipdiff_mini.course --profile ci --only 00 04   # some notebooks

Executed notebooks go to ``outputs/<profile>/notebooks/``, each notebook's
reported numbers to ``outputs/<profile>/results/``, and a summary (status,
wall time, results) to ``outputs/<profile>/summary.md`` and ``summary.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clipdiff_mini.atomic_io import write_json, write_text
from clipdiff_mini.config import PROFILES, ConfigError, get_config, project_root
from clipdiff_mini.results import load_results


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """The course notebooks in order; `only` filters by number prefix or name."""
    books = sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) or b.stem == o for o in only)]
        if not books:
            raise ConfigError(f"no notebook matches {only}; notebooks: {[b.stem for b in list_notebooks()]}")
    return books


def run_notebook(book: Path, profile: str, out_dir: Path, parameters: dict | None = None) -> dict:
    """Execute one notebook with papermill; return its status and wall time."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    status, error = "ok", ""
    try:
        pm.execute_notebook(
            str(book), str(out_dir / book.name),
            parameters={"PROFILE": profile, **(parameters or {})},
            cwd=str(book.parent), kernel_name="python3", progress_bar=False,
        )
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        status, error = "failed", f"{type(exc).__name__}: {str(exc)[-2000:]}"
    return {"notebook": book.stem, "status": status, "seconds": round(time.perf_counter() - start, 1), "error": error}


def run_course(profile: str, only: list[str] | None = None) -> list[dict]:
    cfg = get_config(profile)
    base = cfg.path("output_dir") / profile
    rows = []
    for book in list_notebooks(only):
        print(f"[course] {book.stem} ({profile}) ...", flush=True)
        row = run_notebook(book, profile, base / "notebooks")
        print(f"[course] {book.stem}: {row['status']} in {row['seconds']} s", flush=True)
        if row["error"]:
            print(row["error"], file=sys.stderr)
        rows.append(row)
    write_summary(base, profile, rows)
    return rows


def write_summary(base: Path, profile: str, rows: list[dict]) -> None:
    results = load_results(base / "results")
    write_json(base / "summary.json", {"profile": profile, "notebooks": rows, "results": results})
    lines = [f"# Course run, profile `{profile}`", "", "| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['status']} | {r['seconds']} |" for r in rows]
    for name, res in results.items():
        lines += ["", f"## {name}", "", "| result | value | context |", "|---|---|---|"]
        for key, entry in res.get("results", {}).items():
            ctx = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "value")
            lines.append(f"| {key} | {entry['value']} | {ctx} |")
    write_text(base / "summary.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="laptop", choices=PROFILES)
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run (default: all)")
    args = parser.parse_args(argv)
    rows = run_course(args.profile, args.only)
    out = get_config(args.profile).path("output_dir") / args.profile
    print(f"[course] summary: {out / 'summary.md'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
