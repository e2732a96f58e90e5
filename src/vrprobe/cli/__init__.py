"""The `vrprobe` command line: parses options, calls `vrprobe.api`, shows progress. No logic lives here, and nothing
in vrprobe imports this package.

- `app.py`: the typer app, its root options and the console entry point `main`.
- `options.py`: the option types every command shares, the loading options (`with_load_options`), progress bars.
- `run.py`: `eval`, `trace`, `corrupt`, `study`, `report`, `show`.
- `knockout.py`: `knockout`; `proxies.py`: `probe`, `attribute`; `compare.py`: `compare`; `score.py`: `score`;
  `serve.py`: `serve`; `zoo.py`: `zoo train`.
"""

from vrprobe.cli import compare, knockout, proxies, run, score, serve, zoo  # noqa: F401  (each module registers its commands on `app`)
from vrprobe.cli.app import app, main

__all__ = ["app", "main"]
