"""The report's grounding section: does the model look at the right region? Pictures and numbers from the run
directory only (summary.json's grounded keys and `examples`, the example PNGs under `examples/`).

`overlay(image, attention, grid, boxes, image_size)` one example as a picture: the image scaled to `DISPLAY` px on its
longer side, the attention over the image tokens upsampled to it (`heat`: one flat patch per token cell, at the cells'
own rectangles when the example gives them (`cells`), else the grid spread over the whole image) as a
semi-transparent colour map whose opacity follows the cell's share of the hottest cell's attention, and the target
boxes outlined (scaled from original-image pixels). `tercile_plot(row, title)` ECE and the confident-error rate per
sharpness tercile with their intervals. `grounding_sections(summary, out)` one `GroundingSection` per model × dataset
with grounded numbers, examples or terciles (none for a summary without them); `grounded_stats(row)` its key numbers
as (label, text); `definitions(summary)` the grounded metrics' definitions that summary.json states."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

from vrprobe.reporting.plots import _png
from vrprobe.reporting.sections import Plot
from vrprobe.reporting.tables import looks_right_rates, r_interval, sig3, value_interval

#: the examples' kinds as the study names them, and their headings, in the order the report shows them
KINDS = {
    "confident_right": "confident right",
    "confident_wrong_on_target": "confident wrong, attention on target",
    "confident_wrong_off_target": "confident wrong, attention off target",
}
#: an example picture's longer side, in pixels
DISPLAY = 256
#: the colour map of the attention heat and its opacity at the hottest cell (0 at a cell with no attention)
CMAP, HEAT_ALPHA = "inferno", 0.65
#: the target boxes' outline: colour (cyan, apart from the heat's black-red-yellow) and width in display pixels
BOX_COLOR, BOX_WIDTH = (0, 255, 255), 2
#: the summary's grounded numbers of a table row (absent where the dataset has no boxes)
GROUNDED_KEYS = (
    "pointing_accuracy",
    "r_on_target_correct",
    "r_on_target_overconfidence",
    "auroc_on_target",
    "looks_right_wrong",
)
#: the per-tercile keys of a table row: heading of each panel
TERCILE_KEYS = (
    ("ece_by_sharpness", "ECE"),
    ("confident_error_rate_by_sharpness", "confident-error rate"),
)
#: the definitions the grounding section repeats, where summary["definitions"] holds them (a key naming several
#: with " / " is shown when one of them is here; POPE's when a row has POPE's metrics)
DEFINITION_KEYS = (
    "target",
    "boxes",
    "image_grid",
    "attention_image",
    "target_area",
    "attention_on_target",
    "attention_lift",
    "pointing_hit",
    "n_grounded",
    *GROUNDED_KEYS,
    "mean_attention_lift",
    "heads_on_target",
    "r_sharpness_confidence",
    "sharpness tercile",
    *(key for key, _ in TERCILE_KEYS),
    "sharpness_predicts_reliability",
    "looking_right_predicts_reliability",
    "examples",
)


@dataclass
class Example:
    """One example: its picture and its caption's parts (label, text)."""

    plot: Plot
    caption: list[tuple[str, str]]
    cls: str


@dataclass
class GroundingSection:
    """One model × dataset: its key grounded numbers, examples by kind and the per-tercile calibration figure."""

    title: str
    data: str
    stats: list[tuple[str, str]]
    groups: list[tuple[str, list[Example]]] = field(default_factory=list)
    terciles: Plot | None = None


