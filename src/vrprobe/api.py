"""The Python API, mirroring the CLI: `load`, `eval`, `trace`, `corrupt`, `knockout`, `attribute`, `probe`, `compare`,
`study`, `report`, `score`.

Each analysis takes a model spec or a model loaded once with `load`, the CLI's options as keyword arguments and the
six loading options as one `options=LoadOptions(...)` (the six keywords themselves still work, deprecated); it writes
(and resumes) a run directory when `out` is given, builds its `report.html`, and returns a typed result. A run's
manifest is the same whether the model came as a spec or loaded. `progress(stage, done, total)` is called as work
finishes. `knockout`, `attribute` and `probe` live in `vrprobe.analyses` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vrprobe import checks
from vrprobe.analyses.band import (
    AUTO_GROUPS,
    BandResult,
    CorruptJob,
    auto_band,
    band_edits,
    check_band_options,
    layer_sigmas,
    parse_band,
)
from vrprobe.analyses.band import DEFINITIONS as BAND_DEFINITIONS
from vrprobe.analyses.compare import CompareResult, plan
from vrprobe.analyses.compare import compare as compare_signals
from vrprobe.analyses.jobs import EvalJob, Opened, Source, TraceJob, executing, run_job
from vrprobe.analyses.knockout import KnockoutResult, knockout
from vrprobe.analyses.proxies import AttributeResult, ProbeResult, attribute, probe
from vrprobe.analyses.scorer import DEFINITIONS as SCORE_DEFINITIONS
from vrprobe.analyses.scorer import Scorer, score_summary
from vrprobe.analyses.signals import MODULES, SignalModule
from vrprobe.analyses.signals.base import SignalOptions
from vrprobe.analyses.study import StudyConfig, StudyResult, run_study
from vrprobe.data import load_dataset, stratified_subset
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.metrics.pope import POPE_DEFINITIONS, pope_summary
from vrprobe.models import Adapter
from vrprobe.registry import as_adapter, check_model, model_ref
from vrprobe.runtime import devices
from vrprobe.runtime.batching import batch_size_option, choose_batch_size, run_batches
from vrprobe.runtime.devices import LoadOptions
from vrprobe.runtime.executors import Executor, ExecutorSpec, parse_executor
from vrprobe.runtime.progress import Progress
from vrprobe.runtime.runs import RunDir, open_run, read_summary, run_config
from vrprobe.scoring.evaluate import DEFINITIONS as EVAL_DEFINITIONS
from vrprobe.scoring.evaluate import summarize
from vrprobe.tracing import DEFINITIONS as TRACE_DEFINITIONS
from vrprobe.tracing import TraceConfig, mean_grid, measure_sigma, trace_dataset


@dataclass
class EvalResult:
    """Records (one per sample) and summary of `eval`."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None = None


@dataclass
class TraceResult:
    """Rows (one per sample × kind × layer × group) and summary (with the mean `grid`) of `trace`."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None = None


@dataclass
class CorruptResult:
    """Records (clean and corrupted per sample) and summary of `corrupt`."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None = None
    band: tuple[int, int] = field(default=(0, 0))


def _model_facts(spec: str, adapter: Adapter) -> dict[str, Any]:
    return {"spec": spec, "family": adapter.family, "params": adapter.num_params, **devices.facts(adapter)}


def load(model: str | Adapter, options: LoadOptions | None = None) -> Adapter:
    """Load a model once (`vrprobe.registry.load_adapter`) for several analyses: every API function takes the adapter
    in place of the spec, loads nothing, and records the spec and `options` it was loaded with."""
    return as_adapter(model, options)


def _finish(run: RunDir | None, summary: dict[str, Any], make_report: bool) -> None:
    if run is None:
        return
    run.write_json("summary.json", summary)
    if make_report:
        report(run.path)


