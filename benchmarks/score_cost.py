"""Benchmark: what scoring costs beyond answering. `vrprobe score` (the answer, its confidence and the saved probe's
calibrated reliability) against plain `vrprobe eval` on the same samples with the same loaded model.

A probe is trained first (`vrprobe.probe` on `--train-data`, written to a temporary run directory; not timed). Then
`--repeats` rounds in which the two sides take turns, the order reversed each turn (`timing.alternate`); no run
directory is written by either side. Both sides must give the same predictions (checked, not timed). Prints the CPU
(`score_cost[cpu]: model="..." cores=N torch_threads=T`), then, as median [min-max] over the rounds:
    score_cost: eval=<s> score=<s> ratio=<score / eval>
eval and score in seconds per round; ratio per round (the issue's target: at most 1.05).

    python benchmarks/score_cost.py [--model zoo:llava] [--train-data easy-vqa:train] [--train-limit 300]
                                    [--data easy-vqa:test] [--limit 200] [--repeats 5] [--threads T]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import vrprobe
from timing import Spread, alternate, cpu, ratios, set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:llava")
    parser.add_argument("--train-data", default="easy-vqa:train")
    parser.add_argument("--train-limit", type=int, default=300)
    parser.add_argument("--data", default="easy-vqa:test")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"score_cost[cpu]: {cpu()}", flush=True)
    model = vrprobe.load(args.model)
    results: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe-run"
        vrprobe.probe(model, args.train_data, args.data, limit=args.train_limit, out=out)

        def plain() -> None:
            results["eval"] = [r["predicted"] for r in vrprobe.eval(model, args.data, limit=args.limit).records]

        def scored() -> None:
            records = vrprobe.score(model, out / "probe", args.data, limit=args.limit).records
            results["score"] = [r["predicted"] for r in records]

        seconds = alternate([plain, scored], args.repeats)
    if results["eval"] != results["score"]:
        raise SystemExit("score_cost: score's predictions differ from eval's")
    a, b = (Spread.of(side) for side in seconds)
    print(f"score_cost: eval={a} score={b} ratio={ratios(seconds[1], seconds[0])}")


if __name__ == "__main__":
    main()
