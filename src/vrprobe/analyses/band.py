"""Band corruption (the seed study's "causal strength"): noise on a band of middle layers, accuracy and sharpness.

For every sample, a clean run and a corrupted run score the answer (same closed-set scoring as `evaluate`) and record
the answer position's attention at every layer in the same forward. The corrupted run adds, at each layer l of the band
[a, b] and at the chosen positions (`image` or `all`):
- target `hidden`: Gaussian noise k·σ_l to the layer's output, σ_l = standard deviation of that layer's output over
  those positions on a calibration set (`layer_sigmas`);
- target `attention`: Gaussian noise of standard deviation k (logit units) to the attention scores of those query
  positions before softmax (rows stay distributions);
- target `both`: the two together.
Reported: accuracy clean vs corrupted, drop_abs = acc_clean − acc_corrupted, drop_rel = drop_abs / acc_clean, and
sharpness (mean attention entropy over image tokens, nats) clean vs corrupted: does attention stay focused while
accuracy falls?
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from vrprobe import checks
from vrprobe.analyses.jobs import Opened, Source
from vrprobe.data import Sample
from vrprobe.errors import UsageError
from vrprobe.interventions import Edit, GaussianNoise, LogitNoise, Site
from vrprobe.models import Adapter
from vrprobe.runtime.batching import run_batches
from vrprobe.runtime.executors import Rows
from vrprobe.runtime.progress import Progress
from vrprobe.runtime.seeding import derive_seed
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import site_std

TARGETS = ("hidden", "attention", "both")
#: non_image: every position but the image tokens, so the keys attention reads over the image stay clean
BAND_POSITIONS = ("image", "all", "non_image")
#: the trace groups whose resid effects choose an automatic band, for each corrupted position set
AUTO_GROUPS = {"image": ("image",), "all": ("image", "question", "last"), "non_image": ("question", "last")}
DEFINITIONS = {
    "accuracy_clean / accuracy_corrupted": "closed-set accuracy without / with the band corrupted",
    "drop_abs": "accuracy_clean − accuracy_corrupted",
    "drop_rel": "drop_abs / accuracy_clean",
    "sharpness_clean / sharpness_corrupted": "mean over samples of the answer position's attention entropy over image "
    "tokens (nats, averaged over heads and layers); lower = sharper",
    "hidden noise": "Gaussian noise noise·sigma_l on layer l's output at the chosen positions, sigma_l = std of that "
    "output there on the evaluated samples",
    "attention noise": "Gaussian noise of std noise (logit units) on the attention scores of the chosen query "
    "positions",
    "band_sweep": "the same hidden corruption on every band of the causal band's width across depth (a control: is "
    "the causal band special?): {band, accuracy, drop_abs, sharpness} per band, drop_abs against the same samples' "
    "clean accuracy",
}


@dataclass
class BandResult:
    """Aggregates and per-sample records (clean and corrupted) of one band corruption."""

    band: tuple[int, int]
    target: str
    positions: str
    noise: float
    sigmas: dict[int, float]
    clean: list[dict[str, Any]]
    corrupted: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        acc_c = _mean([r.get("accuracy", r["correct"]) for r in self.clean])
        acc_x = _mean([r.get("accuracy", r["correct"]) for r in self.corrupted])
        drop = acc_c - acc_x
        return {
            "band": list(self.band),
            "target": self.target,
            "positions": self.positions,
            "noise": self.noise,
            "n": len(self.clean),
            "accuracy_clean": acc_c,
            "accuracy_corrupted": acc_x,
            "drop_abs": drop,
            "drop_rel": drop / acc_c if acc_c > 0 else float("nan"),
            "sharpness_clean": _mean([r["sharpness"] for r in self.clean]),
            "sharpness_corrupted": _mean([r["sharpness"] for r in self.corrupted]),
            "sigmas": {str(k): v for k, v in self.sigmas.items()},
        }


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def parse_band(text: str, num_layers: int) -> tuple[int, int]:
    """'A-B' → (A, B), inclusive: the format by `checks.band_spec`, the range against the model's layers."""
    if checks.band_spec(text) == "auto":
        raise UsageError("--band auto names no layers until a trace has chosen them")
    a, b = (int(x) for x in text.split("-"))
    if not 0 <= a <= b < num_layers:
        raise UsageError(f"band {a}-{b} is out of range: the model has layers 0..{num_layers - 1}")
    return a, b


