"""The typer app, its root options (`--version`, `--quiet`, `--debug`) and the console entry point `main`.

Errors are one red line: exit 2 for usage errors, 1 for runtime errors; `--debug` shows the traceback instead;
`--quiet` hides progress bars.
"""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer
from rich.markup import escape

from vrprobe import __version__
from vrprobe.cli.options import STATE, err
from vrprobe.errors import UsageError, VrprobeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="vrprobe: when should you trust a vision-language model's answer?",
)
#: typer vendors its own click; its usage errors derive from this class (found through a public typer name), typed as
#: the click class it copies (same interface: `format_message`), which is not its base
CLICK_ERROR: type[click.ClickException] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


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


def main() -> None:
    """Console entry point: one red line and exit 1 for runtime errors, exit 2 for usage errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except (typer.Exit, click.exceptions.Exit) as exc:
        sys.exit(exc.exit_code)
    except (CLICK_ERROR, click.ClickException) as exc:
        if debug:
            raise
        err.print(f"[red]error: {escape(exc.format_message())}[/red]", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except VrprobeError as exc:
        if debug:
            raise
        err.print(f"[red]error: {escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
