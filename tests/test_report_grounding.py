"""The report's grounding section and the grounded numbers in the report and the terminal, from a real tiny study
(zoo:llava on easy-vqa, whose samples carry the shape's box): the example pictures (decoded: their size, the heat and
the outlined box), the calibration-by-sharpness-tercile figure, the grounding table, the verdict's two halves; and a
summary without the grounded keys (an older run; a dataset without boxes) rendered as before. The picture itself is
checked pixel by pixel on a hand-made case."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil

import matplotlib
import numpy as np
import pytest
from PIL import Image

import vrprobe
from vrprobe.reporting.grounding import BOX_COLOR, HEAT_ALPHA, KINDS, display_size, heat, overlay
from vrprobe.reporting.html import COLUMNS, VERDICT_HEADER, render
from vrprobe.reporting.tables import GROUNDING_TITLE, r_interval, value_interval

from conftest import run_cli

KEY = "zoo:llava · easy-vqa:test"
#: every key the grounding work added to a table row, to the verdict and to the summary
NEW_ROW_KEYS = (
    "r_sharpness_confidence",
    "ece_by_sharpness",
    "confident_error_rate_by_sharpness",
    "n_grounded",
    "r_on_target_correct",
    "r_on_target_overconfidence",
    "auroc_on_target",
    "pointing_accuracy",
    "mean_attention_lift",
    "looks_right_wrong",
    "heads_on_target",
    "precision",
    "recall",
    "f1",
    "yes_ratio",
)
GROUNDED_ROW_KEYS = NEW_ROW_KEYS[3:]  # absent where a dataset has no boxes; the first three are always there
HALVES = ("sharpness_predicts_reliability", "looking_right_predicts_reliability")
PLOT = re.compile(r'data-plot="([^"]*)"[^>]*?src="data:image/png;base64,([^"]+)"', re.S)


def _plots(page: str) -> dict[str, Image.Image]:
    return {html.unescape(n): Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for n, b in PLOT.findall(page)}


def _headers(page: str, table_id: str) -> list[str]:
    table = re.search(rf'<table id="{table_id}".*?</thead>', page, re.S)
    assert table, table_id
    return [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<th[^>]*>(.*?)</th>", table.group(0))]


@pytest.fixture(scope="module")
def grounded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grounding") / "study"
    vrprobe.study(["zoo:llava"], ["easy-vqa:test"], out=out, limit=24, trace_limit=4, probe_limit=40)
    return out


def _copy(run, dest, edit) -> None:
    """`run` copied to `dest` with its summary.json passed through `edit` (examples/ left behind)."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("examples", "report.html"))
    summary = json.loads((dest / "summary.json").read_text())
    edit(summary)
    (dest / "summary.json").write_text(json.dumps(summary))


def _strip(summary: dict, keys: tuple[str, ...], halves: tuple[str, ...], examples: bool) -> None:
    for row in summary["table"]:
        for k in keys:
            row.pop(k, None)
        for k in halves:
            row["verdict"].pop(k, None)
    for verdict in summary.get("verdict", {}).values():
        for k in halves:
            verdict.pop(k, None)
    if examples:
        summary.pop("examples", None)


def test_overlay_by_hand():
    """A 64×40 image, a 2×2 grid with all attention on the bottom-right cell, a box on the top-left quadrant: the
    picture is 256×160, the bottom-right quadrant blended with the colour map's top colour at HEAT_ALPHA, the rest
    untouched, the box's outline cyan at the scaled corners (0, 0)–(127, 79)."""
    colour = np.array([200, 100, 50], dtype=np.uint8)
    image = Image.fromarray(np.broadcast_to(colour, (40, 64, 3)).copy(), "RGB")
    picture = np.asarray(overlay(image, [0.0, 0.0, 0.0, 1.0], [2, 2], [[0, 0, 32, 20]], [64, 40]))
    assert picture.shape == (160, 256, 3) and display_size(64, 40) == (256, 160)
    top = np.array(matplotlib.colormaps["inferno"](1.0)[:3]) * 255.0
    hot = np.rint(colour * (1 - HEAT_ALPHA) + top * HEAT_ALPHA).astype(np.uint8)
    assert (picture[80:, 128:] == hot).all()  # exact: uint8 values of one rounding, computed the same way
    assert (picture[2:78, 2:126] == colour).all()  # inside the box, no attention: the image as it was
    assert (picture[80:, :128] == colour).all() and (picture[:80, 128:] == colour).all()
    outline = (picture == np.array(BOX_COLOR, dtype=np.uint8)).all(-1)
    assert outline[0, :128].all() and outline[79, :128].all() and outline[:80, 0].all() and outline[:80, 127].all()
    assert not outline[80:].any() and not outline[:, 128:].any() and not outline[2:78, 2:126].any()


