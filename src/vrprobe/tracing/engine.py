"""Causal Tracing Engine: which hidden states the answer causally depends on, and band corruption.

Per sample (ROME's causal tracing, for a VLM):
- clean run; **corrupted** runs: Gaussian noise of k·σ on the image tokens' input embeddings (the first decoder layer's
  input), N draws; **restored** runs: the corrupted run with one clean state put back — for kind `resid` the output of
  layer l at the token group g; for `mlp`/`attn` the block outputs at g over a window of layers centred on l.
- **p(target)**: probability (softmax over the whole vocabulary) of the target answer's first token at the answer (last
  prompt) position. Target = the gold answer when the sample has one (VQA: `multiple_choice_answer`), else the clean
  prediction (closed set: the argmax candidate; open-ended: the greedy answer).
- **indirect effect** of (kind, l, g) = mean over draws of p_restored − mean over draws of p_corrupted (probability).
- σ (`measure_sigma`): standard deviation of the input embeddings over the image-token span of a calibration set.

Fast by construction: all draws of one sample and many restorations run as one batch; a restoration that starts at
layer s reuses the corrupted run's state entering s instead of recomputing layers below s (the decoder layers are run
directly, with the per-layer arguments captured from the clean forward, which broadcast over any batch size), and only
positions whose state can differ from a known run are computed, and a restoration that cannot change the answer
position is not run at all (its effect is exactly 0): see `vrprobe.tracing.restoration`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from vrprobe import checks
from vrprobe.checks import finite_logits
from vrprobe.data import Sample
from vrprobe.errors import UsageError
from vrprobe.interventions import GaussianNoise, Site, intervene
from vrprobe.interventions.sites import positions_mask
from vrprobe.models.base import Adapter, Batch
from vrprobe.runtime import seeding
from vrprobe.runtime.progress import Progress, Ticker
from vrprobe.scoring.evaluate import closed_record, open_record
from vrprobe.tracing.replay import attends, capture_layer_calls
from vrprobe.tracing.restoration import (
    Job,
    KnownRuns,
    changes_answer,
    plan_positions,
    restore,
    schedule,
    trace_jobs,
)

KINDS = ("resid", "mlp", "attn")
DEFINITIONS = {
    "p_clean / p_corrupted / p_restored": "probability (softmax over the vocabulary) of the target answer's first "
    "token at the answer position; target = the gold answer (else the clean prediction)",
    "corrupted": "Gaussian noise of noise·sigma added to the image tokens' input embeddings (first decoder layer's "
    "input), noise_samples draws; sigma = std of those embeddings over the traced samples' image tokens",
    "effect": "indirect effect: mean over draws of p_restored minus mean over draws of p_corrupted (probability)",
    "grid": "effect averaged over samples for each (kind, layer, group); resid = layer output, mlp/attn = block "
    "outputs restored over a window of layers centred on layer",
}
TRACE_GROUPS = ("image", "question", "last")


@dataclass(frozen=True)
class TraceConfig:
    """Options of a trace: restoration kinds, token groups restored (image/question/last, or all), noise k (in σ),
    draws N, window W (layers, for mlp/attn), seed, and the largest number of rows run in one forward."""

    kinds: tuple[str, ...] = KINDS
    groups: tuple[str, ...] = TRACE_GROUPS
    noise: float = 3.0
    noise_samples: int = 10
    window: int = 3
    seed: int = 0
    max_rows: int = 1024

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UsageError(f"unknown restoration kind {', '.join(bad) or '(none)'} (known: {', '.join(KINDS)})")
        bad = [g for g in self.groups if g not in (*TRACE_GROUPS, "all")]
        if bad or not self.groups:
            raise UsageError(f"unknown token group {', '.join(bad) or '(none)'} (known: image, question, last, all)")
        checks.options(noise=self.noise, noise_samples=self.noise_samples, window=self.window, seed=self.seed)
        checks.positive_int("max_rows", self.max_rows)


@dataclass
class SampleTrace:
    """One sample's trace: effect and p_restored per (kind, layer, group), as tensors [K, L, G]."""

    sample_id: str
    target: str
    p_clean: float
    p_corrupted: float
    clean_correct: float
    p_restored: torch.Tensor
    kinds: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def effect(self) -> torch.Tensor:
        return self.p_restored - self.p_corrupted

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for k, kind in enumerate(self.kinds):
            for layer in range(self.p_restored.shape[1]):
                for g, group in enumerate(self.groups):
                    p = float(self.p_restored[k, layer, g])
                    out.append(
                        {
                            "sample_id": self.sample_id,
                            "kind": kind,
                            "layer": layer,
                            "group": group,
                            "effect": p - self.p_corrupted,
                            "p_restored": p,
                            "p_corrupted": self.p_corrupted,
                            "p_clean": self.p_clean,
                            "clean_correct": self.clean_correct,
                            "target": self.target,
                        }
                    )
        return out