def layer_sigmas(
    adapter: Adapter, samples: Sequence[Sample], layers: Sequence[int], positions: str, batch_size: int = 16
) -> dict[int, float]:
    """σ_l: standard deviation of decoder layer l's output over `positions` (all dims) on `samples`."""
    return site_std(adapter, samples, Site("resid", tuple(layers), positions), batch_size)


def check_band_options(target: str, positions: str) -> None:
    """One clear error for an unknown --target or --positions."""
    if target not in TARGETS:
        raise UsageError(f"unknown --target '{target}' (known: {', '.join(TARGETS)})")
    if positions not in BAND_POSITIONS:
        raise UsageError(f"unknown --positions '{positions}' (known: {', '.join(BAND_POSITIONS)})")


def band_edits(
    band: tuple[int, int], target: str, positions: str, noise: float, sigmas: dict[int, float]
) -> list[Edit]:
    """The (site, intervention) pairs of a band corruption."""
    check_band_options(target, positions)
    layers = range(band[0], band[1] + 1)
    edits: list[Edit] = []
    if target in ("hidden", "both"):
        edits += [(Site("resid", (layer,), positions), GaussianNoise(noise, sigmas[layer])) for layer in layers]
    if target in ("attention", "both"):
        edits.append((Site("attn_probs", tuple(layers), positions), LogitNoise(noise)))
    return edits


