"""Uncertainty baselines as practitioners know them (lm-polygraph): sequence probability, token entropy, P(True).

The **answer** is the clean record's `predicted`: the predicted candidate (closed set) or the greedy answer
(open-ended), as the tokens `Adapter.answer_ids` gives it after the prompt (y_1..y_n). Its **distributions**: the
full-vocabulary next-token log-softmax at each answer position t, log p(· | prompt, y_<t) (`answer_distributions`):

- t = 1 is read off the clean forward (no new pass): the last decoder layer's output at the answer position, the
  record's `hidden_last[-1]` (`score_batch(..., hidden=True)`), through `Adapter.head` (final norm, unembedding,
  soft-capping) — the model's own next-token logits there;
- t ≥ 2 (answers of more than one token) from one teacher-forced forward of prompt + y_1..y_(n−1), batched.

Columns (definitions in `vrprobe.metrics.uncertainty`):
- `msp` — maximum sequence probability Π_t p(y_t | prompt, y_<t) = exp(Σ_t log p): the probability of the generated
  answer, *not* normalised over the candidates (that is `confidence`). Higher = more reliable. lm-polygraph's
  `MaximumSequenceProbability` is −log msp (an uncertainty).
- `token_entropy` — mean over the answer's tokens of the entropy (nats) of the full-vocabulary next-token distribution
  (lm-polygraph's `MeanTokenEntropy`). Higher = less reliable.
- `p_true` — P(True) (Kadavath et al. 2022): the model is asked, with the image and through its own prompt
  (`Adapter.prompt`), "Question: {question}\\nProposed answer: {predicted}\\nIs the proposed answer true or false?";
  P(True) = p(true) / (p(true) + p(false)) over its next token, where p(true) sums the distinct single tokens of
  "True" and "true" (as they follow the prompt, `Adapter.answer_ids`) and p(false) those of "False" and "false". A
  tokenizer with no such tokens (unknown words, or words of several tokens; the zoo's word-level tokenizer knows
  neither) falls back, with a warning, to "yes"/"no" ("Yes"/"yes" vs "No"/"no") and the last line "Is the proposed
  answer true?". NaN when neither pair exists.

Forwards per sample beyond the clean one: `msp` and `token_entropy` share one pass, and only for answers of more than
one token (0 on a closed set of one-token candidates, such as easy-VQA's); `Signal.forwards` states that general
cost, 1. `p_true`: 1 (the follow-up prompt).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet, check_paired
from vrprobe.data import Sample
from vrprobe.errors import VrprobeError
from vrprobe.metrics.uncertainty import mean_token_entropy, p_true, sequence_probability
from vrprobe.models import Adapter

#: samples per forward in `compute`
CHUNK = 16
#: the words P(True) reads, as (true variants, false variants, the follow-up prompt's last line); the second is the
#: fallback for tokenizers without single tokens for the first
TRUTH_WORDS = (
    (("True", "true"), ("False", "false"), "Is the proposed answer true or false?"),
    (("Yes", "yes"), ("No", "no"), "Is the proposed answer true?"),
)
_ANSWER = "the answer: the record's predicted candidate (closed set) or greedy answer (open-ended)"
SIGNALS = (
    Signal(
        name="maximum sequence probability",
        column="msp",
        definition=f"Π_t p(y_t | prompt, y_<t) over the answer's tokens y_t, {_ANSWER}; not normalised over the "
        "candidates (lm-polygraph's MaximumSequenceProbability is −log of it); one pass, shared with token_entropy, "
        "for answers of more than one token, none otherwise",
        higher_is_reliable=True,
        forwards=1.0,
    ),
    Signal(
        name="mean token entropy",
        column="token_entropy",
        definition=f"mean over the answer's tokens of the entropy (nats) of the full-vocabulary next-token "
        f"distribution at that token, {_ANSWER} (lm-polygraph's MeanTokenEntropy); one pass, shared with msp, for "
        "answers of more than one token, none otherwise",
        higher_is_reliable=False,
        forwards=1.0,
    ),
    Signal(
        name="P(True)",
        column="p_true",
        definition="p(true) / (p(true) + p(false)) over the next token after the follow-up prompt 'Question: q / "
        "Proposed answer: a / Is the proposed answer true or false?' with the image (Kadavath et al. 2022); "
        "yes/no when the tokenizer has no single-token true/false",
        higher_is_reliable=True,
        forwards=1.0,
    ),
)
COLUMNS = tuple(s.column for s in SIGNALS)


@dataclass(frozen=True)
class AnswerDistributions:
    """One sample's answer tokens `ids` [n] and the next-token log-softmax `log_probs` [n, V] (float32, CPU) at each
    of them: row t is log p(· | prompt, y_<t)."""

    ids: tuple[int, ...]
    log_probs: torch.Tensor

    @property
    def token_logprobs(self) -> torch.Tensor:
        """log p(y_t | prompt, y_<t) of each answer token, [n]."""
        return self.log_probs[torch.arange(len(self.ids)), torch.tensor(self.ids, dtype=torch.long)]


@torch.no_grad()
def answer_distributions(
    adapter: Adapter, samples: Sequence[Sample], records: Sequence[dict[str, Any]]
) -> list[AnswerDistributions]:
    """Each sample's answer tokens and next-token log-softmax at each of them (see the module docstring): the first
    from the record's `hidden_last[-1]` through `Adapter.head`, the later ones from one batched forward of prompt +
    all answer tokens but the last. An empty answer has n = 0 rows. Raises `VrprobeError` for records without
    `hidden_last` (`score_batch(..., hidden=True)` records are needed)."""
    answers = [tuple(adapter.answer_ids(str(r["predicted"]))) for r in records]
    weight = adapter.model.get_output_embeddings().weight
    rows: list[list[torch.Tensor]] = []
    for s, r, ids in zip(samples, records, answers, strict=True):
        if "hidden_last" not in r:
            raise VrprobeError(f"sample {s.id}: the baselines need the records of score_batch(..., hidden=True)")
        if not ids:
            rows.append([])
            continue
        last = torch.as_tensor(r["hidden_last"][-1]).to(weight.device, weight.dtype)
        rows.append([adapter.head(last[None]).float().log_softmax(-1).cpu()])
    multi = [i for i, ids in enumerate(answers) if len(ids) > 1]
    if multi:
        encoded = [adapter.encode_one(samples[i].load_image(), adapter.question_text(samples[i])) for i in multi]
        items = [adapter.extend(item, answers[i][:-1]) for item, i in zip(encoded, multi, strict=True)]
        keep = max(len(answers[i]) for i in multi) - 1  # the positions that predict the second and later tokens
        logits = adapter.forward(adapter.collate(items), use_cache=False, logits_to_keep=keep).logits
        later = logits.float().log_softmax(-1).cpu()
        for j, i in enumerate(multi):
            rows[i].append(later[j, keep - len(answers[i]) + 1 :])
    vocab = int(weight.shape[0])
    return [
        AnswerDistributions(ids, torch.cat(parts) if parts else torch.empty(0, vocab))
        for ids, parts in zip(answers, rows, strict=True)
    ]


def _single_tokens(adapter: Adapter, words: Sequence[str]) -> list[int]:
    """The distinct ids of `words` that are one known token each as they follow the prompt (`Adapter.answer_ids`)."""
    unk = getattr(adapter.tokenizer, "unk_token_id", None)
    found = (adapter.answer_ids(w) for w in words)
    return list(dict.fromkeys(ids[0] for ids in found if len(ids) == 1 and ids[0] != unk))


def truth_tokens(adapter: Adapter) -> tuple[list[int], list[int], str] | None:
    """The token ids P(True) reads as true and as false, and the follow-up prompt's last line: the first pair of
    `TRUTH_WORDS` with at least one single known token on each side and none shared between them; None when neither
    pair has them. Warns when it falls back from true/false to yes/no."""
    for rank, (true_words, false_words, line) in enumerate(TRUTH_WORDS):
        true_ids, false_ids = _single_tokens(adapter, true_words), _single_tokens(adapter, false_words)
        if true_ids and false_ids and not set(true_ids) & set(false_ids):
            if rank:
                warnings.warn(
                    f"{adapter.name}: its tokenizer has no single token for True/False; P(True) reads "
                    f"{'/'.join(true_words)} vs {'/'.join(false_words)} after '{line}'",
                    stacklevel=2,
                )
            return true_ids, false_ids, line
    return None


def follow_up(question: str, answer: str, line: str) -> str:
    """The P(True) follow-up question (the adapter's prompt wraps it, with the image)."""
    return f"Question: {question}\nProposed answer: {answer}\n{line}"


@torch.no_grad()
def p_true_values(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    words: tuple[list[int], list[int], str] | None,
) -> list[float]:
    """P(True) of each sample's predicted answer (`truth_tokens(adapter)` as `words`), one batched forward of the
    follow-up prompts with their images; NaN for every sample when `words` is None."""
    if words is None:
        return [float("nan")] * len(samples)
    true_ids, false_ids, line = words
    texts = [follow_up(s.question, str(r["predicted"]), line) for s, r in zip(samples, records, strict=True)]
    batch = adapter.encode([s.load_image() for s in samples], texts)
    logp = adapter.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1].float().log_softmax(-1).cpu()
    return [p_true(row[true_ids].tolist(), row[false_ids].tolist()) for row in logp]


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions | None = None,
    train: TrainSet | None = None,
) -> list[dict[str, float]]:
    """{`msp`, `token_entropy`, `p_true`} per sample (the contract of `vrprobe.analyses.signals.base`), `CHUNK`
    samples per forward; fits nothing and draws nothing (`options`, `train` unused)."""
    check_paired(samples, records)
    words = truth_tokens(adapter) if samples else None
    if samples and words is None:
        warnings.warn(f"{adapter.name}: no single tokens for True/False or Yes/No: P(True) is NaN", stacklevel=2)
    out = []
    for start in range(0, len(samples), CHUNK):
        chunk, recs = samples[start : start + CHUNK], records[start : start + CHUNK]
        for dist, pt in zip(
            answer_distributions(adapter, chunk, recs), p_true_values(adapter, chunk, recs, words), strict=True
        ):
            out.append(
                {
                    "msp": sequence_probability(dist.token_logprobs),
                    "token_entropy": mean_token_entropy(dist.log_probs),
                    "p_true": pt,
                }
            )
    return out
