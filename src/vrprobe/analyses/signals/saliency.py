"""Gradient saliency on the image-token grid: input × gradient and Grad-CAM, both from one backward pass.

**Target**, log p (nats): the log-probability of the sample's predicted answer.
- closed set (`choices`): log p_k = ℓ_k − log Σ_c exp ℓ_c, the predicted candidate's log-likelihood normalised over
  the candidates, where ℓ_c is candidate c's summed token log-likelihood given the prompt (as
  `Adapter.score_candidates` scores it) and k the predicted candidate (the record's `predicted`, else the argmax):
  the log of `closed_record`'s confidence;
- open-ended: the greedy answer's log-probability Σ_t log p(y_t | prompt, y_<t) (EOS excluded; an empty answer:
  log p(EOS | prompt)): the log of `open_record`'s confidence.

**Input × gradient** (one value per image token i, in image-token order = `attention_image`'s cells): x_i ∈ R^D is the
language model's input embedding at image token i (`inputs_embeds` after the projector: what the decoder receives),
g_i = ∂ log p / ∂x_i, and ixg_i = Σ_d x_{i,d} g_{i,d} (signed, nats: the first-order change of log p when token i's
embedding is scaled by 1 + ε is ε · ixg_i). The map used for the signals is |ixg_i| (evidence of either sign counts).

**Grad-CAM**: A ∈ R^{P×C} is the vision feature map that feeds the projector (the projector's input: LLaVA the chosen
vision layer's patch states, CLS dropped as the model drops it; PaliGemma SigLIP's last hidden state; Qwen2-VL the last
vision block's output before the patch merger), G = ∂ log p / ∂A; α_c = (1/P) Σ_p G_{p,c}; cam_p = ReLU(Σ_c α_c A_{p,c})
per patch; an image token's value is the sum of cam over the patches it is made of (one patch per token, or Qwen2-VL's
merge² consecutive patches, one 2×2 block). A model whose feature map does not map onto its image tokens so (tiled or
pixel-shuffled features) gets NaN Grad-CAM columns and a warning.

Both are gradients: local, linear read-outs of the model at its input, not interventions (causal False). The model is
not changed: it stays in eval mode, no parameter's `requires_grad` or `.grad` is touched (gradients are taken with
`torch.autograd.grad` on the captured feature map, made a leaf of its own, and on the input embeddings), and the two
forward pre-hooks that capture them live in a `with` block and are removed in `finally`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet
from vrprobe.data import Sample
from vrprobe.errors import VrprobeError
from vrprobe.metrics.grounding import attention_on_target, target_weights
from vrprobe.metrics.maps import spatial_entropy
from vrprobe.models import Adapter, Batch

#: samples per gradient forward in `compute` (the forward keeps its whole graph for the backward)
BATCH = 8
#: an answer to explain: a candidate index (closed set), the answer's token ids (open-ended), or None (the prediction)
Answer = int | tuple[int, ...] | None

_SHARP = "entropy (nats) of the map normalised to sum 1 over the image tokens (all zero: uniform, log N); "
_SHARP += "lower = sharper"
_ON = "Σ_i p_i w_i, p the map normalised to sum 1 over the image tokens, w_i the fraction of token i's cell inside the "
_ON += "target boxes (as attention_on_target); in [0, 1]; NaN without boxes"
_IXG = "input × gradient map |Σ_d x_{i,d} ∂log p/∂x_{i,d}| over the image tokens' input embeddings x_i"
_CAM = "Grad-CAM map ReLU(Σ_c α_c A_{p,c}), α = patch-mean of ∂log p/∂A, A the feature map feeding the projector, "
_CAM += "summed over each image token's patches"
_TARGET = " (log p: the predicted answer's log-probability, over the candidates in a closed set; gradients are local "
_TARGET += "and linear, not interventions)"
#: one grad-enabled forward and one backward give all four (forwards: closed set, single-token candidates)
SIGNALS = (
    Signal("input×gradient sharpness", "ixg_sharpness", f"{_SHARP}; map: {_IXG}{_TARGET}", False, forwards=1.0,
           backwards=1.0, granularity="token"),
    Signal("input×gradient on target", "ixg_on_target", f"{_ON}; map: {_IXG}{_TARGET}", True, forwards=1.0,
           backwards=1.0, granularity="token", requires=("boxes",)),
    Signal("Grad-CAM sharpness", "gradcam_sharpness", f"{_SHARP}; map: {_CAM}{_TARGET}", False, forwards=1.0,
           backwards=1.0, granularity="patch"),
    Signal("Grad-CAM on target", "gradcam_on_target", f"{_ON}; map: {_CAM}{_TARGET}", True, forwards=1.0,
           backwards=1.0, granularity="patch", requires=("boxes",)),
)  # fmt: skip


def vision_projector(adapter: Adapter) -> torch.nn.Module | None:
    """The module the vision feature map enters: the base model's multimodal projector (LLaVA, PaliGemma and most
    families) or the patch merger of the vision tower (`get_encoder(modality="image")`: Qwen2-VL and its successors);
    None when the model has neither."""
    model = adapter.model
    tower = model.get_encoder(modality="image")
    for found in (getattr(model.base_model, "multi_modal_projector", None), getattr(tower, "merger", None)):
        if isinstance(found, torch.nn.Module):
            return found
    return None


@dataclass
class _Captured:
    """Per forward, in order: the decoder's input embeddings [B, T, D] and the projector's input (a leaf)."""

    embeds: list[torch.Tensor] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)


@contextmanager
def _capture(adapter: Adapter) -> Iterator[_Captured]:
    """Forward pre-hooks on the decoder (records `inputs_embeds`) and on the projector (replaces its input by a leaf
    copy that requires grad, so that its gradient is taken without any parameter's), in the forwards run with
    gradients enabled; removed in `finally`."""
    cap = _Captured()
    projector = vision_projector(adapter)

    def on_decoder(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not torch.is_grad_enabled():  # a forward of no interest here (the greedy generation of an answer)
            return args, kwargs
        x = kwargs.get("inputs_embeds")
        if x is None:
            raise VrprobeError(f"{adapter.name}: its decoder received no inputs_embeds, so no image-token gradients")
        if not x.requires_grad:  # a frozen model with no projector found
            x = x.detach().requires_grad_(True)
            kwargs = {**kwargs, "inputs_embeds": x}
        cap.embeds.append(x)
        return args, kwargs

    def on_projector(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not args or not torch.is_grad_enabled():
            return args, kwargs
        a = args[0].detach().requires_grad_(True)
        cap.features.append(a)
        return (a, *args[1:]), kwargs

    handles = []
    try:
        handles.append(adapter.model.get_decoder().register_forward_pre_hook(on_decoder, with_kwargs=True))
        if projector is not None:
            handles.append(projector.register_forward_pre_hook(on_projector, with_kwargs=True))
        yield cap
    finally:
        for h in handles:
            h.remove()


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax over the vocabulary in float32 or wider (float64 stays float64)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)


#: one forward of the target: the image-token mask of its batch [B, T] and the sample each of its rows belongs to
_Forward = tuple[torch.Tensor, list[int]]


def _closed(
    adapter: Adapter, samples: Sequence[Sample], batch: Batch, answers: Sequence[Answer]
) -> tuple[torch.Tensor, list[Answer], list[_Forward]]:
    """log p_k of each closed-set sample (see the module docstring): the prompt forward for every candidate's first
    token, then, per sample with multi-token candidates, one forward of those candidates without their last token
    (as `Adapter.score_candidates` runs them)."""
    forwards: list[_Forward] = [(batch.groups.image, list(range(len(samples))))]
    logp = _log_softmax(adapter.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1])
    out: list[torch.Tensor] = []
    chosen: list[Answer] = []
    for i, (s, item) in enumerate(zip(samples, batch.items, strict=True)):
        rows = [adapter.answer_ids(c) for c in s.choices or ()]
        scores = logp[i, [ids[0] for ids in rows]]
        multi = [c for c, ids in enumerate(rows) if len(ids) > 1]
        if multi:
            sub = adapter.collate([adapter.extend(item, rows[c][:-1]) for c in multi])
            keep = max(len(rows[c]) for c in multi) - 1
            later = _log_softmax(adapter.forward(sub, use_cache=False, logits_to_keep=keep).logits)
            forwards.append((sub.groups.image, [i] * len(multi)))
            extra = [torch.zeros((), dtype=scores.dtype, device=scores.device)] * len(rows)
            for j, c in enumerate(multi):
                ids = rows[c]
                extra[c] = later[j, torch.arange(keep - len(ids) + 1, keep), torch.tensor(ids[1:])].sum()
            scores = scores + torch.stack(extra)
        given = answers[i]
        if given is not None and not isinstance(given, int):
            raise VrprobeError(f"sample {s.id}: a closed-set answer is a candidate index, got {given!r}")
        k = int(torch.argmax(scores.detach())) if given is None else given
        out.append(scores.log_softmax(0)[k])
        chosen.append(k)
    return torch.stack(out), chosen, forwards


def _open(
    adapter: Adapter, batch: Batch, answers: Sequence[Answer]
) -> tuple[torch.Tensor, list[Answer], list[_Forward]]:
    """Σ_t log p(y_t | prompt, y_<t) of each open-ended sample's answer y (the greedy one when not given; an empty
    answer scores EOS), from one forward of prompt + y without its last token."""
    if any(a is None for a in answers):
        with torch.no_grad():
            greedy = adapter.generate(batch)
        answers = [tuple(g.ids) if a is None else a for a, g in zip(answers, greedy, strict=True)]
    if not all(isinstance(a, tuple) for a in answers):
        raise VrprobeError(f"an open-ended answer is a tuple of token ids, got {list(answers)!r:.80}")
    targets = [list(a) or [adapter.eos_token_id] for a in answers if isinstance(a, tuple)]
    full = adapter.collate([adapter.extend(item, t[:-1]) for item, t in zip(batch.items, targets, strict=True)])
    keep = max(map(len, targets))
    logp = _log_softmax(adapter.forward(full, use_cache=False, logits_to_keep=keep).logits)
    out = [logp[i, torch.arange(keep - len(t), keep), torch.tensor(t)].sum() for i, t in enumerate(targets)]
    return torch.stack(out), list(answers), [(full.groups.image, list(range(len(targets))))]


def answer_logprob(
    adapter: Adapter, samples: Sequence[Sample], batch: Batch | None = None, *, answers: Sequence[Answer] | None = None
) -> tuple[torch.Tensor, list[Answer]]:
    """The saliency target log p (nats, see the module docstring) of each sample, [B], and the answers it explains
    (candidate indices, or token-id tuples for open-ended samples). `answers` fixes them (None entries: the model's
    prediction). Differentiable when run with gradients enabled; a batch mixing closed-set and open-ended samples
    is a `VrprobeError`."""
    logp, chosen, _ = _target(adapter, samples, batch, answers)
    return logp, chosen


def _target(
    adapter: Adapter, samples: Sequence[Sample], batch: Batch | None, answers: Sequence[Answer] | None
) -> tuple[torch.Tensor, list[Answer], list[_Forward]]:
    closed = [bool(s.choices) for s in samples]
    if any(closed) and not all(closed):
        raise VrprobeError("a batch mixes closed-set and open-ended samples")
    batch = adapter.encode_samples(samples) if batch is None else batch
    answers = [None] * len(samples) if answers is None else list(answers)
    return _closed(adapter, samples, batch, answers) if all(closed) else _open(adapter, batch, answers)


def _merge(adapter: Adapter, rows: int, tokens: int) -> int | None:
    """Feature-map rows per image token: 1 (a patch per token), or merge² when the vision config merges
    `spatial_merge_size`² consecutive patches into a token (Qwen2-VL); None for any other ratio."""
    k, rest = divmod(rows, max(tokens, 1))
    merge = getattr(getattr(adapter.model.config, "vision_config", None), "spatial_merge_size", None)
    return k if rest == 0 and (k == 1 or (merge is not None and k == int(merge) ** 2)) else None


def _rows(
    state: torch.Tensor, grad: torch.Tensor, image: torch.Tensor, k: int | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(state, gradient) of each batch row's image: the image positions of [B, T, D] embeddings (`k` None), or the
    row's block of `k` × its image-token count consecutive feature rows ([..., C] flattened to rows in image order)."""
    image = image.to(state.device)
    if k is None:
        return [(state[j, image[j]], grad[j, image[j]]) for j in range(len(image))]
    sizes = [int(c) * k for c in image.sum(1).tolist()]
    return list(zip(state.flatten(0, -2).split(sizes), grad.flatten(0, -2).split(sizes), strict=True))


