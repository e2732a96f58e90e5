"""Logit-lens signals: how early, across the decoder's layers, the answer locks in, and its final lens margin.

The **lens** reads each decoder layer's output at the answer (last prompt) position — `hidden_last` [L, D] of the clean
`score_batch(..., hidden=True)` record, each layer's output before the final norm — through the model's own head
(`Adapter.head`: the decoder's final norm, the unembedding `get_output_embeddings()`, the family's logit soft-capping):
lens logits [L, V]. At the last layer they are the model's real next-token logits.

Answers scored under the lens at every layer:
- closed set (samples with `choices`): each candidate by the logit of its **first** answer token (`Adapter.answer_ids`:
  the candidate as it follows the prompt, after the family's `answer_sep`); candidates that share a first token are
  one answer (the lens cannot tell them apart). The final answer is the first token of the record's `predicted`
  candidate. First token only, because the answer position predicts only the first token: a later token's lens needs
  the hidden states at the answer's own positions, i.e. a forward per candidate set, where this signal reuses the
  clean forward (forwards = 0).
- open-ended: the whole vocabulary; the final answer is the lens's top-1 at the last layer, which is the greedy first
  token (the last layer's lens logits are the model's logits).

Columns (`vrprobe.metrics.lens` has the definitions): `lens_lock_layer` (0-based; L when the final answer is not the
last layer's top-1, i.e. never locks), `lens_lock_depth` (lock / L), `lens_margin` (last layer, top-1 minus top-2
answer, in logits). NaN for a closed-set sample whose candidates have fewer than two distinct first tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet, check_paired
from vrprobe.data import Sample
from vrprobe.errors import VrprobeError
from vrprobe.metrics.lens import lock_depth, lock_layer, margin
from vrprobe.models import Adapter

_LENS = (
    "each decoder layer's output at the answer position through the final norm and the unembedding (logit lens); "
    "answers: the candidates' first tokens (closed set) or the vocabulary (open-ended)"
)
SIGNALS = (
    Signal(
        name="logit-lens lock layer",
        column="lens_lock_layer",
        definition=f"{_LENS}; the first layer (0-based) from which the final answer is the lens's top-1 at it and at "
        "every later layer; L (the number of layers) when it never locks. Early locking = more reliable",
        higher_is_reliable=False,
        granularity="layer",
    ),
    Signal(
        name="logit-lens lock depth",
        column="lens_lock_depth",
        definition=f"{_LENS}; the lock layer / L, in [0, 1] (1 = never locks): the lock layer comparable across "
        "models of different depths",
        higher_is_reliable=False,
        granularity="layer",
    ),
    Signal(
        name="logit-lens margin",
        column="lens_margin",
        definition=f"{_LENS}; at the last layer, top-1 minus top-2 answer logit (= the difference of their "
        "log-probabilities, nats)",
        higher_is_reliable=True,
        granularity="layer",
    ),
)
COLUMNS = tuple(s.column for s in SIGNALS)


@torch.no_grad()
def lens_logits(adapter: Adapter, hidden: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Lens logits [L, V] (float32) of one sample: `adapter.head` applied to each layer's output `hidden` [L, D]
    (cast to the model's dtype, as the model's own head receives it)."""
    weight = adapter.model.get_output_embeddings().weight
    states = torch.as_tensor(hidden).to(weight.device, weight.dtype)
    return adapter.head(states).float().cpu()


def candidate_tokens(adapter: Adapter, choices: Sequence[str]) -> list[int]:
    """The distinct first answer tokens of `choices`, in the order of first appearance (a candidate with no tokens,
    e.g. an empty string, has none)."""
    firsts = (adapter.answer_ids(c) for c in choices)
    return list(dict.fromkeys(ids[0] for ids in firsts if ids))


def lens_answers(adapter: Adapter, sample: Sample, record: dict[str, Any]) -> tuple[torch.Tensor, int] | None:
    """The lens scores [L, K] of a sample's answers and the index of its final answer among them (see the module
    docstring), or None for a closed-set sample with fewer than two distinct first tokens."""
    if "hidden_last" not in record:
        raise VrprobeError(f"sample {sample.id}: the logit lens needs the records of score_batch(..., hidden=True)")
    logits = lens_logits(adapter, record["hidden_last"])
    if not sample.choices:
        return logits, int(logits[-1].argmax())
    ids = candidate_tokens(adapter, sample.choices)
    predicted = adapter.answer_ids(record["predicted"])
    if len(ids) < 2 or not predicted:
        return None
    return logits[:, ids], ids.index(predicted[0])


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions | None = None,
    train: TrainSet | None = None,
) -> list[dict[str, float]]:
    """`lens_lock_layer`, `lens_lock_depth` and `lens_margin` of each sample, from its clean record's `hidden_last`
    (no forward of its own; `options` and `train` are not used)."""
    check_paired(samples, records)
    rows = []
    for sample, record in zip(samples, records, strict=True):
        answers = lens_answers(adapter, sample, record)
        if answers is None:
            rows.append(dict.fromkeys(COLUMNS, float("nan")))
            continue
        scores, final = answers
        lock = lock_layer(scores.argmax(-1).numpy(), final)
        rows.append(
            {
                "lens_lock_layer": float(lock),
                "lens_lock_depth": lock_depth(lock, scores.shape[0]),
                "lens_margin": float(margin(scores[-1].double().numpy())),
            }
        )
    return rows
