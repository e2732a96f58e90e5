"""The Ray executor (`--executor ray[:ADDRESS] --workers N`): one actor per model replica, shards streamed back.

- Start: `ray.init()` starts a local Ray when no address is given (as many CPUs as this machine has, at least one per
  worker) and stops it at `close`; with an address (`ray:auto`, `ray:HOST:PORT`) it joins that cluster and leaves it
  running. Without Ray installed: one error line naming the extra, `pip install 'vrprobe[ray]'`.
- Actors: `--workers N` (default: one per GPU in the cluster, else 2). Where the cluster has GPUs each actor asks for
  `num_gpus=1` (Ray sets its CUDA_VISIBLE_DEVICES, the model loads on "its" GPU); otherwise `num_cpus=T` with
  T = the cluster's CPUs ÷ N (at least 1) and torch runs T threads in it. An actor keeps the model and samples it
  loaded (`Job.open`) for every later shard of the same model.
- Scheduling: each actor holds at most `IN_FLIGHT` shards (one running, one queued, so it never waits on the
  driver); results are taken in completion order and handed to the driver's `on_rows` (the driver writes).
- Faults: an actor that dies (kill -9, out of host memory, a lost node) fails its shards; each goes back to the front
  of the queue and runs on another (a fresh actor replaces the dead one), so no record is lost, and none is
  duplicated because a shard's rows reach the driver only whole, from the one attempt that finished. A shard whose
  workers died `MAX_ATTEMPTS` times stops the run with one error line. An error inside the work (a bad input) is
  raised on the driver as that same one-line error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import torch

from vrprobe.errors import UsageError, VrprobeError
from vrprobe.runtime.batching import run_index_batches
from vrprobe.runtime.executors.base import Job, OnRows, Rows
from vrprobe.runtime.progress import Progress, Ticker

#: shards given to one actor at a time (one running, one waiting in its queue)
IN_FLIGHT = 2
#: attempts of one shard before the run stops (each attempt lost a worker)
MAX_ATTEMPTS = 3
#: actors per run when --workers is not given and the cluster has no GPU
DEFAULT_CPU_WORKERS = 2
EXTRA = "pip install 'vrprobe[ray]'"


class ShardWorker:
    """The actor: holds what `Job.open` loaded (model, samples) and runs shards with it."""

    def __init__(self, threads: int) -> None:
        torch.set_num_threads(threads)
        self.cache: dict[Any, Any] = {}

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()

    def run(self, job: Job, indices: list[int], size: int) -> tuple[Rows, int]:
        """The shard's rows by table, and the batch size in use at its end (halved on out-of-memory)."""
        context = job.open(self.cache)
        rows: Rows = {}

        def work(chunk: list[int]) -> None:
            for table, part in job.rows(context, chunk).items():
                rows.setdefault(table, []).extend(part)

        used = run_index_batches(indices, size, work, log=lambda m: print(m, file=sys.stderr, flush=True))
        return rows, used


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, an optional extra: {EXTRA}") from None
    return ray


class RayExecutor:
    """Shards on Ray actors (module docstring)."""

    name = "ray"

    def __init__(self, ray: Any, workers: int, options: dict[str, Any], threads: int, started: bool) -> None:
        self.ray, self.options, self.threads, self.started = ray, options, threads, started
        self.actor_class = ray.remote(ShardWorker)
        self.actors: list[Any] = [self._actor() for _ in range(workers)]
        self.lost = 0

    @classmethod
    def start(cls, address: str | None, workers: int | None, threads: int | None = None) -> RayExecutor:
        """Connect to (or start) Ray and create the actors (`threads`: torch threads per CPU actor, default the
        cluster's CPUs ÷ workers); one error line when the cluster cannot hold them."""
        ray = _import_ray()
        started = False
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if address:
                    ray.init(address=address, **quiet)
                else:
                    ray.init(num_cpus=max(os.cpu_count() or 1, workers or 1), **quiet)
                    started = True
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                where = address or "a new local Ray"
                raise VrprobeError(f"could not reach the Ray cluster at {where}: {first}") from None
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        n = workers or gpus or DEFAULT_CPU_WORKERS
        if gpus:
            if n > gpus:
                raise UsageError(f"--workers {n}: the Ray cluster has {gpus} GPU(s), one per worker")
            threads, options = threads or 1, {"num_gpus": 1, "num_cpus": 1}
        else:
            if n > cpus:
                raise UsageError(f"--workers {n}: the Ray cluster has {cpus} CPU(s), at least one per worker")
            threads = threads or max(1, cpus // n)
            options = {"num_cpus": threads}
        return cls(ray, n, options, threads, started)

    def _actor(self) -> Any:
        return self.actor_class.options(**self.options).remote(self.threads)

    def pids(self) -> list[int]:
        """The actors' process ids."""
        return list(self.ray.get([a.pid.remote() for a in self.actors]))

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
        ray = self.ray
        tick = Ticker(progress, stage, total)
        tick(total - len(todo))
        todo = list(todo)
        queue = deque(todo[i : i + size] for i in range(0, len(todo), size))
        job_ref = ray.put(job)
        attempts: Counter[int] = Counter()
        inflight: dict[Any, tuple[int, Any, list[int]]] = {}  # future -> (actor slot, actor, shard)
        load = [0] * len(self.actors)
        used = size
        try:
            while queue or inflight:
                for slot, actor in enumerate(self.actors):
                    while load[slot] < IN_FLIGHT and queue:
                        shard = queue.popleft()
                        inflight[actor.run.remote(job_ref, shard, size)] = (slot, actor, shard)
                        load[slot] += 1
                ready, _ = ray.wait(list(inflight), num_returns=1)
                slot, actor, shard = inflight.pop(ready[0])
                load[slot] -= 1
                try:
                    rows, used_here = ray.get(ready[0])
                except ray.exceptions.RayActorError:
                    self._lost(slot, actor, shard, attempts, queue)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, VrprobeError):
                        raise cause from None
                    raise VrprobeError(f"a Ray worker failed on samples {shard[0]}..{shard[-1]}: {cause!r}") from None
                on_rows(shard, rows)
                used = min(used, used_here)
                tick(len(shard))
        finally:
            for future in inflight:
                ray.cancel(future, force=True)
        return used

    def _lost(self, slot: int, actor: Any, shard: list[int], attempts: Counter[int], queue: deque[list[int]]) -> None:
        """A shard whose actor died: back to the front of the queue; the dead actor replaced (once: its other
        shards find a fresh actor in its slot)."""
        attempts[shard[0]] += 1
        if attempts[shard[0]] >= MAX_ATTEMPTS:
            raise VrprobeError(f"samples {shard[0]}..{shard[-1]}: {MAX_ATTEMPTS} Ray workers died running them")
        queue.appendleft(shard)
        if self.actors[slot] is actor:
            self.ray.kill(actor, no_restart=True)
            self.actors[slot] = self._actor()
            self.lost += 1
        print(f"a Ray worker died: samples {shard[0]}..{shard[-1]} go to another", file=sys.stderr, flush=True)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started:
            self.ray.shutdown()
