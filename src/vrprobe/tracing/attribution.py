"""Attribution patching (AtP; Nanda 2023, Kramár et al. 2024 "AtP*"): the causal trace's whole grid, estimated to first
order from one clean forward, one corrupted forward of the N noise draws and one backward.

Definitions (units: probability, the trace's units; p, target and the corrupted runs are exactly the engine's, the
same noise draws for the same `cfg.seed` and sample index, so `estimate` compares with `SampleTrace.effect` cell by
cell):
- **node** of (kind, layer i): `resid` the output of decoder layer i; `mlp`/`attn` the MLP / attention block's output
  inside layer i (for attention: after the output projection, before the residual sum).
- **sites** of a cell (kind, l, g): `resid` the node (resid, l); `mlp`/`attn` the nodes (kind, w) for every w in
  `window_layers(l, window, L)`: the sum of each block's own estimate (AtP's rule that the window's effects add).
- **estimate**(kind, l, g) = mean over draws n of Σ_sites Σ_{positions t ∈ g} ∂p_n/∂x_n[t] · (x_clean[t] − x_n[t]),
  x a node's state, ∂p_n/∂x_n the gradient of draw n's p(target) in the corrupted run. It is the first-order term of
  the trace's indirect effect in the restored state; for attention the node's change x_clean − x_n already holds the
  softmax recomputed with the clean queries and keys (AtP*'s fix for attention saturation, where the softmax's
  linearisation fails).
- **estimate_linear** (attn only), the naive AtP that linearises the softmax: the attention output change at g is
  replaced by o_proj applied, per head, to (J·Δs)·V_n + A_n·ΔV, with A_n = softmax(s_n) and s_n the corrupted
  pre-softmax scores (scaled, soft-capped, masked), J·Δs = A_n ⊙ (Δs − Σ_keys A_n Δs) the softmax Jacobian at s_n
  applied to Δs = s_clean − s_n, and ΔV = V_clean − V_n (values per key, after the key/value head expansion);
  o_proj's bias cancels. Obtained without reading q, k, v: the attention function's probabilities are substituted
  (an `AttentionIntervention` in an `intervene` block), with out(P, V) affine in P and in V:
  out(A_n + J·Δs, V_n) − out(A_n, V_n) + out(A_n, V_clean) − out(A_n, V_n). Needs the model on vrprobe's attention
  function (else None); it costs one extra call of each attention module on 3N rows.
Both estimates are 0 when the clean and corrupted runs are equal (noise 0). As the noise goes to 0 `estimate` tends to
the trace's effect for `resid` cells, and for `mlp`/`attn` cells with window 1. With a wider window the engine restores
the window's blocks jointly, which cuts the paths from one restored block to the next that each block's own gradient
counts, so the two differ even to first order (by 5-30% of the largest cell on the zoo models at window 3).
Gradients are taken in the model's dtype and p in float32, as in the engine.
"""

from __future__ import annotations

import functools
import math
import operator
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from vrprobe.checks import finite_logits
from vrprobe.data import Sample
from vrprobe.errors import UsageError
from vrprobe.interventions import Site, intervene
from vrprobe.interventions.attention import HOOK_KWARG, PREFIX_KWARG
from vrprobe.interventions.hooks import first_output, layer_parts
from vrprobe.interventions.ops import AttentionIntervention
from vrprobe.interventions.sites import positions_mask
from vrprobe.models.base import Adapter, Batch
from vrprobe.runtime.progress import Progress
from vrprobe.scoring.evaluate import closed_record, open_record
from vrprobe.tracing.engine import TraceConfig, Tracer, each_sample, mean_grid, measure_sigma
from vrprobe.tracing.replay import CACHE_KWARGS, run_layers
from vrprobe.tracing.restoration import window_layers

DEFINITIONS = {
    "estimate": "attribution patching: mean over draws of the sum, over the cell's restored states and the group's "
    "positions, of gradient of p(target) in the corrupted run times (clean state - corrupted state) (probability; "
    "first-order estimate of the indirect effect)",
    "estimate_linear": "attn only: the same with the attention output change linearised in the softmax "
    "(o_proj of (J_softmax dscores) V + A dV per head)",
}

AttnCall = tuple[torch.Tensor, tuple, dict[str, Any]]  # an attention module's input states, other args, kwargs


