"""`vrprobe zoo train`: retrain a built-in zoo model, registered on the main command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vrprobe.cli.app import app
from vrprobe.cli.options import Bars, Seed
from vrprobe.errors import UsageError, VrprobeError

zoo_app = typer.Typer(no_args_is_help=True, help="The built-in zoo of tiny trained models.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("train")
def zoo_train(
    name: Annotated[
        str,
        typer.Argument(
            help="llava, paligemma, qwen2vl (easy-VQA) or llava-scenes, paligemma-scenes, qwen2vl-scenes (scenes)."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Where to save (default: the package's zoo checkpoint).")] = None,
    seed: Seed = 0,
    stage1_steps: Annotated[int | None, typer.Option(help="Image-pathway steps (default: the recipe's).")] = None,
    stage2_steps: Annotated[int | None, typer.Option(help="Whole-model steps (default: the recipe's).")] = None,
) -> None:
    """Train one zoo model on its data's train split (easy-VQA or scenes; CPU, seeded) and save it with
    save_pretrained.

    The recipe (steps, batch sizes, learning rates) is the one the committed model was trained with; the two step
    options shorten it. Example: vrprobe zoo train llava-scenes --out /tmp/llava-scenes
    """
    from dataclasses import replace

    from vrprobe import checks
    from vrprobe.registry import ZOO_DIR, ZOO_NAMES
    from vrprobe.runtime.runs import check_writable
    from vrprobe.zoo.train import recipe, train

    if name not in ZOO_NAMES:
        raise UsageError(f"unknown zoo model '{name}' (known: {', '.join(ZOO_NAMES)})")
    checks.options(seed=seed, stage1_steps=stage1_steps, stage2_steps=stage2_steps)
    if out is not None and out.exists() and not out.is_dir():
        raise VrprobeError(f"--out {out} exists and is not a directory")
    check_writable(out or ZOO_DIR / name)  # before hours of training, not at the save
    cfg = replace(recipe(name), seed=seed)
    if stage1_steps is not None:
        cfg = replace(cfg, stage1_steps=stage1_steps)
    if stage2_steps is not None:
        cfg = replace(cfg, stage2_steps=stage2_steps)
    target = out or ZOO_DIR / name
    with Bars() as bars:
        log = train(name, target, cfg, progress=lambda stage, k, total, loss: bars(stage, k, total))
    typer.echo(f"trained {name}: {log['params']:,} parameters in {log['total_seconds']:.0f} s -> {target}")


#: the splits each dataset family's models are measured on: (label, dataset spec, image ablation)
TABLE_SPLITS = {
    "easy-vqa": (("test", "easy-vqa:test", None), ("blank", "easy-vqa:test", "blank")),
    "scenes": (("test", "scenes:test", None), ("blank", "scenes:test", "blank"), ("lures", "scenes:lures", None)),
}


@zoo_app.command("table")
def zoo_table(
    models: Annotated[
        str | None, typer.Option(help="Zoo names, comma-separated (default: every trained zoo model).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="A type-stratified subset of N questions per split.")] = None,
    seed: Seed = 0,
) -> None:
    """Measure the zoo: each model's facts (parameters, image tokens, decoder layers, training time, checkpoint
    size) and its accuracy per question kind on its data's test split, the same with blank images, and (scenes) on
    scenes:lures. Prints two Markdown tables (the README's).

    Accuracy: the fraction of questions whose predicted answer is correct, with a 95% bootstrap interval over the
    questions. Example: vrprobe zoo table --models llava-scenes --limit 400
    """
    import json

    from vrprobe import api, checks
    from vrprobe.metrics.stats import mean_interval
    from vrprobe.registry import ZOO_DIR, ZOO_NAMES
    from vrprobe.zoo.catalog import zoo_model

    checks.options(limit=limit, seed=seed)
    names = [n.strip() for n in models.split(",")] if models else [n for n in ZOO_NAMES if (ZOO_DIR / n).is_dir()]
    if not names:
        raise VrprobeError("no zoo model is trained yet: run `vrprobe zoo train NAME`")
    unknown = [n for n in names if n not in ZOO_NAMES]
    if unknown:
        raise UsageError(f"unknown zoo model '{unknown[0]}' (known: {', '.join(ZOO_NAMES)})")
    facts = ["| model | data | params | image tokens | decoder layers | train time (s) | checkpoint (MB) |"]
    facts.append("|---|---|---|---|---|---|---|")
    rows: list[tuple[str, str]] = []  # (dataset, table row)
    kinds_of: dict[str, list[str]] = {}
    with Bars() as bars:
        for name in names:
            zoo = zoo_model(name)
            adapter = api.load(f"zoo:{name}")
            folder = ZOO_DIR / name
            log_file = folder / "train_log.json"
            log = json.loads(log_file.read_text()) if log_file.is_file() else {}
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
            facts.append(
                f"| zoo:{name} | {zoo.dataset} | {adapter.num_params:,} | {zoo.image_tokens} | {adapter.num_layers} "
                f"| {log.get('total_seconds', '–')} | {size:.1f} |"
            )
            for label, data, ablation in TABLE_SPLITS[zoo.dataset]:
                result = api.eval(
                    adapter,
                    data,
                    limit=limit,
                    seed=seed,
                    image_ablation=ablation,
                    make_report=False,
                    progress=bars,
                )
                acc, (lo, hi) = mean_interval([r["correct"] for r in result.records], seed=seed)
                by_type = result.summary["accuracy_by_type"]
                kinds = kinds_of.setdefault(zoo.dataset, sorted(by_type))
                cells = " | ".join(f"{by_type[k]:.3f}" if k in by_type else "–" for k in kinds)
                rows.append((zoo.dataset, f"| zoo:{name} | {label} | {acc:.3f} [{lo:.3f}–{hi:.3f}] | {cells} |"))
    typer.echo("\n".join(facts) + "\n")
    for dataset, kinds in kinds_of.items():
        typer.echo(f"| model | split ({dataset}) | accuracy [95% CI] | " + " | ".join(kinds) + " |")
        typer.echo("|---|---|---|" + "---|" * len(kinds))
        typer.echo("\n".join(row for d, row in rows if d == dataset) + "\n")
