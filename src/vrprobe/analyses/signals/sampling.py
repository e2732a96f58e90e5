"""Sampling signals: self-consistency, semantic entropy and EigenScore over N = `options.samples` sampled answers.

How a sample's N answers are drawn (seeded by `(options.seed, crc32(sample id))`, so a sample's answers do not depend
on the batch or the order it comes in; `sample_seed`):

- **closed set** (the sample has `choices`): exact sampling from the model's answer distribution, which is the
  clean record's `probs` (softmax over the candidates of each candidate's full-sequence log-likelihood). It is tempered
  at T = `options.temperature` (`p^(1/T)` renormalised, `vrprobe.metrics.sampling.temper`) and N candidates are drawn
  with replacement (`numpy.random.default_rng`). No forward. A drawn candidate's log-likelihood, for semantic
  entropy, is `log probs` (the model's distribution at T = 1).
- **open-ended**: N generations of at most `MAX_NEW_TOKENS` tokens, ancestral sampling from `softmax(logits / T)` over
  the whole vocabulary (top-k 0, top-p 1), stopping at the end-of-sequence token. The N copies of the prompt run as
  batches through `model.generate`, and the token is drawn by a logits processor from a CPU `torch.Generator`, not the
  global RNG. An answer's log-likelihood is the sum of its tokens' raw (T = 1) log-probabilities, EOS excluded (an
  empty answer: the log-probability of stopping at once), as in the clean record's open-ended confidence.

**Embeddings** (EigenScore, as INSIDE takes them): for each sampled answer, the residual stream after `L // 2` of the
L decoder layers (`hidden_states[L // 2]`, index 0 = the embeddings; INSIDE's `int(len(hidden_states) / 2)` for even
L) at the answer's last token, from one forward of prompt + answer tokens (the prompt's last position for an empty
answer). One forward per *distinct* sampled answer (repeats reuse its row), batched `CHUNK` rows at a time.

Forwards per sample beyond the clean one: open-ended N generations (self-consistency, semantic entropy) plus at most
N embedding forwards (EigenScore); closed set 0 plus at most min(N, #candidates). `Signal.forwards` states the
general (open-ended) cost at the default N = 10.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from vrprobe.analyses.signals.base import Signal, SignalOptions, TrainSet, check_paired
from vrprobe.data import Sample
from vrprobe.data.answers import normalize_answer
from vrprobe.errors import UsageError
from vrprobe.metrics.sampling import eigenscore, self_consistency, semantic_entropy, temper
from vrprobe.models import Adapter
from vrprobe.models.base import Encoded, Generated

MAX_NEW_TOKENS = 10
CHUNK = 16  # rows per generate / embedding forward
_N = float(SignalOptions().samples)

SIGNALS = (
    Signal(
        name="self-consistency",
        column="self_consistency",
        definition="fraction of N sampled answers (temperature T) equal to the greedy answer after VQA normalisation",
        higher_is_reliable=True,
        forwards=_N,
        granularity="sample set",
    ),
    Signal(
        name="semantic entropy",
        column="semantic_entropy",
        definition="entropy (nats) over the N sampled answers' clusters (exact match after VQA normalisation), each "
        "cluster's probability the sum of its distinct answers' sequence likelihoods, normalised over the clusters",
        higher_is_reliable=False,
        forwards=_N,
        granularity="sample set",
    ),
    Signal(
        name="EigenScore",
        column="eigenscore",
        definition="INSIDE: (1/N) log det(Z J_d Zᵀ + 1e-3 I) of the N sampled answers' middle-layer embeddings at "
        "their last token, J_d centring each embedding over its features (nats)",
        higher_is_reliable=False,
        forwards=2 * _N,
        granularity="sample set",
    ),
)


def normalise_answer(text: str) -> str:
    """An answer in the official VQA evaluation's normal form: `vrprobe.data.answers.normalize_answer` (lower-case,
    punctuation, number words → digits, articles dropped, contractions); the clustering key of these signals."""
    return normalize_answer(text)


def sample_seed(seed: int, sample_id: str) -> np.random.SeedSequence:
    """The seed of one sample's draws: `SeedSequence([seed, crc32(sample_id)])`, independent of batch and order."""
    return np.random.SeedSequence([int(seed), zlib.crc32(sample_id.encode())])


def closed_set_draws(probs: Sequence[float], options: SignalOptions, sample_id: str) -> np.ndarray:
    """N = `options.samples` candidate indices drawn with replacement from `temper(probs, options.temperature)`."""
    rng = np.random.default_rng(sample_seed(options.seed, sample_id))
    p = temper(probs, options.temperature)
    return rng.choice(len(p), size=options.samples, p=p)


