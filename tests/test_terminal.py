"""Terminal output that fits: `vrprobe show` on study run directories at COLUMNS=120 and 80 (every line within the
width, every name whole, no ellipsis, `--all` adds columns), the verdict's lines, and the width when piped.

The run directories hold a summary.json of the study's shape, written here (a real study costs minutes): one with the
zoo's names, one with long local-checkpoint and benchmark names that cannot sit beside a table's columns at 80."""

from __future__ import annotations

import io
import json

import pytest

from vrprobe.reporting.tables import verdict_lines
from vrprobe.reporting.terminal import DEFAULT_WIDTH, output_width

from conftest import run_cli

ZOO = (("zoo:llava", "zoo:paligemma", "zoo:qwen2vl"), ("easy-vqa:test", "easy-vqa:test?noise=0.3"))
LONG = (
    ("hf:llava-hf/llava-1.5-7b-hf", "/checkpoints/Qwen2-VL-2B-Instruct"),
    ("vqav2:/data/vqa-v2:val2014", "okvqa:/data/ok-vqa:val2014?occlude=0.25"),
)
#: headers only `--all` prints (the default's verdict lines name none of them)
ALL_ONLY = ("family", "params", "mean conf", "ACE", "Brier", "entropy clean→band", "band rank", "AURC probe")
#: 12 heads whose sharpness goes with correct answers (q < 0.05), strongest last
HEADS = [f"layer {k % 8} head {k // 8}" for k in range(12)]


def _r(r: float | None, lo: float | None, hi: float | None, p: float | None = 0.2) -> dict:
    return {"method": "pearson", "r": r, "ci": [lo, hi], "p": p, "n": 40}


def _row(model: str, data: str, k: int) -> dict:
    """A table row with every field the study writes that the terminal shows (numbers vary with `k`)."""
    auroc = {s: (0.5 + 0.05 * j + 0.01 * k, [0.3 + 0.05 * j, 0.9]) for j, s in enumerate(("sharpness", "probe"))}
    auroc["confidence"], auroc["margin"] = (0.8612, [0.6153, 1.0]), (None, [None, None])
    return {
        "model": model,
        "family": "llava",
        "params": 7_063_427_072 + k,
        "device": "cuda:0",
        "dtype": "bfloat16",
        "data": data,
        "n": 1000,
        "accuracy": 0.925 - 0.01 * k,
        "ece": 0.0509,
        "ace": 0.064,
        "mce": 0.333,
        "brier": 0.0632,
        "r_sharpness_accuracy": _r(-0.1577 + 0.05 * k, -0.3855, 0.0039, 0.32),
        "r_sharpness_overconfidence": _r(0.1673, -0.002, 0.3984),
        "r_confidence_accuracy": _r(0.4755, 0.0596, 0.8897, 0.016),
        "band": [11, 13],
        "band_positions": "all",
        "accuracy_band_corrupted": 0.3,
        "drop_abs": 0.625,
        "drop_rel": 0.6757,
        "sharpness_clean": 1.9305,
        "sharpness_corrupted": 2.3831,
        "mean_confidence": 0.9759,
        "probe_layer": 17,
        "n_held_out": 1000,
        **{f"auroc_{s}": v for s, (v, _) in auroc.items()},
        **{f"auroc_{s}_ci": ci for s, (_, ci) in auroc.items()},
        **{f"aurc_{s}": 0.0165 for s in ("confidence", "sharpness", "probe")},
        "aurc_margin": None,
        "selective": {},
        "integration_layers": {"image->question": {"peak": [0, 1], "last": [25, 26]}, "image->last": {"peak": [1, 2]}},
        "band_rank": 3,
        "head_sharpness": {"n_tests": 1056, "alpha": 0.05},
        "verdict": {
            "signals_predicting_correctness": ["confidence"],
            "sharpness_predicts_correctness": False,
            "sharpness_predicts_overconfidence": False,
            "confidence_predicts_correctness": True,
            "stronger_signal": "confidence",
            "normalised_entropy_change_under_band_corruption": 0.1633,
            "attention_stays_focused_while_accuracy_drops": False,
            "belief_sharp_attention_means_reliable": "not shown: the sharpness intervals include 0",
            "most_reliable_signal": "confidence" if k % 2 else None,
            "probe_beats_confidence": "no: the probe does not beat confidence (their AUROC intervals overlap)",
            "causal_band_rank": 3,
            "causal_band_special": False,
            "non_image_drop_abs": 0.3333,
            "non_image_entropy_change": 0.0503,
            "focused_while_accuracy_drops_non_image": False,
            "heads_predicting_correctness": HEADS if k == 0 else [],
            "heads_going_with_errors": ["layer 3", "layer 5 head 2"] if k == 1 else [],
        },
    }


