"""Run directories that survive a crash.

    runs/<name>/manifest.json      what was run: command, models, datasets, every option, seeds, versions
    runs/<name>/records/*.parquet  one row per (model, sample), appended as batches finish
    runs/<name>/traces/*.parquet   tracing results, appended as samples finish
    runs/<name>/summary.json       aggregates, definitions (rewritten at the end)
    runs/<name>/report.html        the self-contained report

Every file is written under a temporary name in the same folder and renamed into place, so a `kill -9` at any moment
loses at most the batch in flight and never leaves a file that cannot be read. Re-running the same command on the
same folder resumes (finished ids are skipped); a different configuration is refused unless `overwrite`. The folder
is created only when the first result is written, so a run that fails before that leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vrprobe.errors import VrprobeError


def versions() -> dict[str, str]:
    import torch
    import transformers

    from vrprobe import __version__

    return {"vrprobe": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class RunDir:
    """One run folder. `config` identifies the run: the same config resumes, another is refused without overwrite."""

    def __init__(self, path: Path, config: dict[str, Any], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.config = json.loads(json.dumps(config, default=_jsonable))
        self._created = False
        if self.path.exists() and not self.path.is_dir():
            raise VrprobeError(f"--out {self.path} exists and is not a directory")
        manifest = self.path / "manifest.json"
        if self.path.is_dir() and any(self.path.iterdir()):
            same = manifest.is_file() and self._read_manifest(manifest).get("config") == self.config
            if overwrite:
                shutil.rmtree(self.path)
            elif not same:
                what = "a different configuration" if manifest.is_file() else "files vrprobe did not write"
                raise VrprobeError(f"--out {self.path} holds {what}; pass --overwrite to replace it")
            else:
                self._created = True

    @staticmethod
    def _read_manifest(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}

    @property
    def resumed(self) -> bool:
        return self._created

    def _ensure(self) -> None:
        if not self._created:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / "manifest.json", {"config": self.config, "versions": versions()})
            self._created = True

    def append(self, rows: Sequence[dict[str, Any]], table: str = "records") -> None:
        """Append rows as a new Parquet part (temporary name, then rename)."""
        if not rows:
            return
        self._ensure()
        folder = self.path / table
        folder.mkdir(exist_ok=True)
        n = len(list(folder.glob("part-*.parquet")))
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(list(rows)), sink)
        atomic_write(folder / f"part-{n:06d}.parquet", sink.getvalue().to_pybytes())

    def read(self, table: str = "records") -> list[dict[str, Any]]:
        return read_records(self.path, table)

    def done(self, keys: Iterable[str], table: str = "records") -> set[tuple]:
        """The set of key tuples already written to `table`."""
        keys = tuple(keys)
        return {tuple(r[k] for k in keys) for r in self.read(table)}

    def write_json(self, name: str, obj: Any) -> None:
        self._ensure()
        write_json(self.path / name, obj)


def read_records(out: Path, table: str = "records") -> list[dict[str, Any]]:
    """All rows of a run directory's table, in part order (temporary files are ignored)."""
    files = sorted((Path(out) / table).glob("part-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]
