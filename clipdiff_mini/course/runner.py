"""Run the course headlessly: every notebook through papermill in one profile.

    python -m clipdiff_mini.course --profile laptop            # the whole course
    python -m clipdiff_mini.course --profile ci --only 00 04   # some notebooks

Executed notebooks go to ``outputs/<profile>/notebooks/`` (with their
figures), every figure also as a PNG file to
``outputs/<profile>/figures/<notebook>/`` (named by its number and section,
e.g. ``07_ddcap-fig03-section-5.png``; `clipdiff_mini.course.report.save_figures`),
each notebook's reported numbers to ``outputs/<profile>/results/``, a summary
(status, wall time, the kernel's peak memory, figures, results) to
``outputs/<profile>/summary.md`` and ``summary.json``, and the report to open
in a browser to ``outputs/<profile>/index.html`` (every notebook rendered to
HTML under ``html/``; `clipdiff_mini.course.report`).

The summary covers every notebook of the course that has run in this profile:
a run of some notebooks (``--only``) replaces their rows and keeps the others
from the summary already there, marked as from an earlier run with that run's
time (`write_summary`).

While a notebook runs, the terminal shows each code cell as it starts (time
since the notebook started, cell number, first line) and the notebook's
progress bars, one line per bar every ``PROGRESS_EVERY_S`` seconds plus its
final state (`NotebookProgress`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

from clipdiff_mini.atomic_io import write_json, write_text
from clipdiff_mini.config import PROFILES, ConfigError, get_config, project_root
from clipdiff_mini.course.report import count_figures, render_notebook, save_figures, write_index
from clipdiff_mini.course.results import load_results

# The kernel's environment for headless runs. MPLBACKEND: a caller's MPLBACKEND=Agg (pytest's conftest,
# an old course script, a shell profile) would replace ipykernel's inline backend and plt.show() would
# keep no figure; this is the backend ipykernel itself picks when the variable is unset.
# TQDM_MININTERVAL: tqdm redraws at most once a second (its default, 0.1 s, stores ten outputs a
# second in the executed notebook); tqdm reads TQDM_* variables as defaults for its arguments.
# PYTHONWARNINGS: without ipywidgets, tqdm.auto draws text bars (what a headless run wants) after a
# warning to install ipywidgets for a frontend that a headless run does not have.
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "TQDM_MININTERVAL": "1",
              "PYTHONWARNINGS": "ignore:IProgress not found"}
PROGRESS_EVERY_S = 15.0  # at most one terminal line per progress bar this often (plus its final state)
TIME_FORMAT = "%Y-%m-%d %H:%M"  # a run's and a notebook's "finished" in summary.json


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """The course notebooks in order; `only` filters by number prefix or name."""
    books = sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) or b.stem == o for o in only)]
        if not books:
            raise ConfigError(f"no notebook matches {only}; notebooks: {[b.stem for b in list_notebooks()]}")
    return books


def figures_folder(base: Path, notebook: str) -> Path:
    """Where a run in ``base`` (``outputs/<profile>``) writes the figures of `notebook` (its stem) as PNG files."""
    return Path(base) / "figures" / notebook


def run_notebook(book: Path, profile: str, out_dir: Path, parameters: dict | None = None,
                 progress: TextIO | None = None, progress_every: float = PROGRESS_EVERY_S,
                 figures_dir: Path | None = None) -> dict:
    """Execute one notebook with papermill; return its status, wall time, peak memory and figure count.

    The executed notebook (outputs and figures) goes to ``out_dir/<name>.ipynb``; with `figures_dir`,
    each of its figures also as a PNG file in that folder (`save_figures`: earlier files replaced),
    counted in ``figure_files``, also when the notebook failed (the figures it made before).
    `progress`: a text stream (the terminal) for `NotebookProgress` lines, or None for none.
    ``peak_rss_mib`` is the kernel process's peak resident memory (`KernelPeakMemory`).
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / book.name
    echo = NotebookProgress(book.stem, progress, n_cells=_code_cells(book) + 1, every=progress_every) \
        if progress is not None else None
    start = time.perf_counter()
    status, error = "ok", ""
    with kernel_environment(KERNEL_ENV), KernelPeakMemory() as memory:
        try:
            pm.execute_notebook(
                str(book), str(out),
                parameters={"PROFILE": profile, **(parameters or {})},
                cwd=str(book.parent), kernel_name="python3", progress_bar=False,
                stderr_file=echo,  # papermill hands the kernel's stderr (where tqdm draws) to echo.write
                on_cell_execute=echo.on_cell_execute if echo else None,  # nbclient hook: a code cell starts
                # the kernel's own log goes straight to the terminal; keep its errors, drop the notice
                # that a local kernel talks over TCP without encryption (printed once per notebook)
                extra_arguments=["--log-level=ERROR"],
            )
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            status, error = "failed", f"{type(exc).__name__}: {str(exc)[-2000:]}"
    if echo:
        echo.close()
    seconds = round(time.perf_counter() - start, 1)
    figure_files = None
    if figures_dir is not None and out.exists():
        try:
            figure_files = len(save_figures(out, figures_dir, prefix=book.stem))
        except Exception as exc:  # image files that cannot be written must not stop the course
            print(f"[course] {book.stem}: could not write the figures to {figures_dir}: {type(exc).__name__}: "
                  f"{exc}", file=sys.stderr)
    return {"notebook": book.stem, "status": status, "seconds": seconds, "peak_rss_mib": memory.peak_mib,
            "figures": count_figures(out) if out.exists() else 0, "figure_files": figure_files, "error": error,
            "finished": time.strftime(TIME_FORMAT)}


