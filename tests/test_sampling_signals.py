"""Sampling signals: the metrics against hand values, the closed-set draws against the model's candidate entropy, the
open-ended sampler against greedy decoding, the embeddings against a forward of their own, and determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from vrprobe.analyses.signals.base import SignalOptions
from vrprobe.analyses.signals.sampling import (
    SIGNALS,
    answer_embeddings,
    closed_set_draws,
    compute,
    normalise_answer,
)
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError
from vrprobe.metrics.sampling import eigenscore, self_consistency, semantic_entropy, temper
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch

from numerics import FORWARD, assert_close, tolerance

ALPHA = 1e-3
TOL = tolerance(np.float64)  # one float64 computation of a quantity of order 1, summed in another order


def entropy(p):
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


# ---- the pure metrics -----------------------------------------------------------------------------------------------
def test_self_consistency_counts_normalised_matches():
    assert self_consistency(["Two", "2", "the two.", "three"], "two", normalise=normalise_answer) == 0.75
    assert self_consistency(["Two", "2"], "2") == 0.5  # no normaliser: strings as given
    assert math.isnan(self_consistency([], "yes"))


def test_semantic_entropy_discrete_is_the_entropy_of_cluster_frequencies():
    assert semantic_entropy(["a", "b", "a", "b"]) == pytest.approx(math.log(2), abs=TOL)
    assert semantic_entropy(["a", "b", "b", "b"]) == pytest.approx(entropy([1, 3]), abs=TOL)
    assert semantic_entropy(["Two", "2", "two."], normalise=normalise_answer) == 0.0
    assert math.isnan(semantic_entropy([]))


def test_semantic_entropy_with_logliks_sums_distinct_sequences_per_cluster():
    # distinct sequences x (.6) and y (.2); the repeated x counts once → clusters .75 / .25
    log = math.log
    assert semantic_entropy(["x", "x", "y"], [log(0.6), log(0.6), log(0.2)]) == pytest.approx(
        entropy([0.75, 0.25]), abs=TOL
    )
    # "Two" and "2" are distinct sequences of one cluster: .3 + .3 = .6 against "three" .4
    answers, logliks = ["Two", "2", "three", "2"], [log(0.3), log(0.3), log(0.4), log(0.3)]
    got = semantic_entropy(answers, logliks, normalise=normalise_answer)
    assert got == pytest.approx(entropy([0.6, 0.4]), abs=TOL)
    assert semantic_entropy(["a", "b"], [0.0, -math.inf]) == 0.0
    # logliks of magnitude 1000: log p = loglik − logsumexp rounds at 1000 · eps
    far = semantic_entropy(["a", "b"], [-1000.0, -1001.0])
    assert far == pytest.approx(entropy([1, math.exp(-1)]), abs=tolerance(np.float64, scale=1000))
    assert math.isnan(semantic_entropy(["a"], [-math.inf]))
    with pytest.raises(ValueError):
        semantic_entropy(["a", "b"], [0.0])


def eigen_tolerance(z):
    """eigvalsh is backward stable: each eigenvalue of Σ + αI is off by about eps·‖Σ‖, so each log λ ≥ log α by
    eps·‖Σ‖/α and their mean too."""
    zc = z - z.mean(1, keepdims=True)
    return tolerance(np.float64, scale=max(np.linalg.norm(zc @ zc.T, 2), 1.0) / ALPHA)


def test_eigenscore_hand_values():
    k, d = 5, 8
    # K copies of a constant vector: every centred embedding is 0, Σ = 0, all eigenvalues α
    assert eigenscore(np.full((k, d), 3.0), ALPHA) == pytest.approx(math.log(ALPHA), abs=TOL)
    # K copies of z: one eigenvalue K·‖z − mean z‖² + α, K − 1 eigenvalues α
    z = np.arange(d, dtype=np.float64)
    c = float(((z - z.mean()) ** 2).sum())
    expected = (math.log(k * c + ALPHA) + (k - 1) * math.log(ALPHA)) / k
    tiled = np.tile(z, (k, 1))
    assert eigenscore(tiled, ALPHA) == pytest.approx(expected, abs=eigen_tolerance(tiled))
    # two orthogonal embeddings with zero feature mean, squared norm 2: Σ = 2·I → log(2 + α)
    pair = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    assert eigenscore(pair, ALPHA) == pytest.approx(math.log(2 + ALPHA), abs=TOL)
    # e1, e2: centred to ±(.5, −.5), Σ = [[.5, −.5], [−.5, .5]], eigenvalues 1 and 0
    assert eigenscore(np.eye(2), ALPHA) == pytest.approx((math.log(1 + ALPHA) + math.log(ALPHA)) / 2, abs=TOL)
    with pytest.raises(ValueError):
        eigenscore(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        eigenscore(pair, alpha=0.0)


def test_eigenscore_with_more_samples_than_dimensions_uses_the_same_spectrum():
    z = np.random.default_rng(0).integers(-3, 4, size=(7, 3)).astype(np.float64)  # small integers: exact Gram
    zc = z - z.mean(1, keepdims=True)
    sign, logdet = np.linalg.slogdet(zc @ zc.T + ALPHA * np.eye(7))
    assert sign == 1
    assert eigenscore(z, ALPHA) == pytest.approx(logdet / 7, abs=eigen_tolerance(z))  # the same error bound, twice


def test_temper():
    p = np.array([0.5, 0.3, 0.2])
    assert np.allclose(temper(p, 1.0), p, rtol=0, atol=TOL)
    assert np.allclose(temper(p, 0.5), p**2 / (p**2).sum(), rtol=0, atol=TOL)
    assert temper(p, 1e-6).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        temper(p, 0.0)


def test_signals_declare_the_sample_set():
    assert [s.column for s in SIGNALS] == ["self_consistency", "semantic_entropy", "eigenscore"]
    assert [s.higher_is_reliable for s in SIGNALS] == [True, False, False]
    assert all(s.granularity == "sample set" for s in SIGNALS)


# ---- on a zoo model -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


@pytest.fixture(scope="module")
def closed(llava):
    samples = load_dataset("easy-vqa:test", limit=8).samples
    return samples, score_batch(llava, samples, hidden=True)


@pytest.fixture(scope="module")
def open_ended(llava):
    samples = [dataclasses.replace(s, choices=None) for s in load_dataset("easy-vqa:test", limit=3).samples]
    return samples, score_batch(llava, samples, hidden=True)


def check_ranges(rows):
    for row in rows:
        assert 0.0 <= row["self_consistency"] <= 1.0
        assert row["semantic_entropy"] >= 0.0
        assert math.isfinite(row["eigenscore"]) and row["eigenscore"] >= math.log(ALPHA)


def test_closed_set_signals_are_in_range_and_deterministic(llava, closed):
    samples, records = closed
    options = SignalOptions(seed=3, temperature=2.0)
    rows = compute(llava, samples, records, options)
    check_ranges(rows)
    # the same seed → the same values; another order → the same per-sample values. Exact by construction: each
    # sample's draws are seeded by its id and its forwards run alone, on the same shapes
    assert compute(llava, samples, records, options) == rows
    assert compute(llava, samples[::-1], records[::-1], options)[::-1] == rows


def test_closed_set_draws_follow_the_seed(closed):
    samples, records = closed
    flat = SignalOptions(samples=50, temperature=50.0)  # near-uniform: two seeds must draw differently
    probs = records[0]["probs"]
    a = closed_set_draws(probs, flat, samples[0].id)
    assert np.array_equal(a, closed_set_draws(probs, flat, samples[0].id))
    assert not np.array_equal(a, closed_set_draws(probs, dataclasses.replace(flat, seed=1), samples[0].id))
    assert not np.array_equal(a, closed_set_draws(probs, flat, samples[1].id))


def test_closed_set_semantic_entropy_approaches_the_candidate_entropy(closed):
    """At T = 1 the draws are the model's answer distribution: the discrete semantic entropy of N draws is the plug-in
    entropy estimate of the candidates' clusters, within 4 standard errors (delta method: Var[log p(X)] / N) plus
    its bias bound log(1 + (m − 1)/N) (Paninski 2003) and the χ² fluctuation 4·√(2(m − 1)) / (2N) of m clusters.
    With the log-likelihoods, the estimate is exactly the entropy of the clusters drawn, renormalised."""
    samples, records = closed
    n = 2000
    options = SignalOptions(samples=n, temperature=1.0)
    for s, r in zip(samples, records, strict=True):
        clusters: dict[str, float] = {}
        for choice, p in zip(s.choices, r["probs"], strict=True):
            clusters[normalise_answer(choice)] = clusters.get(normalise_answer(choice), 0.0) + p
        p = np.array(list(clusters.values()))
        h = entropy(p)
        m = int((p > 0).sum())
        var = float((p * np.log(p) ** 2).sum() - h**2)
        tol = 4 * math.sqrt(var / n) + math.log(1 + (m - 1) / n) + 4 * math.sqrt(2 * (m - 1)) / (2 * n)
        idx = closed_set_draws(r["probs"], options, s.id)
        answers = [s.choices[i] for i in idx]
        assert abs(semantic_entropy(answers, normalise=normalise_answer) - h) <= tol, s.id
        drawn = {normalise_answer(a): clusters[normalise_answer(a)] for a in answers}
        with_ll = semantic_entropy(answers, [math.log(r["probs"][i]) for i in idx], normalise=normalise_answer)
        assert with_ll == pytest.approx(entropy(list(drawn.values())), abs=TOL)


def test_low_temperature_sampling_reproduces_the_greedy_answer(llava, closed, open_ended):
    """T → 0 concentrates the sampled distribution on the argmax: every sampled answer is the greedy one."""
    for samples, records in (closed, open_ended):
        rows = compute(llava, samples, records, SignalOptions(samples=4, temperature=1e-4))
        assert [r["self_consistency"] for r in rows] == [1.0] * len(rows)
        assert [r["semantic_entropy"] for r in rows] == [0.0] * len(rows)


def test_open_ended_signals_are_in_range_and_deterministic(llava, open_ended):
    samples, records = open_ended
    options = SignalOptions(samples=5, temperature=1.5, seed=7)
    rows = compute(llava, samples, records, options)
    check_ranges(rows)
    assert compute(llava, samples, records, options) == rows
    assert compute(llava, samples[::-1], records[::-1], options)[::-1] == rows


def test_open_ended_sampling_runs_on_every_family(adapter):
    samples = [dataclasses.replace(s, choices=None) for s in load_dataset("easy-vqa:test", limit=2).samples]
    records = score_batch(adapter, samples)
    options = SignalOptions(samples=3, temperature=1.0)
    rows = compute(adapter, samples, records, options)
    check_ranges(rows)
    assert compute(adapter, samples[::-1], records[::-1], options)[::-1] == rows


def test_embeddings_are_the_middle_layer_at_the_answer_last_token(llava, closed):
    samples, _ = closed
    item = llava.encode_samples(samples[:1]).items[0]
    answers = [llava.answer_ids(a) for a in ("yes", "rectangle", "yes")]
    emb = answer_embeddings(llava, item, answers)
    assert emb.shape == (3, llava.model.config.get_text_config().hidden_size)
    assert np.array_equal(emb[0], emb[2])  # a repeated answer shares its row
    alone = llava.collate([llava.extend(item, answers[1])])
    with torch.no_grad():
        hidden = llava.forward(alone, use_cache=False, output_hidden_states=True).hidden_states
    assert len(hidden) == llava.num_layers + 1
    assert_close(emb[1], hidden[llava.num_layers // 2][0, -1], dtype=torch.float32, ulps=FORWARD)


def test_bad_options_are_usage_errors(llava, closed):
    samples, records = closed
    with pytest.raises(UsageError):
        compute(llava, samples[:1], records[:1], SignalOptions(samples=0))
    with pytest.raises(UsageError):
        compute(llava, samples[:1], records[:1], SignalOptions(temperature=0.0))
