"""`vrprobe compare`: every reliability signal on the same held-out samples, one table; registered on the main
command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vrprobe.cli.app import app
from vrprobe.cli.options import BatchSize, Limit, Model, Overwrite, Seed, call, done, with_load_options

if TYPE_CHECKING:
    from vrprobe.runtime.devices import LoadOptions


@app.command("compare")
@with_load_options
def compare_cmd(
    model: Model,
    data: Annotated[str, typer.Option(help="Training dataset spec: what fitted signals (the probe) learn from.")],
    eval_data: Annotated[str, typer.Option(help="Held-out dataset spec every signal is scored on.")],
    out: Annotated[Path, typer.Option(help="Run directory (summary.json, records of the eval samples, report).")],
    signals: Annotated[
        str | None,
        typer.Option(help="Signals to run, by name or column, comma-separated (default: all; a typo lists them)."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Sampled answers per sample for the sampling signals.")] = 10,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the sampling signals (> 0).")] = 1.0,
    cluster_percentile: Annotated[
        float, typer.Option(help="Cluster count: map cells at or above this percentile enter DBSCAN (VRP: 90).")
    ] = 90.0,
    cluster_eps: Annotated[float, typer.Option(help="Cluster count: DBSCAN eps, in grid cells (VRP: 1.5).")] = 1.5,
    cluster_min_samples: Annotated[int, typer.Option(help="Cluster count: DBSCAN min_samples (VRP: 3).")] = 3,
    limit: Limit = None,
    train_limit: Annotated[int | None, typer.Option(help="A type-stratified subset of N training samples.")] = 1000,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Run every reliability signal on the same --eval-data samples and rank them: AUROC (correct vs wrong, 95%
    bootstrap interval), AURC, and the cost of each (extra forwards and backwards, seconds per sample).

    Fitted signals (the hidden-state probe, its layer chosen by cross-validation) learn from --data only. Signals that
    need target boxes or several sampled answers say so in a note; without boxes their AUROC is n/a.

    Example: vrprobe compare --model zoo:llava --data easy-vqa:train --eval-data easy-vqa:test --limit 200 --out
    runs/compare
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api
    from vrprobe.reporting.comparison import print_comparison

    r = call(api.compare, arguments)
    print_comparison(r.summary)
    done(out)
