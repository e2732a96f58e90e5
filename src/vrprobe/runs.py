"""Run directories: results are written to a staging folder and moved into `--out` only when complete.

Layout: `DIR/records/*.parquet` (one row per sample), `DIR/summary.json`. A failure at any point leaves `--out` as
it was: nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vrprobe.errors import VrprobeError


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out` unless `overwrite`; refuse a path that is a file. Call before any work starts."""
    if out.exists() and not out.is_dir():
        raise VrprobeError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise VrprobeError(f"--out {out} is not empty; pass --overwrite to replace it")


def write_run(
    out: Path,
    *,
    records: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    overwrite: bool = False,
    records_name: str = "records",
) -> Path:
    """Write `records` as Parquet and `summary` as JSON into a staging folder, then move it into place at `out`."""
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (stage / records_name).mkdir()
        if records:
            pq.write_table(pa.Table.from_pylist(list(records)), stage / records_name / "part-00000.parquet")
        (stage / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def read_records(out: Path, records_name: str = "records") -> list[dict[str, Any]]:
    """All record rows of a run directory, in file order."""
    files = sorted((out / records_name).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]