def _heads() -> list[dict]:
    """Per-head cells as summary.json holds them: HEADS[j] has q falling and r rising with j."""
    cells = [
        {
            "layer": int(n.split()[1]),
            "head": int(n.split()[3]),
            "r_correct": 0.1 + 0.01 * j,
            "q_correct": 0.04 - j / 1000,
        }
        for j, n in enumerate(HEADS)
    ]
    return cells + [
        {"layer": 3, "head": "mean", "r_correct": -0.31, "q_correct": 0.01},
        {"layer": 5, "head": 2, "r_correct": -0.22, "q_correct": 0.02},
    ]


def _summary(names: tuple[tuple[str, ...], tuple[str, ...]]) -> dict:
    models, datasets = names
    table = [_row(m, d, k) for k, (m, d) in enumerate((m, d) for m in models for d in datasets)]
    heads = {f"{r['model']} · {r['data']}": _heads() for r in table}
    verdict = {f"{r['model']} · {r['data']}": r["verdict"] for r in table}
    return {"table": table, "heads": heads, "verdict": verdict, "definitions": {}}


def _write_run(out, names) -> None:
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps(_summary(names)))


@pytest.fixture(scope="module", params=[ZOO, LONG], ids=["zoo-names", "long-names"])
def study_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("terminal") / "study"
    _write_run(out, request.param)
    return out, request.param


