"""The causal signals (`vrprobe.analyses.signals.causal`) on zoo:llava: `band_drop` against `corrupt_batch` called
here, determinism and order independence, and a band chosen on TRAIN samples without reading an eval label."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from vrprobe.analyses.band import band_edits, corrupt_batch, layer_sigmas
from vrprobe.analyses.signals import causal
from vrprobe.analyses.signals.base import SignalOptions, TrainSet
from vrprobe.data import load_dataset, stratified_subset
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TRACE_GROUPS

from numerics import FORWARD, assert_close


@pytest.fixture(scope="module")
def llava():
    return load_adapter("zoo:llava")


@pytest.fixture(scope="module")
def data(llava):
    samples = load_dataset("easy-vqa:test", limit=6).samples
    train = load_dataset("easy-vqa:train", limit=20).samples
    records = score_batch(llava, samples, hidden=True)
    return samples, records, TrainSet(train, score_batch(llava, train, hidden=True))


@pytest.fixture(scope="module")
def values(llava, data):
    samples, records, train = data
    return causal.compute(llava, samples, records, SignalOptions(seed=0), train)


@pytest.fixture(scope="module")
def band(llava, data):
    samples, _, train = data
    return causal.choose_band(llava, samples, train, seed=0)


def test_band_drop_is_clean_confidence_minus_the_mean_corrupted_probability(llava, data, values, band):
    samples, records, train = data
    # σ_l measured here on the traced TRAIN subset, as the band analysis measures it on its calibration set
    subset = stratified_subset(list(train.samples), causal.BAND_TRACE_LIMIT, 0)
    layers = list(range(band.layers[0], band.layers[1] + 1))
    assert band.sigmas == layer_sigmas(llava, subset, layers, "image")
    edits = band_edits(band.layers, "hidden", "image", causal.NOISE, band.sigmas)
    for sample, record, got in zip(samples, records, values, strict=True):
        k = sample.choices.index(record["predicted"])
        corrupted = corrupt_batch(llava, [sample] * causal.N_NOISE, edits, 0, 0)
        # the same kernels on the same shapes with the same seeds: exact by construction
        expected = record["confidence"] - sum(r["probs"][k] for r in corrupted) / causal.N_NOISE
        assert got["band_drop"] == expected
    assert len({round(v["band_drop"], 6) for v in values}) > 1  # the noise moves different samples differently


def test_band_drop_without_noise_is_zero_up_to_batching(llava, data):
    """Noise 0: the corrupted runs are clean runs of a batch of copies, so the drop is only the rounding between the
    records' padded batch and that batch (a whole forward on other shapes)."""
    samples, records, _ = data
    band = causal.choose_band(llava, samples, None)
    drops = causal.band_drops(llava, samples, records, band, noise=0.0)
    assert_close(torch.tensor(drops, dtype=torch.float64), 0.0, dtype=torch.float32, scale=1.0, ulps=FORWARD)


def test_seeded_values_repeat_and_follow_the_sample_not_its_position(llava, data, values, band):
    samples, records, _ = data
    # compute chose the same band again (a seeded rerun of the train trace) and scored the same: exact
    assert causal.band_values(llava, samples, records, band, seed=0) == values
    # reversed order: each sample is scored alone under the draws of index 0, σ comes from TRAIN: the same numbers
    assert causal.band_values(llava, samples[::-1], records[::-1], band, seed=0)[::-1] == values
    other = causal.band_drops(llava, samples, records, band, seed=1)
    assert other != [v["band_drop"] for v in values]


def test_the_band_comes_from_train_and_never_reads_an_eval_label(llava, data, values, band):
    samples, records, train = data
    assert "TRAIN" in band.source
    assert band.layers[1] - band.layers[0] + 1 == causal.band_width(llava.num_layers)
    # other eval samples, given wrong reference answers: the same band and σ (measured on TRAIN only) ...
    others = load_dataset("easy-vqa:test", limit=6, seed=3).samples
    wrong_others = [replace(s, answers=(next(c for c in s.choices if c not in s.answers),)) for s in others]
    assert causal.choose_band(llava, wrong_others, train, seed=0) == band
    # ... and wrong answers on the eval samples change no value, with or without a train set
    wrong = [replace(s, answers=(next(c for c in s.choices if c not in s.answers),)) for s in samples]
    wrong_records = score_batch(llava, wrong, hidden=True)
    assert [r["correct"] for r in wrong_records] != [r["correct"] for r in records]
    assert causal.band_values(llava, wrong, wrong_records, band) == values
    assert causal.choose_band(llava, wrong, None) == causal.choose_band(llava, samples, None)


def test_without_train_the_band_is_the_middle_window_and_says_so(llava, data):
    samples, _, _ = data
    band = causal.choose_band(llava, samples, None)
    assert band.layers == causal.default_band(llava.num_layers) == (3, 4)
    assert band.source.startswith("default")
    assert causal.default_band(3) == (0, 1) and causal.default_band(2) == (0, 1) and causal.default_band(12) == (4, 7)


def test_trace_concentration_is_the_top_cell_share_less_the_answer_cell(values):
    # [L = 2, G]: the last layer's "last" cell is excluded; float64 sums of two terms and zeros: exact
    effect = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.0, 0.9]], dtype=torch.float64)
    assert causal.concentration(effect, TRACE_GROUPS) == 0.2 / (0.2 + 0.1)
    assert math.isnan(causal.concentration(torch.tensor([[-0.1, 0.0, 0.0], [0.0, 0.0, 0.5]]), TRACE_GROUPS))
    shares = [v["trace_concentration"] for v in values]
    assert all(1 / (8 * 3 - 1) <= c <= 1 for c in shares if not math.isnan(c))


def test_open_ended_samples_have_no_band_drop_and_the_columns_are_declared(llava, data, values):
    samples, records, _ = data
    band = causal.choose_band(llava, samples, None)
    assert math.isnan(causal.band_drops(llava, [replace(samples[0], choices=None)], [records[0]], band)[0])
    assert {s.column for s in causal.SIGNALS} == set(values[0])
    assert all(s.causal and s.backwards == 0 and not s.needs_labels for s in causal.SIGNALS)
    assert causal.SIGNALS[0].forwards == causal.N_NOISE
