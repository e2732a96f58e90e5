"""Uncertainty baselines as practitioners know them (lm-polygraph's names): sequence probability, entropy, P(True).

All read the model's next-token distributions along one answer (the *generated* answer: the greedy answer, or for a
closed set the predicted candidate). With y_1..y_n the answer's tokens and p_t the full-vocabulary next-token
distribution at answer position t (given the prompt and y_<t), in nats:

- `sequence_nll`: −Σ_t log p_t(y_t), lm-polygraph's `MaximumSequenceProbability` (an uncertainty: higher = less
  reliable); `sequence_probability`: exp(Σ_t log p_t(y_t)), the same read as a probability (higher = more reliable).
- `token_entropies` / `mean_token_entropy`: H_t = −Σ_v p_t(v) log p_t(v), and their mean over the n answer tokens
  (lm-polygraph's `MeanTokenEntropy`).
- `p_true`: Kadavath et al.'s (2022) P(True) read as a two-way probability, p(true) / (p(true) + p(false)).

Nothing here runs a model; `vrprobe.analyses.signals.baselines` collects the distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def sequence_nll(token_logprobs: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Negative log-likelihood (nats) of an answer: `−Σ_t log p_t(y_t)` over its n tokens' log-probabilities.

    lm-polygraph's `MaximumSequenceProbability` estimate (higher = less certain). Range [0, ∞]; a token of
    probability 0 (log-probability −inf) gives +inf. Summed in float64. No tokens (an empty answer) → NaN: an
    answer with no tokens has no likelihood to read (lm-polygraph would return 0).
    """
    lp = torch.as_tensor(token_logprobs, dtype=torch.float64).flatten()
    if lp.numel() == 0:
        return float("nan")
    return float(0.0 - lp.sum())  # 0.0 − … : a certain answer gives 0.0, not −0.0


def sequence_probability(token_logprobs: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Probability of an answer's token sequence: `exp(Σ_t log p_t(y_t))` = Π_t p_t(y_t) = exp(−`sequence_nll`).

    Range [0, 1] (float64: underflows to 0 only below ~1e-308); higher = more reliable. Not normalised over any
    candidate set (that normalised value is vrprobe's `confidence`). No tokens → NaN.
    """
    nll = sequence_nll(token_logprobs)
    return math.exp(-nll) if not math.isnan(nll) else float("nan")


def token_entropies(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of `log_probs` [n, V]: `H_t = −Σ_v p_t(v) · log p_t(v)`, p_t = exp(row t).

    Rows are log-probabilities over the whole vocabulary (a log-softmax); entries of −inf (probability 0) contribute
    0 (0 · log 0 = 0, as lm-polygraph's `EntropyCalculator` masks them). Range [0, log V]. Returns float64 [n],
    computed in float64 whatever the input dtype; n = 0 gives an empty tensor.
    """
    lp = log_probs.to(torch.float64)
    if lp.dim() != 2:
        raise ValueError(f"token_entropies: expected log-probabilities [n, V], got shape {tuple(lp.shape)}")
    finite = torch.isfinite(lp)
    safe = torch.where(finite, lp, torch.zeros_like(lp))
    terms = torch.where(finite, safe.exp() * safe, torch.zeros_like(lp))
    return 0.0 - terms.sum(-1)


def mean_token_entropy(log_probs: torch.Tensor) -> float:
    """Mean over an answer's n tokens of `token_entropies(log_probs)` (nats), lm-polygraph's `MeanTokenEntropy`:
    `(1/n) Σ_t H_t`. Higher = less certain. Range [0, log V]. No tokens (n = 0) → NaN."""
    h = token_entropies(log_probs)
    return float(h.mean()) if h.numel() else float("nan")


def p_true(true_logprobs: Sequence[float], false_logprobs: Sequence[float]) -> float:
    """P(True) as a two-way probability: `P = Σ exp(t_i) / (Σ exp(t_i) + Σ exp(f_j))`.

    `true_logprobs`: the next-token log-probabilities (or logits: the ratio is the same) of the token(s) that say
    "true" after the follow-up prompt (e.g. both "True" and "true" when the tokenizer has both), `false_logprobs`
    those that say "false". Computed with log-sum-exp in float64 (= sigmoid(log Σ exp t − log Σ exp f)), so very
    negative inputs do not underflow. Range [0, 1]; higher = the model judges its answer true. NaN when either list is
    empty or every input is −inf.

    (Kadavath et al. 2022 read the probability of "True" after a (A) True / (B) False prompt; lm-polygraph's
    `PromptCalculator` stores the raw score of the token "True" and `PTrue` returns it with a minus sign, unnormalised.
    The two-way normalisation here removes the probability mass the model puts on all other tokens.)
    """
    if not true_logprobs or not false_logprobs:
        return float("nan")
    t = torch.logsumexp(torch.as_tensor(list(true_logprobs), dtype=torch.float64), 0)
    f = torch.logsumexp(torch.as_tensor(list(false_logprobs), dtype=torch.float64), 0)
    total = torch.logaddexp(t, f)
    if not torch.isfinite(total):
        return float("nan")
    return float(torch.exp(t - total))
