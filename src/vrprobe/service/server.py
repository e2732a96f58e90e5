"""Running the app: `serve(model, probe, ...)` checks the settings, binds the address, loads the model and its probe,
and serves until interrupted (uvicorn). `vrprobe serve` is this call.

The order is the point: every setting is checked before anything else (one `UsageError` line), the address is bound
before the model loads (a port in use fails at once, in one line), and a probe trained on another model is refused
before the server starts (`Scorer.load`, one line). Binding an address other than loopback prints a warning: the API
has no authentication, so anyone who can reach the address can use the model.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path

from vrprobe import checks
from vrprobe.analyses.scorer import Scorer
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.models import Adapter
from vrprobe.runtime.devices import LoadOptions
from vrprobe.service.app import MIB, create_app

#: defaults of `serve` and `vrprobe serve`
HOST, PORT, MAX_BATCH, MAX_WAIT_MS, MAX_IMAGE_BYTES = "127.0.0.1", 8000, 16, 10.0, 10 * MIB


def check_settings(port: int, max_batch: int, max_wait_ms: float, max_image_bytes: int) -> None:
    """One `UsageError` line for a setting out of range: --port in 0..65535 (0: any free port), --max-batch >= 1,
    --max-wait-ms >= 0 (finite), --max-image-bytes >= 1."""
    checks.nonneg_int("--port", port)
    if port > 65535:
        raise UsageError(f"--port must be in 0..65535 (0: any free port), got {port}")
    checks.positive_int("--max-batch", max_batch)
    checks.finite_nonneg("--max-wait-ms", max_wait_ms)
    checks.positive_int("--max-image-bytes", max_image_bytes)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches this machine only: every address it resolves to is loopback."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (port 0: a free one); one `UsageError` line when the port is in use
    or the address cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise UsageError(f"--host {host}: not an address this machine can bind ({exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets; a port in LISTEN still fails
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use: pick another --port (0: any free port)") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def url(host: str, port: int) -> str:
    """`http://HOST:PORT`, an IPv6 address in brackets."""
    return f"http://[{host.strip('[]')}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    model: str | os.PathLike[str] | Adapter,
    probe: Path | str,
    *,
    host: str = HOST,
    port: int = PORT,
    max_batch: int = MAX_BATCH,
    max_wait_ms: float = MAX_WAIT_MS,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_new_tokens: int = 10,
    options: LoadOptions | None = None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> None:
    """Serve `model` with the saved probe in `probe` at `host`:`port` until interrupted (module docstring). `say`
    gets the line `serving MODEL with probe DIR at http://HOST:PORT (docs at /docs)` once the model is loaded;
    `warn` gets the warning for a non-loopback `host`."""
    check_settings(port, max_batch, max_wait_ms, max_image_bytes)
    checks.positive_int("--max-new-tokens", max_new_tokens)
    import uvicorn  # here: `vrprobe --help` needs no server

    sock = bind(host, port)
    try:
        if not is_loopback(host):
            warn(
                f"warning: serving on {host}, not loopback: anyone who can reach this address can use the model "
                "(the API has no authentication)"
            )
        scorer = Scorer.load(probe, model, options, batch_size=max_batch, max_new_tokens=max_new_tokens)
        name = model.name if isinstance(model, Adapter) else str(model)
        app = create_app(scorer, max_batch, max_wait_ms, max_image_bytes, model=name, probe=str(probe))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        say(f"serving {name} with probe {probe} at {url(host, sock.getsockname()[1])} (docs at /docs)")
        server.run(sockets=[sock])
        if not server.started:
            raise VrprobeError(f"the server at {url(host, sock.getsockname()[1])} did not start (see the log above)")
    finally:
        sock.close()
