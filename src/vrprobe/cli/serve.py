"""`vrprobe serve`: a model and its saved probe behind an HTTP API (`vrprobe.service`), on the main command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vrprobe.cli.app import app
from vrprobe.cli.options import Model, err, with_load_options

if TYPE_CHECKING:
    from vrprobe.runtime.devices import LoadOptions


@app.command("serve")
@with_load_options
def serve_cmd(
    model: Model,
    probe: Annotated[Path, typer.Option(help="A saved probe: the probe/ folder `vrprobe probe --out DIR` writes.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; loopback by default (another address is warned about).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on, 0..65535 (0: any free port).")] = 8000,
    max_batch: Annotated[int, typer.Option(help="Most requests answered in one model batch (1: no batching).")] = 16,
    max_wait_ms: Annotated[
        float, typer.Option(help="Most milliseconds a request waits for others to share its batch.")
    ] = 10.0,
    max_image_bytes: Annotated[
        int, typer.Option(help="Largest image accepted, in bytes (a larger one gets 413); default 10 MiB.")
    ] = 10_485_760,
    max_new_tokens: Annotated[
        int, typer.Option(help="Longest generated answer, in tokens, for a question without choices.")
    ] = 10,
    *,
    load: LoadOptions,
) -> None:
    """Serve --model with the saved probe --probe over HTTP: POST /v1/answer (an image and a question, JSON or
    multipart) returns the answer, the model's confidence and the probe's reliability; GET /healthz; docs at /docs.
    Concurrent requests are answered in batches.

    Example: vrprobe serve --model zoo:llava --probe runs/probe/probe --port 8000
    """
    from vrprobe.service import serve

    def warn(line: str) -> None:
        err.print(f"[yellow]{line}[/yellow]", highlight=False, soft_wrap=True)

    serve(
        model,
        probe,
        host=host,
        port=port,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_image_bytes=max_image_bytes,
        max_new_tokens=max_new_tokens,
        options=load,
        say=typer.echo,  # flushes: a parent process reading the pipe sees the line at once
        warn=warn,
    )
