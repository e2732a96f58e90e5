"""`vrprobe probe` and `vrprobe attribute`: the reliability-proxy commands, registered on the main command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vrprobe.cli.app import app
from vrprobe.cli.options import BatchSize, Data, Limit, Model, Overwrite, Seed, call, with_load_options
from vrprobe.errors import UsageError


def parse_layers(text: str | None) -> list[int] | None:
    """'3,5,7' or '2-6' (inclusive) or a mix -> sorted layer indices; None for None."""
    if text is None:
        return None
    layers: set[int] = set()
    for part in text.split(","):
        a, dash, b = part.strip().partition("-")
        if not (a.isdigit() and (not dash or b.isdigit())):
            raise UsageError(f"--layers takes indices and ranges such as 2,4 or 2-6, got '{text}'")
        layers.update(range(int(a), int(b) + 1) if dash else [int(a)])
    return sorted(layers)


if TYPE_CHECKING:
    from vrprobe.runtime.devices import LoadOptions


@app.command("probe")
@with_load_options
def probe_cmd(
    model: Model,
    data: Annotated[str, typer.Option(help="Training dataset spec (easy-VQA: easy-vqa:train).")],
    eval_data: Annotated[
        str, typer.Option(help="Held-out dataset spec(s), comma-separated; the first is the test set, more = transfer.")
    ],
    out: Annotated[Path, typer.Option(help="Run directory (summary.json, records).")],
    layers: Annotated[str | None, typer.Option(help="Decoder layers to probe: 2,4 or 2-6 (default: all).")] = None,
    limit: Limit = None,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Train hidden-state reliability probes on --data and score them beside confidence, sharpness and the logit
    margin on held-out --eval-data: AUROC (95% bootstrap interval), AURC and accuracy at 50/80/90% coverage.

    Probes: logistic regression on the answer position's hidden state per layer (`probe`), on the mean over image
    tokens (`probe_image_mean`), and a label-free one trained to predict that the answer survives image noise
    (`probe_label_free`). The layer is chosen by cross-validation on the training data only.

    Example: vrprobe probe --model zoo:llava --data easy-vqa:train --eval-data easy-vqa:test --out runs/probe
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api
    from vrprobe.reporting.terminal import echo

    r = call(api.probe, arguments, layers=parse_layers(layers))
    s = r.summary
    echo(f"{model}: trained on {data} (n={s['n_train']}), best layer {s['best_layer']}")
    for spec, e in s["evaluations"].items():
        echo(f"  {spec} (n={e['n']}, accuracy {e['accuracy']:.3f})")
        for name, v in e["selective"].items():
            lo, hi = v["ci"]
            echo(f"    {name:<18} AUROC {v['auroc']:.3f} [{lo:.3f}, {hi:.3f}]  AURC {v['aurc']:.4f}")
    echo(f"-> {out / 'summary.json'}")


@app.command("attribute")
@with_load_options
def attribute_cmd(
    model: Model,
    data: Data,
    out: Annotated[Path, typer.Option(help="Run directory (traces/*.parquet with an estimate column, summary.json).")],
    limit: Limit = None,
    kinds: Annotated[
        str, typer.Option(help="Restoration kinds, comma-separated: resid, mlp, attn.")
    ] = "resid,mlp,attn",
    noise_samples: Annotated[int, typer.Option(help="Noise draws per sample.")] = 10,
    noise: Annotated[float, typer.Option(help="Noise k, in units of the embeddings' std sigma.")] = 3.0,
    window: Annotated[int, typer.Option(help="Layers restored together for mlp/attn (centred on the layer).")] = 3,
    seed: Seed = 0,
    compare_trace: Annotated[
        bool, typer.Option(help="Also run the exact causal trace: per-sample Spearman, top-3 recall, cost ratio.")
    ] = False,
    overwrite: Overwrite = False,
    *,
    load: LoadOptions,
) -> None:
    """Attribution patching: the causal trace's whole grid estimated to first order from one clean forward, one
    corrupted forward of the noise draws and one backward per sample (gradient of p(target) x (clean - corrupted)).

    Example: vrprobe attribute --model zoo:llava --data easy-vqa:test --limit 20 --compare-trace --out runs/atp
    """
    arguments = dict(locals())  # the command's parameters, before any local name
    from vrprobe import api
    from vrprobe.reporting.terminal import echo

    r = call(api.attribute, arguments)
    s = r.summary
    line = f"{model}: attributed {s['n']} samples"
    if compare_trace:
        line += (
            f"; against the exact trace: Spearman {s['spearman']:.3f}, top-3 recall {s['top3_recall']:.3f}, "
            f"cost ratio {s['cost_ratio']:.1f}x ({s['cost_ratio_with_linear']:.1f}x with the linearised variant)"
        )
    echo(f"{line} -> {out / 'summary.json'}")