def eval(  # noqa: A001 - mirrors `vrprobe eval`
    model: str | Adapter,
    data: str,
    *,
    out: Path | str | None = None,
    limit: int | None = None,
    batch_size: int | str = 32,
    seed: int = 0,
    image_ablation: str | None = None,
    max_new_tokens: int = 10,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    make_report: bool = True,
    executor: str | ExecutorSpec | Executor = "local",
    workers: int | None = None,
    **legacy: Any,
) -> EvalResult:
    """Closed-set evaluation with confidence, correctness and sharpness per sample (see `vrprobe.scoring.evaluate`);
    `executor` `local` (this process) or `ray[:ADDRESS]` with `workers` actors (`vrprobe.runtime.executors`)."""
    checks.options(limit=limit, seed=seed, max_new_tokens=max_new_tokens)
    batch_size = batch_size_option(batch_size)
    where = parse_executor(executor, workers)
    spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "eval"))
    fields = {"data": data, "limit": limit, "seed": seed, "image_ablation": image_ablation}
    run = open_run(out, run_config("eval", spec, load_options, **fields, max_new_tokens=max_new_tokens), overwrite)
    dataset = load_dataset(data, limit=limit, seed=seed, image_ablation=image_ablation)
    adapter = as_adapter(model, load_options)
    torch.manual_seed(seed)
    done = {r[0] for r in run.done(("sample_id",))} if run else set()
    todo = [i for i, s in enumerate(dataset.samples) if s.id not in done]
    size = choose_batch_size(adapter, dataset.samples, batch_size)
    job = EvalJob(Source(spec, load_options, data, limit, seed, image_ablation), max_new_tokens)
    with executing(where) as runner:
        kept, used = run_job(
            runner, job, Opened(adapter, dataset.samples), todo, size, run,
            total=len(dataset.samples), progress=progress, stage=f"eval {spec}",
        )  # fmt: skip
    records = sorted(run.read() if run else kept.get("records", []), key=lambda r: r["index"])
    pope = pope_summary(records, [s.meta.get("benchmark") for s in dataset.samples])  # {} unless POPE
    summary = {
        **summarize(records),
        **pope,
        "model": _model_facts(spec, adapter),
        "data": data,
        "limit": limit,
        "seed": seed,
        "image_ablation": image_ablation,
        "batch_size": {"requested": batch_size, "chosen": size, "used": used},
        "definitions": {**EVAL_DEFINITIONS, **POPE_DEFINITIONS} if pope else EVAL_DEFINITIONS,
    }
    _finish(run, summary, make_report)
    return EvalResult(records=records, summary=summary, out=run.path if run else None)


def trace(
    model: str | Adapter,
    data: str,
    *,
    out: Path | str | None = None,
    limit: int | None = None,
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    noise_samples: int = 10,
    noise: float = 3.0,
    window: int = 3,
    seed: int = 0,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    make_report: bool = True,
    executor: str | ExecutorSpec | Executor = "local",
    workers: int | None = None,
    **legacy: Any,
) -> TraceResult:
    """Causal tracing per sample; the dataset mean grid is the circuit (see `vrprobe.tracing`); `executor` and
    `workers` as in `eval`."""
    checks.options(limit=limit, noise_samples=noise_samples, noise=noise, window=window, seed=seed)
    where = parse_executor(executor, workers)
    kinds = kinds.split(",") if isinstance(kinds, str) else kinds  # trace(kinds="resid,mlp") as on the CLI
    cfg = TraceConfig(kinds=tuple(kinds), noise=noise, noise_samples=noise_samples, window=window, seed=seed)
    spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "trace"))
    run = open_run(out, run_config("trace", spec, load_options, data=data, limit=limit, **asdict(cfg)), overwrite)
    dataset = load_dataset(data, limit=limit, seed=seed)
    adapter = as_adapter(model, load_options)
    done = {r[0] for r in run.done(("sample_id",), "traces")} if run else set()
    todo = [i for i, s in enumerate(dataset.samples) if s.id not in done]
    sigma = measure_sigma(adapter, dataset.samples)
    job = TraceJob(Source(spec, load_options, data, limit, seed), cfg, sigma)
    with executing(where) as runner:
        kept, _ = run_job(
            runner, job, Opened(adapter, dataset.samples), todo, 1, run,
            total=len(dataset.samples), progress=progress, stage=f"trace {spec}", last="traces",
        )  # fmt: skip
    rows = sorted(run.read("traces") if run else kept.get("traces", []), key=lambda r: r["index"])
    per_sample = {r["sample_id"]: r for r in rows}
    summary = {
        "model": _model_facts(spec, adapter),
        "data": data,
        "n": len(per_sample),
        "sigma": sigma,
        "config": asdict(cfg),
        "grid": mean_grid(rows),
        "clean_accuracy": sum(r["clean_correct"] for r in per_sample.values()) / max(1, len(per_sample)),
        "definitions": TRACE_DEFINITIONS,
    }
    _finish(run, summary, make_report)
    return TraceResult(rows=rows, summary=summary, out=run.path if run else None)