def _gather(
    states: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], forwards: Sequence[_Forward], n: int, k: int | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sample: its image's state (from the first forward holding it) and the sum of its gradients over every
    forward and row that holds it (the chain rule: log p depends on the same image through each of them), float64."""
    out: list[Any] = [None] * n
    for state, grad, (image, samples) in zip(states, grads, forwards, strict=True):
        for i, (x, g) in zip(samples, _rows(state.detach(), grad, image, k), strict=True):
            out[i] = (x, g) if out[i] is None else (out[i][0], out[i][1] + g)
    return [(x.to(torch.float64), g.to(torch.float64)) for x, g in out]


def saliency_maps(
    adapter: Adapter,
    samples: Sequence[Sample],
    batch: Batch | None = None,
    *,
    answers: Sequence[Answer] | None = None,
    gradients: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Each sample's saliency maps over its N image tokens (image-token order = `attention_image`'s cells), float64:
    `ixg` [N] (signed input × gradient, nats), `gradcam` [N] (≥ 0; NaN when the feature map does not map onto the
    tokens), `gradcam_patch` [P] (cam per feature-map row; empty then) and `logp` [] (the target, nats). With
    `gradients=True` also `embeds` / `embeds_grad` [N, D] (x and ∂log p/∂x) and `features` / `features_grad` [P, C]
    (A and ∂log p/∂A). `answers` fixes what is explained (see `answer_logprob`). Costs one grad-enabled forward of
    the batch (plus, per sample with multi-token candidates, one of those candidates; open-ended answers not given
    are generated first) and one backward for the whole batch."""
    batch = adapter.encode_samples(samples) if batch is None else batch
    with torch.enable_grad(), _capture(adapter) as cap:
        logp, _, forwards = _target(adapter, samples, batch, answers)
    n, m = len(samples), len(forwards)
    k = None
    if len(cap.features) == m:
        k = _merge(adapter, cap.features[0].flatten(0, -2).shape[0], int(forwards[0][0].sum()))
    if k is None:
        message = f"{adapter.name}: no vision feature map that maps onto the image tokens: Grad-CAM is NaN"
        warnings.warn(message, stacklevel=2)
    wrt = [*cap.embeds, *(cap.features if k is not None else [])]
    # the samples are independent rows: one backward of the sum gives each sample its own gradients
    grads = torch.autograd.grad(logp.sum(), wrt, allow_unused=True)
    grads = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads, strict=True))
    embeds = _gather(cap.embeds, grads[:m], forwards, n, None)
    features = _gather(cap.features, grads[m:], forwards, n, k) if k is not None else []
    out = []
    for i in range(n):
        x, g = embeds[i]
        maps = {"ixg": (x * g).sum(-1).cpu().numpy(), "logp": np.asarray(float(logp[i].detach()))}
        if gradients:
            maps |= {"embeds": x.cpu().numpy(), "embeds_grad": g.cpu().numpy()}
        if k is None:
            maps |= {"gradcam": np.full(len(x), np.nan), "gradcam_patch": np.zeros(0)}
        else:
            a, ga = features[i]
            cam = torch.relu(a @ ga.mean(0))
            maps |= {"gradcam_patch": cam.cpu().numpy(), "gradcam": cam.reshape(-1, k).sum(1).cpu().numpy()}
            if gradients:
                maps |= {"features": a.cpu().numpy(), "features_grad": ga.cpu().numpy()}
        out.append(maps)
    return out