def display_size(width: int, height: int, display: int = DISPLAY) -> tuple[int, int]:
    """The picture's size: (width, height) scaled so that the longer side is `display` px (each side at least 1)."""
    scale = display / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def heat(
    attention: Sequence[float],
    grid: Sequence[int] | None,
    size: tuple[int, int],
    cells: Sequence[Sequence[float]] | None = None,
    image_size: Sequence[int] | None = None,
) -> np.ndarray:
    """The attention over the image tokens as a picture of `size` = (width, height), divided by the hottest cell's
    value (1 there; all 0 when no cell has attention), float64 [height, width].

    With `cells` (one (x0, y0, x1, y1) per token in original-image pixels of an `image_size` = (W, H) image, as the
    model's geometry gives them) each display pixel whose centre lies in a cell takes that cell's value (the largest
    where cells overlap; 0 outside every cell, e.g. a centre-cropped border). Without them, the `grid` = [rows, cols]
    (row-major) is spread over the whole picture, pixel (x, y) taking the cell that holds its centre."""
    a = np.asarray(attention, dtype=np.float64).ravel()
    top = a.max() if a.size else 0.0
    a = a / top if top > 0 else np.zeros_like(a)
    width, height = size
    if cells is not None and image_size is not None:
        c = np.asarray(cells, dtype=np.float64).reshape(-1, 4)
        if len(c) != a.size:
            raise ValueError(f"attention has {a.size} cells, the geometry {len(c)}")
        px = (np.arange(width) + 0.5) * float(image_size[0]) / width  # display pixel centres, original pixels
        py = (np.arange(height) + 0.5) * float(image_size[1]) / height
        out = np.zeros((height, width))
        for (x0, y0, x1, y1), v in zip(c, a, strict=True):
            inside_y, inside_x = (py >= y0) & (py < y1), (px >= x0) & (px < x1)
            out[np.ix_(inside_y, inside_x)] = np.maximum(out[np.ix_(inside_y, inside_x)], v)
        return out
    if grid is None:
        raise ValueError("attention over the image needs its grid or its cells")
    rows, cols = int(grid[0]), int(grid[1])
    if a.size != rows * cols:
        raise ValueError(f"attention has {a.size} cells, the grid {rows}×{cols}")
    iy = np.minimum(((np.arange(height) + 0.5) * rows / height).astype(int), rows - 1)
    ix = np.minimum(((np.arange(width) + 0.5) * cols / width).astype(int), cols - 1)
    return a.reshape(rows, cols)[iy][:, ix]


def overlay(
    image: Image.Image | None,
    attention: Sequence[float] | None,
    grid: Sequence[int] | None,
    boxes: Sequence[Sequence[float]],
    image_size: Sequence[int],
    display: int = DISPLAY,
    cells: Sequence[Sequence[float]] | None = None,
) -> Image.Image:
    """The example's picture (RGB, `display_size` of `image_size`): the image (mid grey when missing) resized to it,
    the attention heat (`heat`: over the token `cells` when given, else the `grid` over the whole image) blended over
    it (opacity HEAT_ALPHA × the cell's attention / the hottest cell's), each target box (x, y, w, h in
    original-image pixels) outlined BOX_WIDTH px wide in BOX_COLOR, scaled to the picture."""
    w0, h0 = int(image_size[0]), int(image_size[1])
    size = display_size(w0, h0, display)
    if image is None:
        base = np.full((size[1], size[0], 3), 128.0)
    else:
        base = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    if attention is not None and (grid is not None or cells is not None) and len(attention):
        v = heat(attention, grid, size, cells, image_size)
        rgb = matplotlib.colormaps[CMAP](v)[..., :3] * 255.0
        alpha = (HEAT_ALPHA * v)[..., None]
        base = base * (1 - alpha) + rgb * alpha
    picture = Image.fromarray(np.clip(np.rint(base), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    sx, sy = size[0] / max(w0, 1), size[1] / max(h0, 1)
    for x, y, w, h in boxes:
        x0, y0 = round(x * sx), round(y * sy)
        x1, y1 = max(x0, round((x + w) * sx) - 1), max(y0, round((y + h) * sy) - 1)
        draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOR, width=BOX_WIDTH)
    return picture


def _picture_png(picture: Image.Image) -> str:
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _load(out: Path, name: str | None) -> Image.Image | None:
    """The example's saved image, or None when the summary names none or the file is missing or unreadable."""
    if not name:
        return None
    path = (out / name).resolve()
    if not path.is_file() or out.resolve() not in path.parents:  # stay inside the run directory
        return None
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError):
        return None


def _yes(flag: Any) -> str:
    if flag is None:
        return "n/a"
    return "yes" if float(flag) >= 0.5 else "no"


