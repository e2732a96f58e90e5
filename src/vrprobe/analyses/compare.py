"""`vrprobe compare`: every reliability signal on the same eval samples, one table row each.

1. The clean scoring forward (`score_batch(..., hidden=True)`, in batches) over the TRAIN samples and over the EVAL
   samples. Every signal reads the eval forward's records, so its time is counted once, as a shared cost
   (`clean_seconds_per_sample`); the TRAIN forward feeds the fitted signals (`train_seconds`).
2. Each selected signal module (`vrprobe.analyses.signals.MODULES`, or a sequence given) computes its signals for the
   eval samples from their clean records, fitted ones learning from TRAIN's only (`TrainSet`): one timed `compute`
   call, whose wall time / eval samples is the `seconds` of each of its signals. A module none of whose selected
   signals can run on this data (they need target boxes, no sample has any) is not called.
3. One row per signal (`signal_row`): AUROC (correct vs wrong) with its bootstrap interval and AURC, over the samples
   where the signal is finite (`n`), the signal oriented by `higher_is_reliable` (negated when False); a `note` says
   what it needs that some samples lack, and what it draws.

Definitions (also written into summary.json): `DEFINITIONS` and each signal's own (`Signal.definition`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrprobe.analyses.grounding import GROUNDED_KEYS
from vrprobe.analyses.proxies import DEFINITIONS as PROXY_DEFINITIONS
from vrprobe.analyses.proxies import collect
from vrprobe.analyses.signals import MODULES, SignalModule
from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet
from vrprobe.data import Sample
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.metrics.selective import aurc, auroc, auroc_interval
from vrprobe.models import Adapter
from vrprobe.runtime.progress import Progress, Ticker
from vrprobe.scoring.evaluate import DEFINITIONS as EVAL_DEFINITIONS

#: the clean record's keys kept per eval sample (as the study keeps them), then the grounded ones where present
CLEAN_KEYS = (
    "sample_id",
    "question_type",
    "predicted",
    "confidence",
    "correct",
    "accuracy",
    "sharpness",
    "sharpness_norm",
    "entropy_by_head",
    "margin",
)
#: bootstrap resamples of each AUROC interval
N_BOOT = 1000

DEFINITIONS = {
    "table": "one row per signal, over the eval samples (--eval-data) only; fitted signals learn from --data only",
    "signal": "the signal's name (what --signals takes)",
    "column": "the signal's column in records/ (one row per eval sample), as its module computed it (not negated)",
    "n": "eval samples where the signal is finite; the others (e.g. without target boxes) are left out of its row",
    "auroc": PROXY_DEFINITIONS["auroc"] + "; over the row's n samples, the signal oriented by higher_is_reliable; "
    "null when a class is missing or n = 0",
    "auroc_ci": "the AUROC's 95% percentile-bootstrap interval [lo, hi] (1,000 resamples of the n samples, seeded)",
    "aurc": PROXY_DEFINITIONS["aurc"] + " (over the row's n samples, most trusted first; lower is better)",
    "forwards / backwards": "model forward / backward passes per sample the signal declares beyond the clean scoring "
    "forward that every signal shares",
    "seconds": "wall-clock seconds per eval sample of the compute call of the signal's module (beyond the shared "
    "clean forward): its time / the eval samples; signals a module computes together each show the module's time; a "
    "fitted signal's fitting on --data is included; null when it could not run",
    "needs_labels": "trained on correctness labels (of --data) rather than read off the model",
    "causal": "intervenes on the model (corrupts, restores, ablates) rather than only reading it",
    "granularity": "what the signal is read from: answer (the output), token (per image token), pixel, layer, "
    "sample set (several sampled answers)",
    "higher_is_reliable": "true when a larger value means 'trust the answer more'; the AUROC and AURC negate the "
    "column when false (an entropy)",
    "note": "what the signal needs that samples lack (target boxes), what it draws (--samples), why its AUROC is null",
    "clean_seconds_per_sample": "wall-clock seconds per eval sample of the clean scoring forward (score_batch with "
    "hidden states), the cost every signal shares, reported once",
    "train_seconds": "wall-clock seconds of the clean forward over the --data samples the fitted signals learn from",
    "accuracy": "mean accuracy of the eval samples' clean answers; train_accuracy: mean correct of --data's",
    "n_train": "samples of --data (--train-limit) the fitted signals learn from",
    "clean_forwards": "clean scoring forwards per sample that every signal shares (1)",
    "options": "the options every signal module received (--seed, --samples and the fixed constants)",
}


def definitions(signals: Sequence[Signal]) -> dict[str, str]:
    """The summary's definitions: the table's fields, each signal's own (by name), then the records' clean keys."""
    out = {**DEFINITIONS, **{s.name: s.definition for s in signals}}
    return out | {k: v for k, v in EVAL_DEFINITIONS.items() if k not in out}


@dataclass
class CompareResult:
    """Eval records (clean keys and every signal's column, one per eval sample) and the summary of `compare`."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None = None


@dataclass(frozen=True)
class Planned:
    """One signal module to call and the signals selected from it (in its declaration order)."""

    module: SignalModule
    signals: tuple[Signal, ...]


def catalog(modules: Sequence[SignalModule] = MODULES) -> dict[str, Signal]:
    """Every signal of `modules` by name, in their order; a name or column declared twice is a `VrprobeError`."""
    known: dict[str, Signal] = {}
    columns: set[str] = set()
    for module in modules:
        for s in module.SIGNALS:
            if s.name in known or s.column in columns:
                raise VrprobeError(f"two signals declare the name '{s.name}' or the column '{s.column}'")
            known[s.name] = s
            columns.add(s.column)
    return known


def plan(names: str | Sequence[str] | None, modules: Sequence[SignalModule] = MODULES) -> list[Planned]:
    """The modules to call for the signals `names` (a comma-separated string or a list of signal names or columns;
    None: every signal), each with its selected signals. An unknown or repeated signal, or none at all, is a one-line
    `UsageError` listing the known names."""
    known = catalog(modules)
    by_column = {s.column: name for name, s in known.items()}
    listed = ", ".join(known)
    if names is None:
        wanted = list(known)
    else:
        parts = names.split(",") if isinstance(names, str) else list(names)
        given = [str(p).strip() for p in parts if str(p).strip()]
        if not given:
            raise UsageError(f"--signals needs at least one signal name (known: {listed})")
        unknown = [g for g in given if g not in known and g not in by_column]
        if unknown:
            raise UsageError(f"unknown signal '{unknown[0]}' (known: {listed}; a signal's column works too)")
        wanted = [g if g in known else by_column[g] for g in given]
        twice = sorted({w for w in wanted if wanted.count(w) > 1})
        if twice:
            raise UsageError(f"--signals lists {', '.join(twice)} more than once")
    out = []
    for module in modules:
        chosen = tuple(s for s in module.SIGNALS if s.name in wanted)
        if chosen:
            out.append(Planned(module, chosen))
    return out


def can_run(signal: Signal, with_boxes: int) -> bool:
    """Whether the data gives the signal what it requires: target boxes on at least one sample, where it needs them."""
    return "boxes" not in signal.requires or with_boxes > 0


def run_signals(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    planned: Sequence[Planned],
    options: SignalOptions,
    train: TrainSet,
    progress: Progress | None = None,
) -> tuple[list[dict[str, float]], dict[str, float | None]]:
    """Per eval sample, each selected signal's column -> value (NaN where it has none), and per signal name its
    module's seconds per sample (None when not run: it needs boxes no sample has)."""
    n, with_boxes = len(samples), sum(1 for s in samples if s.boxes)
    values: list[dict[str, float]] = [{} for _ in samples]
    seconds: dict[str, float | None] = {}
    tick = Ticker(progress, "compare signals", len(planned))
    for p in planned:
        names = ", ".join(s.name for s in p.signals)
        if not any(can_run(s, with_boxes) for s in p.signals):
            for v in values:
                v.update({s.column: math.nan for s in p.signals})
            seconds.update({s.name: None for s in p.signals})
            tick()
            continue
        t0 = time.perf_counter()
        out: Sequence[Mapping[str, float]] = p.module.compute(
            adapter, samples, [dict(r) for r in records], options, train
        )
        elapsed = time.perf_counter() - t0
        if len(out) != n:
            raise VrprobeError(f"the module of signals {names} returned {len(out)} values for {n} samples")
        for v, o in zip(values, out, strict=True):
            missing = [s.column for s in p.signals if s.column not in o]
            if missing:
                raise VrprobeError(f"the module of signals {names} returned no column {missing[0]}")
            v.update({s.column: math.nan if o[s.column] is None else float(o[s.column]) for s in p.signals})
        seconds.update({s.name: elapsed / n if n else None for s in p.signals})
        tick()
    return values, seconds


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def note(signal: Signal, n: int, total: int, with_boxes: int, options: SignalOptions, correct: np.ndarray) -> str:
    """The row's note: boxes it needs, answers it draws, samples left out, why its AUROC is undefined ('' if none)."""
    parts = []
    if "boxes" in signal.requires:
        has = f"none of the {total} eval samples has them" if with_boxes == 0 else f"{with_boxes} of {total} have them"
        parts.append(f"needs target boxes ({has})")
    parts += [f"needs {r}" for r in signal.requires if r != "boxes"]
    if signal.granularity == "sample set":
        parts.append(f"draws {options.samples} sampled answers per sample (--samples)")
    if 0 < n < total:
        parts.append(f"{total - n} of {total} samples have no value and are left out")
    elif n == 0 and can_run(signal, with_boxes):
        parts.append("no sample has a value")
    if n and correct.min() == correct.max():
        parts.append(f"AUROC undefined: every kept answer is {'correct' if correct[0] else 'wrong'}")
    return "; ".join(parts)


def signal_row(
    signal: Signal,
    values: Sequence[float],
    correct: Sequence[float],
    seconds: float | None,
    with_boxes: int,
    options: SignalOptions,
) -> dict[str, Any]:
    """One table row: AUROC [95% CI] and AURC of the finite values, oriented by `higher_is_reliable`; the signal's
    declared costs and kind; `seconds` per sample; the note. NaN results are written as null."""
    s = np.asarray(values, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    keep = np.isfinite(s)
    x = s[keep] if signal.higher_is_reliable else -s[keep]
    lo, hi = auroc_interval(x, y[keep], n_boot=N_BOOT, seed=options.seed)
    return {
        "signal": signal.name,
        "column": signal.column,
        "n": int(keep.sum()),
        "auroc": _clean(auroc(x, y[keep])),
        "auroc_ci": [_clean(lo), _clean(hi)],
        "aurc": _clean(aurc(x, y[keep])),
        "forwards": signal.forwards,
        "backwards": signal.backwards,
        "seconds": seconds,
        "needs_labels": signal.needs_labels,
        "causal": signal.causal,
        "granularity": signal.granularity,
        "higher_is_reliable": signal.higher_is_reliable,
        "note": note(signal, int(keep.sum()), s.size, with_boxes, options, y[keep]) or None,
    }


def compare(
    adapter: Adapter,
    samples: Sequence[Sample],
    train_samples: Sequence[Sample],
    planned: Sequence[Planned],
    options: SignalOptions,
    *,
    batch_size: int | str = 32,
    progress: Progress | None = None,
) -> CompareResult:
    """The clean forward over TRAIN and EVAL, every planned signal on EVAL, one row per signal (module docstring)."""
    t0 = time.perf_counter()
    train_records = collect(adapter, train_samples, batch_size, progress, "compare clean --data")
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = collect(adapter, samples, batch_size, progress, "compare clean --eval-data")
    clean_seconds = (time.perf_counter() - t0) / max(1, len(samples))
    train = TrainSet(train_samples, train_records)
    values, seconds = run_signals(adapter, samples, records, planned, options, train, progress)
    correct = [float(r["correct"]) for r in records]
    with_boxes = sum(1 for s in samples if s.boxes)
    signals = [s for p in planned for s in p.signals]
    table = [
        signal_row(s, [v[s.column] for v in values], correct, seconds[s.name], with_boxes, options) for s in signals
    ]
    kept = [
        {
            "index": i,
            **{k: r.get(k) for k in CLEAN_KEYS},
            **{k: r[k] for k in GROUNDED_KEYS if r.get(k) is not None},
            **v,
        }
        for i, (r, v) in enumerate(zip(records, values, strict=True))
    ]
    summary = {
        "n": len(records),
        "n_train": len(train_records),
        "accuracy": float(np.mean([r["accuracy"] for r in records])) if records else None,
        "train_accuracy": float(np.mean([r["correct"] for r in train_records])) if train_records else None,
        "signals": [s.name for s in signals],
        "options": asdict(options),
        "clean_forwards": 1,
        "clean_seconds_per_sample": clean_seconds,
        "train_seconds": train_seconds,
        "table": table,
        "definitions": definitions(signals),
    }
    return CompareResult(records=kept, summary=summary)
