"""Executors (`--executor local|ray`): the Ray executor's records and summaries equal the local run's on every command
that takes it; a Ray worker killed with SIGKILL mid-run loses and duplicates nothing; a driver killed mid-run resumes
on either executor; every bad `--executor` / `--workers` is one line, exit 2, nothing written.

The Ray tests run a real local Ray cluster with 2 CPU workers of one thread each (`ray` is part of `make test`'s
install: the `ray` extra)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vrprobe import api
from vrprobe.runtime.runs import read_records

from conftest import run_cli
from numerics import FORWARD, tolerance

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'vrprobe[ray]')")
# one pytest worker runs every test here, one after another: two local Ray clusters side by side would share 2 cores
pytestmark = pytest.mark.xdist_group("ray")

# every figure below comes from a float32 forward: one run's numbers equal another's up to the FORWARD rounding budget
# (another thread count, another batch position sums in another order)
TOL = tolerance(np.float32, 1.0, FORWARD)


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal structure, equal strings/ints/bools, floats within TOL of each other (relative above magnitude 1)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, str):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL * max(1.0, abs(a)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from vrprobe.cli import main; main()", "--quiet", *args]


def parts(out: Path, table: str) -> int:
    folder = out / table
    return len(list(folder.glob("part-*.parquet"))) if folder.is_dir() else 0


def children(root: int) -> dict[int, str]:
    """Every process below `root` (pid -> command line), read from /proc."""
    parent: dict[int, int] = {}
    cmd: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in found:
                found[c] = cmd.get(c, "")
                frontier.append(c)
    return found


def wait_for(out: Path, table: str, n: int, proc: subprocess.Popen, deadline_s: float = 180) -> None:
    deadline = time.time() + deadline_s
    while parts(out, table) < n:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, f"fewer than {n} parts after {deadline_s} s"
        time.sleep(0.02)


TRACE = ["trace", "--model", "zoo:llava", "--data", "easy-vqa:test", "--limit", "48", "--kinds", "resid"]
TRACE += ["--noise-samples", "3", "--seed", "2"]


@pytest.fixture(scope="module")
def local_trace(tmp_path_factory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("trace") / "local"
    r = run_cli(*TRACE, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return sorted(read_records(out, "traces"), key=lambda r: (r["index"], r["kind"], r["layer"], r["group"]))


def trace_rows(out: Path) -> list[dict[str, Any]]:
    rows = read_records(out, "traces")
    keys = Counter((r["sample_id"], r["kind"], r["layer"], r["group"]) for r in rows)
    assert max(keys.values()) == 1, "a traced cell was written twice"
    return sorted(rows, key=lambda r: (r["index"], r["kind"], r["layer"], r["group"]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "spark"], "unknown --executor 'spark'"),
        (["--executor", "ray:"], "needs an address after the colon"),
        (["--workers", "2"], "--workers applies to --executor ray"),
        (["--executor", "ray", "--workers", "0"], "--workers must be an integer >= 1"),
    ],
)
def test_bad_executor_options_are_one_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    r = run_cli("eval", "--model", "zoo:llava", "--data", "easy-vqa:test", "--out", str(out), *args)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


def test_without_ray_the_error_names_the_extra(tmp_path):
    out = tmp_path / "run"
    code = "import sys; sys.modules['ray'] = None\nfrom vrprobe.cli import main; main()"
    args = ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test", "--out", str(out), "--executor", "ray"]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "pip install 'vrprobe[ray]'" in lines[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs for this module (the executors join it and leave it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


SMALL = {"model": "zoo:llava", "data": "easy-vqa:test"}
RUNS = {
    "eval": (api.eval, {**SMALL, "limit": 24, "batch_size": 4}),
    "corrupt": (api.corrupt, {**SMALL, "band": "1-2", "limit": 24, "batch_size": 4}),
    "knockout": (api.knockout, {**SMALL, "limit": 12, "batch_size": 4}),
    "trace": (api.trace, {**SMALL, "limit": 6, "kinds": ("resid",), "noise_samples": 3}),
    "study": (
        api.study,
        {"models": "zoo:llava", "data": "easy-vqa:test", "limit": 24, "trace_limit": 4, "probe_limit": 40},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RUNS))
def test_ray_run_equals_the_local_run(ray_cluster, tmp_path, command):
    """Same records (ids, answers, every number within the float32 forward budget) and same summary.json, the
    run directory written by the driver alone."""
    fn, kwargs = RUNS[command]
    extra = {} if command == "knockout" else {"make_report": False}
    local = fn(**kwargs, **extra, out=tmp_path / "local")
    remote = fn(**kwargs, **extra, out=tmp_path / "ray", executor="ray", workers=2)
    table = "traces" if command == "trace" else "records"
    a, b = read_records(tmp_path / "local", table), read_records(tmp_path / "ray", table)
    order = ("model", "data", "index", "kind", "layer", "group")
    a.sort(key=lambda r: tuple(str(r.get(k, "")) for k in order))
    b.sort(key=lambda r: tuple(str(r.get(k, "")) for k in order))
    assert len(a) == len(b) > 0
    assert_same(a, b, command)
    assert_same(local.summary, remote.summary, command + ".summary")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, local_trace):
    out = tmp_path / "ray"
    proc = subprocess.Popen(
        cli(*TRACE, "--executor", "ray", "--workers", "2", "--out", str(out)),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(out, "traces", 3, proc)
        workers = [pid for pid, cmd in children(proc.pid).items() if cmd.startswith("ray::ShardWorker")]
        assert workers, "no Ray worker process found"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "a Ray worker died" in err
    rows = trace_rows(out)
    assert len({r["sample_id"] for r in rows}) == 48
    assert_same(rows, local_trace, "trace")


@pytest.mark.slow
def test_a_killed_driver_resumes_on_either_executor(tmp_path, local_trace):
    """A Ray run whose driver is killed resumes on the local executor; a local run killed resumes on Ray."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for first, then in (("ray", "local"), ("local", "ray")):
        out = tmp_path / f"{first}-then-{then}"
        args = [*TRACE, "--out", str(out)]
        start = args + (["--executor", "ray", "--workers", "2"] if first == "ray" else [])
        proc = subprocess.Popen(
            cli(*start), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_for(out, "traces", 3, proc)
            os.kill(proc.pid, signal.SIGKILL)  # the driver only: its Ray processes are left to notice
            proc.wait()
        finally:
            time.sleep(0.5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what the dead driver's local Ray left behind
        before = read_records(out, "traces")
        assert 0 < len({r["sample_id"] for r in before}) < 48 and not (out / "summary.json").exists()
        again = args + (["--executor", "ray", "--workers", "2"] if then == "ray" else [])
        r = subprocess.run(cli(*again), env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        rows = trace_rows(out)
        assert len({r["sample_id"] for r in rows}) == 48
        assert_same(rows, local_trace, f"{first} then {then}")
        assert (out / "summary.json").is_file()


@pytest.mark.slow
def test_scaling_benchmark_runs_small():
    """`benchmarks/scaling.py` at a tiny size: 1 and 2 workers trace the same cells (the script checks), and it
    prints the speed-up, the per-sample time and the per-shard overhead as median [min-max]."""
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "scaling.py"
    args = ["--limit", "4", "--repeats", "1", "--noise-samples", "2", "--overhead-shards", "10"]
    out = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    spread = r"([0-9.]+) \[([0-9.]+)-([0-9.]+)\]"
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(rf"scaling: samples=4 workers1={spread} workers2={spread} speedup={spread}", lines[-3])
    assert re.fullmatch(rf"scaling\[per_sample\]: one_worker_s={spread} kinds=resid noise_samples=2", lines[-2])
    m = re.fullmatch(rf"scaling\[overhead\]: per_shard_ms={spread} shards=10 workers=1", lines[-1])
    assert m and 0 < float(m.group(1)) < 1000
