"""Sampling-based reliability metrics: self-consistency, semantic entropy and EigenScore over N sampled answers.

All three read a *sample set*: the N answers a model gives to one question when its answer is sampled rather than
taken greedily. Nothing here runs a model; the analysis (`vrprobe.analyses.signals.sampling`) draws the answers.

Answers are compared after a normalisation `normalise` (a function str → str), passed by the caller: vrprobe passes
the official VQA normalisation (`vrprobe.data.answers.normalize_answer`, which this package may not import: `data`
and `metrics` are independent layers). `normalise=None` compares the strings as given. Logarithms are natural (nats).

- `self_consistency`: the fraction of the sampled answers equal to the greedy answer.
- `semantic_entropy`: the entropy of the answers' meaning clusters (exact match after normalisation), either from
  the clusters' sequence likelihoods (Kuhn et al. 2023) or from their sample frequencies (discrete semantic entropy).
- `eigenscore`: INSIDE's (Chen et al. 2024) log-determinant of the sample embeddings' regularised covariance / K.
- `temper`: a categorical distribution at a sampling temperature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Normaliser = Callable[[str], str]


def _key(normalise: Normaliser | None) -> Normaliser:
    return normalise if normalise is not None else (lambda text: text)


def self_consistency(sampled: Sequence[str], greedy: str, *, normalise: Normaliser | None = None) -> float:
    """Fraction of the sampled answers that equal the greedy answer after normalisation, in [0, 1].

    `SC = (1/N) · #{i : normalise(sampled_i) == normalise(greedy)}` over the N = len(sampled) answers. Higher = the
    model's sampled answers agree with its greedy one. No samples → NaN.
    """
    if not sampled:
        return float("nan")
    key = _key(normalise)
    target = key(greedy)
    return sum(key(s) == target for s in sampled) / len(sampled)


def semantic_entropy(
    sampled: Sequence[str], logliks: Sequence[float] | None = None, *, normalise: Normaliser | None = None
) -> float:
    """Entropy (nats) of the sampled answers' meaning clusters; clusters = equal answers after normalisation.

    With `logliks` (one log-likelihood per sampled answer, nats; the likelihood of the answer's sequence under the
    model, e.g. the sum of its token log-probabilities): Kuhn et al.'s estimate. Each cluster c collects the
    *distinct* sequences s (distinct strings before normalisation; a repeated string counts once, with the loglik of
    its first occurrence) among the samples; `q_c = Σ_{distinct s ∈ c} exp(loglik_s)`; the clusters' probabilities
    are `p_c = q_c / Σ_c' q_c'` (normalised over the clusters found); `SE = −Σ_c p_c · log p_c`. Computed with
    log-sum-exp, so very negative logliks do not underflow; a loglik of −inf contributes nothing.

    Without `logliks`: the discrete semantic entropy, the entropy of the empirical cluster frequencies,
    `p_c = n_c / N` with n_c the number of samples (repeats included) in cluster c.

    Range [0, log(#clusters)]; 0 when all answers fall into one cluster. No samples, or logliks all −inf → NaN.
    (lm-polygraph's `SemanticEntropy(use_unique_responses=True)` sums the same distinct sequences per class but does
    not normalise over classes and returns `−(1/N) · Σ_i log q_c(i)` over the N samples i instead, c(i) the class of
    sample i: a Monte-Carlo estimate whose expectation is this entropy when the q_c sum to 1 and the samples are
    drawn from them.)
    """
    if not sampled:
        return float("nan")
    key = _key(normalise)
    if logliks is None:
        counts: dict[str, int] = {}
        for s in sampled:
            counts[key(s)] = counts.get(key(s), 0) + 1
        p = np.array(list(counts.values()), dtype=np.float64) / len(sampled)
        return float(0.0 - (p * np.log(p)).sum())  # 0.0 − … : one cluster gives 0.0, not −0.0
    if len(logliks) != len(sampled):
        raise ValueError(f"semantic_entropy: {len(sampled)} answers but {len(logliks)} log-likelihoods")
    seen: dict[str, float] = {}
    for s, ll in zip(sampled, logliks, strict=True):
        seen.setdefault(s, float(ll))
    members: dict[str, list[float]] = {}
    for s, ll in seen.items():
        members.setdefault(key(s), []).append(ll)
    log_q = np.array([_logsumexp(np.array(v, dtype=np.float64)) for v in members.values()])
    if not np.isfinite(log_q).any():
        return float("nan")
    log_p = log_q - _logsumexp(log_q)
    p = np.exp(log_p)
    return float(0.0 - (p * np.where(p > 0, log_p, 0.0)).sum())


def _logsumexp(x: np.ndarray) -> float:
    """log Σ exp(x), stable; −inf for an empty or all −inf `x`."""
    top = float(np.max(x)) if x.size else -math.inf
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(x - top).sum()))


def eigenscore(embeddings: np.ndarray, alpha: float = 1e-3) -> float:
    """INSIDE's EigenScore (Chen et al. 2024, eq. 5–6) of K sample embeddings `embeddings` [K, D], in nats.

    With Z the [K, D] matrix of the K embeddings (rows) and `J_d = I_d − (1/D)·1·1ᵀ` the centring matrix over the D
    feature dimensions, the K × K covariance is `Σ = Z · J_d · Zᵀ` (each embedding centred on its own mean over its
    features; entry (i, j) = ⟨z_i − mean(z_i), z_j − mean(z_j)⟩; no division by D). With λ_1..λ_K the eigenvalues
    of `Σ + α·I_K`,

        EigenScore = (1/K) · Σ_k log λ_k  =  (1/K) · log det(Σ + α·I_K).

    Higher = the sampled answers' embeddings spread over more directions (less consistent). This is the paper's form
    and lm-polygraph's `EigenScore` (natural log). Every λ_k ≥ α > 0, so the score is finite and ≥ log α; it equals
    log α exactly when every centred embedding is zero (e.g. K copies of a constant vector). K identical embeddings
    z give one eigenvalue K·‖z − mean(z)‖² + α and K − 1 eigenvalues α. Computed in float64; when K > D the
    eigenvalues come from the D × D matrix Zcᵀ·Zc (the same non-zero spectrum), the other K − D being exactly α.
    `alpha` ≤ 0 or no embeddings → ValueError.
    """
    if alpha <= 0:
        raise ValueError(f"eigenscore: alpha must be positive, got {alpha}")
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"eigenscore: expected embeddings [K, D] with K ≥ 1, got shape {z.shape}")
    k, d = z.shape
    centred = z - z.mean(axis=1, keepdims=True)  # = Z · J_d (J_d is symmetric and idempotent)
    gram = centred @ centred.T if k <= d else centred.T @ centred
    lam = np.linalg.eigvalsh(gram + alpha * np.eye(gram.shape[0]))
    extra = max(k - d, 0) * math.log(alpha)
    return float((np.log(np.maximum(lam, alpha)).sum() + extra) / k)


def temper(probs: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """The categorical distribution `probs` at sampling temperature T: `p_i^(1/T) / Σ_j p_j^(1/T)` (float64).

    Equal to softmax(logit / T) for probs = softmax(logit). T = 1 returns `probs` renormalised; T → 0 approaches the
    argmax; T must be positive (ValueError otherwise). Computed in log space, so small T does not underflow.
    """
    if temperature <= 0:
        raise ValueError(f"temper: temperature must be positive, got {temperature}")
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logp = np.log(p) / temperature
    logp -= logp.max()
    out = np.exp(logp)
    return out / out.sum()
