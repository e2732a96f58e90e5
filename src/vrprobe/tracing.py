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
directly, with the per-layer arguments captured from the clean forward, which broadcast over any batch size). Only
positions whose state can differ from a known run are computed: positions the restored ones cannot reach through the
attention masks keep the corrupted run's keys and values, and after a `resid` restoration the restored positions whose
attention reaches only clean states keep the clean run's (in a causal model: the image tokens, so only the text after
them is recomputed). The last layer's MLP runs on the answer position alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vrprobe.data import Sample
from vrprobe.errors import UsageError
from vrprobe.evaluate import closed_record, open_record
from vrprobe.interventions.hooks import intervene
from vrprobe.interventions.replay import (
    attends,
    capture_layer_calls,
    closed_subset,
    patch_blocks,
    reachable,
    run_layers,
)
from vrprobe.interventions.sites import Site, positions_mask
from vrprobe.models.base import Adapter, Batch

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
        if self.noise_samples < 1 or self.window < 1:
            raise UsageError("--noise-samples and --window must be at least 1")


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


def window_layers(layer: int, window: int, num_layers: int) -> range:
    """ROME's window: layers[max(0, l − W//2) : min(L, l + ceil(W/2))]."""
    return range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))


class Tracer:
    """Traces samples with one adapter; `sigma` is the embedding noise scale unit (see `measure_sigma`)."""

    def __init__(self, adapter: Adapter, sigma: float, cfg: TraceConfig | None = None) -> None:
        self.adapter, self.sigma, self.cfg = adapter, float(sigma), cfg or TraceConfig()

    def noise(self, index: int, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """The N standard-normal draws [N, T, D] used for sample number `index` (seeded by cfg.seed and index)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)
        return torch.randn((self.cfg.noise_samples, *shape), generator=gen)

    def prob(self, last_hidden: torch.Tensor, target_id: int) -> torch.Tensor:
        return torch.softmax(self.adapter.head(last_hidden).float(), -1)[:, target_id]

    @torch.no_grad()
    def trace(self, sample: Sample, index: int = 0) -> SampleTrace:
        from transformers import DynamicCache

        a, cfg = self.adapter, self.cfg
        batch = a.encode_samples([sample])
        clean = self.clean_states(batch)
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
        delta = torch.zeros((cfg.noise_samples, *clean["embed"].shape[1:]))
        delta[:, img] = cfg.noise * self.sigma * self.noise(index, clean["embed"].shape[1:])[:, img]
        corrupted_in = clean["embed"] + delta.to(clean["embed"].dtype)
        kv = DynamicCache()  # row 0: the clean run's keys and values; rows 1..N: the corrupted runs
        last, out = run_layers(a, torch.cat([clean["embed"], corrupted_in]), 0, clean["calls"], keep=True, cache=kv)
        p_corrupted = float(self.prob(last[1:], target_id).mean())
        corrupted = {
            "inputs": [corrupted_in, *(x[1:] for x in out[:-1])],
            "last": out[-1][1:],
            "kv": [(layer.keys[1:], layer.values[1:]) for layer in kv.layers],
        }
        clean["kv"] = [(layer.keys[:1], layer.values[:1]) for layer in kv.layers]
        L, G = a.num_layers, len(cfg.groups)
        p_restored = torch.zeros(len(cfg.kinds), L, G)
        masks = [positions_mask(g, batch.groups)[0] for g in cfg.groups]
        plans = self._prefix_plans(clean, masks, img)
        sets: dict[tuple[int, int], list] = {}  # (first position, closed group or -1) -> jobs
        for k, kind in enumerate(cfg.kinds):
            for layer in range(L):
                for g in range(G):
                    start = layer + 1 if kind == "resid" else window_layers(layer, cfg.window, L)[0]
                    first, clean_prefix = plans[("resid" if kind == "resid" else "block", g)]
                    sets.setdefault((first, g if clean_prefix is not None else -1), []).append(
                        (k, kind, layer, g, start)
                    )
        T = img.shape[0]
        for (first, closed), jobs in sorted(sets.items()):
            clean_prefix = plans[("resid", closed)][1] if closed >= 0 else None
            for chunk in schedule(jobs, L, cfg.noise_samples * (T - first), cfg.max_rows // cfg.noise_samples):
                probs = self._restore(chunk, first, clean_prefix, corrupted, clean, masks, target_id)
                for (k, _, layer, g, _), p in zip(chunk, probs, strict=True):
                    p_restored[k, layer, g] = p
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

    def clean_states(self, batch: Batch) -> dict[str, Any]:
        """One clean forward (no cache): the embeddings, every layer's and block's output, the layer calls."""
        a = self.adapter
        sites = {kind: Site(kind, tuple(range(a.num_layers)), "all") for kind in ("resid", "attn", "mlp")}
        embed = Site("embed")
        with intervene(a, batch.groups, record=[*sites.values(), embed]) as rec, capture_layer_calls(a) as calls:
            logits = a.forward(batch, use_cache=False).logits[0, -1].float()
        states = {(kind, i): x for kind, site in sites.items() for i, x in enumerate(rec.stacked(site))}
        return {"embed": rec[embed], "states": states, "calls": calls, "logits": logits}

    def _prefix_plans(self, clean, masks, noised) -> dict[tuple[str, int], tuple[int, torch.Tensor | None]]:
        """Per (restoration family, group index): the first position a restored run must compute, and for `resid`
        restorations which earlier positions hold clean (rather than corrupted) states above the restored layer.

        Positions a restoration at the group cannot reach keep their corrupted states. A `resid` restoration makes the
        group clean at its layer; the group's members whose attention only reaches clean positions (the group and the
        positions the noise never reaches) stay clean in every later layer (`closed_subset`): in a causal model,
        restoring the image tokens leaves only the text after them to recompute."""
        allowed = attends(clean["calls"])
        untouched = ~reachable(allowed, noised)
        T = noised.shape[0]
        plans: dict[tuple[str, int], tuple[int, torch.Tensor | None]] = {}
        for g, mask in enumerate(masks):
            reach = reachable(allowed, mask)
            first = int(reach.nonzero()[0]) if reach.any() else T - 1
            plans[("block", g)] = (min(first, T - 1), None)
            stays_clean = closed_subset(allowed, mask | untouched) & reach
            todo = (reach & ~stays_clean).nonzero()
            first_r = min(int(todo[0]) if len(todo) else T, T - 1)
            plans[("resid", g)] = (first_r, stays_clean[:first_r]) if first_r > first else plans[("block", g)]
        return plans

    def _restore(self, jobs, first, clean_prefix, corrupted, clean, masks, target_id) -> list[float]:
        """p(target) for restoration jobs that share the first position to compute, in one batch of N rows per job.

        The batch runs from the jobs' earliest start layer; a job's rows take the corrupted state entering its own
        start layer (with its `resid` restoration) when the run reaches it. The keys and values of positions before
        `first` come from the corrupted run, or the clean run where `clean_prefix` says."""
        from transformers import DynamicCache

        a, cfg, n = self.adapter, self.cfg, self.cfg.noise_samples
        L, reps = a.num_layers, len(jobs)
        start0 = min(job[-1] for job in jobs)
        patches: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        entering: dict[int, list[int]] = {}
        for j, (_, kind, layer, g, start) in enumerate(jobs):
            entering.setdefault(start, []).append(j)
            if kind == "resid":
                continue
            for w in window_layers(layer, cfg.window, L):
                mask, val = patches.get(
                    (kind, w),
                    (
                        torch.zeros(reps * n, masks[g].shape[0] - first, dtype=torch.bool),
                        clean["states"][(kind, w)][:, first:],
                    ),
                )
                mask[j * n : (j + 1) * n] = masks[g][first:]
                patches[(kind, w)] = (mask, val)

        def enter(i: int, hidden: torch.Tensor) -> torch.Tensor:
            for j in entering.get(i, ()):
                _, kind, layer, g, _ = jobs[j]
                rows, pos = slice(j * n, (j + 1) * n), masks[g][first:]
                hidden[rows] = (corrupted["inputs"][i] if i < L else corrupted["last"])[:, first:]
                if kind == "resid":
                    hidden[rows, pos] = clean["states"][("resid", layer)][0, first:][pos].to(hidden.dtype)
            return hidden

        base = corrupted["inputs"][start0] if start0 < L else corrupted["last"]
        hidden = enter(start0, base[:, first:].repeat(reps, 1, 1))
        if start0 >= L:
            return self.prob(hidden[:, -1], target_id).view(reps, n).mean(1).tolist()
        prefix: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None
        if first:  # keys and values of positions 0..first-1: one copy per draw, shared by the jobs' rows
            prefix = [None] * start0
            for i in range(start0, L):
                k, v = (x[..., :first, :] for x in corrupted["kv"][i])
                if clean_prefix is not None:
                    use = clean_prefix[None, None, :, None]
                    k, v = (torch.where(use, c[..., :first, :], x) for c, x in zip(clean["kv"][i], (k, v), strict=True))
                prefix.append((k, v))
        cache = None
        if prefix is not None and not a.records_attention:  # another attention function: a cache row per batch row
            cache = DynamicCache(
                ddp_cache_data=[
                    (None, None) if kv is None else tuple(x.repeat(reps, 1, 1, 1) for x in kv) for kv in prefix
                ]
            )
            prefix = None
        with patch_blocks(a, patches):
            last, _ = run_layers(
                a, hidden, start0, clean["calls"], cache=cache, prefix=prefix, first=first, enter=enter
            )
        return self.prob(last, target_id).view(reps, n).mean(1).tolist()


LAYER_CALL_COST = 128
"""Scheduling estimate: the fixed cost of one decoder-layer call, in row-positions of compute (CPU, small models)."""


def schedule(jobs: Sequence[tuple], num_layers: int, row_positions: int, max_jobs: int) -> list[list[tuple]]:
    """Split jobs (their start layer last) into batches: jobs with nearby start layers share a batch when the layer
    calls saved outweigh the layers run early for the later-starting ones (minimum estimated cost over contiguous
    groups of start layers, each layer run costing LAYER_CALL_COST + rows·positions); at most `max_jobs` per batch."""
    starts = sorted({job[-1] for job in jobs})
    count = {s: sum(job[-1] == s for job in jobs) for s in starts}
    best, cut = [0.0], [0]
    for b in range(1, len(starts) + 1):
        options = []
        for a in range(b):
            size = sum(count[s] for s in starts[a:b])
            cost = (num_layers - starts[a]) * (LAYER_CALL_COST + size * row_positions)
            options.append((best[a] + cost, a))
        value, a = min(options)
        best.append(value)
        cut.append(a)
    segments, b = [], len(starts)
    while b:
        segments.append(starts[cut[b] : b])
        b = cut[b]
    out = []
    for seg in reversed(segments):
        chosen = sorted((job for job in jobs if job[-1] in seg), key=lambda job: job[-1])
        out += [chosen[c : c + max(1, max_jobs)] for c in range(0, len(chosen), max(1, max_jobs))]
    return out


@torch.no_grad()
def site_std(adapter: Adapter, samples: Sequence[Sample], site: Site, batch_size: int = 16) -> dict[int, float]:
    """Standard deviation of the state recorded at `site`, over the site's positions and all dimensions of `samples`,
    per layer of the site (key 0 for `embed`)."""
    layers = site.layers or (0,)
    values: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for i in range(0, len(samples), batch_size):
        batch = adapter.encode_samples(samples[i : i + batch_size])
        with intervene(adapter, batch.groups, record=[site]) as rec:
            adapter.forward(batch, use_cache=False)
        states, mask = rec.stacked(site), site.mask(batch.groups)
        for j, layer in enumerate(layers):
            values[layer].append(states[j][mask].float().flatten())
    return {layer: float(torch.cat(v).std()) for layer, v in values.items()}


def measure_sigma(adapter: Adapter, samples: Sequence[Sample], batch_size: int = 16) -> float:
    """σ (ROME's rule): the standard deviation of the input embeddings (the first decoder layer's input, with the
    projected image features in place) over all image-token positions and dimensions of `samples`."""
    return site_std(adapter, samples, Site("embed", positions="image"), batch_size)[0]


Progress = Callable[[int], None]


@dataclass
class DatasetTrace:
    """Per-sample traces, the dataset mean grid ("the circuit") and σ."""

    traces: list[SampleTrace]
    sigma: float
    cfg: TraceConfig
    grid: list[dict[str, Any]] = field(default_factory=list)


def mean_grid(traces: Sequence[SampleTrace]) -> list[dict[str, Any]]:
    """Mean indirect effect over samples for each (kind, layer, group)."""
    effects = torch.stack([t.effect for t in traces]).mean(0)
    kinds, groups = traces[0].kinds, traces[0].groups
    return [
        {"kind": kind, "layer": layer, "group": group, "effect": float(effects[k, layer, g])}
        for k, kind in enumerate(kinds)
        for layer in range(effects.shape[1])
        for g, group in enumerate(groups)
    ]


def trace_dataset(
    adapter: Adapter,
    samples: Sequence[Sample],
    cfg: TraceConfig,
    *,
    sigma: float | None = None,
    calibration: Sequence[Sample] | None = None,
    progress: Progress | None = None,
) -> DatasetTrace:
    """Trace every sample; σ is measured on `calibration` (default: the samples themselves) unless given."""
    if sigma is None:
        sigma = measure_sigma(adapter, calibration or samples)
    tracer = Tracer(adapter, sigma, cfg)
    traces = []
    for i, s in enumerate(samples):
        traces.append(tracer.trace(s, index=i))
        if progress:
            progress(1)
    return DatasetTrace(traces=traces, sigma=sigma, cfg=cfg, grid=mean_grid(traces))
