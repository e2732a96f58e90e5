"""Causal signals: how much a sample's answer depends on the causal band, and how concentrated its causal trace is.

- `band_drop` (probability): clean confidence − mean over `N_NOISE` draws of the predicted answer's probability with
  the causal band corrupted. Confidence is vrprobe's (`vrprobe.scoring.evaluate`): softmax over the candidate answers of
  their summed log-likelihoods; "the predicted answer" is the clean prediction (the record's argmax candidate), read
  off again in each corrupted run even where that run predicts another candidate. The corruption is the band
  analysis' (`vrprobe.analyses.band`): hidden target, image positions, Gaussian noise `NOISE`·σ_l added to each band
  layer's output, σ_l from `layer_sigmas`. The clean confidence is the record's (the shared clean forward).
- `trace_concentration` (share in [0, 1]): a per-sample exact causal trace (`vrprobe.tracing.Tracer`, restored
  layer outputs `resid` at every layer × token group image / question / last, `TRACE_DRAWS` draws of noise on the
  image embeddings); the largest positive indirect effect over the sum of the positive indirect effects, over the grid
  less the answer position's last-layer cell (restoring it restores the answer by construction: its effect is the
  whole p_clean − p_corrupted). 1 = one hidden state carries the recovery; 1 / (cells) = spread evenly.

**The band is never chosen on the eval samples.** With a train set (`TrainSet`), `auto_band` picks the contiguous
window of `band_width(L)` layers with the largest mean resid indirect effect on the image tokens in a trace of up to
`BAND_TRACE_LIMIT` TRAIN samples (a type-stratified subset, as `vrprobe corrupt --band auto` does), and σ_l (and the
trace's σ) are measured on that subset. Without one, the band is the middle window of the same width (`default_band`)
and σ is measured on the eval samples' inputs (no label is read, but a value then depends on the eval set through σ);
`Band.source` says which.

**Noise draws.** Every sample is scored under the same `N_NOISE` draws: a batch of `N_NOISE` copies of the sample,
noised by `corrupt_batch(..., seed, start=0)` (row d takes the d-th slice of each band layer's noise stream), and the
trace uses the draws of sample index 0. A sample's value therefore depends on the sample, the band, σ and the seed
only, not on its position or its neighbours (common random numbers: two samples differ by what they are, not by the
luck of their noise). As in the band analysis, a candidate of more than one token is scored on by a second forward
under its own `intervene` block, whose noise is drawn afresh for that forward's shape and is the same for every row
(each row's second forward restarts the streams): such candidates' later tokens see one draw, not `N_NOISE`.
The trace reads no label either: it runs on the sample without its answers (`unlabelled`), so its target is the clean
prediction, not the gold answer. Open-ended samples (no candidates) get NaN for `band_drop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from vrprobe.analyses.band import AUTO_GROUPS, auto_band, band_edits, corrupt_batch, layer_sigmas
from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet, check_paired
from vrprobe.data import Sample, stratified_subset
from vrprobe.models import Adapter
from vrprobe.tracing import TRACE_GROUPS, TraceConfig, Tracer, measure_sigma, trace_dataset

#: noise draws averaged per sample for `band_drop` (one forward each, run as one batch)
N_NOISE = 3
#: k in k·σ_l, the band analysis' and the trace's default
NOISE = 3.0
#: the band corrupts the image tokens only
POSITIONS = "image"
#: TRAIN samples traced to choose the band (`vrprobe corrupt --band auto`'s --trace-limit default)
BAND_TRACE_LIMIT = 20
#: noise draws of the per-sample trace (the engine's and ROME's default)
TRACE_DRAWS = 10
#: full-forward equivalents of one per-sample trace: the least exact work (`vrprobe.tracing.exact_work`) / (L·T),
#: mean over 30 easy-VQA test samples on zoo:llava (31–40 per sample; zoo:qwen2vl 28, zoo:paligemma 116, whose
#: bidirectional prefix lets every restoration reach every prefix position); ROME's loop: 24 restorations × 11 rows
TRACE_FORWARDS = 35.0

SIGNALS = (
    Signal(
        name="causal band drop",
        column="band_drop",
        definition=(
            f"clean confidence − mean over {N_NOISE} seeded noise draws of the clean predicted answer's probability "
            f"(softmax over the candidates) with the causal band corrupted: Gaussian noise {NOISE}·σ_l on each band "
            "layer's output at the image tokens (σ_l: that output's std). Band: auto_band on a trace of TRAIN samples "
            "(never the eval samples); without a train set, the middle window of max(2, L // 3) layers. Hypothesis: "
            "a large drop means the answer really uses the image through the band, a small one that it survives "
            "without it (a prior or a guess), so higher = more reliable; NaN for open-ended samples"
        ),
        higher_is_reliable=True,
        forwards=float(N_NOISE),
        causal=True,
        granularity="layer",
    ),
    Signal(
        name="causal trace concentration",
        column="trace_concentration",
        definition=(
            "per-sample exact causal trace (noise on the image embeddings, target = the clean prediction, "
            f"{TRACE_DRAWS} draws; restored layer outputs at every layer × image/question/last): the largest positive "
            "indirect effect / the sum of positive indirect effects, over the grid less the answer position's "
            "last-layer cell (which restores the answer by construction); NaN when no cell has a positive effect. "
            "Hypothesis: a recovery carried by one state is a localised pathway, so higher = more reliable. "
            f"Forwards: the least exact work / (L·T), in full forwards ({TRACE_FORWARDS:g} on zoo:llava, 116 on "
            "zoo:paligemma; ROME's loop: 264)"
        ),
        higher_is_reliable=True,
        forwards=TRACE_FORWARDS,
        causal=True,
        granularity="layer × token group",
    ),
)


@dataclass(frozen=True)
class Band:
    """The causal band (first and last layer, inclusive), σ_l of each of its layers, the trace's σ (embedding noise
    unit), and where they came from."""

    layers: tuple[int, int]
    sigmas: dict[int, float]
    sigma: float
    source: str


def band_width(num_layers: int) -> int:
    """The band's width: max(2, L // 3) layers (`auto_band`'s default), at most L."""
    return min(num_layers, max(2, num_layers // 3))


def default_band(num_layers: int) -> tuple[int, int]:
    """The middle window of `band_width(L)` layers: [a, a + w − 1], a = (L − w) // 2."""
    width = band_width(num_layers)
    start = (num_layers - width) // 2
    return start, start + width - 1


