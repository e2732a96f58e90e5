"""Every bad input is one `error:` line, a non-zero exit and nothing written to --out, on the CLI and in the API.

The issue's cases run the real console entry point (`run_cli`, a subprocess each); the rest of the hunted cases run
`vrprobe.cli.main` in this process (the same code path, without paying the import of torch per case).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vrprobe
from vrprobe import checks
from vrprobe.cli import main
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.registry import ZOO_DIR, load_adapter
from vrprobe.runtime.runs import RunDir, check_writable
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig, Tracer

from conftest import run_cli

MODEL = ["--model", "zoo:llava", "--data", "easy-vqa:test"]
STUDY = ["--models", "zoo:llava", "--data", "easy-vqa:test", "--limit", "2"]


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def break_checkpoint(dst: Path, key: str, value: float, row: int | None = None) -> Path:
    """A copy of the llava zoo checkpoint with one tensor (or one row of it) filled with `value`, saved to disk."""
    shutil.copytree(ZOO_DIR / "llava", dst)
    weights = load_file(dst / "model.safetensors")
    target = weights[key] if row is None else weights[key][row]
    target.fill_(value)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


# ---- the issue's cases, through the console entry point ------------------------------------------------------------

ISSUE_CASES = {
    "out-cannot-be-created": (["eval", *MODEL, "--limit", "2"], 1, "cannot be created"),
    "trace-limit-0": (
        ["study", "--models", "zoo:llava", "--data", "easy-vqa:test", "--limit", "2", "--trace-limit", "0"],
        2,
        "--trace-limit must be an integer >= 1, got 0",
    ),
    "trace-noise-nan": (["trace", *MODEL, "--limit", "1", "--noise", "nan"], 2, "--noise must be a finite number"),
    "trace-noise-negative": (["trace", *MODEL, "--limit", "1", "--noise", "-3"], 2, "got -3.0"),
    "corrupt-noise-inf": (["corrupt", *MODEL, "--limit", "2", "--band", "1-2", "--noise", "inf"], 2, "got inf"),
    "spec-noise-7": (
        ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test?noise=7", "--limit", "2"],
        2,
        "noise=7 is outside [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(ISSUE_CASES))
def test_issue_cases_on_the_command_line(tmp_path, case):
    args, code, message = ISSUE_CASES[case]
    out = tmp_path / "out"
    if case == "out-cannot-be-created":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        out = Path("/proc/vrprobe-no-such-dir/run")
    res = run_cli(*args, "--out", str(out))
    assert res.returncode == code, res.stderr
    assert message in one_error_line(res.stderr)
    assert not out.exists() and leftovers(tmp_path) == []


def test_nan_logits_from_a_broken_checkpoint_name_the_sample(tmp_path):
    model = break_checkpoint(tmp_path / "broken", "language_model.lm_head.weight", float("nan"), row=3)
    out = tmp_path / "out"
    res = run_cli("eval", "--model", str(model), "--data", "easy-vqa:test", "--limit", "2", "--out", str(out))
    assert res.returncode == 1
    line = one_error_line(res.stderr)
    ids = [s.id for s in load_dataset("easy-vqa:test", limit=2).samples]
    assert "NaN logits for sample " in line and any(i in line for i in ids), line
    assert not out.exists()


# ---- the same refusals from the Python API, before any folder or model ---------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda out: vrprobe.trace("zoo:llava", "easy-vqa:test", noise=float("nan"), limit=1, out=out), "--noise"),
        (lambda out: vrprobe.trace("zoo:llava", "easy-vqa:test", noise=-3, limit=1, out=out), "--noise"),
        (lambda out: vrprobe.trace("zoo:llava", "easy-vqa:test", noise_samples=0, out=out), "--noise-samples"),
        (lambda out: vrprobe.trace("zoo:llava", "easy-vqa:test", window=0, out=out), "--window"),
        (lambda out: vrprobe.trace("zoo:llava", "easy-vqa:test", limit=2.5, out=out), "--limit must be an integer"),
        (lambda out: vrprobe.corrupt("zoo:llava", "easy-vqa:test", "1-2", noise=float("inf"), out=out), "--noise"),
        (lambda out: vrprobe.corrupt("zoo:llava", "easy-vqa:test", "5-2", out=out), "first layer"),
        (lambda out: vrprobe.corrupt("zoo:llava", "easy-vqa:test", "auto", trace_limit=0, out=out), "--trace-limit"),
        (lambda out: vrprobe.corrupt("zoo:llava", "easy-vqa:test", "1-2", positions="x", out=out), "--positions"),
        (lambda out: vrprobe.study("zoo:llava", "easy-vqa:test", trace_limit=0, out=out), "--trace-limit"),
        (lambda out: vrprobe.study("zoo:llava", "easy-vqa:test", noise=float("nan"), out=out), "--noise"),
        (lambda out: vrprobe.study(["zoo:llava", "zoo:llava"], "easy-vqa:test", out=out), "more than once"),
        (lambda out: vrprobe.study("zoo:llava", "easy-vqa:test,easy-vqa:test", out=out), "more than once"),
        (lambda out: vrprobe.study("zoo:llava,zoo:nope", "easy-vqa:test", out=out), "unknown zoo model"),
        (
            lambda out: vrprobe.study("zoo:llava", "easy-vqa:test", max_new_tokens=0, out=out),
            "--max-new-tokens",
        ),
        (lambda out: vrprobe.eval("zoo:llava", "easy-vqa:test", batch_size=0, out=out), "--batch-size"),
        (lambda out: vrprobe.eval("zoo:llava", "easy-vqa:test", max_new_tokens=-1, out=out), "--max-new-tokens"),
        (lambda out: vrprobe.eval("zoo:llava", "easy-vqa:test", limit=0, out=out), "--limit"),
        (lambda out: vrprobe.eval("zoo:llava", "easy-vqa:test", seed=-1, out=out), "--seed"),
        (lambda out: vrprobe.eval("zoo:llava", "easy-vqa:test", seed=2**64, out=out), "--seed"),
        (lambda out: vrprobe.eval("zoo:llava", "easy-vqa:test", limit=True, out=out), "--limit"),
    ],
)
def test_api_refuses_bad_numbers_before_any_work(tmp_path, call, message):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        call(out)
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("easy-vqa:test?noise=7", r"noise=7 is outside \[0, 1\]"),
        ("easy-vqa:test?noise=-0.1", "outside"),
        ("easy-vqa:test?noise=nan", "outside"),
        ("easy-vqa:test?occlude=2", "outside"),
        ("easy-vqa:test?noise=abc", "needs a number"),
        ("easy-vqa:test?noise=", "needs a number"),
        ("easy-vqa:test?blur=1", "unknown dataset option"),
        ("easy-vqa:test?noise=0.3&", "unknown dataset option"),
        ("easy-vqa:test?noise=0.1&noise=0.2", "more than once"),
        ("coco:test", "unknown dataset"),
    ],
)
def test_dataset_spec_options_are_checked(spec, message):
    with pytest.raises(UsageError, match=message):
        load_dataset(spec, limit=2)


def test_dataset_spec_accepts_the_documented_range():
    assert len(load_dataset("easy-vqa:test?noise=1&occlude=0", limit=2)) == 2


# ---- more bad inputs found by trying every option, spec and file -----------------------------------------------------


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """`vrprobe ARGS` in this process: (exit code, the stderr)."""
    monkeypatch.setattr(sys, "argv", ["vrprobe", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def finished_run(tmp_path: Path) -> Path:
    run = RunDir(tmp_path / "done", {"command": "eval"})
    run.append([{"sample_id": "a", "question_type": "yes/no", "correct": 1.0}])
    run.write_json("summary.json", {"n": 1, "accuracy": 1.0})
    return run.path


def damage(tmp_path: Path, case: str) -> Path:
    """A finished run with one file damaged the way `case` says."""
    out = finished_run(tmp_path)
    if case == "malformed-summary":
        (out / "summary.json").write_text("{not json")
    elif case == "summary-not-an-object":
        (out / "summary.json").write_text("[1, 2]")
    elif case == "summary-not-utf8":
        (out / "summary.json").write_bytes(b"\xff\xfe")
    elif case == "malformed-manifest":
        (out / "manifest.json").write_text("{not json")
    elif case == "damaged-parquet":
        (out / "records" / "part-000000.parquet").write_bytes(b"not parquet")
    return out


MORE_CASES = [
    # (id, args (OUT = the --out folder), exit code, message)
    ("limit-0", ["eval", *MODEL, "--limit", "0"], 2, "--limit must be an integer >= 1, got 0"),
    ("limit-negative", ["eval", *MODEL, "--limit", "-1"], 2, "--limit"),
    ("batch-size-0", ["eval", *MODEL, "--batch-size", "0"], 2, "--batch-size"),
    ("max-new-tokens-0", ["eval", *MODEL, "--max-new-tokens", "0"], 2, "--max-new-tokens"),
    ("device-unknown", ["eval", *MODEL, "--device", "gpu"], 2, "unknown --device 'gpu'"),
    ("device-absent", ["trace", *MODEL, "--device", "cuda:99"], 2, "--device cuda:99"),
    ("dtype-unknown", ["corrupt", *MODEL, "--band", "1-2", "--dtype", "half"], 2, "unknown --dtype 'half'"),
    ("device-map-unknown", ["study", *STUDY, "--device-map", "balanced"], 2, "unknown --device-map"),
    ("batch-size-word", ["eval", *MODEL, "--batch-size", "many"], 2, "--batch-size must be an integer"),
    ("max-pixels-zero", ["eval", *MODEL, "--max-pixels", "0"], 2, "--max-pixels must be an integer >= 1"),
    ("max-pixels-llava", ["eval", *MODEL, "--max-pixels", "1024"], 2, "native-resolution image processors only"),
    ("seed-negative", ["eval", *MODEL, "--seed", "-1"], 2, "--seed must be an integer in [0, 4294967295]"),
    ("seed-huge", ["eval", *MODEL, "--seed", str(2**70)], 2, "--seed"),
    ("image-ablation", ["eval", *MODEL, "--image-ablation", "grey"], 2, "unknown image ablation"),
    ("noise-samples-0", ["trace", *MODEL, "--noise-samples", "0"], 2, "--noise-samples"),
    ("window-0", ["trace", *MODEL, "--window", "0"], 2, "--window"),
    ("kinds-empty", ["trace", *MODEL, "--kinds", ","], 2, "restoration kind"),
    ("band-reversed", ["corrupt", *MODEL, "--band", "5-2"], 2, "--band 5-2: the first layer must not be above"),
    ("band-malformed", ["corrupt", *MODEL, "--band", "2..4"], 2, "--band must be A-B"),
    ("band-out-of-range", ["corrupt", *MODEL, "--limit", "2", "--band", "3-99"], 2, "out of range"),
    ("positions", ["corrupt", *MODEL, "--band", "1-2", "--positions", "text"], 2, "--positions"),
    ("target", ["corrupt", *MODEL, "--band", "1-2", "--target", "weights"], 2, "--target"),
    ("corrupt-trace-limit", ["corrupt", *MODEL, "--band", "auto", "--trace-limit", "-1"], 2, "--trace-limit"),
    ("corrupt-batch-size-0", ["corrupt", *MODEL, "--band", "1-2", "--batch-size", "0"], 2, "--batch-size"),
    ("models-empty", ["study", "--models", " , ", "--data", "easy-vqa:test"], 2, "at least one"),
    ("models-twice", ["study", "--models", "zoo:llava,zoo:llava", "--data", "easy-vqa:test"], 2, "more than once"),
    ("models-typo", ["study", "--models", "zoo:llava,zoo:lava", "--data", "easy-vqa:test"], 2, "unknown zoo model"),
    ("study-batch-size-0", ["study", *STUDY, "--batch-size", "0"], 2, "--batch-size"),
    ("study-max-new-tokens", ["study", *STUDY, "--max-new-tokens", "-2"], 2, "--max-new-tokens"),
    ("band-positions", ["study", *STUDY, "--band-positions", "x"], 2, "unknown --band-positions"),
    ("spec-duplicate", ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test?noise=.1&noise=.2"], 2, "once"),
    ("spec-not-a-number", ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test?noise=abc"], 2, "number"),
    ("spec-occlude", ["eval", "--model", "zoo:llava", "--data", "easy-vqa:test?occlude=2"], 2, "outside"),
    ("out-under-a-file", ["eval", *MODEL, "--limit", "2", "--out", "FILE/run"], 1, "is not a directory"),
    ("overwrite-foreign", ["eval", *MODEL, "--limit", "2", "--out", "FOREIGN", "--overwrite"], 1, "never deletes"),
    ("config-not-object", ["eval", "--model", "MODEL", "--data", "easy-vqa:test"], 1, "not a model config"),
    ("weights-truncated", ["eval", "--model", "MODEL", "--data", "easy-vqa:test"], 1, "cannot load model"),
    ("weights-wrong-shape", ["eval", "--model", "MODEL", "--data", "easy-vqa:test"], 1, "shapes do not match"),
    ("tokenizer-malformed", ["eval", "--model", "MODEL", "--data", "easy-vqa:test"], 1, "cannot load model"),
    ("stage-steps-negative", ["zoo", "train", "llava", "--stage1-steps", "-1"], 2, "--stage1-steps"),
    ("zoo-train-unknown", ["zoo", "train", "gpt2"], 2, "unknown zoo model"),
    ("zoo-train-out-file", ["zoo", "train", "llava", "--out", "FILE"], 1, "not a directory"),
    ("knockout-window-0", ["knockout", *MODEL, "--window", "0"], 2, "--window must be a positive number"),
    ("knockout-window-word", ["knockout", *MODEL, "--window", "most"], 2, "--window must be a positive number"),
    ("knockout-window-wide", ["knockout", *MODEL, "--limit", "2", "--window", "9"], 2, "wider than the model's 8"),
    ("knockout-edge", ["knockout", *MODEL, "--edges", "image->answer"], 2, "unknown edge 'image->answer'"),
    ("knockout-edges-empty", ["knockout", *MODEL, "--edges", ","], 2, "--edges names no edge"),
    ("knockout-limit-0", ["knockout", *MODEL, "--limit", "0"], 2, "--limit"),
    ("knockout-batch-size-0", ["knockout", *MODEL, "--batch-size", "0"], 2, "--batch-size"),
    ("report-missing", ["report", "NOWHERE"], 1, "has no summary.json"),
    ("show-missing", ["show", "NOWHERE"], 1, "has no summary.json"),
]
RUN_FILE_CASES = ["malformed-summary", "summary-not-an-object", "summary-not-utf8", "malformed-manifest"]


def model_dir(tmp_path: Path, case: str) -> Path:
    import json

    model = tmp_path / "model"
    shutil.copytree(ZOO_DIR / "llava", model)
    if case == "config-not-object":
        (model / "config.json").write_text("[]")
    elif case == "weights-truncated":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[:1000])
    elif case == "weights-wrong-shape":
        cfg = json.loads((model / "config.json").read_text())
        cfg["text_config"]["hidden_size"] = 48
        (model / "config.json").write_text(json.dumps(cfg))
    elif case == "tokenizer-malformed":
        (model / "tokenizer_config.json").write_text("{bad")
    return model


@pytest.mark.parametrize("case, args, code, message", MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_more_bad_inputs_give_one_line(tmp_path, capsys, monkeypatch, case, args, code, message):
    out = tmp_path / "out"
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    names = {
        "FILE": str(tmp_path / "file"),
        "FOREIGN": str(tmp_path / "foreign"),
        "NOWHERE": str(tmp_path / "nowhere"),
    }
    if "MODEL" in args:
        names["MODEL"] = str(model_dir(tmp_path, case))
    head = [a.split("/")[0] for a in args]
    args = [names[h] + a[len(h) :] if h in names else a for h, a in zip(head, args, strict=True)]
    if "--out" not in args and args[0] != "report" and args[0] != "show":
        args += ["--out", str(out)]  # zoo train too: never the package's own checkpoint
    status, stderr = cli(capsys, monkeypatch, *args)
    assert status == code, stderr
    assert message in one_error_line(stderr)
    assert not out.exists()
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"  # --overwrite never deleted a foreign folder
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("case", RUN_FILE_CASES)
@pytest.mark.parametrize("command", ["report", "show"])
def test_damaged_run_files_give_one_line(tmp_path, capsys, monkeypatch, case, command):
    out = damage(tmp_path, case)
    status, stderr = cli(capsys, monkeypatch, command, str(out))
    assert status == 1
    line = one_error_line(stderr)
    assert "cannot read" in line and str(out) in line
    assert not (out / "report.html").exists()


def test_damaged_parquet_part_names_the_file(tmp_path, capsys, monkeypatch):
    out = damage(tmp_path, "damaged-parquet")
    status, stderr = cli(capsys, monkeypatch, "report", str(out))
    assert status == 1 and "part-000000.parquet: not a readable Parquet file" in one_error_line(stderr)


# ---- units: the checks themselves, the run folder, NaN logits in memory ---------------------------------------------


def test_checks_name_the_option_and_refuse_nan_inf_and_non_numbers():
    with pytest.raises(UsageError, match=r"^--noise must be a finite number >= 0, got nan$"):
        checks.finite_nonneg("--noise", float("nan"))
    for bad in (float("inf"), -1e-9, "3", None, True):
        with pytest.raises(UsageError):
            checks.finite_nonneg("--noise", bad)
    assert checks.finite_nonneg("--noise", 0) == 0.0
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        checks.in_range("x", 1.5, 0, 1)
    with pytest.raises(UsageError):
        checks.in_range("x", float("nan"), 0, 1)
    for bad in (0, -1, 2.0, True, "2"):
        with pytest.raises(UsageError):
            checks.positive_int("--window", bad)
    assert checks.positive_int("--window", 3) == 3 and checks.nonneg_int("--steps", 0) == 0
    assert checks.spec_list("--models", " zoo:llava, zoo:qwen2vl ,") == ("zoo:llava", "zoo:qwen2vl")
    assert checks.band_spec("2-4") == "2-4" and checks.band_spec("auto") == "auto"


def test_finite_logits_names_the_bad_rows():
    logits = torch.zeros(3, 5)
    checks.finite_logits(logits, ["a", "b", "c"])  # finite: nothing happens
    logits[1, 2] = float("inf")
    with pytest.raises(VrprobeError, match=r"inf logits for sample b: "):
        checks.finite_logits(logits, ["a", "b", "c"])
    logits[2, 0] = float("nan")
    with pytest.raises(VrprobeError, match=r"model m produced NaN logits for sample b \(and 1 more\)"):
        checks.finite_logits(logits, ["a", "b", "c"], model="m")
    with pytest.raises(VrprobeError, match="for sample only"):  # several rows of one sample (noise draws)
        checks.finite_logits(torch.full((4, 2), float("nan")), ["only"])


@pytest.fixture(scope="module")
def overflowing():
    """A real zoo model whose final norm overflowed to inf, as in a broken half-precision checkpoint (a private copy:
    the session fixture's models are never touched)."""
    adapter = load_adapter("zoo:llava")
    with torch.no_grad():
        adapter.model.get_decoder().norm.weight.fill_(float("inf"))
    return adapter


@pytest.mark.parametrize("open_ended", [False, True])
def test_score_batch_stops_on_non_finite_logits(overflowing, open_ended):
    samples = load_dataset("easy-vqa:test", limit=3).samples
    if open_ended:
        samples = [dataclasses.replace(s, choices=None) for s in samples]
    with pytest.raises(VrprobeError, match=f"for sample {samples[0].id} \\(and 2 more\\)"):
        score_batch(overflowing, samples, max_new_tokens=2)


def test_out_checks_leave_nothing_behind(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(VrprobeError, match="is not a directory"):
        check_writable(tmp_path / "file" / "a" / "b")
    check_writable(tmp_path / "new" / "run")  # creatable: no error, and nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(VrprobeError, match="broken symbolic link"):
        RunDir(tmp_path / "link", {"a": 1})


def test_trace_stops_on_non_finite_logits(overflowing):
    """The tracing engine refuses NaN/inf logits with the sample's id instead of writing NaN effects."""
    sample = load_dataset("easy-vqa:test", limit=2).samples[1]
    with pytest.raises(VrprobeError, match=f"produced (NaN|inf) logits for sample {sample.id}:"):
        Tracer(overflowing, 1.0, TraceConfig(kinds=("resid",), noise_samples=2)).trace(sample)


def test_trace_config_checks_its_own_numbers():
    for bad in ({"noise": float("nan")}, {"noise": -1.0}, {"noise_samples": 0}, {"window": 0}, {"max_rows": 0}):
        with pytest.raises(UsageError):
            TraceConfig(**bad)
