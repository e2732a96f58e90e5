"""Executors: where a run's per-sample work happens (`base` for the interface and the local one, `ray_pool` for Ray).
`make_executor(parse_executor(text, workers))` is what the API calls."""

from __future__ import annotations

from vrprobe.runtime.executors.base import (
    Executor,
    ExecutorSpec,
    Job,
    LocalExecutor,
    OnRows,
    Rows,
    parse_executor,
)

__all__ = ["Executor", "ExecutorSpec", "Job", "LocalExecutor", "OnRows", "Rows", "make_executor", "parse_executor"]


def make_executor(spec: ExecutorSpec) -> Executor:
    """The executor `spec` names; Ray is imported only for `ray` (`RayExecutor.start`), so the local executor never
    needs the extra."""
    if spec.kind == "local":
        return LocalExecutor()
    from vrprobe.runtime.executors.ray_pool import RayExecutor

    return RayExecutor.start(spec.address, spec.workers)
