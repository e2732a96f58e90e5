"""The benchmark scripts run and print their closing line (figures are printed, never asserted as timings); their
shared timing helper alternates the sides and summarises repeats."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
#: a figure printed as `median [min-max]`
SPREAD = r"(\S+) \[(\S+)-(\S+)\]"
CPU = r"\w+\[cpu\]: model=\".*\" cores=\d+ torch_threads=\d+"


@pytest.fixture(scope="module")
def timing():
    """benchmarks/timing.py, imported from its file (the scripts import it as their neighbour)."""
    name = "benchmarks_timing"
    spec = importlib.util.spec_from_file_location(name, BENCH / "timing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def spread_ok(m, first: int) -> bool:
    """median, min, max parse as numbers with min <= median <= max."""
    median, lo, hi = (float(m.group(i)) for i in range(first, first + 3))
    return lo <= median <= hi


def test_alternate_takes_turns_and_reverses_the_order(timing):
    t = timing
    calls = []
    times = t.alternate([lambda: calls.append("a"), lambda: calls.append("b")], repeats=2, calls=2)
    assert "".join(calls) == "abbaabba"
    assert len(times) == 2 and all(len(side) == 2 and min(side) >= 0 for side in times)
    with pytest.raises(ValueError):
        t.alternate([lambda: None], repeats=0)


def test_spread_prints_median_and_range(timing):
    t = timing
    s = t.Spread.of([4.88, 4.31, 4.52])
    assert (s.median, s.lo, s.hi, s.n) == (4.52, 4.31, 4.88, 3)
    assert str(s) == "4.52 [4.31-4.88]" and s.fmt(1) == "4.5 [4.3-4.9]"
    assert str(t.ratios([2.0, 9.0], [1.0, 3.0])) == "2.50 [2.00-3.00]"
    assert re.fullmatch(r'model=".+" cores=\d+ torch_threads=\d+', t.cpu())


def test_attention_memory_runs_and_split_agrees_with_eager():
    out = subprocess.run(
        [sys.executable, str(BENCH / "attention_memory.py"), "--tokens", "64", "--batch", "2", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(CPU, lines[0]), lines[0]
    pattern = (
        rf"attention_memory: tokens=64 batch=2 eager_mib={SPREAD} split_mib={SPREAD} ratio={SPREAD} max_abs_diff=(\S+)"
    )
    m = re.fullmatch(pattern, lines[-1])
    assert m, lines[-1]
    assert all(spread_ok(m, i) for i in (1, 4, 7)) and float(m.group(10)) < 1e-5


def test_trace_speed_runs_and_engine_matches_reference():
    args = ["--model", "zoo:qwen2vl", "--samples", "1", "--noise-samples", "2", "--repeats", "2", "--forwards", "1"]
    out = subprocess.run(
        [sys.executable, str(BENCH / "trace_speed.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(CPU, lines[0]), lines[0]
    pattern = rf"trace_speed\[zoo:qwen2vl\]: speedup={SPREAD} max_abs_diff=(\S+) hook_overhead={SPREAD} \(.*\)"
    assert re.fullmatch(pattern, lines[1]), lines[1]
    m = re.fullmatch(rf"trace_speed: speedup={SPREAD} max_abs_diff=(\S+) hook_overhead={SPREAD}", lines[-1])
    assert m, lines[-1]
    assert spread_ok(m, 1) and spread_ok(m, 5) and float(m.group(4)) <= 1e-4


@pytest.mark.slow
def test_real_shape_runs_and_engine_matches_reference():
    """Every part of the benchmark at reduced depth and width (the figures themselves are printed, never asserted)."""
    args = ["--layers", "2", "--width", "32", "--slice-layers", "1", "--slice-width", "256", "--eval-batch", "1"]
    out = subprocess.run(
        [sys.executable, str(BENCH / "real_shape.py"), *args, "--memory-samples", "2,4", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(CPU, lines[0]), lines[0]
    for family in ("llava", "paligemma", "qwen2vl"):
        pattern = (
            rf"real_shape\[{family}\]: layers=2 image_tokens=\d+ speedup={SPREAD} exact_ceiling=(\S+) "
            rf"fraction_of_ceiling={SPREAD} max_abs_diff=(\S+) recording_overhead={SPREAD} \(.*\)"
        )
        m = next(filter(None, (re.fullmatch(pattern, ln) for ln in lines)), None)
        assert m, out.stdout
        assert all(spread_ok(m, i) for i in (1, 5, 9)) and float(m.group(4)) > 1 and float(m.group(8)) <= 1e-4
    pattern = (
        rf"real_shape: min_fraction_of_ceiling={SPREAD} max_abs_diff=(\S+) flop_efficiency_eval={SPREAD} "
        rf"flop_efficiency_trace={SPREAD} memory_ratio=(\S+) recording_overhead={SPREAD}"
    )
    m = re.fullmatch(pattern, lines[-1])
    assert m, lines[-1]
    assert float(m.group(4)) <= 1e-4 and all(spread_ok(m, i) for i in (1, 5, 8, 12))
    assert all(float(m.group(i)) > 0 for i in (5, 8, 11))


def test_score_cost_runs_and_score_answers_as_eval_does():
    args = ["--limit", "24", "--train-limit", "120", "--repeats", "2", "--threads", "1"]
    out = subprocess.run(
        [sys.executable, str(BENCH / "score_cost.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(CPU, lines[0]), lines[0]
    m = re.fullmatch(rf"score_cost: eval={SPREAD} score={SPREAD} ratio={SPREAD}", lines[-1])
    assert m, lines[-1]
    assert all(spread_ok(m, i) for i in (1, 4, 7))


def test_serve_load_runs_both_servers_and_prints_each_level():
    args = ["--clients", "1,2", "--requests", "4", "--repeats", "2", "--train-limit", "120", "--threads", "1"]
    out = subprocess.run(
        [sys.executable, str(BENCH / "serve_load.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(CPU, lines[0]), lines[0]
    side = r"{0}_rps={1} {0}_p50_ms={1} {0}_p95_ms={1}"
    pattern = rf"serve_load: clients=(\d+) {side.format('on', SPREAD)} {side.format('off', SPREAD)} speedup={SPREAD}"
    matches = [re.fullmatch(pattern, line) for line in lines[-2:]]
    assert all(matches), lines
    assert [m.group(1) for m in matches] == ["1", "2"]
    assert all(spread_ok(m, i) for m in matches for i in range(2, 21, 3))
