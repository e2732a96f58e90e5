"""Attention knockout (Geva et al. 2023; Zhang et al. 2025): where image information reaches the question and the
answer position.

Definitions (also written into `summary.json`, see `DEFINITIONS`):
- **groups** of an edge: `image` the image-feature tokens; `question` every other prompt token before the last (the
  question's words and the template's: BOS, "USER:", "ASSISTANT", Qwen2-VL's vision start/end markers), so that
  image, question and last partition the prompt and no template token relays image information around a blocked
  edge (the `text` position set of `vrprobe.interventions.sites`); `last` the answer position.
- **edge** `S->T`: the attention of every query in T to every key in S is blocked (scores set to −inf before softmax;
  `Knockout` renormalises each row over its remaining keys) at every layer of a window. Only direct edges are
  blocked. Inside PaliGemma's bidirectional prefix image tokens also attend to the question: `image->question` leaves
  that edge (question -> image) open, since it carries text into the image positions, not image out of them; image
  information can still reach the question through the last position when `image->last` is open. Blocking
  `image->question` and `image->last` together cuts every path from the image to the answer (no non-image query
  reads an image key at any layer of the window), whatever the family's mask.
- **window**: k consecutive decoder layers [start, end], sliding by one layer across depth (`--window K`, default
  max(1, round(L / 4))); `all` is the single window of every layer.
- **p(target)**: the probability (softmax over the vocabulary, float32) of the target's first token at the answer
  position, the causal trace's p; target = the gold answer, else the clean prediction (as the trace chooses it).
- **relative change** per sample = (p_knocked − p_clean) / p_clean; **effect** of (edge, window) = its mean over the
  samples the model answers correctly without knockout (as Zhang et al.), with a 95% percentile-bootstrap interval.
- **integration layers** of an edge: `peak`, the window whose effect is most negative, and `last`, the last window
  (deepest start) whose interval excludes 0: image information still flows along that edge there.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrprobe import checks
from vrprobe.analyses.jobs import Opened, Source, executing, run_job
from vrprobe.checks import finite_logits
from vrprobe.data import Sample, load_dataset
from vrprobe.errors import UsageError
from vrprobe.interventions import Edit, Knockout, Site, intervene
from vrprobe.metrics.stats import mean_interval
from vrprobe.models import Adapter, Batch
from vrprobe.registry import as_adapter, model_ref
from vrprobe.runtime.batching import batch_size_option, choose_batch_size, run_batches
from vrprobe.runtime.devices import LoadOptions
from vrprobe.runtime.executors import Executor, ExecutorSpec, Rows, parse_executor
from vrprobe.runtime.progress import Progress
from vrprobe.runtime.runs import open_run, run_config
from vrprobe.scoring.evaluate import score_batch, summarize

EDGES = ("image->question", "image->last", "question->last", "last->last")
#: the position set of each group name (sources: keys; targets: query rows)
GROUP_POSITIONS = {"image": "image", "question": "text", "last": "last"}
INTEGRATION_EDGES = ("image->question", "image->last")
DEFINITIONS = {
    "groups": "image: image-feature tokens; question: every other prompt token before the last (question and "
    "template words); last: the answer position",
    "edge S->T": "attention of every query in T to every key in S blocked (-inf before softmax) at every layer of "
    "the window; direct edges only (in PaliGemma's bidirectional prefix image->question leaves question->image open); "
    "a query left with no key (last with image, question and last blocked) reads nothing (zero weights)",
    "window": "k consecutive decoder layers [start, end] sliding by one layer; 'all' = every layer",
    "p(target)": "softmax probability of the target's first token at the answer position (the trace's p)",
    "effect": "mean over the samples answered correctly without knockout of (p_knocked - p_clean) / p_clean, with a "
    "95% percentile-bootstrap interval",
    "integration_layers": "per image edge: peak = the window with the most negative effect; last = the deepest "
    "window whose interval excludes 0",
    "accuracy_knocked_out": "--window all: accuracy with every listed edge blocked at every layer at once",
    "accuracy_blank": "--window all: accuracy with each image replaced by a blank (mid-grey) one, no knockout",
}


@dataclass
class KnockoutResult:
    """Per-sample records, per-(sample, edge, window) rows and the summary of `knockout`."""

    records: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None


def parse_edges(text: str | Sequence[str]) -> tuple[str, ...]:
    """'image->question,image->last' → the edges, each checked against `EDGES`."""
    items = [e.strip() for e in (text.split(",") if isinstance(text, str) else text) if e.strip()]
    if not items:
        raise UsageError(f"--edges names no edge (known: {', '.join(EDGES)})")
    for e in items:
        if e not in EDGES:
            raise UsageError(f"unknown edge '{e}' (known: {', '.join(EDGES)})")
    return tuple(dict.fromkeys(items))


def check_window(text: str | int | None) -> str | int | None:
    """A --window value before the model is known: a positive integer, 'all' or None (the default)."""
    if text is None or text == "all":
        return text
    try:
        k = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--window must be a positive number of layers or 'all', got '{text}'") from None
    if k < 1:
        raise UsageError(f"--window must be a positive number of layers or 'all', got '{text}'")
    return k


def window_size(text: str | int | None, num_layers: int) -> int:
    """The window's number of layers: None → max(1, round(L / 4)); 'all' → L; K must fit the model."""
    window = check_window(text)
    if window is None:
        return max(1, round(num_layers / 4))
    if window == "all":
        return num_layers
    k = int(window)
    if k > num_layers:
        raise UsageError(f"--window {k} is wider than the model's {num_layers} layers")
    return k


