"""Where a run's per-sample work happens: one interface (`Executor.run`), the local executor, and `--executor`.

A run's work is a `Job` (picklable: the model and dataset specs it needs, and the analysis' settings) and the sample
positions still to do. The executor cuts those positions into shards of consecutive positions (one batch each: the
same batches a local run forms, so a batch-seeded draw is the same wherever it runs), runs `job.rows(context, shard)`
somewhere, and hands each shard's rows back to the driver through `on_rows(shard, rows)` as they come; the driver
alone writes the run directory. `rows` maps a table name ("records", "windows", ...) to that shard's rows; the
driver appends "records" last, so a shard counts as done only when all its tables are written.

- `LocalExecutor`: in this process, with the model the driver loaded (today's behaviour; the default).
- `vrprobe.runtime.executors.ray_pool.RayExecutor`: actors on a Ray cluster, each holding one model replica.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vrprobe import checks
from vrprobe.errors import UsageError
from vrprobe.runtime.batching import run_index_batches
from vrprobe.runtime.progress import Progress, Ticker

#: a shard's rows by table name; "records" marks the shard done and is written last
Rows = dict[str, list[dict[str, Any]]]
#: what the driver does with a finished shard: append its rows to the run directory (or keep them in memory)
OnRows = Callable[[list[int], Rows], None]


class Job(Protocol):
    """What a run asks of a worker; picklable (specs and settings, never a loaded model)."""

    def open(self, cache: dict[Any, Any]) -> Any:
        """In a worker: load what the rows need (model, samples) into a context, reusing `cache` across shards."""
        ...

    def rows(self, context: Any, indices: list[int]) -> Rows:
        """The rows of the samples at `indices` (positions in the job's dataset), computed with `context`."""
        ...


class Executor(Protocol):
    """Runs a job's shards and streams their rows back to the driver."""

    name: str

    def run(
        self,
        job: Job,
        todo: Sequence[int],
        size: int,
        on_rows: OnRows,
        *,
        context: Any,
        total: int,
        progress: Progress | None = None,
        stage: str = "",
    ) -> int:
        """Rows of every position in `todo`, `size` per shard, each passed to `on_rows` once; `context` is the
        driver's own (a loaded model), used where the work runs in this process. `total` counts the positions done
        before this call too (the progress bar). Returns the batch size in use at the end (halved on out-of-memory)."""
        ...

    def close(self) -> None:
        """Release the workers (a no-op where there are none)."""
        ...


class LocalExecutor:
    """Every shard in this process, in order, with the driver's context; a shard that runs out of memory is halved."""

    name = "local"

    def run(
        self,
        job: Job,
        todo: Sequence[int],
        size: int,
        on_rows: OnRows,
        *,
        context: Any,
        total: int,
        progress: Progress | None = None,
        stage: str = "",
    ) -> int:
        tick = Ticker(progress, stage, total)
        tick(total - len(todo))

        def work(indices: list[int]) -> None:
            on_rows(indices, job.rows(context, indices))
            tick(len(indices))

        return run_index_batches(todo, size, work)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class ExecutorSpec:
    """`--executor` and `--workers` as given: `local`, or `ray` with a cluster ADDRESS (None: start a local Ray)."""

    kind: str = "local"
    address: str | None = None
    workers: int | None = None

    def describe(self) -> str:
        """One line for logs: `local`, `ray (local cluster, N workers)` or `ray (ADDRESS, N workers)`."""
        if self.kind == "local":
            return "local"
        where = self.address or "local cluster"
        return f"ray ({where}, {self.workers or 'default'} workers)"


def parse_executor(text: str | ExecutorSpec | Executor | None, workers: int | None = None) -> ExecutorSpec | Executor:
    """`--executor local|ray[:ADDRESS]` and `--workers N` (N >= 1; only with ray) → `ExecutorSpec`; one
    `UsageError` line for anything else. An `ExecutorSpec`, or an executor already started (its workers reused by
    several runs; the caller closes it), is returned as it is."""
    if isinstance(text, ExecutorSpec) or (text is not None and not isinstance(text, str)):
        return text
    value = (text or "local").strip()
    if workers is not None:
        checks.positive_int("--workers", workers)
    if value == "local":
        if workers is not None:
            raise UsageError("--workers applies to --executor ray; the local executor runs in this process")
        return ExecutorSpec("local")
    kind, _, address = value.partition(":")
    if kind != "ray":
        raise UsageError(f"unknown --executor '{value}' (known: local, ray, ray:ADDRESS)")
    if _ and not address.strip():
        raise UsageError("--executor ray:ADDRESS needs an address after the colon, e.g. ray:10.0.0.1:6379 or ray:auto")
    try:
        import ray  # noqa: F401 - only whether it imports
    except ImportError:
        raise UsageError("--executor ray needs Ray, an optional extra: pip install 'vrprobe[ray]'") from None
    return ExecutorSpec("ray", address.strip() or None, workers)
