"""The `vrprobe` command line: parses options, calls the API, shows progress. No logic lives here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vrprobe import __version__
from vrprobe.errors import UsageError, VrprobeError


def dataclass_dict(obj) -> dict:
    from dataclasses import asdict

    return asdict(obj)


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="vrprobe: when should you trust a vision-language model's answer?",
)
zoo_app = typer.Typer(no_args_is_help=True, help="The built-in zoo of tiny trained models.")
app.add_typer(zoo_app, name="zoo")
err = Console(stderr=True)


def _columns() -> list:
    return [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Progress]:
    with Progress(*_columns(), console=err, transient=True) as bar:
        bar.add_task(description, total=total)
        yield bar


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vrprobe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """vrprobe: when should you trust a vision-language model's answer?"""


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(help="zoo:NAME, hf:ORG/NAME (local cache only) or a model directory.")],
    data: Annotated[str, typer.Option(help="Dataset spec, e.g. easy-vqa:test or easy-vqa:DIR:test.")],
    out: Annotated[Path, typer.Option(help="Run directory to write (records/*.parquet, summary.json).")],
    limit: Annotated[int | None, typer.Option(help="Evaluate a deterministic, type-stratified subset of N.")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed for the subset and anything random.")] = 0,
    image_ablation: Annotated[str | None, typer.Option(help="Replace every image: 'blank' (white).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Score a model on a dataset: prediction, confidence and correctness per sample, accuracy by type.

    Example: vrprobe eval --model zoo:llava --data easy-vqa:test --limit 500 --out runs/llava
    """
    import torch

    from vrprobe.data import load_dataset
    from vrprobe.evaluate import evaluate
    from vrprobe.models import load_adapter
    from vrprobe.runs import check_out, write_run

    check_out(out, overwrite)
    torch.manual_seed(seed)
    dataset = load_dataset(data, limit=limit, seed=seed, image_ablation=image_ablation)
    adapter = load_adapter(model)
    with progress_bar(f"eval {model}", len(dataset)) as bar:
        result = evaluate(adapter, dataset, batch_size=batch_size, progress=lambda k: bar.advance(0, k))
    result.summary.update({"limit": limit, "seed": seed, "image_ablation": image_ablation})
    write_run(out, records=result.records, summary=result.summary, overwrite=overwrite)
    s = result.summary
    by_type = "  ".join(f"{t} {a:.3f}" for t, a in s["accuracy_by_type"].items())
    typer.echo(f"{model}: n={s['n']} accuracy={s['accuracy']:.3f} ({by_type}) -> {out}")


def _traced(adapter, dataset, cfg, *, sigma_samples, label: str):
    from vrprobe.tracing import trace_dataset

    with progress_bar(label, len(dataset)) as bar:
        return trace_dataset(
            adapter, dataset.samples, cfg, calibration=sigma_samples, progress=lambda k: bar.advance(0, k)
        )


@app.command("trace")
def trace_cmd(
    model: Annotated[str, typer.Option(help="zoo:NAME, hf:ORG/NAME (local cache only) or a model directory.")],
    data: Annotated[str, typer.Option(help="Dataset spec, e.g. easy-vqa:test.")],
    out: Annotated[Path, typer.Option(help="Run directory to write (traces/*.parquet, summary.json).")],
    limit: Annotated[int | None, typer.Option(help="Trace a deterministic, type-stratified subset of N.")] = None,
    kinds: Annotated[str, typer.Option(help="Restoration kinds, comma-separated: resid,mlp,attn.")] = "resid,mlp,attn",
    noise_samples: Annotated[int, typer.Option(help="Noise draws per sample (N).")] = 10,
    noise: Annotated[float, typer.Option(help="Noise scale k, in units of σ (embedding std over image tokens).")] = 3.0,
    window: Annotated[int, typer.Option(help="Layers restored together for mlp/attn (ROME's window).")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for the subset and the noise.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Causal tracing: clean, corrupted (noise on image-token embeddings) and restored runs per sample.

    Effect of (kind, layer, group) = p(target | one clean state restored) − p(target | corrupted), averaged over noise
    draws. Example: vrprobe trace --model zoo:llava --data easy-vqa:test --limit 50 --out runs/trace-llava
    """
    from vrprobe.data import load_dataset
    from vrprobe.models import load_adapter
    from vrprobe.runs import check_out, write_run
    from vrprobe.tracing import DEFINITIONS, TraceConfig

    check_out(out, overwrite)
    cfg = TraceConfig(
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        noise=noise,
        noise_samples=noise_samples,
        window=window,
        seed=seed,
    )
    dataset = load_dataset(data, limit=limit, seed=seed)
    adapter = load_adapter(model)
    result = _traced(adapter, dataset, cfg, sigma_samples=None, label=f"trace {model}")
    rows = [row for t in result.traces for row in t.rows()]
    summary = {
        "model": {"spec": model, "family": adapter.family, "params": adapter.num_params},
        "data": data,
        "n": len(result.traces),
        "sigma": result.sigma,
        "config": dataclass_dict(cfg),
        "grid": result.grid,
        "clean_accuracy": sum(t.clean_correct for t in result.traces) / len(result.traces),
        "definitions": DEFINITIONS,
    }
    write_run(out, records=rows, summary=summary, overwrite=overwrite, records_name="traces")
    top = sorted((c for c in result.grid if c["kind"] == "resid"), key=lambda c: -c["effect"])[:3]
    typer.echo(
        f"{model}: traced {len(result.traces)} samples; strongest resid states: "
        + ", ".join(f"layer {c['layer']} {c['group']} {c['effect']:+.3f}" for c in top)
        + f" -> {out}"
    )


@app.command("corrupt")
def corrupt_cmd(
    model: Annotated[str, typer.Option(help="zoo:NAME, hf:ORG/NAME (local cache only) or a model directory.")],
    data: Annotated[str, typer.Option(help="Dataset spec, e.g. easy-vqa:test.")],
    out: Annotated[Path, typer.Option(help="Run directory to write (records/*.parquet, summary.json).")],
    band: Annotated[str, typer.Option(help="Layers A-B (inclusive), or 'auto': the band tracing finds.")],
    target: Annotated[str, typer.Option(help="What to corrupt: hidden, attention or both.")] = "hidden",
    noise: Annotated[float, typer.Option(help="k: noise of k·σ_l on hidden states, std k on attention logits.")] = 3.0,
    positions: Annotated[str, typer.Option(help="Token positions corrupted: image or all.")] = "image",
    limit: Annotated[int | None, typer.Option(help="Use a deterministic, type-stratified subset of N.")] = None,
    trace_limit: Annotated[int, typer.Option(help="Samples traced to find the band when --band auto.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed for the subset and the noise.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Band corruption: noise on a band of layers; accuracy and attention sharpness, clean vs corrupted.

    Example: vrprobe corrupt --model zoo:llava --data easy-vqa:test --limit 500 --band auto --out runs/band-llava
    """
    from vrprobe.band import AUTO_GROUPS, auto_band, corrupt_band, parse_band
    from vrprobe.band import DEFINITIONS as band_definitions
    from vrprobe.data import load_dataset, stratified_subset
    from vrprobe.models import load_adapter
    from vrprobe.runs import check_out, write_run
    from vrprobe.tracing import TraceConfig

    check_out(out, overwrite)
    dataset = load_dataset(data, limit=limit, seed=seed)
    adapter = load_adapter(model)
    if band == "auto":
        from vrprobe.data import Dataset

        subset = Dataset(dataset.spec, stratified_subset(dataset.samples, trace_limit, seed))
        traced = _traced(
            adapter,
            subset,
            TraceConfig(kinds=("resid",), seed=seed),
            sigma_samples=None,
            label="trace (finding the band)",
        )
        layers = auto_band(traced.grid, adapter.num_layers, groups=AUTO_GROUPS.get(positions, ("image",)))
    else:
        layers = parse_band(band, adapter.num_layers)
    with progress_bar(f"corrupt {model} layers {layers[0]}-{layers[1]}", len(dataset)) as bar:
        result = corrupt_band(
            adapter,
            dataset.samples,
            layers,
            target=target,
            positions=positions,
            noise=noise,
            seed=seed,
            batch_size=batch_size,
            progress=lambda k: bar.advance(0, k),
        )
    summary = {
        "model": {"spec": model, "family": adapter.family, "params": adapter.num_params},
        "data": data,
        **result.summary(),
        "band_source": band,
        "definitions": band_definitions,
    }
    rows = [{**r, "condition": "clean"} for r in result.clean] + [
        {**r, "condition": "corrupted"} for r in result.corrupted
    ]
    write_run(out, records=rows, summary=summary, overwrite=overwrite)
    typer.echo(
        f"{model}: band {layers[0]}-{layers[1]} accuracy {summary['accuracy_clean']:.3f} -> "
        f"{summary['accuracy_corrupted']:.3f} (drop {summary['drop_abs']:.3f}); sharpness "
        f"{summary['sharpness_clean']:.3f} -> {summary['sharpness_corrupted']:.3f} nats -> {out}"
    )


@app.command("study")
def study_cmd(
    models: Annotated[str, typer.Option(help="Model specs, comma-separated (zoo:llava,zoo:paligemma,...).")],
    data: Annotated[
        str,
        typer.Option(
            help="Dataset specs, comma-separated; the first is the reference split, e.g. "
            "easy-vqa:test,easy-vqa:test?noise=0.3."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run directory (records/*.parquet, summary.json).")],
    limit: Annotated[int | None, typer.Option(help="Deterministic, type-stratified subset of N per dataset.")] = None,
    trace_limit: Annotated[int, typer.Option(help="Samples traced per model to find the causal band.")] = 100,
    band_positions: Annotated[str, typer.Option(help="Positions corrupted in the band: all or image.")] = "all",
    noise: Annotated[float, typer.Option(help="Noise scale k for tracing and band corruption.")] = 3.0,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed for subsets, noise and bootstrap.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Run all four modules over models × datasets and print the table.

    Per model: eval (confidence, correctness, sharpness), causal tracing on a subset to find the band, band corruption
    (accuracy drop), calibration (ECE), and correlations with 95% bootstrap intervals.
    Example: vrprobe study --models zoo:llava,zoo:qwen2vl --data easy-vqa:test,easy-vqa:test?noise=0.3 --limit 500
    --out runs/study
    """
    from vrprobe.band import BAND_POSITIONS
    from vrprobe.runs import check_out, write_run
    from vrprobe.study import StudyConfig, run_study
    from vrprobe.tables import study_table, verdict_lines

    check_out(out, overwrite)
    if band_positions not in BAND_POSITIONS:
        raise UsageError(f"unknown --band-positions '{band_positions}' (known: {', '.join(BAND_POSITIONS)})")
    cfg = StudyConfig(
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        data=tuple(d.strip() for d in data.split(",") if d.strip()),
        limit=limit,
        trace_limit=trace_limit,
        seed=seed,
        noise=noise,
        band_positions=band_positions,
        batch_size=batch_size,
    )
    if not cfg.models or not cfg.data:
        raise UsageError("--models and --data each need at least one spec")
    with Progress(*_columns(), console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result = run_study(cfg, progress=progress)
    write_run(out, records=result.records, summary=result.summary, overwrite=overwrite)
    console = Console() if Console().is_terminal else Console(width=220)
    console.print(study_table(result.table))
    for line in verdict_lines(result.table):
        console.print(line, highlight=False, soft_wrap=True)
    typer.echo(f"-> {out}")


@zoo_app.command("train")
def zoo_train(
    name: Annotated[str, typer.Argument(help="llava, paligemma or qwen2vl.")],
    out: Annotated[Path | None, typer.Option(help="Where to save (default: the package's zoo checkpoint).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and batch order.")] = 0,
    stage1_steps: Annotated[int | None, typer.Option(help="Image-pathway steps (default: the recipe's).")] = None,
    stage2_steps: Annotated[int | None, typer.Option(help="Whole-model steps (default: the recipe's).")] = None,
) -> None:
    """Train one zoo model on easy-VQA train (CPU, seeded) and save it with save_pretrained.

    Example: vrprobe zoo train llava --out /tmp/llava
    """
    from dataclasses import replace

    from vrprobe.models.registry import ZOO_DIR, ZOO_NAMES
    from vrprobe.zoo.train import TrainConfig, train

    if name not in ZOO_NAMES:
        raise UsageError(f"unknown zoo model '{name}' (known: {', '.join(ZOO_NAMES)})")
    cfg = TrainConfig(seed=seed)
    if stage1_steps is not None:
        cfg = replace(cfg, stage1_steps=stage1_steps)
    if stage2_steps is not None:
        cfg = replace(cfg, stage2_steps=stage2_steps)
    target = out or ZOO_DIR / name
    with progress_bar(f"train {name}", cfg.stage1_steps + cfg.stage2_steps) as bar:

        def step(stage: str, k: int, total: int, loss: float) -> None:
            bar.update(0, advance=1, description=f"{stage} loss {loss:.3f}")

        log = train(name, target, cfg, progress=step)
    typer.echo(f"trained {name}: {log['params']:,} parameters in {log['total_seconds']:.0f} s -> {target}")


def main() -> None:
    """Console entry point: one red line and exit 1 for runtime errors, exit 2 for usage errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except VrprobeError as exc:
        if debug:
            raise
        err.print(f"[red]error: {exc}[/red]", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
