"""The benchmark scripts run and print their closing line (figures are printed, never asserted as timings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_attention_memory_runs_and_split_agrees_with_eager():
    out = subprocess.run(
        [sys.executable, str(BENCH / "attention_memory.py"), "--tokens", "64", "--batch", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    pattern = r"attention_memory: tokens=64 batch=2 eager_mib=\S+ split_mib=\S+ ratio=\S+ max_abs_diff=(\S+)"
    m = re.fullmatch(pattern, last)
    assert m, last
    assert float(m.group(1)) < 1e-5


@pytest.mark.slow
def test_real_shape_runs_and_engine_matches_reference():
    """Every part of the benchmark at reduced depth and width (the figures themselves are printed, never asserted)."""
    args = ["--layers", "2", "--width", "32", "--slice-layers", "1", "--slice-width", "256", "--eval-batch", "1"]
    out = subprocess.run(
        [sys.executable, str(BENCH / "real_shape.py"), *args, "--memory-samples", "2,4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    for family in ("llava", "paligemma", "qwen2vl"):
        pattern = (
            rf"real_shape\[{family}\]: layers=2 image_tokens=\d+ speedup=\S+ exact_ceiling=(\S+) "
            r"fraction_of_ceiling=\S+ max_abs_diff=(\S+) \(.*\)"
        )
        m = next(filter(None, (re.fullmatch(pattern, ln) for ln in lines)), None)
        assert m, out.stdout
        assert float(m.group(1)) > 1 and float(m.group(2)) <= 1e-4
    pattern = (
        r"real_shape: min_fraction_of_ceiling=\S+ max_abs_diff=(\S+) flop_efficiency_eval=(\S+) "
        r"flop_efficiency_trace=(\S+) memory_ratio=(\S+)"
    )
    m = re.fullmatch(pattern, lines[-1])
    assert m, lines[-1]
    assert float(m.group(1)) <= 1e-4 and all(float(m.group(i)) > 0 for i in (2, 3, 4))