def corrupt_band(
    adapter: Adapter,
    samples: Sequence[Sample],
    band: tuple[int, int],
    *,
    target: str = "hidden",
    positions: str = "image",
    noise: float = 3.0,
    seed: int = 0,
    batch_size: int = 32,
    calibration: Sequence[Sample] | None = None,
    max_new_tokens: int = 10,
    progress: Progress | None = None,
    stage: str = "corrupt",
    done: Collection[str] = (),
    on_batch: Callable[[list[int], list[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
) -> BandResult:
    """Run band corruption over `samples`: per batch, the clean records and the records under the band's edits
    (σ_l measured on `calibration`, default the samples). Samples whose ids are in `done` are skipped (a resumed run);
    `on_batch(indices, clean, corrupted)` is called as each batch finishes (the run directory appends it); a batch
    that runs out of memory is halved and retried (`run_batches`). The result holds the batches run in this call."""
    if not adapter.records_attention:
        raise UsageError("band corruption needs the model loaded with vrprobe's attention function")
    check_band_options(target, positions)
    layers = list(range(band[0], band[1] + 1))
    sigmas = layer_sigmas(adapter, calibration or samples, layers, positions) if target != "attention" else {}
    edits = band_edits(band, target, positions, noise, sigmas)
    clean: list[dict[str, Any]] = []
    corrupted: list[dict[str, Any]] = []

    def work(indices: list[int], chunk: list[Sample]) -> None:
        batch = adapter.encode_samples(chunk)
        c = score_batch(adapter, chunk, batch, max_new_tokens=max_new_tokens)
        x = corrupt_batch(adapter, chunk, edits, seed, indices[0], batch, max_new_tokens)
        clean.extend(c)
        corrupted.extend(x)
        if on_batch:
            on_batch(indices, c, x)

    run_batches(samples, batch_size, work, done=done, progress=progress, stage=stage)
    return BandResult(
        band=band, target=target, positions=positions, noise=noise, sigmas=sigmas, clean=clean, corrupted=corrupted
    )


def corrupt_batch(
    adapter: Adapter,
    chunk: Sequence[Sample],
    edits: Sequence[Edit],
    seed: int,
    start: int,
    batch: Any = None,
    max_new_tokens: int = 10,
) -> list[dict[str, Any]]:
    """Score one batch under the band edits; the noise seed is `derive_seed(seed, the batch's first sample index)`,
    so a resumed run with the same batch size draws the same noise."""
    return score_batch(adapter, chunk, batch, edits=edits, seed=derive_seed(seed, start), max_new_tokens=max_new_tokens)


def auto_band(
    grid: Sequence[dict[str, Any]], num_layers: int, width: int | None = None, groups: Sequence[str] = ("image",)
) -> tuple[int, int]:
    """The contiguous band of `width` layers (default max(2, L // 3)) with the largest mean resid effect, summed over
    `groups`, in a trace's mean grid."""
    width = width or max(2, num_layers // 3)
    effect = [0.0] * num_layers
    for cell in grid:
        if cell["kind"] == "resid" and cell["group"] in groups:
            effect[cell["layer"]] += cell["effect"]
    best = max(range(num_layers - width + 1), key=lambda a: sum(effect[a : a + width]))
    return best, best + width - 1


def band_sweep(
    adapter: Adapter,
    samples: Sequence[Sample],
    width: int,
    *,
    positions: str = "all",
    noise: float = 3.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: Progress | None = None,
    stage: str = "band sweep",
) -> dict[str, Any]:
    """Hidden band corruption of every band [a, a + width − 1], a = 0 .. L − width, on the same samples (σ_l of every
    layer measured once on them): {accuracy_clean, sharpness_clean, bands: [{band, accuracy, drop_abs, sharpness}]}."""
    check_band_options("hidden", positions)
    n_layers = adapter.num_layers
    if not 1 <= width <= n_layers:
        raise UsageError(f"band width {width} does not fit the model's {n_layers} layers")
    sigmas = layer_sigmas(adapter, samples, list(range(n_layers)), positions)
    bands = [(a, a + width - 1) for a in range(n_layers - width + 1)]
    clean: list[dict[str, Any]] = []
    corrupted: dict[tuple[int, int], list[dict[str, Any]]] = {b: [] for b in bands}

    def work(indices: list[int], chunk: list[Sample]) -> None:
        batch = adapter.encode_samples(chunk)
        clean.extend(score_batch(adapter, chunk, batch))
        for b in bands:
            edits = band_edits(b, "hidden", positions, noise, sigmas)
            corrupted[b].extend(corrupt_batch(adapter, chunk, edits, seed, indices[0], batch))

    run_batches(samples, batch_size, work, progress=progress, stage=stage)
    acc = _mean([r.get("accuracy", r["correct"]) for r in clean])
    rows = []
    for b in bands:
        acc_b = _mean([r.get("accuracy", r["correct"]) for r in corrupted[b]])
        rows.append(
            {"band": list(b), "accuracy": acc_b, "drop_abs": acc - acc_b}
            | {"sharpness": _mean([r["sharpness"] for r in corrupted[b]])}
        )
    return {"accuracy_clean": acc, "sharpness_clean": _mean([r["sharpness"] for r in clean]), "bands": rows}


@dataclass(frozen=True)
class CorruptJob:
    """`corrupt`'s rows for an executor: per batch the clean record and the record under the band's `edits` (noise
    seeded by the batch's first position, `corrupt_batch`), merged as `band_*` keys, with the position as `index`."""

    source: Source
    edits: tuple[Edit, ...]
    seed: int
    max_new_tokens: int = 10

    def open(self, cache: dict[Any, Any]) -> Opened:
        return self.source.open(cache)

    def rows(self, context: Opened, indices: list[int]) -> Rows:
        adapter, chunk = context.adapter, [context.samples[i] for i in indices]
        batch = adapter.encode_samples(chunk)
        clean = score_batch(adapter, chunk, batch, max_new_tokens=self.max_new_tokens)
        banded = corrupt_batch(adapter, chunk, self.edits, self.seed, indices[0], batch, self.max_new_tokens)
        return {
            "records": [
                {
                    **c,
                    "index": i,
                    "band_correct": b["correct"],
                    "band_accuracy": b["accuracy"],
                    "band_predicted": b["predicted"],
                    "band_confidence": b["confidence"],
                    "band_sharpness": b["sharpness"],
                }
                for i, c, b in zip(indices, clean, banded, strict=True)
            ]
        }