def _sharpness(values: np.ndarray) -> float:
    """`spatial_entropy` of a map over its N image tokens (nats, of |values| normalised to sum 1; all zero: log N);
    the cells' layout does not enter the entropy, so they are taken as one row. NaN for a map with a NaN value."""
    return spatial_entropy(values, (1, len(values))) if np.isfinite(values).all() else float("nan")


def _chunks(samples: Sequence[Sample]) -> Iterator[range]:
    """Index ranges of at most `BATCH` consecutive samples of one kind (closed set or open-ended)."""
    start = 0
    while start < len(samples):
        end = start + 1
        while end < len(samples) and end - start < BATCH and bool(samples[end].choices) == bool(samples[start].choices):
            end += 1
        yield range(start, end)
        start = end


def _given(sample: Sample, record: dict[str, Any]) -> Answer:
    """The record's predicted candidate index (closed set), else None (the prediction is recomputed)."""
    predicted = record.get("predicted")
    return sample.choices.index(predicted) if sample.choices and predicted in sample.choices else None


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet | None = None,
) -> list[dict[str, float]]:
    """Every sample's `SIGNALS` columns (see the module docstring and each `Signal.definition`): the entropy of the
    |ixg| and Grad-CAM maps and, with target boxes, their mass on the target (NaN without boxes, or when the model's
    image-token regions are unknown). A closed-set sample explains its record's predicted candidate."""
    out: list[dict[str, float]] = []
    for idx in _chunks(samples):
        chunk = [samples[i] for i in idx]
        batch = adapter.encode_samples(chunk)
        given = [_given(samples[i], records[i]) for i in idx]
        for s, item, maps in zip(chunk, batch.items, saliency_maps(adapter, chunk, batch, answers=given), strict=True):
            ixg, cam = np.abs(maps["ixg"]), maps["gradcam"]
            row = {"ixg_sharpness": _sharpness(ixg), "gradcam_sharpness": _sharpness(cam)}
            row |= {"ixg_on_target": float("nan"), "gradcam_on_target": float("nan")}
            if s.boxes:
                try:
                    cells = adapter.image_geometry(item).cells
                except VrprobeError as exc:
                    warnings.warn(f"{adapter.name}: no image regions, so no on-target saliency: {exc}", stacklevel=2)
                    cells = None
                if cells is not None and len(cells) == len(ixg):
                    w = target_weights(cells, s.boxes)
                    row["ixg_on_target"] = float(attention_on_target(ixg, w))
                    if np.isfinite(cam).all():
                        row["gradcam_on_target"] = float(attention_on_target(cam, w))
            out.append(row)
    return out
