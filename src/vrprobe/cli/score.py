"""`vrprobe score`: a saved probe's reliability on new data, registered on the main command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vrprobe.cli.app import app
from vrprobe.cli.options import BatchSize, Data, Limit, Model, Out, Overwrite, Seed, call, with_load_options

if TYPE_CHECKING:
    from vrprobe.runtime.devices import LoadOptions


@app.command("score")
@with_load_options
def score_cmd(
    model: Model,
    probe: Annotated[Path, typer.Option(help="A saved probe: the probe/ folder `vrprobe probe --out DIR` writes.")],
    data: Data,
    out: Out,
    limit: Limit = None,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Answer --data and score each answer's reliability with a saved probe (trained on the same model), from one
    forward per batch: records with predicted, confidence, reliability, reliability_raw and correct.

    Example: vrprobe score --model zoo:llava --probe runs/probe/probe --data easy-vqa:test --out runs/score
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api
    from vrprobe.reporting.terminal import echo

    s = call(api.score, arguments).summary
    line = f"{model}: scored {s['n']} samples with probe {probe} (layer {s['probe_layer']})"
    if s["accuracy"] is not None:
        line += f"; accuracy {s['accuracy']:.3f}"
    for key in ("auroc_reliability", "auroc_confidence"):
        if s[key] is not None:
            line += f", {key.replace('_', ' ')} {s[key]:.3f}"
    echo(f"{line} -> {out / 'summary.json'}")
