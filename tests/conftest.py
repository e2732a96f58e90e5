"""Shared fixtures: the real trained zoo models (loaded once per session) and small datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrprobe.registry import load_adapter

FAMILIES = ("llava", "paligemma", "qwen2vl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", params=FAMILIES)
def adapter(request):
    """Each zoo model, loaded through the same Auto-class path a real checkpoint uses."""
    return load_adapter(f"zoo:{request.param}")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `vrprobe` console entry point; returns the completed process (text output)."""
    cmd = [sys.executable, "-c", "from vrprobe.cli import main; main()", *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600)