def test_heat_follows_the_cells_when_given():
    """Cells of a centre crop (the middle 40×40 of a 60×40 image, 2×2 tokens): outside the crop no heat; inside,
    each cell's value over the hottest cell's, at display pixels whose centre falls in the cell."""
    cells = [[10, 0, 30, 20], [30, 0, 50, 20], [10, 20, 30, 40], [30, 20, 50, 40]]
    v = heat([0.1, 0.2, 0.3, 0.4], [2, 2], (60, 40), cells=cells, image_size=[60, 40])
    assert v.shape == (40, 60)
    assert (v[:, :10] == 0).all() and (v[:, 50:] == 0).all()
    # each cell's share of the top cell's 0.4: within a rounding of the division
    np.testing.assert_allclose(v[0, 10:30], 0.25, rtol=1e-15)
    np.testing.assert_allclose(v[39, 30:50], 1.0, rtol=1e-15)
    np.testing.assert_allclose(v[20, 29], 0.75, rtol=1e-15)
    # without cells the grid spans the whole picture
    spread = heat([0.1, 0.2, 0.3, 0.4], [2, 2], (60, 40))
    np.testing.assert_allclose(spread[0, :30], 0.25, rtol=1e-15)


def test_report_shows_the_grounded_examples_and_numbers(grounded_run):
    summary = json.loads((grounded_run / "summary.json").read_text())
    row = summary["table"][0]
    examples = summary["examples"][KEY]
    assert examples and all(k in row for k in GROUNDED_ROW_KEYS[:8])
    page = (grounded_run / "report.html").read_text()
    plots = _plots(page)
    # one picture per example, at the display size of its original image, with the heat and the box on it
    for ex in examples:
        name = f"example {KEY} · {ex['kind']} · {ex['sample_id']}"
        picture = plots[name]
        assert picture.size == display_size(*ex["image_size"])
        pixels = np.asarray(picture)
        assert pixels.std() > 5 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8, name  # not blank
        assert (pixels == np.array(BOX_COLOR, dtype=np.uint8)).all(-1).sum() > 4 * 16, name  # the box's outline
        plain = np.asarray(
            Image.open(grounded_run / ex["image"]).convert("RGB").resize(picture.size, Image.Resampling.BILINEAR)
        )
        hottest = int(np.argmax(ex["attention_image"]))
        rows, cols = ex["image_grid"]
        y = int((hottest // cols + 0.5) * picture.size[1] / rows)
        x = int((hottest % cols + 0.5) * picture.size[0] / cols)
        assert (pixels[y, x] != plain[y, x]).any(), name  # the heat is drawn over the image
        assert f"<dt>Q</dt><dd>{ex['question']}</dd>" in html.unescape(page)
    for kind in dict.fromkeys(e["kind"] for e in examples):
        assert f"<h4>{html.escape(KINDS[kind])}</h4>" in page
    terciles = plots[f"terciles {KEY}"]
    assert terciles.size[0] > 300 and np.asarray(terciles).std() > 5
    # the grounding table: its columns and the row's numbers as the summary holds them
    headers = _headers(page, "grounding-table")
    for h in ("pointing acc.", "r(on target, correct)", "AUROC on target", "error: looks right vs all"):
        assert h in headers, headers
    assert row["pointing_accuracy"]["n"] == row["n_grounded"] == 24
    value, ci = value_interval(row["pointing_accuracy"]).split(" ", 1)
    assert f'{value}<span class="sub">{ci}</span>' in page
    assert r_interval(row["r_on_target_correct"]) in page
    # the verdict's two halves: headline and per-cell columns
    assert "Does looking right predict reliability?" in page and "Does sharpness predict reliability?" in page
    verdict = _headers(page, "verdict-table")
    assert verdict == [*VERDICT_HEADER, "sharpness predicts reliability", "looking right predicts reliability"]
    half = row["verdict"]["looking_right_predicts_reliability"]
    assert f'{half["status"]}<span class="sub">r {r_interval(half, digits=2)}' in page
    # the definitions of the grounded metrics, as summary.json states them
    section = page[page.index('<table id="grounding-definitions">') :]
    for key in ("pointing_accuracy", "looks_right_wrong", "ece_by_sharpness"):
        assert summary["definitions"][key] in html.unescape(section)


def test_show_prints_the_grounded_numbers(grounded_run, monkeypatch):
    row = json.loads((grounded_run / "summary.json").read_text())["table"][0]
    monkeypatch.setenv("COLUMNS", "120")
    text = run_cli("show", str(grounded_run)).stdout
    assert max(len(line) for line in text.splitlines()) <= 120
    header = next(line for line in text.splitlines() if line.startswith("model "))
    assert header.split()[-1] == "pointing" and "r(sharp, acc)" in header
    for key, label in zip(HALVES, ("sharpness", "looking right"), strict=True):
        half = row["verdict"][key]
        assert f"  {label} predicts reliability: {half['status']}, r {r_interval(half, digits=2)}" in text
    every = run_cli("show", str(grounded_run), "--all").stdout
    assert GROUNDING_TITLE.split(";")[0] in every and max(len(line) for line in every.splitlines()) <= 120
    for h in ("point acc", "r(on target, acc)", "AUROC on target", "wrong: looks right vs all", "ECE by sharp tercile"):
        assert h in every, h
    assert value_interval(row["pointing_accuracy"]) in every


def test_a_missing_example_image_is_drawn_on_grey(grounded_run, tmp_path):
    _copy(grounded_run, tmp_path / "run", lambda s: None)
    page = render(tmp_path / "run")
    assert "missing from the run directory" in page
    pictures = [p for n, p in _plots(page).items() if n.startswith("example ")]
    assert pictures and all(np.asarray(p).std() > 1 for p in pictures)  # grey, heat and box: still a picture


def test_a_summary_without_the_grounded_keys_renders_as_before(grounded_run, tmp_path, monkeypatch):
    old = tmp_path / "old"
    _copy(grounded_run, old, lambda s: _strip(s, NEW_ROW_KEYS, HALVES, examples=True))
    page = render(old)
    assert _headers(page, "study-table") == ["model", "params", "data", *(h for _, h, _ in COLUMNS)]
    assert _headers(page, "verdict-table") == list(VERDICT_HEADER)
    for marker in ('id="grounding', "figure.example", "Does looking right", "Does sharpness predict", "terciles "):
        assert marker not in page, marker
    monkeypatch.setenv("COLUMNS", "120")
    for args in ((), ("--all",)):
        text = run_cli("show", str(old), *args).stdout
        assert "pointing" not in text and "predicts reliability" not in text and "grounding" not in text
    # a dataset without boxes: the terciles and r(sharp, confidence) stay, the grounded keys are absent
    no_boxes = tmp_path / "no-boxes"
    _copy(grounded_run, no_boxes, lambda s: _strip(s, GROUNDED_ROW_KEYS, HALVES[1:], examples=True))
    page = render(no_boxes)
    assert f"terciles {KEY}" in _plots(page) and not any(n.startswith("example ") for n in _plots(page))
    assert _headers(page, "grounding-table") == ["model", "data", "r(sharp, confidence)"]
    assert _headers(page, "verdict-table") == [*VERDICT_HEADER, "sharpness predicts reliability"]
    text = run_cli("show", str(no_boxes)).stdout
    assert "sharpness predicts reliability" in text and "looking right" not in text and "pointing" not in text
    # an example with nothing to draw (no image, attention, grid or boxes) still renders, as a grey square; one whose
    # attention does not match its grid is drawn without the heat, and says so
    bare = tmp_path / "bare"
    wrong = {"kind": "confident_right", "sample_id": "b", "attention_image": [1.0, 0.0, 0.0], "image_grid": [2, 2]}
    entries = [{"kind": "confident_right", "sample_id": "a", "question": "q?"}, wrong]
    _copy(grounded_run, bare, lambda s: s.update(examples={KEY: entries}))
    page = render(bare)
    pictures = [p for n, p in _plots(page).items() if n.startswith("example ")]
    assert len(pictures) == 2 and all(p.size == (256, 256) and (np.asarray(p) == 128).all() for p in pictures)
    assert "attention does not match its grid: not drawn" in page