@dataclass
class SampleAttribution:
    """One sample's attribution: `estimate` [K, L, G] per (kind, layer, group) and `estimate_linear` [L, G] (attn,
    softmax linearised) or None, beside the trace's p_clean and p_corrupted (probability)."""

    sample_id: str
    target: str
    p_clean: float
    p_corrupted: float
    estimate: torch.Tensor
    estimate_linear: torch.Tensor | None
    kinds: tuple[str, ...]
    groups: tuple[str, ...]
    seconds_linear: float = 0.0  # wall time of the estimate_linear variant alone (inside attribute's time)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (kind, layer, group), like `SampleTrace.rows()`; `estimate_linear` NaN outside attn."""
        out = []
        for k, kind in enumerate(self.kinds):
            for layer in range(self.estimate.shape[1]):
                for g, group in enumerate(self.groups):
                    linear = float("nan")
                    if kind == "attn" and self.estimate_linear is not None:
                        linear = float(self.estimate_linear[layer, g])
                    out.append(
                        {
                            "sample_id": self.sample_id,
                            "kind": kind,
                            "layer": layer,
                            "group": group,
                            "estimate": float(self.estimate[k, layer, g]),
                            "estimate_linear": linear,
                            "p_corrupted": self.p_corrupted,
                            "p_clean": self.p_clean,
                            "target": self.target,
                        }
                    )
        return out


class Attributor:
    """Attribution patching with one adapter; `sigma`, `cfg` as for `Tracer` (the same corruption). `linear`: also
    compute `estimate_linear` when the kinds include attn and the model runs vrprobe's attention function."""

    def __init__(self, adapter: Adapter, sigma: float, cfg: TraceConfig | None = None, *, linear: bool = True) -> None:
        self.tracer = Tracer(adapter, sigma, cfg)
        self.adapter, self.cfg = adapter, self.tracer.cfg
        self.linear = linear and "attn" in self.cfg.kinds and adapter.records_attention

    def attribute(self, sample: Sample, index: int = 0) -> SampleAttribution:
        """Estimate sample `sample`'s trace grid; `index` picks the noise draws (as in `Tracer.trace`)."""
        a, cfg, n, L = self.adapter, self.cfg, self.cfg.noise_samples, self.adapter.num_layers
        batch = a.encode_samples([sample])
        with torch.no_grad(), attention_calls(a, self.linear) as clean_attn:
            clean = self.tracer.clean_states(batch)
        finite_logits(clean["logits"], [sample.id], model=a.name)
        target = clean_target(a, sample, batch, clean["logits"])
        target_id = a.answer_ids(target)[0]
        blocks = [kind for kind in ("attn", "mlp") if kind in cfg.kinds]
        corrupted_in = self.tracer.corrupt(clean["embed"], batch.groups.image[0], index).detach().requires_grad_()
        with torch.enable_grad():
            with block_outputs(a, blocks) as outs, attention_calls(a, self.linear) as corrupted_attn:
                last, resid = run_layers(a, corrupted_in, 0, clean["calls"], keep=True)
                p = self.tracer.prob(last, target_id, sample.id)
            nodes = {("resid", i): x for i, x in enumerate(resid)} if "resid" in cfg.kinds else {}
            nodes.update(outs)
            keys = list(nodes)
            grads = torch.autograd.grad(p.sum(), [nodes[key] for key in keys], allow_unused=True)
        grad = {key: torch.zeros_like(nodes[key]) if g is None else g for key, g in zip(keys, grads, strict=True)}
        masks = torch.stack([positions_mask(g, batch.groups)[0] for g in cfg.groups]).to(p.device)
        per_node = {}  # (kind, layer) -> [G]: mean over draws of Σ_{t ∈ g} grad · (clean − corrupted)
        for key in keys:
            delta = clean["states"][key].float() - nodes[key].detach().float()
            per_node[key] = group_sums(grad[key], delta, masks)
        estimate = torch.zeros(len(cfg.kinds), L, len(cfg.groups))
        for k, kind in enumerate(cfg.kinds):
            for layer in range(L):
                sites = [layer] if kind == "resid" else window_layers(layer, cfg.window, L)
                estimate[k, layer] = sum(per_node[(kind, w)] for w in sites)
        linear, seconds_linear = None, 0.0
        if self.linear:
            t0 = time.perf_counter()
            per_layer = linear_attention_sums(a, batch, clean_attn, corrupted_attn, grad, masks, n)
            windows = [[per_layer[w] for w in window_layers(i, cfg.window, L)] for i in range(L)]
            linear = torch.stack([functools.reduce(operator.add, window) for window in windows])
            seconds_linear = time.perf_counter() - t0
        return SampleAttribution(
            sample_id=sample.id,
            target=target,
            p_clean=float(torch.softmax(clean["logits"], -1)[target_id]),
            p_corrupted=float(p.detach().mean()),
            estimate=estimate,
            estimate_linear=linear,
            kinds=cfg.kinds,
            groups=cfg.groups,
            seconds_linear=seconds_linear,
        )