def _show(monkeypatch, columns: str | None, *args: str) -> str:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    res = run_cli("show", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("width", [120, 80])
def test_show_fits_the_width_with_every_name_whole(study_run, width, monkeypatch):
    out, (models, datasets) = study_run
    default = _show(monkeypatch, str(width), str(out))
    every = _show(monkeypatch, str(width), str(out), "--all")
    for text in (default, every):
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= width, max(lines, key=len)
        assert "…" not in text and "..." not in text
        for name in (*models, *datasets):  # whole, on one line
            assert name in text
        assert "belief 'sharp = reliable': not shown" in text
    for header in ("acc", "ECE", "r(sharp, acc)", "drop"):
        assert header in default
    for header in ALL_ONLY:
        assert header in every and header not in default, header
    assert "reliability signals on held-out samples" in every


def test_zoo_names_print_as_tables_long_names_as_blocks_at_80(study_run, monkeypatch):
    out, (models, _) = study_run
    text = _show(monkeypatch, "80", str(out))
    as_table = any(line.startswith("model ") and "r(sharp, acc)" in line for line in text.splitlines())
    assert as_table == (models == ZOO[0])
    if not as_table:
        assert "  r(sharp, acc): " in text and f"{models[0]} · " in text


def test_verdict_lines_are_short_and_summarise_long_lists():
    table = _summary(ZOO)["table"]
    heads = _summary(ZOO)["heads"]
    for width in (60, 80, 100, 120):
        lines = verdict_lines(table, width, heads)
        assert max(len(line) for line in lines) <= width
    lines = verdict_lines(table, 120, heads)
    first = lines[: lines.index("zoo:llava · easy-vqa:test?noise=0.3")]
    assert len(first) == 12  # the row's names, then one line per question
    heads_line = next(line for line in first if "heads predicting correctness" in line)
    # 12 heads named: counted, and the top 3 by q (the last three of HEADS) shown with their r
    assert heads_line == (
        "  heads predicting correctness (BH q < 0.05): 12 of 1056; top 3: L3H1 r=+0.21, L2H1 r=+0.20, L1H1 r=+0.19"
    )
    assert "L0H0" not in "\n".join(lines)
    errors = next(line for line in lines if "heads going with errors" in line and "2 of" in line)
    assert errors.endswith("2 of 1056: L3 mean r=-0.31, L5H2 r=-0.22")
    # narrower: fewer top heads, so that the line still fits on one line
    for width, top in ((100, 2), (80, 1)):
        narrow = [line for line in verdict_lines(table, width, heads) if "heads predicting correctness" in line]
        assert len(narrow[0]) <= width and f"12 of 1056; top {top}: L3H1 r=+0.21" in narrow[0]


def test_piped_without_columns_is_100_wide(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_width(io.StringIO()) == DEFAULT_WIDTH == 100
    monkeypatch.setenv("COLUMNS", "73")
    assert output_width(io.StringIO()) == 73
    # `vrprobe show` with its output captured (not a terminal) and no COLUMNS at all
    _write_run(tmp_path / "study", ZOO)
    text = _show(monkeypatch, None, str(tmp_path / "study"), "--all")
    assert 80 < max(len(line) for line in text.splitlines()) <= 100


def test_show_without_a_table_fits(tmp_path, monkeypatch):
    (tmp_path / "summary.json").write_text(
        json.dumps({"n": 4, "accuracy": 0.75, "model": "/very/long/" + "x" * 30 + " and some words " * 8})
    )
    text = _show(monkeypatch, "60", str(tmp_path))
    assert "accuracy: 0.75" in text and all(len(line) <= 60 for line in text.splitlines())


def _grounded(names) -> dict:
    """`_summary(names)` with the grounded keys a study writes for a dataset with boxes (numbers by hand)."""
    summary = _summary(names)
    for k, row in enumerate(summary["table"]):
        row["r_sharpness_confidence"] = _r(0.31, 0.12, 0.48, 0.002)
        row["r_on_target_correct"] = _r(-0.2512, -0.4031, -0.0987, 0.004)
        row["r_on_target_overconfidence"] = _r(0.05, -0.1, 0.2)
        row["pointing_accuracy"] = {"value": 0.6125 + 0.01 * k, "ci": [0.5012, 0.7133], "n": 40}
        row["auroc_on_target"] = {"value": 0.4211, "ci": [0.3, 0.55], "n": 40}
        row["looks_right_wrong"] = {
            "error_rate": 0.25,
            "ci": [0.05, 0.5],
            "n": 12,
            "overall_error_rate": 0.075,
            "overall_ci": [0.0, 0.15],
            "overall_n": 40,
        }
        terciles = [{"value": 0.1 * (j + 1), "ci": [0.0, 0.5], "n": 13, "range": [0.1, 0.2]} for j in range(3)]
        row["ece_by_sharpness"] = row["confident_error_rate_by_sharpness"] = terciles
        row["verdict"]["sharpness_predicts_reliability"] = {
            "status": "not resolved",
            **{k: v for k, v in row["r_sharpness_accuracy"].items() if k in ("r", "ci", "p")},
        }
        row["verdict"]["looking_right_predicts_reliability"] = {"status": "contradicted", "r": -0.2512}
        row["verdict"]["looking_right_predicts_reliability"] |= {"ci": [-0.4031, -0.0987], "p": 0.004}
    return summary


@pytest.mark.parametrize("names", [ZOO, LONG], ids=["zoo-names", "long-names"])
@pytest.mark.parametrize("width", [120, 80])
def test_grounded_numbers_fit_the_width(names, width, tmp_path, monkeypatch):
    out = tmp_path / "study"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps(_grounded(names)))
    default = _show(monkeypatch, str(width), str(out))
    every = _show(monkeypatch, str(width), str(out), "--all")
    for text in (default, every):
        assert max(len(line) for line in text.splitlines()) <= width
        assert "  sharpness predicts reliability: not resolved, r -0.16 [-0.39, +0.00]" in text
        assert "  looking right predicts reliability: contradicted, r -0.25 [-0.40, -0.10]" in text
    # pointing accuracy joins the default view only where the key columns stay one table
    header = [line for line in default.splitlines() if line.startswith("model ")]
    assert ("pointing" in default) == (len(header) == 1 and header[0].split()[-1] == "pointing")
    assert ("pointing" in default) == (width == 120 and names == ZOO)
    assert "0.61 [0.50, 0.71]" in every and "0.250 vs 0.0750" in every and "0.100/0.200/0.300" in every
    assert "r(on target, acc)" in every and "r(on target, acc)" not in default
