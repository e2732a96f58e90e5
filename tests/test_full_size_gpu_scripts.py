"""benchmarks/full_size.py and benchmarks/gpu.py run end to end at a tiny width on the CPU, so that neither rots
between the machines they are meant for: every step of the real code path runs, the printed keys are there, the
scratch folder is gone afterwards, and a spent budget skips steps instead of overrunning (figures printed, never
asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import replicas

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
NUM = r"[0-9.e+-]+"

pytestmark = pytest.mark.skipif(
    not replicas.available(), reason=f"{replicas.REPLICAS} (the real checkpoints' non-weight files) absent"
)


def run(script: str, *args: str) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()


def line(lines: list[str], prefix: str) -> str:
    found = [ln for ln in lines if ln.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def keys(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", text))


def test_full_size_builds_loads_runs_and_cleans_up(tmp_path):
    lines = run("full_size.py", "--tiny", "--scratch", str(tmp_path), "--check", "--threads", "1")
    assert re.fullmatch(r'full_size\[cpu\]: model=".*" cores=\d+ torch_threads=1', lines[0]), lines[0]
    build = keys(line(lines, "full_size[build]:"))
    assert int(build["params"]) > 0 and build["shards"] == "1"
    assert keys(line(lines, "full_size[load]:"))["dtype"] == "bfloat16"
    for step in ("eval", "corrupt"):
        figures = keys(line(lines, f"full_size[{step}]:"))
        assert figures["samples"] == "2" and float(figures["tflop"]) > 0 and float(figures["gflops"]) > 0
    summary = keys(line(lines, "full_size: "))
    names = [
        *("weights_gib", "peak_rss_gib", "rss_after_load_gib", "memory_target_gib", "memory_ratio", "load_s"),
        *("eval_s_per_sample", "corrupt_s_per_sample", "eval_peak_fraction", "corrupt_peak_fraction", "gflops"),
        *("peak_gflops", "peak_fraction"),
    ]
    assert set(names) <= set(summary), summary
    assert all(re.fullmatch(NUM, summary[k]) for k in names), summary
    # a tiny model's process fits under 2 GiB: the memory check passes here
    assert line(lines, "full_size[check]:").startswith("full_size[check]: PASS")
    assert float(keys(line(lines, "full_size[peak]:"))["matmul_peak_gflops"]) > 0
    assert line(lines, "full_size[cleanup]:").startswith("full_size[cleanup]: removed ")
    assert list(tmp_path.iterdir()) == []


def test_full_size_skips_with_a_reason_when_the_replicas_are_absent(tmp_path):
    lines = run("full_size.py", "--tiny", "--scratch", str(tmp_path), "--replicas", str(tmp_path / "none"))
    assert lines[-1].startswith("full_size: SKIP ") and "absent" in lines[-1]
    assert list(tmp_path.iterdir()) == []


def test_gpu_script_runs_every_step_on_the_cpu_when_allowed():
    args = ["--tiny", "--allow-cpu", "--threads", "1", "--eval-samples", "2", "--eval-batch", "2"]
    lines = run("gpu.py", *args, "--trace-samples", "1", "--noise-samples", "2", "--budget-s", "300")
    device = keys(line(lines, "gpu[device]:"))
    assert device["device"] == "cpu" and device["dtype"] == "bfloat16"
    assert float(keys(line(lines, "gpu[peak]:"))["matmul_peak_tflops"]) > 0
    build = keys(line(lines, "gpu[build]:"))
    assert build["image_tokens"] == "576" and build["layers"] == "2" and build["processor"] == "replica"
    assert keys(line(lines, "gpu[eval]:"))["samples"] == "2"
    assert keys(line(lines, "gpu[trace_resid]:"))["restorations"] == "6"  # 2 layers x 3 groups
    full = keys(line(lines, "gpu[trace_full]:"))
    assert full["restorations"] == "18" and full["draws"] == "2"
    assert float(full["flop_limit_s"]) > 0 and float(full["peak_fraction"]) > 0
    summary = keys(lines[-1])
    assert lines[-1].startswith("gpu: ") and summary["skipped"] == "none" and summary["dtype"] == "bfloat16"
    names = [
        *("eval_s_per_sample", "resid_trace_s_per_sample", "full_trace_s_per_sample", "full_trace_tflop"),
        *("full_trace_flop_limit_s", "full_trace_peak_fraction", "peak_memory_gib", "elapsed_s", "budget_s"),
    ]
    assert all(re.fullmatch(NUM, summary[k]) for k in names), summary


def test_gpu_script_stops_at_its_budget_and_prints_what_it_has():
    lines = run("gpu.py", "--tiny", "--allow-cpu", "--threads", "1", "--budget-s", "0")
    assert line(lines, "gpu[eval]:").startswith("gpu[eval]: skipped (needs about")
    summary = keys(lines[-1])
    assert summary["skipped"] == "eval,trace_resid,trace_full"
    assert summary["eval_s_per_sample"] == summary["full_trace_s_per_sample"] == "n/a"


def test_gpu_script_refuses_the_cpu_unless_allowed():
    out = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--device", "cuda", "--tiny"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert out.returncode == 2 and "--allow-cpu" in out.stdout


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("full_size.py", ["--band", "1-9"], "band 1-9 is out of range: the model has layers 0..1"),
        ("full_size.py", ["--band", "a-b"], "--band must be A-B"),
        ("full_size.py", ["--data", "nope:test"], "unknown dataset 'nope'"),
        ("gpu.py", ["--allow-cpu", "--data", "nope:test"], "unknown dataset 'nope'"),
    ],
)
def test_a_bad_band_or_dataset_is_one_error_line_before_anything_is_built(tmp_path, script, args, message):
    scratch = ["--scratch", str(tmp_path)] if script == "full_size.py" else []
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--tiny", *scratch, *args], capture_output=True, text=True, timeout=300
    )
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert out.returncode == 2 and len(errors) == 1 and message in errors[0], out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "[build]" not in out.stdout
    assert list(tmp_path.iterdir()) == []