def corrupt(
    model: str | Adapter,
    data: str,
    band: str,
    *,
    out: Path | str | None = None,
    target: str = "hidden",
    noise: float = 3.0,
    positions: str = "image",
    limit: int | None = None,
    trace_limit: int = 20,
    batch_size: int | str = 32,
    seed: int = 0,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    make_report: bool = True,
    executor: str | ExecutorSpec | Executor = "local",
    workers: int | None = None,
    **legacy: Any,
) -> CorruptResult:
    """Band corruption: accuracy and sharpness with noise on a band of layers (see `vrprobe.analyses.band`);
    `executor` and `workers` as in `eval` (the band and σ_l are chosen here, on the driver)."""
    checks.options(noise=noise, limit=limit, trace_limit=trace_limit, seed=seed)
    where = parse_executor(executor, workers)
    batch_size = batch_size_option(batch_size)
    checks.band_spec(band)
    check_band_options(target, positions)
    spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "corrupt"))
    fields = {"data": data, "band": band, "target": target, "noise": noise, "positions": positions, "limit": limit}
    run = open_run(
        out, run_config("corrupt", spec, load_options, **fields, trace_limit=trace_limit, seed=seed), overwrite
    )
    dataset = load_dataset(data, limit=limit, seed=seed)
    adapter = as_adapter(model, load_options)
    if band == "auto":
        subset = stratified_subset(dataset.samples, trace_limit, seed)
        traced = trace_dataset(adapter, subset, TraceConfig(kinds=("resid",), seed=seed))
        layers = auto_band(traced.grid, adapter.num_layers, groups=AUTO_GROUPS[positions])
    else:
        layers = parse_band(band, adapter.num_layers)
    if not adapter.records_attention:
        raise UsageError("band corruption needs the model loaded with vrprobe's attention function")
    band_layers = list(range(layers[0], layers[1] + 1))
    sigmas = layer_sigmas(adapter, dataset.samples, band_layers, positions) if target != "attention" else {}
    edits = tuple(band_edits(layers, target, positions, noise, sigmas))
    done = {r[0] for r in run.done(("sample_id",))} if run else set()
    todo = [i for i, s in enumerate(dataset.samples) if s.id not in done]
    job = CorruptJob(Source(spec, load_options, data, limit, seed), edits, seed)
    with executing(where) as runner:
        kept, _ = run_job(
            runner, job, Opened(adapter, dataset.samples), todo,
            choose_batch_size(adapter, dataset.samples, batch_size), run,
            total=len(dataset.samples), progress=progress, stage=f"corrupt {spec} layers {layers[0]}-{layers[1]}",
        )  # fmt: skip
    records = sorted(run.read() if run else kept.get("records", []), key=lambda r: r["index"])
    result = BandResult(
        band=layers,
        target=target,
        positions=positions,
        noise=noise,
        sigmas=sigmas,
        clean=records,
        corrupted=[
            {"correct": r["band_correct"], "accuracy": r["band_accuracy"], "sharpness": r["band_sharpness"]}
            for r in records
        ],
    )
    summary = {
        "model": _model_facts(spec, adapter),
        "data": data,
        **result.summary(),
        "band_source": band,
        "definitions": BAND_DEFINITIONS,
    }
    _finish(run, summary, make_report)
    return CorruptResult(records=records, summary=summary, out=run.path if run else None, band=layers)


