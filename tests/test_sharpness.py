"""Attention sharpness: entropy over image tokens, by hand-worked cases and on the zoo models."""

from __future__ import annotations

import math

import pytest
import torch

from vrprobe.data import load_dataset
from vrprobe.interventions import Site, intervene
from vrprobe.metrics.sharpness import image_attention_entropy, max_entropy, normalised_entropy
from vrprobe.scoring.evaluate import score_batch


def test_uniform_row_is_log_n_and_one_hot_is_zero():
    image = torch.tensor([[False, True, True, True, True, False]])
    uniform = torch.tensor([[[0.1, 0.2, 0.2, 0.2, 0.2, 0.1]]])
    one_hot = torch.tensor([[[0.5, 0.0, 0.5, 0.0, 0.0, 0.0]]])
    assert image_attention_entropy(uniform, image).item() == pytest.approx(math.log(4), abs=1e-12)
    assert image_attention_entropy(one_hot, image).item() == 0.0
    assert normalised_entropy(image_attention_entropy(uniform, image), 4).item() == pytest.approx(1.0)
    assert max_entropy(4) == pytest.approx(math.log(4))


def test_low_precision_zero_mass_and_no_image_mass():
    image = torch.tensor([[True, True, False]])
    for dtype in (torch.float16, torch.bfloat16):
        probs = torch.tensor([[[0.0, 0.25, 0.75]]], dtype=dtype)
        h = image_attention_entropy(probs, image)
        assert h.dtype == torch.float64 and h.item() == 0.0  # all image mass on one token
    nothing = torch.tensor([[[0.0, 0.0, 1.0]]])
    assert image_attention_entropy(nothing, image).item() == pytest.approx(math.log(2))


def test_sharpness_recorded_in_the_answer_forward(adapter):
    """The record's sharpness equals the entropy of the attention recorded in a separate forward (no second pass
    inside score_batch: it is read from the same forward that gives the answer)."""
    samples = load_dataset("easy-vqa:test", limit=4, seed=9).samples
    batch = adapter.encode([s.load_image() for s in samples], [s.question for s in samples])
    records = score_batch(adapter, samples, batch)
    site = Site("attn_probs", tuple(range(adapter.num_layers)), "last")
    with torch.no_grad(), intervene(adapter, batch.groups, record=[site]) as rec:
        adapter.forward(batch, use_cache=False)
    entropy = image_attention_entropy(rec[site], batch.groups.image).mean(-1).mean(0)
    n_img = int(batch.groups.image[0].sum())
    for r, h in zip(records, entropy, strict=True):
        assert r["sharpness"] == pytest.approx(float(h), abs=1e-9)
        assert 0 <= r["sharpness_norm"] <= 1
        assert r["sharpness_norm"] == pytest.approx(float(h) / math.log(n_img), abs=1e-9)
        assert len(r["entropy_by_layer"]) == adapter.num_layers
