"""The `vrprobe` command line: parses options, calls `vrprobe.api`, shows progress. No logic lives here.

Errors are one red line: exit 2 for usage errors, 1 for runtime errors; `--debug` shows the traceback instead;
`--quiet` hides progress bars.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vrprobe import __version__
from vrprobe.errors import UsageError, VrprobeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="vrprobe: when should you trust a vision-language model's answer?",
)
err = Console(stderr=True)
STATE = {"quiet": False}
#: typer vendors its own click; its usage errors derive from this class (found through a public typer name)
CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

Model = Annotated[str, typer.Option(help="zoo:NAME, hf:ORG/NAME (local cache only) or a model directory.")]
Data = Annotated[str, typer.Option(help="Dataset spec: easy-vqa:test, easy-vqa:DIR:test, easy-vqa:test?noise=0.3.")]
Out = Annotated[Path, typer.Option(help="Run directory; re-running the same command there resumes.")]
Limit = Annotated[int | None, typer.Option(help="A deterministic, type-stratified subset of N samples.")]
Seed = Annotated[int, typer.Option(help="Seed for subsets, noise and bootstrap.")]
Overwrite = Annotated[bool, typer.Option(help="Replace --out even if it holds another configuration.")]
BatchSize = Annotated[
    str, typer.Option(help="Samples per forward pass, or 'auto': the largest that fits the free memory, halved on OOM.")
]
Device = Annotated[str, typer.Option(help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[
    str,
    typer.Option(
        help="auto (bfloat16 on a GPU that has it, float16 on other GPUs, float32 on CPU), float32, "
        "bfloat16 or float16."
    ),
]
DeviceMap = Annotated[
    str | None, typer.Option(help="'auto': accelerate spreads a model too large for one device over GPUs and CPU RAM.")
]
MinPixels = Annotated[
    int | None,
    typer.Option(help="Qwen2-VL, Qwen2.5-VL, Qwen3-VL: fewest pixels an image is resized to (default: checkpoint's)."),
]
MaxPixels = Annotated[
    int | None,
    typer.Option(help="Qwen2-VL, Qwen2.5-VL, Qwen3-VL: most pixels an image is resized to (default: checkpoint's)."),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Run Python code shipped with the checkpoint (a model type transformers does not know). Off by default.",
    ),
]
MaxNewTokens = Annotated[int, typer.Option(help="Greedy answer length limit for open-ended datasets (VQA v2, OK-VQA).")]


class Bars:
    """A rich progress display fed by `(stage, done, total)` calls; silent with --quiet."""

    def __enter__(self) -> Bars:
        cols = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
        self.progress = Progress(*cols, console=err, transient=True, disable=STATE["quiet"])
        self.tasks: dict[str, int] = {}
        self.progress.__enter__()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vrprobe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """vrprobe: when should you trust a vision-language model's answer? Add --help after any command."""
    STATE["quiet"] = quiet


def _placement(
    device: str,
    dtype: str,
    device_map: str | None,
    min_pixels: int | None,
    max_pixels: int | None,
    trust_remote_code: bool = False,
):
    """The load options every model command passes on to the API unchanged."""
    return {
        "device": device,
        "dtype": dtype,
        "device_map": device_map,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "trust_remote_code": trust_remote_code,
    }


def _done(out: Path) -> None:
    typer.echo(f"report: {(out / 'report.html').resolve()}")


@app.command("eval")
def eval_cmd(
    model: Model,
    data: Data,
    out: Out,
    limit: Limit = None,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    image_ablation: Annotated[str | None, typer.Option(help="Replace every image: 'blank'.")] = None,
    max_new_tokens: MaxNewTokens = 10,
    device: Device = "auto",
    dtype: Dtype = "auto",
    device_map: DeviceMap = None,
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
) -> None:
    """Score a model: prediction, confidence, correctness and attention sharpness per sample, accuracy by type.

    Example: vrprobe eval --model zoo:llava --data easy-vqa:test --limit 500 --out runs/llava
    """
    from vrprobe import api

    with Bars() as bars:
        r = api.eval(
            model,
            data,
            out=out,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            image_ablation=image_ablation,
            max_new_tokens=max_new_tokens,
            **_placement(device, dtype, device_map, min_pixels, max_pixels, trust_remote_code),
            overwrite=overwrite,
            progress=bars,
        )
    s = r.summary
    by_type = "  ".join(f"{t} {a:.3f}" for t, a in s["accuracy_by_type"].items())
    typer.echo(f"{model}: n={s['n']} accuracy={s['accuracy']:.3f} ({by_type}) -> {out}")
    _done(out)


