"""Benchmark: eval, trace and knockout on one model, loading it three times (three spec calls) vs once
(`vrprobe.load` and three calls on the adapter).

Both sides run the same three calls with the same options (no run directory); the adapter side must give the same
records, rows and windows as the spec side (checked, not timed). `--repeats` rounds in which the two sides take turns,
the order reversed each turn (`timing.alternate`). Prints the CPU (`load_once[cpu]: model="..." cores=N
torch_threads=T`), then, as median [min-max] over the rounds:
    load_once: separate=<s> once=<s> saving=<ratio>
separate and once in seconds per round (all three calls, the loading included); saving = separate / once, per round.

    python benchmarks/load_once.py [--model zoo:llava] [--data easy-vqa:test] [--eval-limit 24] [--trace-limit 2]
                                   [--noise-samples 2] [--knockout-limit 4] [--repeats 3] [--threads T]
"""

from __future__ import annotations

import argparse
from typing import Any

import vrprobe
from timing import Spread, alternate, cpu, ratios, set_threads


def three_calls(model: Any, args: argparse.Namespace) -> tuple[list, list, list]:
    """eval, trace and knockout with `model` (a spec or a loaded adapter); their records, rows and windows."""
    data = args.data
    ev = vrprobe.eval(model, data, limit=args.eval_limit, make_report=False)
    tr = vrprobe.trace(model, data, limit=args.trace_limit, noise_samples=args.noise_samples, kinds=("resid",))
    ko = vrprobe.knockout(model, data, limit=args.knockout_limit, edges="image->question,image->last", n_boot=100)
    return ev.records, tr.rows, ko.windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:llava")
    parser.add_argument("--data", default="easy-vqa:test")
    parser.add_argument("--eval-limit", type=int, default=24)
    parser.add_argument("--trace-limit", type=int, default=2)
    parser.add_argument("--noise-samples", type=int, default=2)
    parser.add_argument("--knockout-limit", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"load_once[cpu]: {cpu()}", flush=True)
    results: dict[str, tuple[list, list, list]] = {}

    def separate() -> None:
        results["separate"] = three_calls(args.model, args)

    def once() -> None:
        results["once"] = three_calls(vrprobe.load(args.model), args)

    seconds = alternate([separate, once], args.repeats)
    if results["separate"] != results["once"]:
        raise SystemExit("load_once: the loaded model's results differ from the spec form's")
    apart, together = (Spread.of(side) for side in seconds)
    print(f"load_once: separate={apart} once={together} saving={ratios(seconds[0], seconds[1])}")


if __name__ == "__main__":
    main()
