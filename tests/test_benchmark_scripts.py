"""The benchmark scripts run and print their closing line (figures are printed, never asserted as timings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
