"""Shared fixtures: the real trained zoo models (loaded once per session) and small datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vrprobe.registry import load_adapter

FAMILIES = ("llava", "paligemma", "qwen2vl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `make test-numerics`: the numeric tests with torch's deterministic algorithms, at 1 and at 2 threads
if os.environ.get("VRPROBE_DETERMINISTIC") == "1":
    torch.use_deterministic_algorithms(True)
if os.environ.get("VRPROBE_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["VRPROBE_TORCH_THREADS"]))


def pytest_report_header(config):
    return (
        f"torch {torch.__version__}: {torch.get_num_threads()} thread(s), "
        f"deterministic algorithms {'on' if torch.are_deterministic_algorithms_enabled() else 'off'}"
    )


@pytest.fixture(scope="session", params=FAMILIES)
def adapter(request):
    """Each zoo model, loaded through the same Auto-class path a real checkpoint uses."""
    return load_adapter(f"zoo:{request.param}")


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, process: bool = False
) -> subprocess.CompletedProcess:
    """`vrprobe ARGS`; returns a completed process (exit code, text stdout and stderr).

    By default `vrprobe.cli.main` runs in this process (the same code path as the console entry point, without paying
    the ~6 s import of torch and transformers per call); with `process=True`, or a `cwd` or `env`, the installed entry
    point runs in a subprocess."""
    if process or cwd is not None or env:
        cmd = [sys.executable, "-c", "from vrprobe.cli import main; main()", *args]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600)
    import io
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from vrprobe.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["vrprobe", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # what an uncaught error does to a process: a traceback and exit 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["vrprobe", *args], code, out.getvalue(), err.getvalue())
