"""Timing a captioner fairly (notebook 08): warm-up runs first, then the median of
several timed runs, with the machine it ran on said beside the numbers.

    t = time_runs(lambda: model.sample(cond), warmup=1, repeats=5)
    t["median_s"], t["times_s"]                      # seconds per run
    rate = captions_per_second(lambda: model.sample(cond), n_captions=64)
    machine()                                          # "cpu, 2 torch threads" / "cuda (NVIDIA ...), 16 threads"
    side_by_side({"before": old, "after": new}, n_captions=64)   # variants timed in alternation

Why a median after warm-up: the first call of a model pays one-off costs
(memory allocation, kernel selection, lazily built caches), and a shared
machine adds occasional long runs; the median of a few runs after one or two
discarded ones is stable where a mean or a single run is not. On a GPU, the
clock only stops after ``torch.cuda.synchronize()`` (work is queued
asynchronously); `time_runs` synchronises when ``device`` is a CUDA device.
Variants compared in one run (`side_by_side`) are timed in rounds, one run
of each per round, so that a change of the machine's load during the
measurement falls on all of them alike instead of on whichever ran last.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def time_runs(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5, device=None,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Call `fn` `warmup` times untimed, then `repeats` times timed; returns {"median_s", "times_s" (list),
    "min_s", "warmup", "repeats"}. `clock` is injectable (tests); `device` "cuda" synchronises around each run."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} (>= 1), warmup={warmup} (>= 0)")
    sync = (lambda: torch.cuda.synchronize()) if device is not None and torch.device(device).type == "cuda" \
        else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return {"median_s": statistics.median(times), "times_s": times, "min_s": min(times), "warmup": warmup,
            "repeats": repeats}


def captions_per_second(fn: Callable[[], Any], n_captions: int, **kw) -> dict[str, Any]:
    """`time_runs` of `fn`, which captions `n_captions` pictures per call, plus "captions_per_s" and
    "ms_per_caption" from the median run."""
    t = time_runs(fn, **kw)
    t["captions_per_s"] = n_captions / max(t["median_s"], 1e-12)
    t["ms_per_caption"] = 1000 * t["median_s"] / n_captions
    return t


def machine(device=None) -> str:
    """The device and the number of CPU threads torch uses, as one line to print beside timings."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    name = dev.type
    if dev.type == "cuda" and torch.cuda.is_available():
        name = f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"{name}, {torch.get_num_threads()} torch threads"


def side_by_side(variants: dict[str, Callable[[], Any]], n_captions: int, *, warmup: int = 1, repeats: int = 5,
                 device=None, clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[str, Any]]:
    """`captions_per_second` of each variant (name -> fn captioning `n_captions` pictures per call), measured
    in one run: every variant's `warmup` calls first, then `repeats` rounds that time each variant once
    in turn. Returns {name: {"median_s", "times_s", "min_s", "captions_per_s", "ms_per_caption", ...}}."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} (>= 1), warmup={warmup} (>= 0)")
    sync = (lambda: torch.cuda.synchronize()) if device is not None and torch.device(device).type == "cuda" \
        else (lambda: None)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = clock()
            fn()
            sync()
            times[name].append(clock() - t0)
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"median_s": med, "times_s": ts, "min_s": min(ts), "warmup": warmup, "repeats": repeats,
                     "captions_per_s": n_captions / max(med, 1e-12), "ms_per_caption": 1000 * med / n_captions}
    return out
