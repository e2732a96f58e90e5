"""Shared timing for the benchmark scripts: alternate the two sides, summarise repeats, say which CPU ran them.

- `alternate(sides, repeats, calls=1)`: time each side `repeats` rounds of `calls` calls, the sides taking turns
  call by call and the order reversed on every turn (A B, B A, A B, ...), so that drift in the machine's speed (other
  processes on a shared CPU, thermal state, caches) falls on every side alike. Returns seconds per call, per side
  and round.
- `Spread`: the median of repeated figures with their range; printed as `4.52 [4.31-4.88]` (median [min-max]).
- `ratios(num, den)`: the paired per-round ratios num[i] / den[i] as a `Spread` (rounds that ran side by side).
- `cpu()`: the machine, `model="AMD EPYC 7B13" cores=2 torch_threads=2` (the model name from /proc/cpuinfo, else
  `platform`); `set_threads(n)`: torch's intra-op threads for a run (`--threads`).
- `positive_ints(parser, args, names)`: each of the options `names` (dest names) given is at least 1, else the
  parser's one error line.
- `matmul_peak(dtype, size, repeats, device, shapes)`: a device's measured matmul peak (FLOP/s): the best of
  `repeats` matmuls of each shape (default one square `size`); `flop_counter()`: torch's `FlopCounterMode` that
  also counts the CPU's fused attention kernel; `status_kib(field)`: a field of /proc/self/status in KiB (`VmHWM`,
  the process's peak resident memory; `VmRSS`).

The scripts print figures; none of them asserts a timing (a shared 2-core machine is too noisy for that).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


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


def positive_ints(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]) -> None:
    """`parser.error` (usage, one error line, exit 2) for the first of the integer options `names` (dest names) that
    was given below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def matmul_peak(
    dtype: torch.dtype,
    size: int = 4096,
    repeats: int = 3,
    device: str | torch.device = "cpu",
    shapes: Sequence[tuple[int, int, int]] = (),
) -> float:
    """The device's matmul peak (FLOP/s) for `dtype`: the best 2·m·k·n / time over `repeats` timed products (after one
    untimed) of each shape (m, k, n) in `shapes` (default: the square `size`), with the threads torch has now; CUDA
    timed to completion (`synchronize`)."""
    device = torch.device(device)
    best = 0.0
    for m, k, n in shapes or [(size, size, size)]:
        x, y = torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype)
        torch.matmul(x, y)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(x, y)
            _sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0))
        del x, y
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flop_counter() -> Any:
    """`torch.utils.flop_counter.FlopCounterMode` (no display) that counts, besides its own table (matrix products:
    2·m·n·k each; CUDA's fused attention kernels: 4·B·H·T_q·T_k·d, every key counted, causal or not), the CPU's fused
    attention kernel `_scaled_dot_product_flash_attention_for_cpu` by the same attention rule. `get_total_flops()`
    after the block."""

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def status_kib(field: str) -> int:
    """`field` of /proc/self/status in KiB (Linux): `VmHWM` (peak resident memory of this process's address space; not
    carried over from a forking parent, as getrusage's ru_maxrss is) or `VmRSS` (resident now); 0 where unreadable."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(m.group(1)) if m else 0