def study(
    models: Sequence[str | Adapter] | str | Adapter,
    data: Sequence[str] | str,
    *,
    out: Path | str | None = None,
    limit: int | None = None,
    trace_limit: int = 100,
    probe_limit: int = 1000,
    band_positions: str = "all",
    noise: float = 3.0,
    batch_size: int | str = 32,
    seed: int = 0,
    max_new_tokens: int = 10,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    make_report: bool = True,
    executor: str | ExecutorSpec | Executor = "local",
    workers: int | None = None,
    **legacy: Any,
) -> StudyResult:
    """All four modules over models × datasets (see `vrprobe.analyses.study`). Each of `models` is a spec or a loaded
    model; the study's loading options are `options`, or those the loaded models share (its specs load with them).
    `executor` and `workers` as in `eval`: the per-sample records run there, band, controls and probe here."""
    where = parse_executor(executor, workers)
    checks.options(
        limit=limit,
        trace_limit=trace_limit,
        probe_limit=probe_limit,
        noise=noise,
        seed=seed,
        max_new_tokens=max_new_tokens,
    )
    batch_size = batch_size_option(batch_size)
    given = LoadOptions.from_kwargs(options, legacy, "study")
    entries = models.split(",") if isinstance(models, str) else [models] if isinstance(models, Adapter) else models
    refs = [model_ref(m, given) if isinstance(m, Adapter) else (str(m), None) for m in entries]
    loaded = {spec: m for (spec, _), m in zip(refs, entries, strict=True) if isinstance(m, Adapter)}
    shared = {o for _, o in refs if o is not None}
    if len(shared) > 1:
        raise UsageError("the loaded models of one study were loaded with different options: load them alike")
    load_options = shared.pop() if shared else given.check()
    specs = checks.spec_list("--models", [spec for spec, _ in refs])
    for spec in specs:  # a typo in the last model fails now, not after the first
        if spec not in loaded:
            check_model(spec, trust_remote_code=load_options.trust_remote_code)
    cfg = StudyConfig(
        models=specs,
        data=checks.spec_list("--data", data),
        limit=limit,
        trace_limit=trace_limit,
        probe_limit=probe_limit,
        seed=seed,
        noise=noise,
        band_positions=band_positions,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        load_options=load_options,
    )
    if not cfg.models or not cfg.data:
        raise UsageError("--models and --data each need at least one spec")
    if band_positions not in AUTO_GROUPS:
        raise UsageError(f"unknown --band-positions '{band_positions}' (known: {', '.join(AUTO_GROUPS)})")
    run = open_run(out, {"command": "study", **asdict(cfg)}, overwrite)
    for spec in cfg.data:  # fail on a bad dataset spec before any model work
        load_dataset(spec, limit=1)
    with executing(where) as runner:
        result = run_study(cfg, run, progress, loaded, executor=runner)
    if run and make_report:
        report(run.path)
    return result


def compare(
    model: str | Adapter,
    data: str,
    eval_data: str,
    *,
    out: Path | str | None = None,
    signals: str | Sequence[str] | None = None,
    samples: int = 10,
    temperature: float = 1.0,
    cluster_percentile: float = 90.0,
    cluster_eps: float = 1.5,
    cluster_min_samples: int = 3,
    limit: int | None = None,
    train_limit: int | None = 1000,
    batch_size: int | str = 32,
    seed: int = 0,
    modules: Sequence[SignalModule] = MODULES,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    make_report: bool = True,
    **legacy: Any,
) -> CompareResult:
    """Every reliability signal of `modules` (or those named in `signals`) on the same `eval_data` samples, fitted
    signals trained on `data` only: one table row per signal (see `vrprobe.analyses.compare`). A finished run in
    `out` is read back, not recomputed."""
    checks.options(limit=limit, seed=seed)
    checks.positive_int("--samples", samples)
    for name, value in (("--temperature", temperature), ("--cluster-eps", cluster_eps)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise UsageError(f"{name} must be a finite number > 0, got {value}")
    signal_options = SignalOptions(
        seed=seed,
        samples=samples,
        temperature=temperature,
        percentile=checks.in_range("--cluster-percentile", cluster_percentile, 0, 100),
        eps=cluster_eps,
        min_samples=checks.positive_int("--cluster-min-samples", cluster_min_samples),
    )
    if train_limit is not None:
        checks.positive_int("--train-limit", train_limit)
    batch_size = batch_size_option(batch_size)
    planned = plan(signals, modules)
    names = [s.name for p in planned for s in p.signals]
    spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "compare"))
    fields = {"data": data, "eval_data": eval_data, "signals": names, "samples": samples, "limit": limit}
    fields |= {"temperature": temperature, "cluster_percentile": cluster_percentile, "cluster_eps": cluster_eps}
    fields |= {"cluster_min_samples": cluster_min_samples}
    config = run_config("compare", spec, load_options, **fields, train_limit=train_limit, seed=seed)
    train_set = load_dataset(data, limit=train_limit, seed=seed)
    eval_set = load_dataset(eval_data, limit=limit, seed=seed)
    shared = {s.id for s in train_set.samples} & {s.id for s in eval_set.samples}
    if data.partition("?")[0] == eval_data.partition("?")[0] and shared:
        raise UsageError(f"--eval-data {eval_data} shares samples with --data {data}: held out means held out")
    run = open_run(out, config, overwrite)
    stored = sorted(run.read(), key=lambda r: r["index"]) if run else []
    if run and stored:  # the summary is written first, so a run with records and a summary is finished
        if not (run.path / "summary.json").is_file() or len(stored) != len(eval_set.samples):
            raise VrprobeError(f"--out {run.path} holds part of a compare run: pass --overwrite to recompute it")
        if make_report:
            report(run.path)
        return CompareResult(records=stored, summary=read_summary(run.path), out=run.path)
    adapter = as_adapter(model, load_options)
    torch.manual_seed(seed)
    result = compare_signals(
        adapter,
        eval_set.samples,
        train_set.samples,
        planned,
        signal_options,
        batch_size=batch_size,
        progress=progress,
    )
    summary = {"command": "compare", "model": _model_facts(spec, adapter), **fields, "train_limit": train_limit}
    summary |= {"seed": seed, **result.summary}
    if run is not None:
        run.write_json("summary.json", summary)  # first: a crash before the records leaves a run recomputed on resume
        run.append(result.records)
        if make_report:
            report(run.path)
    return CompareResult(records=result.records, summary=summary, out=run.path if run else None)


