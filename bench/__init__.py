"""Benchmarks, run on demand (``python -m bench``), never as timed tests.

Each benchmark module exposes ``run(quick: bool, emit) -> dict``: it prints its tables
through ``emit`` as it goes and returns a JSON-serialisable record.  Benchmarks report
timings and ratios; they never assert on a time.

This package file imports no torch, so ``bench.__main__`` can set allocator environment
variables (``--thp``) before torch loads.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mechverify.papers import PAPERS

BENCHMARKS = tuple(p.module for p in PAPERS if p.bench) + ("gpt",)   # gpt: our GPT vs HF GPT-2


@dataclass
class Timing:
    """Wall-clock and process CPU seconds of each timed repetition (warm-ups excluded).
    CPU time sums over threads; with other processes on the cores, wall time exceeds
    CPU time / threads."""

    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best_cpu(self) -> float:
        return min(self.cpu_times)

    @property
    def reps(self) -> int:
        return len(self.times)

    def as_dict(self) -> dict:
        return {"best_s": self.best, "median_s": self.median, "reps": self.reps,
                "warmup": self.warmup, "times_s": self.times, "best_cpu_s": self.best_cpu,
                "cpu_times_s": self.cpu_times}


def time_rounds(fns: dict[str, Callable[[], object]], *, reps: int, warmup: int = 1,
                min_reps: int = 1, budget_s: float = math.inf) -> dict[str, Timing]:
    """Time several callables in interleaved rounds (one call of each per round), so slow
    drifts of the machine (other processes, frequency) hit all of them alike.

    ``warmup`` untimed calls of each first; then up to ``reps`` rounds, stopping early once
    ``min_reps`` rounds are done and ``budget_s`` seconds have passed.  The garbage collector
    is off while timing.  Returns one :class:`Timing` per callable.
    """
    if reps < 1 or min_reps < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1, min_reps >= 1, warmup >= 0; got {reps}, {min_reps}, {warmup}")
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        out = {name: Timing(warmup=warmup) for name in fns}
        start = time.perf_counter()
        for r in range(reps):
            for name, fn in fns.items():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                t1, c1 = time.perf_counter(), time.process_time()
                out[name].times.append(t1 - t0)
                out[name].cpu_times.append(c1 - c0)
            if r + 1 >= min_reps and time.perf_counter() - start > budget_s:
                break
    finally:
        if was_enabled:
            gc.enable()
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain fixed-width table; ``align`` is one 'l'/'r' per column (default: first left)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                               for c, w, a in zip(row, widths, align)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
