"""Benchmark: the Ray executor on this machine. The same trace workload (`vrprobe.trace`, one model, N samples) with
1 and with 2 Ray workers of one torch thread each, and what scheduling one shard costs.

A local Ray is started with one logical CPU more than the workers need (so the two executors' actors, 1 + 2, all
exist at once; only one executor works at a time, so they never share a core); each executor's actors load the model
in a warm-up run that is not timed. Then `--repeats` rounds alternate the two sides, the order reversed each round
(`timing.alternate`). Every run must give the same traces (checked). Overhead: a trace of one cheap shard per sample
is not what costs; the scheduling cost is measured on its own as the wall time per shard of a job that does no work
(driver → actor → driver, the rows handed back), with 1 worker, over `--overhead-shards` shards. Prints the CPU, then
median [min-max] over the rounds:
    scaling: samples=N workers1=<s> workers2=<s> speedup=<workers1 / workers2>
    scaling[overhead]: per_shard_ms=<ms>
and the per-sample seconds of one worker (what the README's cluster arithmetic uses). Target: speed-up >= 1.6.

    python benchmarks/scaling.py [--model zoo:llava] [--data easy-vqa:test] [--limit 40] [--kinds resid]
                                 [--repeats 3] [--overhead-shards 200]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import vrprobe
from timing import Spread, alternate, cpu, ratios
from vrprobe.runtime.executors.ray_pool import RayExecutor


@dataclass(frozen=True)
class NoWork:
    """A job that loads nothing and returns one empty row per position: the executor's own cost per shard."""

    def open(self, cache: dict[Any, Any]) -> None:
        return None

    def rows(self, context: Any, indices: list[int]) -> dict[str, list[dict[str, Any]]]:
        return {"records": [{"index": i} for i in indices]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:llava")
    parser.add_argument("--data", default="easy-vqa:test")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--kinds", default="resid")
    parser.add_argument("--noise-samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-shards", type=int, default=200)
    args = parser.parse_args()
    import ray

    print(f"scaling[cpu]: {cpu()}", flush=True)
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        one = RayExecutor.start(None, 1, threads=1)
        two = RayExecutor.start(None, 2, threads=1)
        model = vrprobe.load(args.model)
        kinds = tuple(args.kinds.split(","))
        seen: dict[str, Any] = {}

        def traced(executor: RayExecutor, limit: int) -> list[tuple]:
            r = vrprobe.trace(
                model, args.data, limit=limit, kinds=kinds, noise_samples=args.noise_samples, executor=executor
            )
            return [(row["sample_id"], row["kind"], row["layer"], row["group"]) for row in r.rows]

        for executor in (one, two):  # warm-up: the actors load the model (not timed)
            traced(executor, 2)

        def side(executor: RayExecutor, name: str) -> Any:
            def run() -> None:
                seen[name] = traced(executor, args.limit)

            return run

        t1, t2 = alternate([side(one, "workers1"), side(two, "workers2")], args.repeats)
        assert seen["workers1"] == seen["workers2"], "1 and 2 workers traced different cells"
        print(
            f"scaling: samples={args.limit} workers1={Spread.of(t1)} workers2={Spread.of(t2)} speedup={ratios(t1, t2)}"
        )
        per_sample = Spread.of([t / args.limit for t in t1])
        print(f"scaling[per_sample]: one_worker_s={per_sample} kinds={args.kinds} noise_samples={args.noise_samples}")
        n = args.overhead_shards
        job = NoWork()
        overhead = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            got: list[int] = []

            def keep(indices: list[int], rows: Any, got: list[int] = got) -> None:
                got.extend(indices)

            one.run(job, list(range(n)), 1, keep, context=None, total=n)
            overhead.append((time.perf_counter() - start) / n * 1000)
            assert sorted(got) == list(range(n))
        print(f"scaling[overhead]: per_shard_ms={Spread.of(overhead)} shards={n} workers=1")
        one.close()
        two.close()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
