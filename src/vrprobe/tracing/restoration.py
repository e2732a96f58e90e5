"""Restored runs of the tracing engine, batched so that only states that can differ from a known run are computed.

A restoration `Job` puts one clean state back into the corrupted runs (N noise draws, N rows of a batch). What makes it
cheap (all exact; `tests/test_tracing.py` checks the engine against a plain per-restoration loop):
- **start layer**: a job starts at the first layer it changes, from the corrupted state entering that layer
  (`KnownRuns.entering`); layers below are never recomputed.
- **no run** where none can change the answer (`changes_answer`): its p_restored is p_corrupted, its effect exactly 0.
- **first position** (`plan_positions`): positions the restored ones cannot reach through the attention masks keep the
  corrupted run's keys and values; after a `resid` restoration, restored positions whose attention reaches only clean
  states keep the clean run's (causal models: the image tokens; PaliGemma's bidirectional prefix: none).
- **shared prefix**: those keys and values are held once per noise draw (`KVPrefix`, read by vrprobe's attention
  function), not copied into every row's cache.
- **answer position only** at the last layer's MLP (`last_position_mlp`).
- **batches** (`schedule`): jobs with nearby start layers share a batch when the layer calls saved outweigh the layers
  run early; a job's rows are set to its own starting state when the run reaches its start layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from vrprobe.models.base import Adapter
from vrprobe.tracing.replay import (
    cached_kv,
    closed_subset,
    kv_cache,
    patch_blocks,
    reachable,
    run_layers,
)


def window_layers(layer: int, window: int, num_layers: int) -> range:
    """ROME's window: layers[max(0, l − W//2) : min(L, l + ceil(W/2))]."""
    return range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))


class Job(NamedTuple):
    """One restoration: kind (resid/mlp/attn, index k in the trace's kinds), layer, token group index, start layer."""

    k: int
    kind: str
    layer: int
    group: int
    start: int


def trace_jobs(kinds: Sequence[str], num_layers: int, num_groups: int, window: int) -> list[Job]:
    """Every restoration of a trace grid, with its start layer: `resid` at l starts at l + 1 (layer l's output is
    put back), `mlp`/`attn` at l at the first layer of its window."""
    return [
        Job(k, kind, layer, g, layer + 1 if kind == "resid" else window_layers(layer, window, num_layers)[0])
        for k, kind in enumerate(kinds)
        for layer in range(num_layers)
        for g in range(num_groups)
    ]


def _spread(allowed: torch.Tensor | None, flags: torch.Tensor) -> torch.Tensor:
    """Positions with a key they may attend to (`allowed` [T, T]; None: any) among `flags` [T]."""
    if allowed is None:
        return flags.any().expand(flags.shape[0]).clone()
    return (allowed & flags[None, :]).any(1)