def windows(num_layers: int, k: int) -> list[tuple[int, int]]:
    """Every window of k consecutive layers, (start, end) inclusive, start = 0 .. L − k."""
    return [(a, a + k - 1) for a in range(num_layers - k + 1)]


def edge_edits(edges: Sequence[str], layers: Sequence[int]) -> list[Edit]:
    """Knockout edits blocking every edge in `edges` at `layers` (positions resolved in each forward)."""
    out: list[Edit] = []
    for edge in edges:
        source, target = edge.split("->")
        out.append((Site("attn_probs", tuple(layers), GROUP_POSITIONS[target]), Knockout(GROUP_POSITIONS[source])))
    return out


@torch.no_grad()
def target_probs(adapter: Adapter, batch: Batch, target_ids: Sequence[int], edits: Sequence[Edit] = ()) -> np.ndarray:
    """p(target) [B] at the answer position (float32 softmax over the vocabulary) under `edits`."""
    with intervene(adapter, batch.groups, edits=edits):
        logits = adapter.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1].float()
    finite_logits(logits, [str(i) for i in range(len(logits))], model=adapter.name, what="logits under knockout")
    probs = torch.softmax(logits, -1)
    return probs[torch.arange(len(target_ids)), torch.tensor(target_ids, device=probs.device)].cpu().numpy()