def score(
    model: str | Adapter,
    probe: Path | str,
    data: str,
    *,
    out: Path | str | None = None,
    limit: int | None = None,
    batch_size: int | str = 32,
    seed: int = 0,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> EvalResult:
    """Answer `data` and score each answer's reliability with the saved probe in `probe` (`vrprobe probe` writes it
    to OUT/probe), from one forward per batch (see `vrprobe.analyses.scorer`); resumable like `eval`."""
    checks.options(limit=limit, seed=seed)
    batch_size = batch_size_option(batch_size)
    spec, load_options = model_ref(model, options)
    dataset = load_dataset(data, limit=limit, seed=seed)
    scorer = Scorer.load(probe, model, load_options)  # refuses another model's probe before --out is touched
    fields = {"probe": str(Path(probe).resolve()), "data": data, "limit": limit, "seed": seed}
    run = open_run(out, run_config("score", spec, load_options, **fields), overwrite)
    torch.manual_seed(seed)
    scorer.batch_size = choose_batch_size(scorer.adapter, dataset.samples, batch_size)
    done = {r[0] for r in run.done(("sample_id",))} if run else set()
    records: list[dict[str, Any]] = []

    def work(indices: list[int], chunk: list[Any]) -> None:
        rows = [{**r, "index": i} for i, r in zip(indices, scorer.score_samples(chunk), strict=True)]
        run.append(rows) if run else records.extend(rows)

    used = run_batches(dataset.samples, scorer.batch_size, work, done=done, progress=progress, stage=f"score {spec}")
    records = sorted(run.read() if run else records, key=lambda r: r["index"])
    summary = {**score_summary(records), "model": _model_facts(spec, scorer.adapter), **fields}
    summary |= {"probe_layer": scorer.probe.layer, "batch_size": {"requested": batch_size, "used": used}}
    summary["definitions"] = SCORE_DEFINITIONS
    if run is not None:
        run.write_json("summary.json", summary)
    return EvalResult(records=records, summary=summary, out=run.path if run else None)


def report(out: Path | str) -> Path:
    """Write `report.html` for a run directory; returns its path."""
    read_summary(Path(out))  # one error line for a missing, unreadable or malformed summary.json / manifest.json
    from vrprobe.reporting import build_report

    return build_report(Path(out))


__all__ = [
    "AttributeResult",
    "CompareResult",
    "CorruptResult",
    "EvalResult",
    "KnockoutResult",
    "ProbeResult",
    "TraceResult",
    "attribute",
    "compare",
    "corrupt",
    "eval",
    "knockout",
    "load",
    "probe",
    "report",
    "score",
    "study",
    "trace",
]
