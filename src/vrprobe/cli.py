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

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="vrprobe: when should you trust a vision-language model's answer?",
)
zoo_app = typer.Typer(no_args_is_help=True, help="The built-in zoo of tiny trained models.")
app.add_typer(zoo_app, name="zoo")
err = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Progress]:
    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, console=err, transient=True) as bar:
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