def knockout_batch(
    adapter: Adapter,
    chunk: Sequence[Sample],
    edges: Sequence[str],
    spans: Sequence[tuple[int, int]],
    *,
    full: bool = False,
    blank: Sequence[Sample] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One batch: its records (the clean answer, p_clean, and with `full` the answer with every edge blocked at every
    layer; with `blank` the answer on blank images) and its window rows (edge, start, end, p_knocked,
    relative_change)."""
    batch = adapter.encode_samples(chunk)
    clean = score_batch(adapter, chunk, batch)
    targets = [s.gold or r["predicted"] for s, r in zip(chunk, clean, strict=True)]
    target_ids = [adapter.answer_ids(t)[0] for t in targets]
    p_clean = target_probs(adapter, batch, target_ids)
    records = [
        {k: r[k] for k in ("sample_id", "question_type", "predicted", "confidence", "correct", "accuracy")}
        | {"target": t, "p_clean": float(p), "sharpness": r.get("sharpness", float("nan"))}
        for r, t, p in zip(clean, targets, p_clean, strict=True)
    ]
    rows = []
    for edge in edges:
        for a, b in spans:
            p = target_probs(adapter, batch, target_ids, edge_edits([edge], range(a, b + 1)))
            for r, pk, pc in zip(records, p, p_clean, strict=True):
                rel = (pk - pc) / pc if pc > 0 else float("nan")
                rows.append(
                    {"sample_id": r["sample_id"], "edge": edge, "start": a, "end": b}
                    | {"p_knocked": float(pk), "relative_change": float(rel), "clean_correct": r["correct"]}
                )
    if full:
        all_layers = range(adapter.num_layers)
        knocked = score_batch(adapter, chunk, batch, edits=edge_edits(edges, all_layers))
        for r, k in zip(records, knocked, strict=True):
            r.update(knocked_predicted=k["predicted"], knocked_correct=k["correct"], knocked_accuracy=k["accuracy"])
    if blank is not None:
        for r, k in zip(records, score_batch(adapter, blank), strict=True):
            r.update(blank_predicted=k["predicted"], blank_correct=k["correct"], blank_accuracy=k["accuracy"])
    return records, rows


def run_knockout(
    adapter: Adapter,
    samples: Sequence[Sample],
    edges: Sequence[str],
    window: str | int | None = None,
    *,
    batch_size: int = 16,
    blank: Sequence[Sample] | None = None,
    progress: Progress | None = None,
    stage: str = "knockout",
    done: Collection[str] = (),
    on_batch: Callable[[list[int], list[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Knockout over `samples` (ids in `done` skipped): every edge × window; with `window='all'` also the full
    knockout, and the answers on `blank` (the same samples with blank images, same order) when given. Returns the
    records and window rows of the batches run in this call; `on_batch(indices, records, rows)` as each finishes."""
    if not adapter.records_attention:
        raise UsageError("attention knockout needs the model loaded with vrprobe's attention function")
    edges = parse_edges(edges)
    spans = windows(adapter.num_layers, window_size(window, adapter.num_layers))
    full = window == "all"
    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []

    def work(indices: list[int], chunk: list[Sample]) -> None:
        recs, win = knockout_rows(adapter, samples, indices, edges, spans, full, blank)
        records.extend(recs)
        rows.extend(win)
        if on_batch:
            on_batch(indices, recs, win)

    run_batches(samples, batch_size, work, done=done, progress=progress, stage=stage)
    return records, rows


def knockout_rows(
    adapter: Adapter,
    samples: Sequence[Sample],
    indices: Sequence[int],
    edges: Sequence[str],
    spans: Sequence[tuple[int, int]],
    full: bool,
    blank: Sequence[Sample] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One batch (the samples at `indices`): its records (with the position as `index`) and window rows."""
    blanks = [blank[i] for i in indices] if (full and blank is not None) else None
    recs, win = knockout_batch(adapter, [samples[i] for i in indices], edges, spans, full=full, blank=blanks)
    for i, r in zip(indices, recs, strict=True):
        r["index"] = i
    return recs, win


@dataclass(frozen=True)
class KnockoutJob:
    """`knockout`'s rows for an executor (`knockout_rows`): tables "windows" and "records"."""

    source: Source
    edges: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    full: bool

    def open(self, cache: dict[Any, Any]) -> Opened:
        opened = self.source.open(cache)
        blank = self.source.samples(cache, "blank") if self.full else None
        return Opened(opened.adapter, opened.samples, blank)

    def rows(self, context: Opened, indices: list[int]) -> Rows:
        recs, win = knockout_rows(
            context.adapter, context.samples, indices, self.edges, self.spans, self.full, context.blank
        )
        return {"windows": win, "records": recs}


def window_effects(rows: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """{edge, start, end, effect, ci, n} per (edge, window), in first-seen order: `mean_interval` of the relative
    change over the rows whose sample was answered correctly without knockout (effect None when there are none)."""
    cells: dict[tuple[str, int, int], list[float]] = {}
    for r in rows:
        values = cells.setdefault((r["edge"], int(r["start"]), int(r["end"])), [])
        if r["clean_correct"] >= 0.5 and r["relative_change"] == r["relative_change"]:
            values.append(float(r["relative_change"]))
    out = []
    for (edge, a, b), v in cells.items():
        mean, ci = mean_interval(v, n_boot=n_boot, seed=seed)
        out.append({"edge": edge, "start": a, "end": b, "effect": mean, "ci": list(ci), "n": len(v)})
    return out


def integration_layers(effects: Sequence[dict[str, Any]], edges: Sequence[str] = INTEGRATION_EDGES) -> dict:
    """Per image edge present in `effects`: `peak` [start, end] of the most negative effect (with `peak_effect`) and
    `last` [start, end] of the deepest window whose interval excludes 0 (None when none does)."""
    out: dict[str, Any] = {}
    for edge in edges:
        cells = [c for c in effects if c["edge"] == edge and c["effect"] is not None]
        if not cells:
            continue
        peak = min(cells, key=lambda c: c["effect"])
        excluded = [c for c in cells if c["ci"][0] is not None and (c["ci"][0] > 0 or c["ci"][1] < 0)]
        last = max(excluded, key=lambda c: c["start"]) if excluded else None
        out[edge] = {
            "peak": [peak["start"], peak["end"]],
            "peak_effect": peak["effect"],
            "last": [last["start"], last["end"]] if last else None,
        }
    return out


def knockout_summary(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], n_boot: int, seed: int) -> dict:
    """The aggregates of a knockout run: windows, integration_layers, accuracy_clean (and by type), and where the
    records hold them the full-knockout and blank-image accuracies."""
    effects = window_effects(rows, n_boot, seed)
    clean = summarize(records)
    out: dict[str, Any] = {
        "n": len(records),
        "n_correct": int(sum(r["correct"] >= 0.5 for r in records)),
        "windows": effects,
        "integration_layers": integration_layers(effects),
        "accuracy_clean": clean["accuracy"],
        "accuracy_by_type_clean": clean["accuracy_by_type"],
    }
    for prefix, name in (("knocked", "knocked_out"), ("blank", "blank")):
        if records and f"{prefix}_correct" in records[0]:
            s = summarize([{**r, "accuracy": r[f"{prefix}_accuracy"]} for r in records])
            out[f"accuracy_{name}"], out[f"accuracy_by_type_{name}"] = s["accuracy"], s["accuracy_by_type"]
    return out


def knockout(
    model: str | Adapter,
    data: str,
    *,
    out: Path | str | None = None,
    window: str | int | None = None,
    edges: str | Sequence[str] = EDGES,
    limit: int | None = None,
    batch_size: int | str = 16,
    seed: int = 0,
    n_boot: int = 1000,
    options: LoadOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    executor: str | ExecutorSpec | Executor = "local",
    workers: int | None = None,
    **legacy: Any,
) -> KnockoutResult:
    """`vrprobe knockout`: every edge × window over the dataset (resumable in `out`), the effects with intervals and
    the integration layers; with `window='all'` also the full-knockout and blank-image accuracies. `executor`:
    `local` or `ray[:ADDRESS]` with `workers` actors (`vrprobe.runtime.executors`)."""
    checks.options(limit=limit, seed=seed)
    where = parse_executor(executor, workers)
    edges = parse_edges(edges)
    window = check_window(window)
    batch_size = batch_size_option(batch_size)
    spec, load_options = model_ref(model, LoadOptions.from_kwargs(options, legacy, "knockout"))
    config = run_config(
        "knockout", spec, load_options, data=data, window=window, edges=list(edges), limit=limit, seed=seed
    )
    dataset = load_dataset(data, limit=limit, seed=seed)
    blank = load_dataset(data, limit=limit, seed=seed, image_ablation="blank") if window == "all" else None
    adapter = as_adapter(model, load_options)
    k = window_size(window, adapter.num_layers)
    run = open_run(out, config, overwrite)
    done = {r[0] for r in run.done(("sample_id",))} if run else set()
    size = choose_batch_size(adapter, dataset.samples, batch_size)
    if not adapter.records_attention:
        raise UsageError("attention knockout needs the model loaded with vrprobe's attention function")
    spans = tuple(windows(adapter.num_layers, k))
    todo = [i for i, s in enumerate(dataset.samples) if s.id not in done]
    source = Source(spec, load_options, data, limit, seed)
    job = KnockoutJob(source, tuple(edges), spans, window == "all")
    context = Opened(adapter, dataset.samples, blank.samples if blank else None)
    with executing(where) as runner:
        kept, _ = run_job(
            runner, job, context, todo, size, run, total=len(dataset.samples), progress=progress,
            stage=f"knockout {spec}",
        )  # fmt: skip
    records, rows = kept.get("records", []), kept.get("windows", [])
    if run:
        records = run.read()
        ids = {r["sample_id"] for r in records}
        seen: set[tuple] = set()
        rows = []
        for r in run.read("windows"):
            key = (r["sample_id"], r["edge"], r["start"])
            if r["sample_id"] in ids and key not in seen:
                seen.add(key)
                rows.append(r)
    records.sort(key=lambda r: r["index"])
    position = {r["sample_id"]: r["index"] for r in records}
    rows.sort(key=lambda r: position[r["sample_id"]])  # sample order, whatever order the shards finished in
    summary = {
        "model": spec,
        "data": data,
        "window": window if window == "all" else k,
        "edges": list(edges),
        **knockout_summary(records, rows, n_boot, seed),
        "definitions": DEFINITIONS,
    }
    if run:
        run.write_json("summary.json", summary)
    return KnockoutResult(records=records, windows=rows, summary=summary, out=run.path if run else None)