def _code_cells(book: Path) -> int:
    import nbformat

    return sum(c.cell_type == "code" and bool(c.source.strip()) for c in nbformat.read(book, as_version=4).cells)


@contextlib.contextmanager
def kernel_environment(env: dict[str, str]) -> Iterator[None]:
    """Set `env` in os.environ for the block, then restore it. The kernel papermill starts inherits
    this process's environment, and neither papermill nor nbclient passes an environment of its own."""
    saved = {k: os.environ.get(k) for k in env}
    if os.environ.get("PYTHONWARNINGS") and "PYTHONWARNINGS" in env:  # keep the caller's filters too
        env = {**env, "PYTHONWARNINGS": f"{os.environ['PYTHONWARNINGS']},{env['PYTHONWARNINGS']}"}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class NotebookProgress:
    """The terminal's view of a running notebook.

    * ``on_cell_execute`` (nbclient's hook, just before a code cell runs): one
      line with the time since the notebook started, the cell's number and its
      first line.
    * ``write`` (papermill's ``stderr_file``: the kernel's stderr as it comes):
      tqdm bars, which redraw in place with ``\r``, become one line per bar at
      most every `every` seconds plus the bar's final state; other stderr text
      (warnings) stays in the executed notebook and the report.

    Hand-written because papermill offers either its own bar over cells (no
    view of the notebook's bars, and the two would overwrite each other on one
    terminal line) or ``log_output``, which logs every redraw of every bar as a
    line of its own: thousands of lines for one training loop.
    """

    _PIECE = re.compile(r"([^\r\n]*)([\r\n])")

    def __init__(self, name: str, stream: TextIO, n_cells: int = 0, every: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.stream, self.n_cells, self.every, self.clock = name, stream, n_cells, every, clock
        self.start = clock()
        self.cells = 0
        self._buf = ""  # stderr text not yet ended by \r or \n
        self._in_bar = False  # the text being read follows a \r: a bar redraw
        self._latest = ""  # the latest complete redraw of the current bar
        self._shown = ""  # the last redraw printed
        self._shown_at = self.start

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def on_cell_execute(self, cell=None, cell_index=None, **_):
        self.cells += 1
        first = next((ln.strip() for ln in (cell.source if cell else "").splitlines() if ln.strip()), "")
        first = first if len(first) <= 70 else first[:69] + "\u2026"
        elapsed = int(self.clock() - self.start)
        of = f"/{self.n_cells}" if self.n_cells else ""
        self._print(f"[course] {self.name} {elapsed // 60:3d}:{elapsed % 60:02d}  cell {self.cells:2d}{of}  {first}")

    def write(self, text: str) -> int:
        self._buf += text
        end = 0
        for m in self._PIECE.finditer(self._buf):
            piece, sep = m.group(1), m.group(2)
            end = m.end()
            if self._in_bar and piece.strip():
                self._latest = piece
            if sep == "\n":
                if self._in_bar:
                    self._show(final=True)
                self._in_bar, self._latest, self._shown = False, "", ""
            else:
                if not self._in_bar:  # a new bar starts: its first line after `every` seconds
                    self._shown_at = self.clock()
                self._in_bar = True
        self._buf = self._buf[end:]
        if self._in_bar and self._buf.strip():
            self._latest = self._buf  # tqdm writes a whole redraw at a time
        if self._in_bar and self.clock() - self._shown_at >= self.every:
            self._show()
        return len(text)

    def _show(self, final: bool = False) -> None:
        if self._latest and self._latest.strip() != self._shown:
            self._print(f"{'':>{len('[course] ') + len(self.name) + 1}}{self._latest.strip()}")
            self._shown, self._shown_at = self._latest.strip(), self.clock()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._in_bar:
            self._show(final=True)
        self._in_bar = False


class KernelPeakMemory:
    """Peak resident memory, in MiB, of the notebook kernels started while the block runs.

    The kernel is a child process of this one (jupyter_client starts
    ``python -m ipykernel_launcher``); a thread finds it with psutil and reads,
    every `interval` seconds, its own high-water mark: ``VmHWM`` in
    ``/proc/<pid>/status`` on Linux, exact up to the last read before the
    kernel exits (psutil reports no peak on Linux, and
    ``getrusage(RUSAGE_CHILDREN)`` only the largest of all children ever
    waited for, not per notebook). Elsewhere the largest RSS sampled.
    Processes the kernel starts (Java for METEOR) are not counted.
    """

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._known: set[int] = set()

    def __enter__(self) -> "KernelPeakMemory":
        try:
            import psutil

            self._me = psutil.Process()
            self._known = {p.pid for p in self._me.children()}  # not ours: started before the block
        except Exception:  # no psutil: no measurement, the run goes on
            self._me = None
            return self
        self._thread = threading.Thread(target=self._watch, name="kernel-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._me is not None:
            self._stop.set()
            self._thread.join()
        if self.peak_mib is not None:
            self.peak_mib = round(self.peak_mib)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        import psutil

        for child in self._me.children():
            if child.pid in self._known:
                continue
            try:
                if not any("ipykernel" in part for part in child.cmdline()):
                    continue
                mib = _peak_rss_mib(child)
            except (psutil.Error, OSError):
                continue  # the kernel ended between listing and reading
            if mib is not None:
                self.peak_mib = max(self.peak_mib or 0.0, mib)


def _peak_rss_mib(process) -> float | None:
    try:
        with open(f"/proc/{process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except FileNotFoundError:  # not Linux (or the process is gone)
        pass
    return process.memory_info().rss / 2**20


def run_course(profile: str, only: list[str] | None = None, progress: TextIO | None = sys.stdout) -> list[dict]:
    cfg = get_config(profile)
    base = cfg.path("output_dir") / profile
    course = [b.stem for b in list_notebooks()]
    rows = []
    for book in list_notebooks(only):
        print(f"[course] {book.stem} ({profile}) ...", flush=True)
        row = run_notebook(book, profile, base / "notebooks", progress=progress,
                           figures_dir=figures_folder(base, book.stem))
        mem = f", peak memory {row['peak_rss_mib']} MiB" if row["peak_rss_mib"] is not None else ""
        print(f"[course] {book.stem}: {row['status']} in {row['seconds']} s{mem}, {row['figures']} figures",
              flush=True)
        if row["error"]:
            print(row["error"], file=sys.stderr)
        rows.append(row)
        executed = base / "notebooks" / book.name
        if executed.exists():
            line = f"{row['status']}, {row['seconds']} s, profile {profile}"
            try:
                render_notebook(executed, base / "html" / f"{book.stem}.html", profile=profile, line=line)
            except Exception as exc:  # a page that cannot be rendered must not stop the course
                print(f"[course] {book.stem}: could not render the HTML page: {type(exc).__name__}: {exc}",
                      file=sys.stderr)
        # after every notebook: an interrupted run still has its report
        write_summary(base, profile, rows, notebooks=course)
    return rows


def write_summary(base: Path, profile: str, rows: list[dict], notebooks: list[str] | None = None) -> list[dict]:
    """summary.json, summary.md and the report's index.html for `rows` (this run's) and earlier rows.

    The rows of notebooks not in `rows` are kept from the ``summary.json`` already in `base`, marked
    ``"earlier_run": true`` with the time that run finished them (``"finished"``), so a run of some
    notebooks (``--only``) does not drop the others from the report. `notebooks`: the course's
    notebooks (stems) in order; rows come in that order, and a kept row of a notebook no longer among
    them is dropped (without it, rows are ordered by name). Returns the rows written.
    """
    now = time.strftime(TIME_FORMAT)
    previous = _read_summary(base / "summary.json")
    ran = {r["notebook"] for r in rows}
    kept = [{**old, "earlier_run": True, "finished": old.get("finished") or previous.get("finished")}
            for old in previous.get("notebooks", [])
            if old.get("notebook") not in ran and (notebooks is None or old.get("notebook") in notebooks)]
    order = {name: i for i, name in enumerate(notebooks or [])}
    merged = sorted([*({**r, "finished": r.get("finished") or now, "earlier_run": False} for r in rows), *kept],
                    key=lambda r: (order.get(r["notebook"], len(order)), r["notebook"]))
    for r in merged:
        folder = figures_folder(base, r["notebook"])
        r["figures_dir"] = folder.relative_to(base).as_posix() if folder.is_dir() else None
    results = load_results(base / "results")
    setup = os.environ.get("CLIPDIFF_SETUP_SECONDS")  # set by tools/run_course.sh: the install step's time
    setup = float(setup) if setup else (previous.get("setup_seconds") if kept else None)
    write_json(base / "summary.json", {"profile": profile, "notebooks": merged, "results": results,
                                       "finished": now, "threads": torch_threads(), "setup_seconds": setup})
    lines = [f"# Course run, profile `{profile}`", "", "Open `index.html` in this folder for the report. "
             "Each notebook's figures are PNG files in `figures/<notebook>/`."]
    if kept:
        lines += ["", f"This run finished {now}. Rows marked *earlier run* are kept from earlier runs, with the "
                  "time each notebook finished: those notebooks did not run this time."]
    lines += ["", "| notebook | status | seconds | peak memory (MiB) | figures | figure files |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['status']}{_earlier(r)} | {r['seconds']} | {_blank(r.get('peak_rss_mib'))} | "
              f"{_blank(r.get('figures'))} | {_folder(r)} |"
              for r in merged]
    for name, res in results.items():
        lines += ["", f"## {name}", "", "| result | value | context |", "|---|---|---|"]
        for key, entry in res.get("results", {}).items():
            ctx = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "value")
            lines.append(f"| {key} | {entry['value']} | {ctx} |")
    write_text(base / "summary.md", "\n".join(lines) + "\n")
    write_index(base, profile, merged, results)
    return merged


def _read_summary(path: Path) -> dict:
    """The summary.json of an earlier run, or {} when there is none or it cannot be read."""
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"[course] {path} cannot be read ({type(exc).__name__}: {exc}); earlier rows are not kept",
              file=sys.stderr)
        return {}
    return summary if isinstance(summary, dict) else {}


def _earlier(row: dict) -> str:
    if not row.get("earlier_run"):
        return ""
    return f" (earlier run{', ' + row['finished'] if row.get('finished') else ''})"


def _folder(row: dict) -> str:
    return f"`{row['figures_dir']}/`" if row.get("figures_dir") else ""


def torch_threads() -> int:
    """The threads each notebook kernel's torch uses (its default: the CPU cores, unless OMP_NUM_THREADS says)."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def _blank(v) -> str:
    return "" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="laptop", choices=PROFILES)
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run (default: all)")
    args = parser.parse_args(argv)
    rows = run_course(args.profile, args.only)
    out = get_config(args.profile).path("output_dir") / args.profile
    print(f"[course] summary: {out / 'summary.md'}")
    print(f"[course] report:  {(out / 'index.html').as_uri()}  (open it in a browser)")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