@app.command("trace")
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
    device: Device = "auto",
    dtype: Dtype = "auto",
    device_map: DeviceMap = None,
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
) -> None:
    """Causal tracing: clean, corrupted (noise on image-token embeddings) and restored runs per sample.

    Effect of (kind, layer, group) = p(target | one clean state restored) − p(target | corrupted), mean over draws.
    Example: vrprobe trace --model zoo:llava --data easy-vqa:test --limit 50 --out runs/trace-llava
    """
    from vrprobe import api

    with Bars() as bars:
        r = api.trace(
            model,
            data,
            out=out,
            limit=limit,
            kinds=[k.strip() for k in kinds.split(",") if k.strip()],
            noise_samples=noise_samples,
            noise=noise,
            window=window,
            seed=seed,
            **_placement(device, dtype, device_map, min_pixels, max_pixels, trust_remote_code),
            overwrite=overwrite,
            progress=bars,
        )
    top = sorted((c for c in r.summary["grid"] if c["kind"] == "resid"), key=lambda c: -c["effect"])[:3]
    typer.echo(
        f"{model}: traced {r.summary['n']} samples; strongest resid states: "
        + ", ".join(f"layer {c['layer']} {c['group']} {c['effect']:+.3f}" for c in top)
        + f" -> {out}"
    )
    _done(out)


@app.command("corrupt")
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
    device: Device = "auto",
    dtype: Dtype = "auto",
    device_map: DeviceMap = None,
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
) -> None:
    """Band corruption: noise on a band of layers; accuracy and attention sharpness, clean vs corrupted.

    Example: vrprobe corrupt --model zoo:llava --data easy-vqa:test --limit 500 --band auto --out runs/band-llava
    """
    from vrprobe import api

    with Bars() as bars:
        r = api.corrupt(
            model,
            data,
            band,
            out=out,
            target=target,
            noise=noise,
            positions=positions,
            limit=limit,
            trace_limit=trace_limit,
            batch_size=batch_size,
            seed=seed,
            **_placement(device, dtype, device_map, min_pixels, max_pixels, trust_remote_code),
            overwrite=overwrite,
            progress=bars,
        )
    s = r.summary
    typer.echo(
        f"{model}: band {r.band[0]}-{r.band[1]} accuracy {s['accuracy_clean']:.3f} -> "
        f"{s['accuracy_corrupted']:.3f} (drop {s['drop_abs']:.3f}); sharpness {s['sharpness_clean']:.3f} -> "
        f"{s['sharpness_corrupted']:.3f} nats -> {out}"
    )
    _done(out)


@app.command("study")
def study_cmd(
    models: Annotated[str, typer.Option(help="Model specs, comma-separated.")],
    data: Annotated[str, typer.Option(help="Dataset specs, comma-separated; the first is the reference split.")],
    out: Out,
    limit: Limit = None,
    trace_limit: Annotated[int, typer.Option(help="Samples traced per model to find the causal band.")] = 100,
    probe_limit: Annotated[
        int, typer.Option(help="Training samples of the reliability probe (easy-VQA: from its train set).")
    ] = 1000,
    band_positions: Annotated[
        str, typer.Option(help="Positions corrupted in the band: all, image or non_image.")
    ] = "all",
    noise: Annotated[float, typer.Option(help="Noise k for tracing and band corruption.")] = 3.0,
    batch_size: BatchSize = "32",
    seed: Seed = 0,
    max_new_tokens: MaxNewTokens = 10,
    device: Device = "auto",
    dtype: Dtype = "auto",
    device_map: DeviceMap = None,
    min_pixels: MinPixels = None,
    max_pixels: MaxPixels = None,
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Overwrite = False,
) -> None:
    """All four modules over models × datasets; prints the table and writes the report.

    Example: vrprobe study --models zoo:llava,zoo:qwen2vl --data "easy-vqa:test,easy-vqa:test?noise=0.3"
    --limit 500 --out runs/study
    """
    from vrprobe import api

    with Bars() as bars:
        r = api.study(
            models,
            data,
            out=out,
            limit=limit,
            trace_limit=trace_limit,
            probe_limit=probe_limit,
            band_positions=band_positions,
            noise=noise,
            batch_size=batch_size,
            seed=seed,
            max_new_tokens=max_new_tokens,
            **_placement(device, dtype, device_map, min_pixels, max_pixels, trust_remote_code),
            overwrite=overwrite,
            progress=bars,
        )
    _print_table(r.table, r.summary.get("heads"))
    _done(out)


def _print_table(table: list, heads: dict | None = None, all_columns: bool = False) -> None:
    """The study's table and verdict within the terminal's width (`vrprobe.terminal`)."""
    from vrprobe.terminal import print_study

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
    from vrprobe.runs import read_summary
    from vrprobe.terminal import print_summary

    summary = read_summary(out)
    if "table" in summary:
        _print_table(summary["table"], summary.get("heads"), all_columns)
    else:
        print_summary(summary)


def _register() -> None:
    """Commands defined beside this module (they import its options and `app`)."""
    from vrprobe import cli_knockout, cli_proxies, cli_zoo  # noqa: F401  (`knockout`, `probe`, `attribute`, `zoo`)


def main() -> None:
    """Console entry point: one red line and exit 1 for runtime errors, exit 2 for usage errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    debug = "--debug" in sys.argv
    _register()
    try:
        app(standalone_mode=False)
    except (typer.Exit, click.exceptions.Exit) as exc:
        sys.exit(exc.exit_code)
    except (CLICK_ERROR, click.ClickException) as exc:
        if debug:
            raise
        err.print(f"[red]error: {exc.format_message()}[/red]", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except VrprobeError as exc:
        if debug:
            raise
        err.print(f"[red]error: {exc}[/red]", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
