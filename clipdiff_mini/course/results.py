"""Numbers a notebook reports, collected for the course summary.

A notebook calls ``log = ResultLog(cfg, "04_clip")`` and ``log.add("val R@1",
0.83, chance=0.01)``; every call rewrites ``outputs/<profile>/results/<name>.json``
atomically, and the course runner gathers these files into one summary."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from clipdiff_mini.atomic_io import write_json


class ResultLog:
    def __init__(self, cfg, notebook: str):
        self.notebook = notebook
        self.path: Path = cfg.path("output_dir") / cfg.profile / "results" / f"{notebook}.json"
        self.entries: dict[str, dict[str, Any]] = {}
        self.profile = cfg.profile

    def add(self, key: str, value: Any, **context: Any) -> Any:
        """Record `value` under `key` (with optional context such as chance level or units)."""
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        self.entries[key] = {"value": _plain(value), **{k: _plain(v) for k, v in context.items()}}
        write_json(self.path, {"notebook": self.notebook, "profile": self.profile,
                               "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "results": self.entries})
        return value

    def table(self) -> str:
        lines = [f"{k}: {v['value']}" + "".join(f"  ({c}={v[c]})" for c in v if c != "value")
                 for k, v in self.entries.items()]
        return "\n".join(lines)


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """All result files in `folder`, keyed by notebook name."""
    out = {}
    for f in sorted(Path(folder).glob("*.json")):
        out[f.stem] = json.loads(f.read_text())
    return out


def _plain(v: Any) -> Any:
    """JSON-friendly version of numbers that may be numpy or torch scalars."""
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v