def corrupted_differs(allowed: torch.Tensor | None, noised: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    """Per layer, the positions [T] whose output in the corrupted run can differ from the clean run's."""
    out, x = [], noised.clone()
    for _ in range(num_layers):
        x = x | _spread(allowed, x)
        out.append(x)
    return out


def job_differs(
    allowed: torch.Tensor | None,
    noised: torch.Tensor,
    group: torch.Tensor,
    job: Job,
    num_layers: int,
    window: int,
    corrupted: Sequence[torch.Tensor],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer of a restored run (`job`, restoring the positions `group` [T]), the positions whose output can differ
    from the clean run's and from the corrupted run's (`corrupted`: `corrupted_differs`), by the rules of
    `exact_work`."""
    g, L = group.cpu(), num_layers
    blocks = range(0) if job.kind == "resid" else window_layers(job.layer, window, L)
    not_clean, not_corrupted = noised.clone(), torch.zeros_like(noised)
    out = []
    for i in range(L):
        entering = noised if i == 0 else corrupted[i - 1]
        a_clean, a_corrupted = _spread(allowed, not_clean), _spread(allowed, not_corrupted)
        if job.kind == "attn" and i in blocks:
            a_clean, a_corrupted = a_clean & ~g, torch.where(g, _spread(allowed, entering), a_corrupted)
        not_clean, not_corrupted = not_clean | a_clean, not_corrupted | a_corrupted
        if job.kind == "mlp" and i in blocks:  # the MLP's input in the corrupted run differs where its output can
            not_corrupted = torch.where(g, not_corrupted | corrupted[i], not_corrupted)
        if job.kind == "resid" and i == job.layer:
            not_clean, not_corrupted = not_clean & ~g, torch.where(g, corrupted[i], not_corrupted)
        out.append((not_clean, not_corrupted))
    return out


def exact_work(
    allowed: torch.Tensor | None,
    noised: torch.Tensor,
    masks: Sequence[torch.Tensor],
    jobs: Sequence[Job],
    num_layers: int,
    draws: int,
    window: int = 3,
) -> int:
    """The least work any exact tracing engine must do for one sample, in (row × layer × position) units: the layer
    outputs whose state can differ from both the clean and the corrupted run, summed over the runs, plus the clean run
    (every position, every layer, 1 row) and the corrupted runs (the outputs that can differ from the clean run,
    `draws` rows).

    "Can differ" follows each layer as transformers computes it, given the attention masks (`allowed` [T, T], see
    `replay.attends`; None: any position may attend to any other) and nothing else: the attention output at a position
    can differ from a run's when a key it may attend to does; the MLP acts on each position alone; a sum can differ
    when a term can. A restored block (`mlp`/`attn` of group g over the window of layers around l) or layer output
    (`resid` of g at l) holds the clean value at g, which differs from the corrupted run's where that run's own value
    can differ from clean. (For example, restoring the attention output of the question at the first layer keeps the
    question positions clean there, since their inputs are clean embeddings.) Layers are counted whole: reading only
    the answer position at the last layer is not credited. ROME's loop does `reference_work`."""
    L, T = num_layers, noised.shape[0]
    corrupted = corrupted_differs(allowed, noised, L)
    total = L * T + draws * sum(int(out.sum()) for out in corrupted)
    for job in jobs:
        flags = job_differs(allowed, noised, masks[job.group], job, L, window, corrupted)
        total += draws * sum(int((not_clean & not_corrupted).sum()) for not_clean, not_corrupted in flags)
    return total


def changes_answer(
    allowed: torch.Tensor | None,
    noised: torch.Tensor,
    masks: Sequence[torch.Tensor],
    jobs: Sequence[Job],
    num_layers: int,
    window: int,
) -> list[bool]:
    """Per job, whether its restoration can change the answer (last) position's last-layer state from the corrupted
    run's (`job_differs`). Where it cannot, p_restored equals p_corrupted exactly and the effect is 0 by construction:
    for example `resid` at the last layer restoring positions other than the last, or any restoration of positions the
    noise never reaches."""
    corrupted = corrupted_differs(allowed, noised, num_layers)
    return [
        bool(job_differs(allowed, noised, masks[job.group], job, num_layers, window, corrupted)[-1][1][-1])
        for job in jobs
    ]


def reference_work(num_jobs: int, num_layers: int, positions: int, draws: int) -> int:
    """ROME's per-restoration loop, in the units of `exact_work`: one forward of 1 + draws rows per restoration."""
    return num_jobs * (draws + 1) * num_layers * positions


@dataclass
class KnownRuns:
    """The clean run (1 row) and the corrupted runs (N rows) of one sample, as the decoder layers saw them."""

    calls: list[tuple[tuple, dict]]  # each layer's arguments besides the hidden states (`capture_layer_calls`)
    clean_states: dict[tuple[str, int], torch.Tensor]  # (resid/attn/mlp, layer) -> [1, T, D]
    clean_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [1, H, T, D]
    corrupted_inputs: list[torch.Tensor]  # state entering layer i, [N, T, D]; index L: the last layer's output
    corrupted_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [N, H, T, D]

    @classmethod
    def replay(
        cls,
        adapter: Adapter,
        calls: list[tuple[tuple, dict]],
        clean_states: dict[tuple[str, int], torch.Tensor],
        clean_embed: torch.Tensor,
        corrupted_embed: torch.Tensor,
    ) -> KnownRuns:
        """Run the decoder layers once on the clean (row 0) and corrupted (rows 1..N) input embeddings."""
        cache = kv_cache()
        _, out = run_layers(adapter, torch.cat([clean_embed, corrupted_embed]), 0, calls, keep=True, cache=cache)
        kv = cached_kv(cache, adapter.num_layers)
        return cls(
            calls=calls,
            clean_states=clean_states,
            clean_kv=[(k[:1], v[:1]) for k, v in kv],
            corrupted_inputs=[corrupted_embed, *(x[1:] for x in out)],
            corrupted_kv=[(k[1:], v[1:]) for k, v in kv],
        )


Plan = tuple[int, torch.Tensor | None]


def plan_positions(
    allowed: torch.Tensor | None, masks: Sequence[torch.Tensor], noised: torch.Tensor
) -> dict[tuple[str, int], Plan]:
    """Per (`resid` or `block` restorations, group index): the first position a restored run must compute, and for
    `resid` restorations which earlier positions hold clean (rather than corrupted) states above the restored layer,
    given the attention masks `allowed` (`replay.attends`).

    Positions a restoration at the group cannot reach keep their corrupted states. A `resid` restoration makes the group
    clean at its layer; the group's members whose attention only reaches clean positions (the group and the positions
    the noise never reaches) stay clean in every later layer (`closed_subset`)."""
    untouched = ~reachable(allowed, noised)
    T = noised.shape[0]
    plans: dict[tuple[str, int], Plan] = {}
    for g, mask in enumerate(masks):
        reach = reachable(allowed, mask)
        first = min(int(reach.nonzero()[0]) if reach.any() else T - 1, T - 1)
        plans[("block", g)] = (first, None)
        stays_clean = closed_subset(allowed, mask | untouched) & reach
        todo = (reach & ~stays_clean).nonzero()
        first_r = min(int(todo[0]) if len(todo) else T, T - 1)
        plans[("resid", g)] = (first_r, stays_clean[:first_r]) if first_r > first else (first, None)
    return plans


LAYER_CALL_COST = 64
"""Scheduling estimate: the fixed cost of one decoder-layer call, in row-positions of compute (the best of 0..2048
tried on the zoo models, CPU). It only decides which jobs share a batch, never a result."""


def schedule(jobs: Sequence[Job], num_layers: int, row_positions: int, max_jobs: int) -> list[list[Job]]:
    """Split jobs into batches: contiguous ranges of start layers share a batch where that minimises the estimated
    cost, each layer run costing LAYER_CALL_COST + rows·positions (`row_positions` per job); at most `max_jobs` each."""
    starts = sorted({job.start for job in jobs})
    count = {s: sum(job.start == s for job in jobs) for s in starts}
    best, cut = [0.0], [0]
    for b in range(1, len(starts) + 1):
        cost, a = min(
            (
                best[a]
                + (num_layers - starts[a]) * (LAYER_CALL_COST + sum(count[s] for s in starts[a:b]) * row_positions),
                a,
            )
            for a in range(b)
        )
        best.append(cost)
        cut.append(a)
    segments, b = [], len(starts)
    while b:
        segments.append(set(starts[cut[b] : b]))
        b = cut[b]
    size = max(1, max_jobs)
    batches = []
    for seg in reversed(segments):
        chosen = sorted((job for job in jobs if job.start in seg), key=lambda job: job.start)
        batches += [chosen[c : c + size] for c in range(0, len(chosen), size)]
    return batches


def restore(
    adapter: Adapter,
    runs: KnownRuns,
    jobs: Sequence[Job],
    plan: Plan,
    masks: Sequence[torch.Tensor],
    window: int,
) -> torch.Tensor:
    """The answer position's last-layer state [len(jobs)·N, D] of restoration jobs that share a plan (`plan_positions`),
    run as one batch of N rows per job from the jobs' earliest start layer."""
    first, clean_prefix = plan
    n, L, reps = runs.corrupted_inputs[0].shape[0], adapter.num_layers, len(jobs)
    start0 = min(job.start for job in jobs)
    patches: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    entering: dict[int, list[int]] = {}
    for j, job in enumerate(jobs):
        entering.setdefault(job.start, []).append(j)
        if job.kind == "resid":
            continue
        for w in window_layers(job.layer, window, L):
            mask, clean = patches.get((job.kind, w), (None, runs.clean_states[(job.kind, w)][:, first:]))
            if mask is None:
                mask = torch.zeros(reps * n, clean.shape[1], dtype=torch.bool, device=clean.device)
            mask[j * n : (j + 1) * n] = masks[job.group][first:].to(clean.device)
            patches[(job.kind, w)] = (mask, clean)

    def enter(i: int, hidden: torch.Tensor) -> torch.Tensor:
        """Rows of the jobs starting at layer i take the corrupted state entering it, with their `resid` restoration."""
        for j in entering.get(i, ()):
            job, rows = jobs[j], slice(j * n, (j + 1) * n)
            hidden[rows] = runs.corrupted_inputs[i][:, first:]
            if job.kind == "resid":
                pos = masks[job.group][first:].to(hidden.device)
                hidden[rows, pos] = runs.clean_states[("resid", job.layer)][0, first:][pos].to(hidden.dtype)
        return hidden

    hidden = enter(start0, runs.corrupted_inputs[start0][:, first:].repeat(reps, 1, 1))
    if start0 >= L:
        return hidden[:, -1]
    prefix: list[Any] | None = None
    if first:  # keys and values of positions 0..first-1, one copy per draw
        prefix = [None] * start0
        for i in range(start0, L):
            k, v = (x[..., :first, :] for x in runs.corrupted_kv[i])
            if clean_prefix is not None:
                use = clean_prefix[None, None, :, None].to(k.device)
                k, v = (torch.where(use, c[..., :first, :], x) for c, x in zip(runs.clean_kv[i], (k, v), strict=True))
            prefix.append((k, v))
    cache = None
    if prefix is not None and not adapter.records_attention:  # another attention function: a cache row per batch row
        rows = [(None, None) if kv is None else tuple(x.repeat(reps, 1, 1, 1) for x in kv) for kv in prefix]
        cache, prefix = kv_cache(rows), None
    with patch_blocks(adapter, patches):
        last, _ = run_layers(adapter, hidden, start0, runs.calls, cache=cache, prefix=prefix, first=first, enter=enter)
    return last