def example(out: Path, ex: dict[str, Any], title: str) -> Example:
    """One example of `summary["examples"][title]` as a picture and a caption (question, answer, gold, confidence,
    correct, attention on target, pointing hit); a missing image file draws the heat on grey and says so."""
    image = _load(out, ex.get("image"))
    size = ex.get("image_size") or (image.size if image is not None else (1, 1))
    boxes = ex.get("boxes") or []
    try:
        picture = overlay(image, ex.get("attention_image"), ex.get("image_grid"), boxes, size, cells=ex.get("cells"))
    except ValueError:  # attention of another length than its grid: the picture without the heat, and a word why
        picture = overlay(image, None, None, boxes, size)
        image_note = "attention does not match its grid: not drawn"
    else:
        image_note = ""
    answers = [str(a) for a in ex.get("answers") or []]
    caption = [
        ("Q", str(ex.get("question", ""))),
        ("answer", str(ex.get("predicted", ""))),
        ("gold", " / ".join(dict.fromkeys(answers)) or "n/a"),
        ("confidence", sig3(ex.get("confidence"))),
        ("correct", _yes(ex.get("correct"))),
        ("on target", sig3(ex.get("attention_on_target"))),
        ("pointing hit", _yes(ex.get("pointing_hit"))),
    ]
    if image is None:
        caption.append(("image", "missing from the run directory"))
    if image_note:
        caption.append(("heat", image_note))
    name = f"example {title} · {ex.get('kind', '')} · {ex.get('sample_id', '')}"
    return Example(Plot(name, _picture_png(picture)), caption, "right" if _yes(ex.get("correct")) == "yes" else "wrong")


def _label(cell: dict[str, Any], i: int) -> str:
    """A tercile's x label: its name and sharpness range (normalised entropy) when given, and its n."""
    names = ("sharpest", "middle", "least sharp")
    lo_hi = cell.get("range") or cell.get("sharpness_range")
    text = str(cell.get("label") or (names[i] if i < len(names) else f"tercile {i + 1}"))
    if lo_hi and None not in lo_hi:
        text += f"\n{lo_hi[0]:.2f}–{lo_hi[1]:.2f}"
    n = f"n = {cell.get('n', 'n/a')}"
    return f"{text}\n{n}" + (f" ({cell['n_confident']} conf.)" if "n_confident" in cell else "")