def choose_band(
    adapter: Adapter, samples: Sequence[Sample], train: TrainSet | None = None, seed: int = 0, noise: float = NOISE
) -> Band:
    """The band of `band_drop` and the noise units: from `train` when given (see the module docstring), else the
    middle window with σ measured on `samples`' inputs. Reads no label of `samples`."""
    L = adapter.num_layers
    if train is not None and len(train.samples):
        subset = stratified_subset(list(train.samples), BAND_TRACE_LIMIT, seed)
        cfg = TraceConfig(kinds=("resid",), groups=AUTO_GROUPS[POSITIONS], noise=noise, seed=seed)
        traced = trace_dataset(adapter, subset, cfg)
        layers = auto_band(traced.grid, L, band_width(L), AUTO_GROUPS[POSITIONS])
        calibration, sigma = subset, traced.sigma
        source = f"auto_band on a trace of {len(subset)} TRAIN samples"
    else:
        layers, calibration = default_band(L), list(samples)
        sigma = measure_sigma(adapter, calibration)
        source = "default: no train set, the middle window (sigma from the eval samples' inputs)"
    sigmas = layer_sigmas(adapter, calibration, list(range(layers[0], layers[1] + 1)), POSITIONS)
    return Band(layers=layers, sigmas=sigmas, sigma=sigma, source=source)


@torch.no_grad()
def band_drops(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    band: Band,
    *,
    noise: float = NOISE,
    n_noise: int = N_NOISE,
    seed: int = 0,
) -> list[float]:
    """`band_drop` per sample (see the module docstring): record confidence − mean over the `n_noise` rows of
    `corrupt_batch(adapter, [sample] * n_noise, band_edits(band, "hidden", "image", noise, σ), seed, 0)` of the
    clean predicted candidate's probability. NaN for a sample without candidates."""
    edits = band_edits(band.layers, "hidden", POSITIONS, noise, band.sigmas)
    out = []
    for sample, record in zip(samples, records, strict=True):
        if not sample.choices:
            out.append(float("nan"))
            continue
        probs = record["probs"]
        k = max(range(len(probs)), key=probs.__getitem__)  # the clean argmax (the first of ties, as torch.argmax)
        corrupted = corrupt_batch(adapter, [sample] * n_noise, edits, seed, 0)
        out.append(float(record["confidence"]) - sum(r["probs"][k] for r in corrupted) / n_noise)
    return out


def unlabelled(sample: Sample) -> Sample:
    """The sample without its reference answers, so that a trace targets the clean prediction, not the gold."""
    meta = {k: v for k, v in sample.meta.items() if k not in ("multiple_choice_answer", "metric")}
    return replace(sample, answers=(), meta=meta)


def concentration(effect: torch.Tensor, groups: Sequence[str]) -> float:
    """max(E⁺) / Σ E⁺ over a [L, G] grid of indirect effects E (E⁺ = max(E, 0)), less the cell (L − 1, "last");
    NaN when Σ E⁺ = 0."""
    grid = effect.clone().double()
    if "last" in groups:
        grid[-1, list(groups).index("last")] = 0.0
    positive = grid.clamp_min(0)
    total = float(positive.sum())
    return float(positive.max()) / total if total > 0 else float("nan")


def trace_concentrations(
    adapter: Adapter, samples: Sequence[Sample], sigma: float, *, noise: float = NOISE, seed: int = 0
) -> list[float]:
    """`trace_concentration` per sample: each sample traced without its labels (`unlabelled`) under the draws of
    sample index 0, `concentration` of its resid effect grid."""
    tracer = Tracer(adapter, sigma, TraceConfig(kinds=("resid",), noise=noise, noise_samples=TRACE_DRAWS, seed=seed))
    return [concentration(tracer.trace(unlabelled(s), 0).effect[0], TRACE_GROUPS) for s in samples]


def band_values(
    adapter: Adapter, samples: Sequence[Sample], records: Sequence[dict[str, Any]], band: Band, seed: int = 0
) -> list[dict[str, float]]:
    """{`band_drop`, `trace_concentration`} per sample under a chosen `band` (`band_drops`, `trace_concentrations`)."""
    check_paired(samples, records)
    drops = band_drops(adapter, samples, records, band, seed=seed)
    shares = trace_concentrations(adapter, samples, band.sigma, seed=seed)
    return [{"band_drop": d, "trace_concentration": c} for d, c in zip(drops, shares, strict=True)]


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet | None = None,
) -> list[dict[str, float]]:
    """{`band_drop`, `trace_concentration`} per sample (the contract of `vrprobe.analyses.signals.base`):
    `band_values` under `choose_band(adapter, samples, train, options.seed)`."""
    check_paired(samples, records)
    if not samples:
        return []
    return band_values(adapter, samples, records, choose_band(adapter, samples, train, options.seed), options.seed)
