"""Shared timing for the benchmark scripts: alternate the two sides, summarise repeats, say which CPU ran them.

- `alternate(sides, repeats, calls=1)`: time each side `repeats` rounds of `calls` calls, the sides taking turns
  call by call and the order reversed on every turn (A B, B A, A B, ...), so that drift in the machine's speed (other
  processes on a shared CPU, thermal state, caches) falls on every side alike. Returns seconds per call, per side
  and round.
- `Spread`: the median of repeated figures with their range; printed as `4.52 [4.31-4.88]` (median [min-max]).
- `ratios(num, den)`: the paired per-round ratios num[i] / den[i] as a `Spread` (rounds that ran side by side).
- `cpu()`: the machine, `model="AMD EPYC 7B13" cores=2 torch_threads=2` (the model name from /proc/cpuinfo, else
  `platform`); `set_threads(n)`: torch's intra-op threads for a run (`--threads`).

The scripts print figures; none of them asserts a timing (a shared 2-core machine is too noisy for that).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one figure: `median`, `lo` / `hi` (min and max), `n` values."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        return cls(tuple(float(v) for v in values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def n(self) -> int:
        return len(self.values)

    def scaled(self, factor: float) -> Spread:
        return Spread(tuple(v * factor for v in self.values))

    def fmt(self, digits: int = 2) -> str:
        """`median [min-max]` with `digits` decimals."""
        return f"{self.median:.{digits}f} [{self.lo:.{digits}f}-{self.hi:.{digits}f}]"

    def __str__(self) -> str:
        return self.fmt()


def alternate(sides: Sequence[Callable[[], Any]], repeats: int, calls: int = 1) -> list[list[float]]:
    """Seconds per call of each side in each of `repeats` rounds ([side][round]); in a round every side runs `calls`
    times, the sides taking turns and the order reversed on every turn."""
    if repeats < 1 or calls < 1:
        raise ValueError("repeats and calls must be at least 1")
    times = [[0.0] * repeats for _ in sides]
    order = list(range(len(sides)))
    turn = 0
    for r in range(repeats):
        for _ in range(calls):
            for s in order if turn % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                sides[s]()
                times[s][r] += time.perf_counter() - t0
            turn += 1
    return [[t / calls for t in side] for side in times]


def ratios(num: Sequence[float], den: Sequence[float]) -> Spread:
    """Per-round ratios num[i] / den[i] of two sides timed side by side."""
    return Spread.of([a / b for a, b in zip(num, den, strict=True)])


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `platform.processor()` or the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu() -> str:
    """`model="..." cores=N torch_threads=T`."""
    return f'model="{cpu_model()}" cores={cores()} torch_threads={torch.get_num_threads()}'


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads when `threads` is given (else keep torch's default)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
