"""mitmdump script of the benchmark: records the proxy's garbage-collector pauses.

With ``--set bench_gc_log=PATH`` it appends a line per collection of 1 ms or more to PATH:
``<time.monotonic() at its start> <generation> <milliseconds>``. The clock is the machine's, so
the bench picks out the pauses that fell within one of its measurements.
"""

from __future__ import annotations

import gc
import time
from typing import IO, Any

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader


class GcPauses:
    def __init__(self) -> None:
        self.log: IO[str] | None = None
        self.started = 0.0

    def load(self, loader: Loader) -> None:
        loader.add_option("bench_gc_log", str, "", "Append the collector's pauses to this file.")

    def configure(self, updated: set[str]) -> None:
        if "bench_gc_log" in updated and ctx.options.bench_gc_log and self.log is None:
            self.log = open(ctx.options.bench_gc_log, "a", buffering=1)
            gc.callbacks.append(self.collecting)

    def collecting(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.monotonic()
        elif self.log is not None and (ms := (time.monotonic() - self.started) * 1000) >= 1:
            self.log.write(f"{self.started:.6f} {info['generation']} {ms:.1f}\n")


addons = [GcPauses()]


def longest(path: str, start: float, end: float) -> float:
    """The longest pause, in ms, that began between `start` and `end` (time.monotonic())."""
    try:
        with open(path) as f:
            pauses = [line.split() for line in f]
    except FileNotFoundError:
        return 0.0
    return max((float(ms) for t, _, ms in pauses if start <= float(t) <= end), default=0.0)
