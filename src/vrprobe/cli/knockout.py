"""`vrprobe knockout`: attention knockout windows and the integration layers, registered on the main command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vrprobe.analyses.knockout import EDGES
from vrprobe.cli.app import app
from vrprobe.cli.options import (
    BatchSize,
    Data,
    ExecutorOpt,
    Limit,
    Model,
    Overwrite,
    Seed,
    Workers,
    call,
    with_load_options,
)

if TYPE_CHECKING:
    from vrprobe.runtime.devices import LoadOptions


@app.command("knockout")
@with_load_options
def knockout_cmd(
    model: Model,
    data: Data,
    out: Annotated[Path, typer.Option(help="Run directory (summary.json, records/, windows/).")],
    window: Annotated[
        str | None,
        typer.Option(help="Layers blocked together (a window sliding by one layer), or 'all' (default: L/4)."),
    ] = None,
    edges: Annotated[str, typer.Option(help="Attention edges SOURCE->TARGET to block, comma-separated.")] = ",".join(
        EDGES
    ),
    limit: Limit = None,
    batch_size: BatchSize = "16",
    seed: Seed = 0,
    executor: ExecutorOpt = "local",
    workers: Workers = None,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Block attention edges between token groups over windows of layers and measure the relative change in
    p(answer): where does image information reach the question and the answer position?

    Groups: image (image-feature tokens), question (every other prompt token before the last, template words
    included), last (the answer position). Edge S->T blocks every query in T from every key in S. last->last is a
    control. Effect = mean relative change in p(target) over the samples answered correctly, with a 95% bootstrap
    interval. Integration layers: per image edge, the window that hurts most and the deepest window whose interval
    excludes 0. With --window all: accuracy with every listed edge blocked at every layer, beside blank-image accuracy.

    Example: vrprobe knockout --model zoo:llava --data easy-vqa:test --out runs/ko-llava --limit 200
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api
    from vrprobe.reporting.tables import GLUE, integration_text
    from vrprobe.reporting.terminal import echo

    r = call(api.knockout, arguments)
    s = r.summary
    line = f"{model}: n={s['n']} accuracy {s['accuracy_clean']:.3f}; integration layers: "
    echo(line + integration_text(s["integration_layers"]))
    if "accuracy_knocked_out" in s:
        echo(f"  every listed edge blocked at every layer: accuracy {s['accuracy_knocked_out']:.3f}")
        for name in ("knocked_out", "blank"):
            by_type = ", ".join(f"{t}{GLUE}{v:.3f}" for t, v in s[f"accuracy_by_type_{name}"].items())
            echo(f"    {name.replace('_', ' ')} by type: {by_type}")
    echo(f"-> {out / 'summary.json'}")