class _Draw(LogitsProcessor):
    """Draws each row's next token from softmax(scores / T) with a seeded CPU generator and leaves only that token
    finite, so that greedy decoding picks it."""

    def __init__(self, generator: torch.Generator, temperature: float) -> None:
        self.generator = generator
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float().cpu() / self.temperature, dim=-1)
        pick = torch.multinomial(probs, 1, generator=self.generator).to(scores.device)
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, pick, 0.0)  # type: ignore[return-value]


@torch.no_grad()
def sample_answers(adapter: Adapter, item: Encoded, options: SignalOptions, sample_id: str) -> list[Generated]:
    """N = `options.samples` answers sampled at `options.temperature` after one encoded prompt (see the module
    docstring); log-probabilities are the raw (T = 1) next-token log-probabilities of the drawn tokens."""
    seed = int(sample_seed(options.seed, sample_id).generate_state(1)[0])
    draw = _Draw(torch.Generator().manual_seed(seed), options.temperature)
    out: list[Generated] = []
    for start in range(0, options.samples, CHUNK):
        batch = adapter.collate([item] * min(CHUNK, options.samples - start))
        gen = adapter.model.generate(
            **batch.inputs,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            num_beams=1,
            logits_processor=LogitsProcessorList([draw]),
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=adapter.pad_token_id,
            eos_token_id=adapter.eos_token_id,
        )
        logp = torch.stack(gen.logits, 1).float().log_softmax(-1)  # [n, steps, V], raw logits
        for row, seq in enumerate(gen.sequences[:, batch.inputs["input_ids"].shape[1] :].tolist()):
            ids: list[int] = []
            lps: list[float] = []
            stop = None
            for step, tok in enumerate(seq):
                if tok == adapter.eos_token_id:
                    stop = float(logp[row, step, tok])
                    break
                ids.append(tok)
                lps.append(float(logp[row, step, tok]))
            text = adapter.tokenizer.decode(ids, skip_special_tokens=True).strip()
            out.append(Generated(text=text, ids=ids, logprobs=lps, stop_logprob=stop))
    return out


def sequence_loglik(g: Generated) -> float:
    """Log-likelihood (nats) of a generated answer: Σ token log-probabilities (EOS excluded); an empty answer: the
    log-probability of stopping at once (−inf when unknown)."""
    if g.ids:
        return float(sum(g.logprobs))
    return g.stop_logprob if g.stop_logprob is not None else -math.inf


@torch.no_grad()
def answer_embeddings(adapter: Adapter, item: Encoded, answers: Sequence[Sequence[int]]) -> np.ndarray:
    """[K, D] float64: for each answer's token ids, the residual stream after L // 2 decoder layers at its last token
    (prompt + answer in one forward; one forward per distinct answer, repeats share its row)."""
    distinct = list(dict.fromkeys(tuple(a) for a in answers))
    layer = adapter.num_layers // 2
    rows: list[torch.Tensor] = []
    for start in range(0, len(distinct), CHUNK):
        part = distinct[start : start + CHUNK]
        batch = adapter.collate([adapter.extend(item, list(a)) for a in part])
        out = adapter.forward(batch, use_cache=False, logits_to_keep=1, output_hidden_states=True)
        rows.extend(out.hidden_states[layer][:, -1].double().cpu())
    index = {a: i for i, a in enumerate(distinct)}
    return torch.stack([rows[index[tuple(a)]] for a in answers]).numpy()


def compute(
    adapter: Adapter,
    samples: Sequence[Sample],
    records: Sequence[dict[str, Any]],
    options: SignalOptions,
    train: TrainSet | None = None,
) -> list[dict[str, float]]:
    """Per sample: `self_consistency`, `semantic_entropy` and `eigenscore` of its N sampled answers (module
    docstring), the greedy answer being the clean record's `predicted`. `train` is unused (nothing is fitted)."""
    check_paired(samples, records)
    if options.samples < 1:
        raise UsageError(f"the sampling signals need at least one sampled answer, got {options.samples}")
    if options.temperature <= 0:
        raise UsageError(f"the sampling temperature must be positive, got {options.temperature}")
    out = []
    for s, r in zip(samples, records, strict=True):
        item = adapter.encode_samples([s]).items[0]
        if s.choices:
            idx = closed_set_draws(r["probs"], options, s.id)
            answers = [s.choices[i] for i in idx]
            logliks = [math.log(r["probs"][i]) if r["probs"][i] > 0 else -math.inf for i in idx]
            ids = [adapter.answer_ids(a) for a in answers]
        else:
            gens = sample_answers(adapter, item, options, s.id)
            answers = [g.text for g in gens]
            logliks = [sequence_loglik(g) for g in gens]
            ids = [g.ids for g in gens]
        out.append(
            {
                "self_consistency": self_consistency(answers, r["predicted"], normalise=normalise_answer),
                "semantic_entropy": semantic_entropy(answers, logliks, normalise=normalise_answer),
                "eigenscore": eigenscore(answer_embeddings(adapter, item, ids)),
            }
        )
    return out
