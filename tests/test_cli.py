"""`vrprobe eval` and `vrprobe zoo train` end to end through the console entry point, and their error paths."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from vrprobe.data.easy_vqa import package_root
from vrprobe.registry import ZOO_DIR
from vrprobe.runtime.runs import read_records

from conftest import run_cli

RECORD_COLUMNS = {
    "sample_id",
    "question",
    "question_type",
    "answers",
    "predicted",
    "confidence",
    "correct",
    "choices",
    "probs",
}


def test_eval_writes_records_and_summary(tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test", "--limit", "24", "--out", str(out)]
    res = run_cli(*args, "--batch-size", "8")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 24
    assert set(summary["accuracy_by_type"]) == {"yes/no", "color", "shape"}
    assert summary["model"]["family"] == "llava" and summary["model"]["params"] > 1e6
    rows = read_records(out)
    assert set(rows[0]) >= RECORD_COLUMNS and len(rows) == 24
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 24)
    assert (out / "manifest.json").is_file() and (out / "report.html").is_file()
    # the same command again resumes: nothing recomputed, nothing duplicated
    again = run_cli(*args, "--batch-size", "8")
    assert again.returncode == 0, again.stderr
    assert len(read_records(out)) == 24
    # another configuration on the same --out is refused with one line, unless --overwrite
    other = run_cli("eval", "--model", "zoo:llava", "--data", "easy-vqa:test", "--limit", "12", "--out", str(out))
    assert other.returncode == 1 and "--overwrite" in other.stderr and len(other.stderr.strip().splitlines()) == 1


def _fake_easy_vqa(root, *, corrupt: bool = False, empty: bool = False):
    src = package_root()
    (root / "test" / "images").mkdir(parents=True)
    shutil.copy(src / "answers.txt", root / "answers.txt")
    rows = [] if empty else json.loads((src / "test" / "questions.json").read_text())[:4]
    for _, _, image_id in rows:
        shutil.copy(src / "test" / "images" / f"{image_id}.png", root / "test" / "images" / f"{image_id}.png")
    if corrupt:
        (root / "test" / "images" / f"{rows[0][2]}.png").write_bytes(b"not a png at all")
    (root / "test" / "questions.json").write_text(json.dumps(rows))


@pytest.mark.parametrize(
    "case", ["unknown-spec", "missing-dir", "no-processor", "corrupt-image", "empty-dataset", "bad-data-spec"]
)
def test_bad_inputs_give_one_line_and_nothing_written(tmp_path, case):
    model, data = "zoo:llava", "easy-vqa:test"
    if case == "unknown-spec":
        model = "zoo:nonexistent"
    elif case == "missing-dir":
        model = str(tmp_path / "no-such-model")
    elif case == "no-processor":
        model = str(tmp_path / "model")
        (tmp_path / "model").mkdir()
        for f in ("config.json", "model.safetensors"):
            shutil.copy(ZOO_DIR / "llava" / f, tmp_path / "model" / f)
    elif case in ("corrupt-image", "empty-dataset"):
        _fake_easy_vqa(tmp_path / "data", corrupt=case == "corrupt-image", empty=case == "empty-dataset")
        data = f"easy-vqa:{tmp_path / 'data'}:test"
    elif case == "bad-data-spec":
        data = "coco:test"
    out = tmp_path / "out"
    res = run_cli("eval", "--model", model, "--data", data, "--out", str(out), "--limit", "4")
    assert res.returncode in (1, 2)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left behind


def test_version_and_help():
    res = run_cli("--version", process=True)  # the installed console entry point, in its own process
    assert res.returncode == 0 and res.stdout.startswith("vrprobe ")
    res = run_cli("eval", "--help")
    assert res.returncode == 0 and "Example:" in res.stdout


@pytest.mark.slow
def test_zoo_train_runs_a_few_steps_and_loads(tmp_path):
    out = tmp_path / "tiny"
    res = run_cli("zoo", "train", "qwen2vl", "--out", str(out), "--stage1-steps", "2", "--stage2-steps", "3")
    assert res.returncode == 0, res.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert log["config"]["stage2_steps"] == 3
    res = run_cli("eval", "--model", str(out), "--data", "easy-vqa:test", "--limit", "4", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr


def test_trace_and_corrupt_commands(tmp_path):
    out = tmp_path / "trace"
    res = run_cli(
        "trace",
        "--model",
        "zoo:qwen2vl",
        "--data",
        "easy-vqa:test",
        "--limit",
        "3",
        "--out",
        str(out),
        "--noise-samples",
        "2",
        "--kinds",
        "resid,mlp",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["sigma"] > 0
    assert {c["kind"] for c in summary["grid"]} == {"resid", "mlp"}
    assert len(summary["grid"]) == 2 * 8 * 3
    table = pa.Table.from_pylist(read_records(out, "traces"))
    assert {
        "sample_id",
        "kind",
        "layer",
        "group",
        "effect",
        "p_restored",
        "p_corrupted",
        "p_clean",
        "clean_correct",
    } <= set(table.column_names)
    assert table.num_rows == 3 * 2 * 8 * 3
    out = tmp_path / "band"
    res = run_cli(
        "corrupt",
        "--model",
        "zoo:qwen2vl",
        "--data",
        "easy-vqa:test",
        "--limit",
        "12",
        "--out",
        str(out),
        "--band",
        "auto",
        "--trace-limit",
        "3",
        "--target",
        "both",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "band",
        "accuracy_clean",
        "accuracy_corrupted",
        "drop_abs",
        "drop_rel",
        "sharpness_clean",
        "sharpness_corrupted",
    ):
        assert key in summary
    assert len(summary["band"]) == 2 and summary["band"][0] <= summary["band"][1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["trace", "--kinds", "heads"], "unknown restoration kind"),
        (["corrupt", "--band", "3-99"], "out of range"),
        (["corrupt", "--band", "2-3", "--target", "weights"], "target"),
    ],
)
def test_trace_and_corrupt_errors(tmp_path, args, message):
    out = tmp_path / "out"
    res = run_cli(*args, "--model", "zoo:llava", "--data", "easy-vqa:test", "--limit", "2", "--out", str(out))
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--data", "easy-vqa:test", "--out", "x"],
        ["nonsense"],
        ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test", "--out", "x", "--limit", "abc"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args, tmp_path):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_show_prints_a_run(tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli(
            "eval", "--model", "zoo:qwen2vl", "--data", "easy-vqa:test", "--limit", "4", "--out", str(out)
        ).returncode
        == 0
    )
    res = run_cli("show", str(out))
    assert res.returncode == 0 and "accuracy:" in res.stdout
