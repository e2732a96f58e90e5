"""Run directories: a real study killed with SIGKILL mid-run resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from vrprobe.runtime.runs import RunDir, read_records

STUDY = [
    "study",
    "--models",
    "zoo:llava,zoo:qwen2vl",
    "--data",
    "easy-vqa:test,easy-vqa:test?noise=0.3",
    "--limit",
    "80",
    "--trace-limit",
    "6",
    "--batch-size",
    "8",
    "--seed",
    "3",
]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from vrprobe.cli import main; main()", "--quiet", *args]


def parts(out) -> int:
    return len(list((out / "records").glob("part-*.parquet"))) if (out / "records").is_dir() else 0


@pytest.mark.slow
def test_kill_9_mid_study_then_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole"
    assert subprocess.run(cli(*STUDY, "--out", str(whole)), env=env, capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli(*STUDY, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while parts(killed) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_records(killed)  # every part file written so far is readable
    assert 0 < len(before) < 4 * 80
    assert not (killed / "summary.json").exists()
    res = subprocess.run(cli(*STUDY, "--out", str(killed)), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    after = read_records(killed)
    keys = Counter((r["model"], r["data"], r["sample_id"]) for r in after)
    assert len(keys) == 4 * 80 and max(keys.values()) == 1  # none lost, none duplicated
    assert {(r["model"], r["data"], r["sample_id"]) for r in before} <= set(keys)
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a == b
    assert (killed / "report.html").is_file()


def test_run_dir_refuses_other_config_and_ignores_temporary_files(tmp_path):
    out = tmp_path / "run"
    run = RunDir(out, {"a": 1})
    assert not out.exists()  # nothing is created before the first result
    run.append([{"sample_id": "x", "v": 1.0}])
    (out / "records" / ".part-000001.parquet.123.tmp").write_bytes(b"half a file")
    assert read_records(out) == [{"sample_id": "x", "v": 1.0}]
    assert RunDir(out, {"a": 1}).done(("sample_id",)) == {("x",)}
    from vrprobe.errors import VrprobeError

    with pytest.raises(VrprobeError, match="different configuration"):
        RunDir(out, {"a": 2})
    replacing = RunDir(out, {"a": 2}, overwrite=True)
    assert (out / "manifest.json").is_file() and replacing.done(("sample_id",)) == set()  # deleted at the first write
    replacing.append([{"sample_id": "y", "v": 2.0}])
    assert read_records(out) == [{"sample_id": "y", "v": 2.0}]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(VrprobeError, match="did not write"):
        RunDir(tmp_path / "other", {"a": 1})
