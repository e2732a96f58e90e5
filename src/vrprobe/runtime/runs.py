"""Run directories that survive a crash.

    runs/<name>/manifest.json      what was run: command, models, datasets, every option, seeds, versions
    runs/<name>/records/*.parquet  one row per (model, sample), appended as batches finish
    runs/<name>/traces/*.parquet   tracing results, appended as samples finish
    runs/<name>/summary.json       aggregates, definitions (rewritten at the end)
    runs/<name>/report.html        the self-contained report

Every file is written under a temporary name in the same folder and renamed into place, so a `kill -9` at any moment
loses at most the batch in flight and never leaves a file that cannot be read. Re-running the same command on the
same folder resumes (finished ids are skipped); a different configuration is refused unless `overwrite`. The folder
is created only when the first result is written, so a run that fails before that leaves nothing behind; `overwrite`
deletes the old run at that moment too, never a folder vrprobe did not write. Whether the folder can be created is
checked up front (`check_writable`), and a run folder's files that cannot be read give one `VrprobeError` naming them
(`read_json`, `read_summary`, `read_records`).

Every API function opens its folder the same way: `open_run(out, run_config(command, model, options, **fields),
overwrite)`, None when there is no `out`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vrprobe.errors import VrprobeError
from vrprobe.runtime.devices import LoadOptions


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"vrprobe": version("vrprobe"), "torch": torch.__version__, "transformers": transformers.__version__}


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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; an unreadable, malformed or non-object file raises `VrprobeError` naming it."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
        raise VrprobeError(f"cannot read {path}: {reason}") from None
    if not isinstance(obj, dict):
        raise VrprobeError(f"cannot read {path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def read_summary(out: Path) -> dict[str, Any]:
    """A finished run's `summary.json`, after checking that `manifest.json` (when there) is readable too."""
    out = Path(out)
    if not (out / "summary.json").is_file():
        raise VrprobeError(f"{out} has no summary.json: not a finished vrprobe run")
    if (out / "manifest.json").is_file():
        read_json(out / "manifest.json")
    return read_json(out / "summary.json")


def check_writable(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, a folder that cannot be created or written: its nearest existing ancestor must be a
    folder that accepts a new entry (probed with a temporary folder, removed at once: nothing is left behind)."""
    path = Path(path)
    if os.path.lexists(path) and not path.exists():
        raise VrprobeError(f"{option} {path} is a broken symbolic link")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise VrprobeError(f"{option} {path} cannot be created: {ancestor} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vrprobe-probe-", dir=ancestor))
    except OSError as exc:
        raise VrprobeError(
            f"{option} {path} cannot be created: {ancestor} does not accept new folders ({exc.strerror})"
        ) from None


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
        self._replace = False  # an old run to delete at the first write (overwrite)
        if self.path.exists() and not self.path.is_dir():
            raise VrprobeError(f"--out {self.path} exists and is not a directory")
        check_writable(self.path)
        manifest = self.path / "manifest.json"
        if self.path.is_dir() and any(self.path.iterdir()):
            same = manifest.is_file() and self._read_manifest(manifest).get("config") == self.config
            if not manifest.is_file():
                hint = "; vrprobe never deletes it" if overwrite else "; choose another --out"
                raise VrprobeError(f"--out {self.path} holds files vrprobe did not write{hint}")
            if overwrite:
                self._replace = True
            elif not same:
                raise VrprobeError(f"--out {self.path} holds a different configuration; pass --overwrite to replace it")
            else:
                self._created = True

    @staticmethod
    def _read_manifest(path: Path) -> dict[str, Any]:
        try:
            return read_json(path)
        except VrprobeError:  # a damaged manifest is "a different configuration"
            return {}

    @property
    def resumed(self) -> bool:
        return self._created

    def _ensure(self) -> None:
        if not self._created:
            with self._writing(self.path):
                if self._replace:
                    shutil.rmtree(self.path)
                    self._replace = False
                self.path.mkdir(parents=True, exist_ok=True)
                write_json(self.path / "manifest.json", {"config": self.config, "versions": versions()})
            self._created = True

    @staticmethod
    @contextmanager
    def _writing(path: Path) -> Iterator[None]:
        """Turn a failed write (disk full, permissions changed mid-run) into one `VrprobeError` naming the path."""
        try:
            yield
        except OSError as exc:
            raise VrprobeError(f"cannot write to {path}: {exc.strerror or exc}") from None

    def append(self, rows: Sequence[dict[str, Any]], table: str = "records") -> None:
        """Append rows as a new Parquet part (temporary name, then rename). The part's columns are the union of the
        rows' keys in first-seen order; a row without a key reads back with None there (pyarrow's `from_pylist` alone
        would take the first row's keys and silently drop the others')."""
        if not rows:
            return
        self._ensure()
        folder = self.path / table
        names = list(dict.fromkeys(k for r in rows for k in r))
        columns = {k: [r.get(k) for r in rows] for k in names}
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pydict(columns), sink)
        with self._writing(folder):
            folder.mkdir(exist_ok=True)
            n = len(list(folder.glob("part-*.parquet")))
            atomic_write(folder / f"part-{n:06d}.parquet", sink.getvalue().to_pybytes())

    def read(self, table: str = "records") -> list[dict[str, Any]]:
        return [] if self._replace else read_records(self.path, table)

    def done(self, keys: Iterable[str], table: str = "records") -> set[tuple]:
        """The set of key tuples already written to `table`."""
        keys = tuple(keys)
        return {tuple(r[k] for k in keys) for r in self.read(table)}

    def write_json(self, name: str, obj: Any) -> None:
        self._ensure()
        with self._writing(self.path / name):
            write_json(self.path / name, obj)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write `data` to `name`, a path inside the run folder (e.g. `examples/a.png`; its folders are created),
        atomically like every other file; a name that is absolute or climbs out with `..` is a ValueError."""
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"write_bytes needs a path inside the run folder, got {name!r}")
        self._ensure()
        path = self.path / relative
        with self._writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)


def run_config(command: str, model: str, options: LoadOptions, **fields: Any) -> dict[str, Any]:
    """What identifies a run in its manifest (the same config resumes it): the command, the model's spec, the
    command's own fields in the order given, then the six loading options."""
    return {"command": command, "model": model, **fields, **asdict(options)}


def open_run(out: Path | str | None, config: dict[str, Any], overwrite: bool = False) -> RunDir | None:
    """The run directory `out` for `config`: checked now (writable; empty, or the same config to resume, or
    `overwrite`), created at its first write; None when there is no `out`."""
    return RunDir(Path(out), config, overwrite=overwrite) if out is not None else None


def read_records(out: Path, table: str = "records") -> list[dict[str, Any]]:
    """All rows of a run directory's table, in part order (temporary files are ignored)."""
    files = sorted((Path(out) / table).glob("part-*.parquet"))
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            rows += pq.read_table(f).to_pylist()
        except (pa.ArrowException, OSError):
            raise VrprobeError(
                f"cannot read {f}: not a readable Parquet file (damaged? remove it to recompute)"
            ) from None
    return rows
