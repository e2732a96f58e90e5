"""The work of a run, as an executor ships it (`vrprobe.runtime.executors`): `Source` (which model, which samples) and
the jobs of `eval` and `trace`; `corrupt`, `knockout` and `study` keep theirs beside their analysis.

A job holds specs and settings only, never a loaded model: a worker opens the source itself (`Source.open`, loading
the model once per worker and the dataset once per spec) and computes the rows of the sample positions it is given
with the same functions a local run calls, so the rows equal a local run's whatever the sharding (batches are the
same; every draw is seeded per sample or per batch start, `vrprobe.runtime.seeding`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vrprobe.data import Sample, load_dataset
from vrprobe.models import Adapter
from vrprobe.registry import as_adapter
from vrprobe.runtime.devices import LoadOptions
from vrprobe.runtime.executors import Executor, ExecutorSpec, Rows, make_executor
from vrprobe.runtime.progress import Progress
from vrprobe.runtime.runs import RunDir
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig
from vrprobe.tracing.engine import Tracer


@dataclass(frozen=True)
class Opened:
    """What a worker holds for a job: the model and the dataset's samples (`blank`: the blank-image copies)."""

    adapter: Adapter
    samples: Sequence[Sample]
    blank: Sequence[Sample] | None = None


@dataclass(frozen=True)
class Source:
    """A model spec with its loading options and a dataset spec with the subset arguments `load_dataset` takes."""

    model: str
    options: LoadOptions
    data: str
    limit: int | None = None
    seed: int = 0
    image_ablation: str | None = None

    def samples(self, cache: dict[Any, Any], image_ablation: str | None = None) -> Sequence[Sample]:
        """The dataset's samples (loaded once per worker)."""
        key = ("data", self.data, self.limit, self.seed, image_ablation)
        if key not in cache:
            dataset = load_dataset(self.data, limit=self.limit, seed=self.seed, image_ablation=image_ablation)
            cache[key] = dataset.samples
        return cache[key]

    def open(self, cache: dict[Any, Any]) -> Opened:
        """The model (one per worker: another model's replica is dropped first) and the samples."""
        key = ("model", self.model, self.options)
        if key not in cache:
            for old in [k for k in cache if k[0] == "model"]:
                del cache[old]
            cache[key] = as_adapter(self.model, self.options)
        return Opened(cache[key], self.samples(cache, self.image_ablation))


@dataclass(frozen=True)
class EvalJob:
    """`eval`'s rows: `score_batch` per sample (`vrprobe.scoring.evaluate`), with the sample's position as `index`."""

    source: Source
    max_new_tokens: int = 10

    def open(self, cache: dict[Any, Any]) -> Opened:
        return self.source.open(cache)

    def rows(self, context: Opened, indices: list[int]) -> Rows:
        chunk = [context.samples[i] for i in indices]
        scored = score_batch(context.adapter, chunk, max_new_tokens=self.max_new_tokens)
        return {"records": [{**r, "index": i} for i, r in zip(indices, scored, strict=True)]}


@dataclass(frozen=True)
class TraceJob:
    """`trace`'s rows: each sample's trace (`Tracer.trace`, noise seeded by the sample's position) with `index`;
    σ is measured once by the driver on the whole dataset and given here."""

    source: Source
    cfg: TraceConfig
    sigma: float

    def open(self, cache: dict[Any, Any]) -> Opened:
        return self.source.open(cache)

    def rows(self, context: Opened, indices: list[int]) -> Rows:
        tracer = Tracer(context.adapter, self.sigma, self.cfg)
        out: list[dict[str, Any]] = []
        for i in indices:
            out += [{**r, "index": i} for r in tracer.trace(context.samples[i], i).rows()]
        return {"traces": out}


def run_job(
    executor: Executor,
    job: Any,
    context: Any,
    todo: Sequence[int],
    size: int,
    run: RunDir | None,
    *,
    total: int,
    progress: Progress | None = None,
    stage: str = "",
    last: str = "records",
) -> tuple[Rows, int]:
    """Run `job` over the positions `todo` on `executor`; each finished shard's tables are appended to `run` (table
    `last` after the others: it marks the shard done) or, without a run, kept and returned. Returns (kept rows, the
    batch size in use at the end)."""
    kept: Rows = {}

    def on_rows(indices: list[int], rows: Rows) -> None:
        for table in sorted(rows, key=lambda t: t == last):
            if run:
                run.append(rows[table], table)
            else:
                kept.setdefault(table, []).extend(rows[table])

    used = executor.run(job, todo, size, on_rows, context=context, total=total, progress=progress, stage=stage)
    return kept, used


@contextmanager
def executing(spec: ExecutorSpec | Executor) -> Iterator[Executor]:
    """The executor `spec` names, closed (its workers released, a Ray it started stopped) when the block ends; an
    executor given already started is used as it is and left open."""
    if not isinstance(spec, ExecutorSpec):
        yield spec
        return
    executor = make_executor(spec)
    try:
        yield executor
    finally:
        executor.close()