@torch.no_grad()
def clean_target(adapter: Adapter, sample: Sample, batch: Batch, logits: torch.Tensor) -> str:
    """The trace's target: the gold answer, else the clean prediction (closed set: the argmax candidate scored from
    the clean last-position `logits`; open-ended: the greedy answer), as `Tracer.trace` chooses it."""
    if sample.gold:
        return sample.gold
    if sample.choices:
        loglik = adapter.score_candidates(batch, [sample.choices], last_logits=logits[None])[0]
        predicted = closed_record(sample, loglik)["predicted"]
    else:
        predicted = open_record(sample, adapter.generate(batch)[0])["predicted"]
    if not predicted:
        raise UsageError(f"sample {sample.id} has no reference answer and its clean answer is empty")
    return predicted


def group_sums(grad: torch.Tensor, delta: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[G]: mean over rows of Σ_{t ∈ group} grad[n, t] · delta[n, t], from grad and delta [N, T, D] (delta may be
    [1, T, D]) and group masks [G, T]."""
    per_position = (grad.float() * delta).sum(-1)  # [N, T]
    return (per_position @ masks.T.float()).mean(0).cpu()


@contextmanager
def block_outputs(adapter: Adapter, kinds: Sequence[str]) -> Iterator[dict[tuple[str, int], torch.Tensor]]:
    """Record the attention / MLP block outputs (kinds) of every layer as computed, gradients kept; hooks removed in
    `finally`."""
    outs: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    try:
        for i, layer in enumerate(adapter.decoder_layers):
            for kind in kinds:

                def post(
                    module: torch.nn.Module, args: tuple[Any, ...], output: Any, key: tuple[str, int] = (kind, i)
                ) -> None:
                    outs[key] = first_output(output)

                handles.append(layer_parts(layer)[kind].register_forward_hook(post))
        yield outs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def attention_calls(adapter: Adapter, active: bool = True) -> Iterator[list[AttnCall]]:
    """Record each attention module call (when `active`): its input states (detached) and its other arguments, the
    cache and vrprobe's keyword arguments left out; hooks removed in `finally`."""
    calls: list[AttnCall] = []
    handles = []

    def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        skip = (*CACHE_KWARGS, HOOK_KWARG, PREFIX_KWARG, "use_cache", "hidden_states")
        hidden = args[0] if args else kwargs["hidden_states"]
        calls.append((hidden.detach(), tuple(args[1:]), {k: v for k, v in kwargs.items() if k not in skip}))

    try:
        if active:
            for layer in adapter.decoder_layers:
                handles.append(layer_parts(layer)["attn"].register_forward_pre_hook(pre, with_kwargs=True))
        yield calls
    finally:
        for h in handles:
            h.remove()


class LinearisedSoftmax(AttentionIntervention):
    """For a call on rows [corrupted (N) | clean (N) | corrupted (N)]: replaces the probabilities with
    [A + J·Δs | A | A], A = softmax of the corrupted rows' scores s, Δs = clean scores − s, J the softmax Jacobian
    at s (J·Δs = A ⊙ (Δs − Σ_keys A·Δs), each row still sums to 1)."""

    def __init__(self, draws: int) -> None:
        self.draws = draws
        self.probs: torch.Tensor | None = None

    def on_logits(self, logits: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        n = self.draws
        scores, clean = logits[:n].float(), logits[n : 2 * n].float()
        probs = torch.softmax(scores, -1)
        ds = torch.where(probs > 0, clean - scores, torch.zeros_like(scores))
        jvp = probs * (ds - (probs * ds).sum(-1, keepdim=True))
        self.probs = torch.cat([probs + jvp, probs, probs])
        return logits

    def on_probs(
        self, probs: torch.Tensor, mask: torch.Tensor, image_keys: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        if self.probs is None or self.probs.shape != probs.shape:
            raise UsageError("the linearised softmax needs every query row's scores (vrprobe's attention function)")
        return self.probs


@torch.no_grad()
def linear_attention_sums(
    adapter: Adapter,
    batch: Batch,
    clean: Sequence[AttnCall],
    corrupted: Sequence[AttnCall],
    grad: dict[tuple[str, int], torch.Tensor],
    masks: torch.Tensor,
    draws: int,
) -> list[torch.Tensor]:
    """Per layer, [G]: mean over draws of Σ_{t ∈ g} grad · (attention output change with the softmax linearised);
    see the module docstring. One call of each attention module on 3N rows (`LinearisedSoftmax`)."""
    L = adapter.num_layers
    ops = [LinearisedSoftmax(draws) for _ in range(L)]
    edits = [(Site("attn_probs", (i,), "all"), op) for i, op in enumerate(ops)]
    out = []
    with intervene(adapter, batch.groups, edits=edits):
        for i, layer in enumerate(adapter.decoder_layers):
            (x_clean, _, _), (x, args, kwargs) = clean[i], corrupted[i]
            rows = torch.cat([x, x_clean.expand_as(x), x])
            y = first_output(layer_parts(layer)["attn"](rows, *args, **kwargs)).float()
            n = draws
            delta = y[:n] - y[2 * n :] + y[n : 2 * n] - y[2 * n :]
            out.append(group_sums(grad[("attn", i)], delta, masks))
    return out


def compare(exact: torch.Tensor, estimate: torch.Tensor) -> dict[str, float]:
    """How well `estimate` ranks the cells of `exact` (same shape, e.g. `SampleTrace.effect` and
    `SampleAttribution.estimate`, [K, L, G]): `spearman`, Spearman's ρ over all cells (scipy; NaN when either grid
    is constant or holds NaN); `top3_recall`, the fraction of the exact grid's 3 largest cells (by signed value,
    ties broken by flat index) that are among the estimate's 3 largest (min(3, cells) when fewer cells)."""
    from scipy.stats import ConstantInputWarning, spearmanr

    if exact.shape != estimate.shape:
        raise UsageError(f"grids of different shapes: {tuple(exact.shape)} and {tuple(estimate.shape)}")
    x, y = exact.detach().flatten().double().cpu(), estimate.detach().flatten().double().cpu()
    if x.numel() < 2:
        raise UsageError("comparing grids needs at least 2 cells")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = float(spearmanr(x.numpy(), y.numpy()).statistic)
    k = min(3, x.numel())

    def top(v: torch.Tensor) -> set[int]:
        return set(torch.argsort(v, descending=True, stable=True)[:k].tolist())

    return {"spearman": rho if math.isfinite(rho) else float("nan"), "top3_recall": len(top(x) & top(y)) / k}


@dataclass
class DatasetAttribution:
    """Per-sample attributions, the dataset mean estimate per (kind, layer, group), and σ."""

    attributions: list[SampleAttribution]
    sigma: float
    cfg: TraceConfig
    grid: list[dict[str, Any]] = field(default_factory=list)


def mean_estimates(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean `estimate` and `estimate_linear` over samples per (kind, layer, group) (`mean_grid` over those columns)."""
    return mean_grid(rows, ("estimate", "estimate_linear"))


def attribute_dataset(
    adapter: Adapter,
    samples: Sequence[Sample],
    cfg: TraceConfig,
    *,
    sigma: float | None = None,
    calibration: Sequence[Sample] | None = None,
    progress: Progress | None = None,
    stage: str = "attribute",
    done: Collection[str] = (),
    on_attribution: Callable[[int, SampleAttribution], None] | None = None,
    linear: bool = True,
) -> DatasetAttribution:
    """`trace_dataset`'s counterpart: attribute every sample (σ from `measure_sigma` on `calibration`, default the
    samples, unless given; noise draws by sample index, as the trace's), skipping ids in `done`;
    `on_attribution(index, attribution)` is called as each finishes."""
    if sigma is None:
        sigma = measure_sigma(adapter, calibration or samples)
    attributor = Attributor(adapter, sigma, cfg, linear=linear)
    out = each_sample(samples, attributor.attribute, progress, stage, done, on_attribution)
    grid = mean_estimates([row for a in out for row in a.rows()])
    return DatasetAttribution(attributions=out, sigma=sigma, cfg=cfg, grid=grid)
