"""The main commands: `eval`, `trace`, `corrupt`, `study`, `report` and `show`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vrprobe.cli.app import app
from vrprobe.cli.options import (
    BatchSize,
    Data,
    ExecutorOpt,
    Limit,
    MaxNewTokens,
    Model,
    Out,
    Overwrite,
    Seed,
    Workers,
    call,
    done,
    with_load_options,
)

if TYPE_CHECKING:
    from vrprobe.runtime.devices import LoadOptions


@app.command("eval")
@with_load_options
def eval_cmd(
    model: Model,
    data: Data,
    out: Out,
    limit: Limit = None,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    image_ablation: Annotated[str | None, typer.Option(help="Replace every image: 'blank'.")] = None,
    max_new_tokens: MaxNewTokens = 10,
    executor: ExecutorOpt = "local",
    workers: Workers = None,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Score a model: prediction, confidence, correctness and attention sharpness per sample, accuracy by type.

    Example: vrprobe eval --model zoo:llava --data easy-vqa:test --limit 500 --out runs/llava
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api

    r = call(api.eval, arguments)
    s = r.summary
    by_type = "  ".join(f"{t} {a:.3f}" for t, a in s["accuracy_by_type"].items())
    typer.echo(f"{model}: n={s['n']} accuracy={s['accuracy']:.3f} ({by_type}) -> {out}")
    done(out)


@app.command("trace")
@with_load_options
def trace_cmd(
    model: Model,
    data: Data,
    out: Out,
    limit: Limit = None,
    kinds: Annotated[str, typer.Option(help="Restoration kinds, comma-separated.")] = "resid,mlp,attn",
    noise_samples: Annotated[int, typer.Option(help="Noise draws per sample (N).")] = 10,
    noise: Annotated[float, typer.Option(help="Noise k, in units of σ (image-token embedding std).")] = 3.0,
    window: Annotated[int, typer.Option(help="Layers restored together for mlp/attn (ROME's window).")] = 3,
    seed: Seed = 0,
    executor: ExecutorOpt = "local",
    workers: Workers = None,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Causal tracing: clean, corrupted (noise on image-token embeddings) and restored runs per sample.

    Effect of (kind, layer, group) = p(target | one clean state restored) − p(target | corrupted), mean over draws.
    Example: vrprobe trace --model zoo:llava --data easy-vqa:test --limit 50 --out runs/trace-llava
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api

    r = call(api.trace, arguments, kinds=[k.strip() for k in kinds.split(",") if k.strip()])
    top = sorted((c for c in r.summary["grid"] if c["kind"] == "resid"), key=lambda c: -c["effect"])[:3]
    typer.echo(
        f"{model}: traced {r.summary['n']} samples; strongest resid states: "
        + ", ".join(f"layer {c['layer']} {c['group']} {c['effect']:+.3f}" for c in top)
        + f" -> {out}"
    )
    done(out)


@app.command("corrupt")
@with_load_options
def corrupt_cmd(
    model: Model,
    data: Data,
    out: Out,
    band: Annotated[str, typer.Option(help="Layers A-B (inclusive), or 'auto': the band causal tracing finds.")],
    target: Annotated[str, typer.Option(help="hidden, attention or both.")] = "hidden",
    noise: Annotated[float, typer.Option(help="k: noise k·σ_l on hidden states, std k on attention logits.")] = 3.0,
    positions: Annotated[str, typer.Option(help="Token positions corrupted: image, all or non_image.")] = "image",
    limit: Limit = None,
    trace_limit: Annotated[int, typer.Option(help="Samples traced to find the band with --band auto.")] = 20,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    executor: ExecutorOpt = "local",
    workers: Workers = None,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Band corruption: noise on a band of layers; accuracy and attention sharpness, clean vs corrupted.

    Example: vrprobe corrupt --model zoo:llava --data easy-vqa:test --limit 500 --band auto --out runs/band-llava
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api

    r = call(api.corrupt, arguments)
    s = r.summary
    typer.echo(
        f"{model}: band {r.band[0]}-{r.band[1]} accuracy {s['accuracy_clean']:.3f} -> "
        f"{s['accuracy_corrupted']:.3f} (drop {s['drop_abs']:.3f}); sharpness {s['sharpness_clean']:.3f} -> "
        f"{s['sharpness_corrupted']:.3f} nats -> {out}"
    )
    done(out)


@app.command("study")
@with_load_options
def study_cmd(
    models: Annotated[str, typer.Option(help="Model specs, comma-separated.")],
    data: Annotated[str, typer.Option(help="Dataset specs, comma-separated; the first is the reference split.")],
    out: Out,
    limit: Limit = None,
    trace_limit: Annotated[int, typer.Option(help="Samples traced per model to find the causal band.")] = 100,
    probe_limit: Annotated[
        int, typer.Option(help="Training samples of the reliability probe (easy-VQA, scenes: from their train set).")
    ] = 1000,
    band_positions: Annotated[
        str, typer.Option(help="Positions corrupted in the band: all, image or non_image.")
    ] = "all",
    noise: Annotated[float, typer.Option(help="Noise k for tracing and band corruption.")] = 3.0,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    max_new_tokens: MaxNewTokens = 10,
    executor: ExecutorOpt = "local",
    workers: Workers = None,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """All four modules over models × datasets; prints the table and writes the report.

    Example: vrprobe study --models zoo:llava,zoo:qwen2vl --data "easy-vqa:test,easy-vqa:test?noise=0.3"
    --limit 500 --out runs/study
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api

    r = call(api.study, arguments)
    _print_table(r.table, r.summary.get("heads"))
    done(out)


def _print_table(table: list, heads: dict | None = None, all_columns: bool = False) -> None:
    """The study's table and verdict within the terminal's width (`vrprobe.reporting.terminal`)."""
    from vrprobe.reporting.terminal import print_study

    print_study(table, heads, all_columns)


@app.command("report")
def report_cmd(out: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """(Re)write DIR/report.html, self-contained and offline. Example: vrprobe report runs/demo"""
    from vrprobe import api

    typer.echo(f"report: {api.report(out).resolve()}")


@app.command("show")
def show_cmd(
    out: Annotated[Path, typer.Argument(help="A run directory.")],
    all_columns: Annotated[bool, typer.Option("--all", help="Every column, not only the key ones.")] = False,
) -> None:
    """Print a run's table and verdict within the terminal's width. Example: vrprobe show runs/demo [--all]"""
    from vrprobe.reporting.terminal import print_summary
    from vrprobe.runtime.runs import read_summary

    summary = read_summary(out)
    if summary.get("command") == "compare":
        from vrprobe.reporting.comparison import print_comparison

        print_comparison(summary)
    elif "table" in summary:
        _print_table(summary["table"], summary.get("heads"), all_columns)
    else:
        print_summary(summary)
