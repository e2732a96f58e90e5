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
    name: Annotated[str, typer.Argument(help="llava, paligemma or qwen2vl.")],
    out: Annotated[Path | None, typer.Option(help="Where to save (default: the package's zoo checkpoint).")] = None,
    seed: Seed = 0,
    stage1_steps: Annotated[int | None, typer.Option(help="Image-pathway steps (default: the recipe's).")] = None,
    stage2_steps: Annotated[int | None, typer.Option(help="Whole-model steps (default: the recipe's).")] = None,
) -> None:
    """Train one zoo model on easy-VQA train (CPU, seeded) and save it with save_pretrained.

    Example: vrprobe zoo train llava --out /tmp/llava
    """
    from dataclasses import replace

    from vrprobe import checks
    from vrprobe.registry import ZOO_DIR, ZOO_NAMES
    from vrprobe.runtime.runs import check_writable
    from vrprobe.zoo.train import TrainConfig, train

    if name not in ZOO_NAMES:
        raise UsageError(f"unknown zoo model '{name}' (known: {', '.join(ZOO_NAMES)})")
    checks.options(seed=seed, stage1_steps=stage1_steps, stage2_steps=stage2_steps)
    if out is not None and out.exists() and not out.is_dir():
        raise VrprobeError(f"--out {out} exists and is not a directory")
    check_writable(out or ZOO_DIR / name)  # before hours of training, not at the save
    cfg = TrainConfig(seed=seed)
    if stage1_steps is not None:
        cfg = replace(cfg, stage1_steps=stage1_steps)
    if stage2_steps is not None:
        cfg = replace(cfg, stage2_steps=stage2_steps)
    target = out or ZOO_DIR / name
    with Bars() as bars:
        log = train(name, target, cfg, progress=lambda stage, k, total, loss: bars(stage, k, total))
    typer.echo(f"trained {name}: {log['params']:,} parameters in {log['total_seconds']:.0f} s -> {target}")
