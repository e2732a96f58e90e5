"""The micro-batcher: concurrent requests answered together, one model batch at a time.

`MicroBatcher(run, max_batch, max_wait_ms)` owns an asyncio queue and one worker task. `await submit(item)` queues
an item and waits for its result. The worker takes the first queued item, then collects more until it holds
`max_batch` items or `max_wait_ms` milliseconds have passed since it took the first (items already queued are taken
at once, so with `max_wait_ms=0` a batch is what was waiting), and calls `run(items)` in its single worker thread:
the model runs one batch at a time, off the event loop, which keeps accepting requests meanwhile. `run` returns one
result per item, in order; each waiting `submit` gets its own. When a batch of several fails, its items are run
again one by one, so that only the item that fails gets the error.

`stats()` counts what was served (see its docstring); `/healthz` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from vrprobe.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    """Batches items submitted concurrently for `run` (module docstring); start it inside a running event loop."""

    def __init__(self, run: Callable[[list[T]], Sequence[R]], max_batch: int, max_wait_ms: float) -> None:
        if max_batch < 1:
            raise UsageError(f"--max-batch must be at least 1, got {max_batch}")
        if not max_wait_ms >= 0:
            raise UsageError(f"--max-wait-ms must be at least 0, got {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.batches = 0
        self.requests = 0
        self.failed_batches = 0
        self.max_batch_seen = 0
        self.sizes: dict[int, int] = {}
        self._queue: asyncio.Queue[_Job[T, R]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Create the queue, the worker thread and the worker task (in the running loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vrprobe-model")
        self._worker = asyncio.create_task(self._serve(), name="vrprobe-batcher")

    async def stop(self) -> None:
        """Cancel the worker, fail what is still queued, and release the worker thread once its batch ends."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, item: T) -> R:
        """Queue `item` and return its result (or raise its error) once its batch has run."""
        if self._queue is None or self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(item, future))
        return await future

    def stats(self) -> dict[str, Any]:
        """`requests`: items run so far; `batches`: model batches run; `max_batch_seen`: the largest batch;
        `mean_batch`: requests / batches (0 before the first); `batch_sizes`: {size: how many batches had it};
        `failed_batches`: batches of several that failed and were rerun one by one; `queued`: items waiting now."""
        return {
            "requests": self.requests,
            "batches": self.batches,
            "max_batch_seen": self.max_batch_seen,
            "mean_batch": self.requests / self.batches if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            "failed_batches": self.failed_batches,
            "queued": self._queue.qsize() if self._queue is not None else 0,
        }

    async def _collect(self, queue: asyncio.Queue[_Job[T, R]]) -> list[_Job[T, R]]:
        """The first queued job, then more until `max_batch` or `max_wait` seconds after the first was taken."""
        jobs = [await queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(jobs) < self.max_batch:
            if not queue.empty():
                jobs.append(queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:
                break
        return jobs

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [j for j in await self._collect(self._queue) if not j.future.done()]  # done: the client left
            if not jobs:
                continue
            await self._run(jobs)

    async def _run(self, jobs: list[_Job[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self.run, [j.item for j in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"the model returned {len(results)} results for {len(jobs)} requests")
        except Exception as exc:
            if len(jobs) > 1:  # find the item that fails: the others still get their answers
                self.failed_batches += 1
                for job in jobs:
                    await self._run([job])
                return
            self._count(1)
            if not jobs[0].future.done():
                jobs[0].future.set_exception(exc)
            return
        self._count(len(jobs))
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _count(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.max_batch_seen = max(self.max_batch_seen, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1
