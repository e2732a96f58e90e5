"""Closed-set evaluation: prediction, confidence and correctness for every sample of a dataset.

Definitions (also written into every `summary.json`):
- **confidence** (probability): softmax, over the sample's candidate answers, of each candidate's full token-sequence
  log-likelihood given the prompt, taken at the predicted (argmax) candidate.
- **correct** (0/1): the predicted candidate equals one of the sample's reference answers (case-insensitive).
- **accuracy**: mean of `correct`; `accuracy_by_type`: the same within each question type.
- **margin** (nats): top-1 − top-2 log-probability over the candidate answers (closed set).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from vrprobe.checks import finite_logits
from vrprobe.data import Sample
from vrprobe.errors import VrprobeError
from vrprobe.interventions import Site, intervene
from vrprobe.interventions.hooks import Edit
from vrprobe.metrics.sharpness import image_attention_entropy, normalised_entropy
from vrprobe.models import Adapter, Batch, TokenGroups
from vrprobe.models.base import Generated
from vrprobe.scoring.grounding import DEFINITIONS as GROUNDING_DEFINITIONS
from vrprobe.scoring.grounding import grounding_records

DEFINITIONS = {
    "confidence": "softmax over the candidate answers of each candidate's summed token log-likelihood given the "
    "prompt, at the predicted (argmax) candidate; a probability in [0, 1]",
    "correct": "1 if the predicted candidate equals a reference answer (case-insensitive), else 0; for VQA "
    "(open-ended) samples, 1 if the VQA accuracy is at least 0.5 (the binarisation used for calibration)",
    "confidence (open-ended)": "probability of the greedy answer sequence: product of its token probabilities (EOS "
    "excluded); first_token_prob and mean_logprob (nats) are kept too",
    "accuracy": "mean over samples of each sample's accuracy: correct (closed set) or the official VQA accuracy "
    "min(1, matches among the other 9 human answers / 3), averaged over the 10 leave-one-out subsets",
    "accuracy_by_type": "the same mean within each question type",
    "answer position": "the last prompt position, whose output is the (first) answer token; sharpness is read there",
    "sharpness": "entropy (nats) of the answer (last) position's attention over the image tokens, renormalised over "
    "them, averaged over heads and then layers; lower = sharper",
    "sharpness_norm": "sharpness / log(#image tokens), in [0, 1]",
    "entropy_by_layer / entropy_by_head": "the same entropy per layer (mean over heads) and per layer and head",
    "margin": "top-1 minus top-2 log-probability over the candidate answers (nats; closed set only)",
    **GROUNDING_DEFINITIONS,
}


def is_correct(predicted: str, answers: Sequence[str]) -> float:
    """1.0 when `predicted` equals one of `answers` ignoring case and surrounding space, else 0.0."""
    p = predicted.strip().lower()
    return float(any(p == a.strip().lower() for a in answers))


@torch.no_grad()
def score_batch(
    adapter: Adapter,
    samples: Sequence[Sample],
    batch: Batch | None = None,
    *,
    edits: Sequence[Edit] = (),
    seed: int = 0,
    max_new_tokens: int = 10,
    hidden: bool = False,
) -> list[dict[str, Any]]:
    """Encode (unless `batch` is given) and answer samples, optionally under interventions `edits`; returns records.

    Closed set (samples with `choices`): candidate scoring. Open-ended (no choices): greedy generation. The prompt
    forward that gives the answer also records the answer position's attention at every layer (the last prompt
    position, whose output is the first generated token), so sharpness costs no second pass. NaN or inf in the
    logits (a broken checkpoint, an overflow) raises `VrprobeError` naming the sample instead of scoring it. Runs
    without autograd: at 7B a forward that kept its graph held every layer's activations (an OOM on 24 GiB).

    `hidden=True` also returns, from the same forward, every layer's output at the answer position (`hidden_last`)
    and averaged over the image tokens (`hidden_image_mean`), float32 numpy arrays [L, D] (the probes' features).
    """
    closed = [bool(s.choices) for s in samples]
    if any(closed) and not all(closed):
        raise VrprobeError("a batch mixes closed-set and open-ended samples")
    if batch is None:
        batch = adapter.encode_samples(samples)
    ids = [s.id for s in samples]
    attn_site = Site("attn_probs", tuple(range(adapter.num_layers)), "last")
    record = [attn_site] if adapter.records_attention else []
    resid_site = Site("resid", tuple(range(adapter.num_layers)), "all")
    if hidden:
        record.append(resid_site)
    with intervene(adapter, batch.groups, edits=edits, record=record, seed=seed) as rec:
        if all(closed):
            last_logits = adapter.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1]
            finite_logits(last_logits, ids, model=adapter.name)
        else:
            generated = adapter.generate(batch, max_new_tokens)
    if all(closed):

        def context(groups: TokenGroups) -> AbstractContextManager[Any]:
            return intervene(adapter, groups, edits=edits, seed=seed)

        loglik = adapter.score_candidates(
            batch, [s.choices or () for s in samples], last_logits=last_logits, context=context if edits else None
        )
        padded = torch.nn.utils.rnn.pad_sequence([ll.detach().cpu() for ll in loglik], batch_first=True)
        finite_logits(padded, ids, model=adapter.name, what="answer log-likelihoods")
        records = [closed_record(s, ll) for s, ll in zip(samples, loglik, strict=True)]
    else:
        steps = [[*g.logprobs, *([] if g.stop_logprob is None else [g.stop_logprob])] for g in generated]
        width = max(map(len, steps), default=0)
        padded = torch.tensor([row + [0.0] * (width - len(row)) for row in steps])
        finite_logits(padded, ids, model=adapter.name, what="answer log-probabilities")
        records = [open_record(s, g) for s, g in zip(samples, generated, strict=True)]
    if hidden:
        layers = rec.layers(resid_site)  # [B, T, D] per layer as the forward returned it: no [L, B, T, D] copy
        image = batch.groups.image.to(layers[0].device)
        count = image.sum(1).clamp_min(1)[:, None]
        last = torch.stack([x[:, -1].float() for x in layers])  # [L, B, D]
        image_mean = torch.stack([(x.float() * image[:, :, None]).sum(1) / count for x in layers])  # [L, B, D]
        for i, r in enumerate(records):
            r["hidden_last"] = last[:, i].cpu().numpy()
            r["hidden_image_mean"] = image_mean[:, i].cpu().numpy()
    if adapter.records_attention:
        attention = rec.stacked(attn_site)  # [L, B, H, S]: the answer position's row at every layer
        for r, grounding in zip(records, grounding_records(adapter, samples, batch, attention), strict=True):
            r.update(grounding)  # image_size, image_grid, attention_image; the grounded metrics where boxes exist
        entropy = image_attention_entropy(attention, batch.groups.image)  # [L, B, H]
        n_image = batch.groups.image.sum(1)
        for i, r in enumerate(records):
            by_layer = entropy[:, i].mean(-1)
            r["sharpness"] = float(by_layer.mean())
            r["sharpness_norm"] = float(normalised_entropy(by_layer.mean(), int(n_image[i])))
            r["entropy_by_layer"] = [float(x) for x in by_layer]
            r["entropy_by_head"] = entropy[:, i].tolist()
    return records


def _base(s: Sample) -> dict[str, Any]:
    return {"sample_id": s.id, "question": s.question, "question_type": s.question_type, "answers": list(s.answers)}


def closed_record(s: Sample, loglik: torch.Tensor) -> dict[str, Any]:
    """Prediction = argmax candidate; confidence = its softmax probability over the candidates; margin = top-1 −
    top-2 log-probability over the candidates (nats; NaN for a single candidate)."""
    if not s.choices:
        raise VrprobeError(f"sample {s.id} has no candidate answers to score")
    probs = torch.softmax(loglik.double(), dim=0)
    k = int(torch.argmax(probs))
    correct = is_correct(s.choices[k], s.answers)
    top = torch.topk(torch.log_softmax(loglik.double(), 0), min(2, len(probs))).values
    return {
        **_base(s),
        "predicted": s.choices[k],
        "confidence": float(probs[k]),
        "margin": float(top[0] - top[1]) if len(top) == 2 else float("nan"),
        "correct": correct,
        "accuracy": correct,
        "choices": list(s.choices),
        "probs": [float(p) for p in probs],
    }


def open_record(s: Sample, g: Generated) -> dict[str, Any]:
    """Prediction = the greedy answer; confidence = its sequence probability; VQA samples (`meta["metric"] == "vqa"`)
    score the official VQA accuracy and binarise it (≥ 0.5) as `correct` for calibration."""
    if s.meta.get("metric") == "vqa":
        from vrprobe.data.answers import binary_correct, vqa_accuracy

        acc = vqa_accuracy(g.text, s.answers)
        correct = binary_correct(acc)
    else:
        acc = correct = is_correct(g.text, s.answers)
    return {
        **_base(s),
        "predicted": g.text,
        "confidence": g.confidence,
        "correct": correct,
        "accuracy": acc,
        "first_token_prob": g.first_token_prob,
        "mean_logprob": g.mean_logprob,
    }


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`n`, `accuracy` and `accuracy_by_type` of a list of records."""
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_type[r["question_type"]].append(r.get("accuracy", r["correct"]))
    n = len(records)
    return {
        "n": n,
        "accuracy": sum(r.get("accuracy", r["correct"]) for r in records) / n if n else float("nan"),
        "accuracy_by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
    }