class Tracer:
    """Traces samples with one adapter; `sigma` is the embedding noise scale unit (see `measure_sigma`)."""

    def __init__(self, adapter: Adapter, sigma: float, cfg: TraceConfig | None = None) -> None:
        self.adapter, self.sigma, self.cfg = adapter, float(sigma), cfg or TraceConfig()

    def generator(self, index: int) -> torch.Generator:
        """The generator of sample number `index`'s noise draws (`derive_seed(cfg.seed, index)`)."""
        return seeding.generator(self.cfg.seed, index)

    def corrupt(self, embed: torch.Tensor, image: torch.Tensor, index: int) -> torch.Tensor:
        """The N corrupted inputs [N, T, D]: `GaussianNoise(noise, sigma)` on the image positions `image` [T] of the
        clean input embeddings `embed` [1, T, D], drawn from `generator(index)`."""
        n = self.cfg.noise_samples
        noise = GaussianNoise(self.cfg.noise, self.sigma)
        return noise.apply(embed.expand(n, -1, -1), image[None].expand(n, -1), self.generator(index))

    def prob(self, last_hidden: torch.Tensor, target_id: int, sample_id: str) -> torch.Tensor:
        """p(target) [rows] from last-layer states [rows, D]: softmax over the vocabulary, in float32; logits holding
        NaN or inf stop the trace with an error naming the sample."""
        logits = self.adapter.head(last_hidden).float()
        finite_logits(logits, [sample_id], model=self.adapter.name, what="logits in a corrupted or restored run")
        return torch.softmax(logits, -1)[:, target_id]

    @torch.no_grad()
    def trace(self, sample: Sample, index: int = 0) -> SampleTrace:
        a, cfg = self.adapter, self.cfg
        batch = a.encode_samples([sample])
        clean = self.clean_states(batch)
        finite_logits(clean["logits"], [sample.id], model=a.name)
        if sample.choices:  # the clean prediction, from the same clean forward
            loglik = a.score_candidates(batch, [sample.choices], last_logits=clean["logits"][None])[0]
            record = closed_record(sample, loglik)
        else:  # open-ended: the greedy answer
            record = open_record(sample, a.generate(batch)[0])
        target = sample.gold or record["predicted"]
        if not target:
            raise UsageError(f"sample {sample.id} has no reference answer and its clean answer is empty")
        correct = float(record["correct"]) if sample.answers else float("nan")
        target_id = a.answer_ids(target)[0]
        img = batch.groups.image[0]
        corrupted_in = self.corrupt(clean["embed"], img, index)
        runs = KnownRuns.replay(a, clean["calls"], clean["states"], clean["embed"], corrupted_in)
        p_corrupted = float(self.prob(runs.corrupted_inputs[-1][:, -1], target_id, sample.id).mean())
        L, G, T = a.num_layers, len(cfg.groups), img.shape[0]
        masks = [positions_mask(g, batch.groups)[0] for g in cfg.groups]
        allowed = attends(clean["calls"])
        plans = plan_positions(allowed, masks, img)
        jobs = trace_jobs(cfg.kinds, L, G, cfg.window)
        live = changes_answer(allowed, img, masks, jobs, L, cfg.window)
        # a restoration that cannot change the answer position is not run: p_restored = p_corrupted, effect exactly 0
        p_restored = torch.full((len(cfg.kinds), L, G), p_corrupted)
        by_plan: dict[tuple[int, int], list[Job]] = {}  # (first position, group whose clean prefix is kept or -1)
        for job in (job for job, can in zip(jobs, live, strict=True) if can):
            first, clean_prefix = plans[("resid" if job.kind == "resid" else "block", job.group)]
            by_plan.setdefault((first, job.group if clean_prefix is not None else -1), []).append(job)
        for (first, closed), jobs in sorted(by_plan.items()):
            plan = plans[("resid", closed)] if closed >= 0 else (first, None)
            per_job = cfg.noise_samples * (T - plan[0])
            for batch_jobs in schedule(jobs, L, per_job, cfg.max_rows // cfg.noise_samples):
                last = restore(a, runs, batch_jobs, plan, masks, cfg.window)
                probs = self.prob(last, target_id, sample.id).view(len(batch_jobs), cfg.noise_samples).mean(1)
                for job, p in zip(batch_jobs, probs.tolist(), strict=True):
                    p_restored[job.k, job.layer, job.group] = p
        return SampleTrace(
            sample_id=sample.id,
            target=target,
            p_clean=float(torch.softmax(clean["logits"], -1)[target_id]),
            p_corrupted=p_corrupted,
            clean_correct=correct,
            p_restored=p_restored,
            kinds=cfg.kinds,
            groups=cfg.groups,
        )

    @torch.no_grad()
    def clean_states(self, batch: Batch) -> dict[str, Any]:
        """One clean forward (no cache, no autograd): the embeddings, every layer's and block's output, the layer
        calls."""
        a = self.adapter
        sites = {kind: Site(kind, tuple(range(a.num_layers)), "all") for kind in ("resid", "attn", "mlp")}
        embed = Site("embed")
        with intervene(a, batch.groups, record=[*sites.values(), embed]) as rec, capture_layer_calls(a) as calls:
            logits = a.forward(batch, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        states = {(kind, i): x for kind, site in sites.items() for i, x in enumerate(rec.stacked(site))}
        return {"embed": rec[embed], "states": states, "calls": calls, "logits": logits}


@torch.no_grad()
def site_std(adapter: Adapter, samples: Sequence[Sample], site: Site, batch_size: int = 16) -> dict[int, float]:
    """Standard deviation of the state recorded at `site`, over the site's positions and all dimensions of `samples`,
    per layer of the site (key 0 for `embed`)."""
    layers = site.layers or (0,)
    values: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for i in range(0, len(samples), batch_size):
        batch = adapter.encode_samples(samples[i : i + batch_size])
        with intervene(adapter, batch.groups, record=[site]) as rec:
            adapter.forward(batch, use_cache=False, logits_to_keep=1)
        states, mask = rec.stacked(site), site.mask(batch.groups)
        for j, layer in enumerate(layers):
            values[layer].append(states[j][mask].float().flatten())
    return {layer: float(torch.cat(v).std()) for layer, v in values.items()}


def measure_sigma(adapter: Adapter, samples: Sequence[Sample], batch_size: int = 16) -> float:
    """σ (ROME's rule): the standard deviation of the input embeddings (the first decoder layer's input, with the
    projected image features in place) over all image-token positions and dimensions of `samples`."""
    return site_std(adapter, samples, Site("embed", positions="image"), batch_size)[0]


@dataclass
class DatasetTrace:
    """Per-sample traces, the dataset mean grid ("the circuit") and σ."""

    traces: list[SampleTrace]
    sigma: float
    cfg: TraceConfig
    grid: list[dict[str, Any]] = field(default_factory=list)


def mean_grid(rows: Sequence[dict[str, Any]], values: Sequence[str] = ("effect",)) -> list[dict[str, Any]]:
    """The circuit: the mean over samples of each column in `values` (default the indirect effect) for each (kind,
    layer, group), from trace rows (`SampleTrace.rows()` or a run's `traces/*.parquet`; attribution rows with
    `values=("estimate", "estimate_linear")`), in the order the cells first appear."""
    cells: dict[tuple[str, int, str], list[list[float]]] = {}
    for r in rows:
        cells.setdefault((r["kind"], int(r["layer"]), r["group"]), []).append([float(r[v]) for v in values])
    return [
        {"kind": k, "layer": layer, "group": g} | {v: sum(x[i] for x in xs) / len(xs) for i, v in enumerate(values)}
        for (k, layer, g), xs in cells.items()
    ]


R = TypeVar("R")


def each_sample(
    samples: Sequence[Sample],
    work: Callable[[Sample, int], R],
    progress: Progress | None,
    stage: str,
    done: Collection[str],
    on_result: Callable[[int, R], None] | None,
) -> list[R]:
    """`work(sample, index)` for every sample whose id is not in `done` (a resumed run), in order, with
    `on_result(index, result)` as each finishes and one progress tick per sample; the results of this call."""
    tick = Ticker(progress, stage, len(samples))
    out = []
    for i, s in enumerate(samples):
        if s.id not in done:
            out.append(work(s, i))
            if on_result:
                on_result(i, out[-1])
        tick(1)
    return out


def trace_dataset(
    adapter: Adapter,
    samples: Sequence[Sample],
    cfg: TraceConfig,
    *,
    sigma: float | None = None,
    calibration: Sequence[Sample] | None = None,
    progress: Progress | None = None,
    stage: str = "trace",
    done: Collection[str] = (),
    on_trace: Callable[[int, SampleTrace], None] | None = None,
) -> DatasetTrace:
    """Trace every sample (σ measured on `calibration`, default the samples themselves, unless given), skipping the
    sample ids in `done` (a resumed run); `on_trace(index, trace)` is called as each sample finishes (the run
    directory appends it). The returned grid covers the samples traced in this call."""
    if sigma is None:
        sigma = measure_sigma(adapter, calibration or samples)
    traces = each_sample(samples, Tracer(adapter, sigma, cfg).trace, progress, stage, done, on_trace)
    return DatasetTrace(traces=traces, sigma=sigma, cfg=cfg, grid=mean_grid([row for t in traces for row in t.rows()]))