def tercile_plot(row: dict[str, Any], title: str) -> str:
    """ECE and the confident-error rate per sharpness tercile (sharpest first): bar = value, whisker = its 95%
    interval; a tercile without a value shows 'n/a'."""
    panels = [(key, heading) for key, heading in TERCILE_KEYS if row.get(key)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (key, heading) in zip(axes[0], panels, strict=True):
        cells = row[key]
        xs = np.arange(len(cells))
        for x, cell in zip(xs, cells, strict=True):
            value = cell.get("value")
            if value is None:
                ax.text(x, 0.02, "n/a", ha="center", fontsize=8, color="0.4")
                continue
            ax.bar(x, value, width=0.6, color="tab:blue", alpha=0.75)
            lo, hi = cell.get("ci") or (None, None)
            if lo is not None and hi is not None:
                ax.errorbar(x, value, yerr=[[max(value - lo, 0)], [max(hi - value, 0)]], color="k", capsize=4, lw=1)
        ax.set_xticks(xs, [_label(c, i) for i, c in enumerate(cells)], fontsize=7.5)
        ax.set_ylim(bottom=0)
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("sharpness tercile (normalised entropy)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def looks_right_text(cell: dict[str, Any] | None) -> tuple[str, str]:
    """('0.200 vs 0.350', '[0.05, 0.40] vs [0.20, 0.50], n = 10 of 24'): the error rate among samples whose attention
    is sharp and on target vs the overall error rate, then their intervals and counts; ('n/a', '') without it."""
    rate, overall = looks_right_rates(cell)
    if not cell or (rate is None and overall is None):
        return "n/a", ""
    ci = value_interval(cell, only_ci=True)
    overall_ci = value_interval({"ci": cell.get("overall_ci")}, only_ci=True)
    n = f"n = {cell.get('n', 'n/a')}" + (f" of {cell['overall_n']}" if "overall_n" in cell else "")
    ci, overall_ci, n = (part.replace(" ", "\u00a0") for part in (ci, overall_ci, n))  # each group kept on one line
    return f"{sig3(rate)} vs {sig3(overall)}", f"{ci} vs {overall_ci}, {n}"


def _heads_text(cells: Sequence[dict[str, Any]]) -> str:
    """'L3H1 +0.21 [+0.02, +0.40]; L5 mean …': r(attention on target, correct) of the heads whose sharpness predicts
    correctness, strongest first (at most 3); 'none' for none."""
    ranked = sorted(cells, key=lambda c: -abs(c.get("r") or 0.0))
    names = [f"L{c['layer']} mean" if c["head"] == "mean" else f"L{c['layer']}H{c['head']}" for c in ranked]
    parts = [f"{name} {r_interval(c, digits=2)}" for name, c in zip(names[:3], ranked[:3], strict=True)]
    return "; ".join(parts) + (f"; {len(ranked) - 3} more" if len(ranked) > 3 else "") if parts else "none"


def grounded_stats(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The section's key numbers, those the row holds: samples with boxes, pointing accuracy, r(on target, correct),
    AUROC on target, error when sharp and on target vs overall, r(on target, overconfidence), mean lift,
    r(sharp, confidence), and r(on target, correct) of the heads whose sharpness predicts correctness."""
    out = []
    if "n_grounded" in row:
        out.append(("samples with boxes", f"{row['n_grounded']} of {row.get('n', 'n/a')}"))
    if "pointing_accuracy" in row:
        out.append(("pointing accuracy", value_interval(row["pointing_accuracy"])))
    if "r_on_target_correct" in row:
        out.append(("r(on target, correct)", r_interval(row["r_on_target_correct"], digits=2)))
    if "auroc_on_target" in row:
        out.append(("AUROC on target", value_interval(row["auroc_on_target"])))
    if "looks_right_wrong" in row:
        first, second = looks_right_text(row["looks_right_wrong"])
        out.append(("error when sharp and on target vs overall", f"{first} ({second})" if second else first))
    if "r_on_target_overconfidence" in row:
        out.append(("r(on target, overconfidence)", r_interval(row["r_on_target_overconfidence"], digits=2)))
    if "mean_attention_lift" in row:
        out.append(("mean lift", value_interval(row["mean_attention_lift"])))
    if "r_sharpness_confidence" in row:
        out.append(("r(sharp, confidence)", r_interval(row["r_sharpness_confidence"], digits=2)))
    if "heads_on_target" in row:
        out.append(("r(on target, correct) of predictive heads", _heads_text(row["heads_on_target"])))
    return out


def grounding_sections(summary: dict[str, Any], out: Path) -> list[GroundingSection]:
    """One section per table row with grounded numbers, examples or per-tercile calibration, in table order."""
    examples = summary.get("examples") or {}
    sections = []
    for row in summary.get("table", []):
        title = f"{row['model']} · {row['data']}"
        exs = examples.get(title) or []
        has_terciles = any(row.get(key) for key, _ in TERCILE_KEYS)
        if not exs and not has_terciles and not any(k in row for k in GROUNDED_KEYS):
            continue
        section = GroundingSection(title, row["data"], grounded_stats(row))
        kinds = [*KINDS, *(k for k in dict.fromkeys(e.get("kind", "") for e in exs) if k not in KINDS)]
        for kind in kinds:
            group = [example(out, e, title) for e in exs if e.get("kind", "") == kind]
            if group:
                section.groups.append((KINDS.get(kind, str(kind).replace("_", " ")), group))
        if has_terciles:
            section.terciles = Plot(f"terciles {title}", tercile_plot(row, "calibration by sharpness tercile"))
        sections.append(section)
    return sections


def definitions(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The grounded metrics' definitions that summary["definitions"] holds, in DEFINITION_KEYS order (POPE's too when
    a row has POPE's metrics)."""
    defs = summary.get("definitions") or {}
    order = {k: i for i, k in enumerate(DEFINITION_KEYS)}
    pope = any("precision" in row for row in summary.get("table", []))
    ranked = []
    for key, text in defs.items():
        ranks = [order[part.strip()] for part in key.split(" / ") if part.strip() in order]
        if ranks:
            ranked.append((min(ranks), key, str(text)))
        elif pope and ("(POPE)" in key or key.startswith("POPE ")):
            ranked.append((len(order), key, str(text)))
    return [(key, text) for _, key, text in sorted(ranked, key=lambda t: t[0])]
