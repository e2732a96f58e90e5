"""What every command shares: the option types, the six loading options (one `LoadOptions`), progress bars.

- `Model`, `Data`, `Out`, `Limit`, `Seed`, `Overwrite`, `BatchSize`, `MaxNewTokens`: option types of many commands.
- `with_load_options`: adds `--device`, `--dtype`, `--device-map`, `--min-pixels`, `--max-pixels` and
  `--trust-remote-code` to a command, which receives them as one argument `load: LoadOptions`.
- `Bars`: the rich progress display fed by `(stage, done, total)` calls; silent with `--quiet` (`STATE`).
- `call(function, load, *args, **kwargs)`: how a command calls the API: with `options=load` and the bars.
- `err`: the console errors go to; `done(out)` prints where the report is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True)
STATE = {"quiet": False}

Model = Annotated[str, typer.Option(help="zoo:NAME, hf:ORG/NAME (local cache only) or a model directory.")]
Data = Annotated[str, typer.Option(help="Dataset spec: easy-vqa:test, easy-vqa:DIR:test, easy-vqa:test?noise=0.3.")]
Out = Annotated[Path, typer.Option(help="Run directory; re-running the same command there resumes.")]
Limit = Annotated[int | None, typer.Option(help="A deterministic, type-stratified subset of N samples.")]
Seed = Annotated[int, typer.Option(help="Seed for subsets, noise and bootstrap.")]
Overwrite = Annotated[bool, typer.Option(help="Replace --out even if it holds another configuration.")]
BatchSize = Annotated[
    str, typer.Option(help="Samples per forward pass, or 'auto': the largest that fits the free memory, halved on OOM.")
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where the per-sample work runs: local (this process), ray (a local Ray started for the run) or "
        "ray:ADDRESS (join that cluster); Ray needs pip install 'vrprobe[ray]'.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(help="Ray actors, each holding one model replica (default: one per GPU, else 2). Only with ray."),
]
MaxNewTokens = Annotated[int, typer.Option(help="Greedy answer length limit for open-ended datasets (VQA v2, OK-VQA).")]


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

#: the loading options, in the order `--help` lists them: (parameter, type, default); fields of `LoadOptions`
LOAD_PARAMS: tuple[tuple[str, Any, Any], ...] = (
    ("device", Device, "auto"),
    ("dtype", Dtype, "auto"),
    ("device_map", DeviceMap, None),
    ("min_pixels", MinPixels, None),
    ("max_pixels", MaxPixels, None),
    ("trust_remote_code", TrustRemoteCode, False),
)


def with_load_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command with the six loading options added to its signature (before a trailing `overwrite`, where it has
    one); it is called with them gathered into `load`, a `vrprobe.runtime.devices.LoadOptions`."""
    signature = inspect.signature(command)  # annotations as written: `load`'s type is imported for checkers only
    own = [
        p.replace(annotation=eval(p.annotation, command.__globals__) if isinstance(p.annotation, str) else p.annotation)
        for name, p in signature.parameters.items()
        if name != "load"
    ]
    added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=d) for n, t, d in LOAD_PARAMS]
    tail = [p for p in own if p.name == "overwrite"]
    head = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.name != "overwrite"]
    tail = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in tail]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from vrprobe.runtime.devices import LoadOptions  # here, not at import: `vrprobe --help` needs no torch

        fields = {name: kwargs.pop(name) for name, _, _ in LOAD_PARAMS}
        return command(**kwargs, load=LoadOptions(**fields))

    parameters = [*head, *added, *tail]
    wrapper.__signature__ = signature.replace(parameters=parameters, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}  # what typer reads through get_type_hints
    return wrapper


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
        self.tasks: dict[str, TaskID] = {}
        self.progress.__enter__()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.progress.__exit__(kind, exc, traceback)


def call(function: Callable[..., Any], arguments: dict[str, Any], **overrides: Any) -> Any:
    """Run an API function on a command's arguments (`locals()` at the command's start: its parameters, `load` the
    `LoadOptions`), each passed under its own name (CLI flags and API keywords share their names), then `overrides`,
    with `options=load` and the progress bars shown while it runs."""
    given = {k: v for k, v in arguments.items() if k != "load"} | overrides
    unknown = sorted(set(given) - set(inspect.signature(function).parameters))
    if unknown:  # a flag renamed on one side only: fail loudly rather than drop it
        raise TypeError(f"{function.__name__} takes no {', '.join(unknown)}")
    with Bars() as bars:
        return function(**given, options=arguments["load"], progress=bars)


def done(out: Path) -> None:
    """Print where the run's report is."""
    typer.echo(f"report: {(out / 'report.html').resolve()}")
