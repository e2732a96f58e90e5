"""Logit lens: the lock layer and margin by hand, the lens against transformers' own hidden states in a plain loop,
the last layer against the model's real logits, and a constructed model whose lock layer is known."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from vrprobe.analyses.signals.lens import SIGNALS, candidate_tokens, compute, lens_answers, lens_logits
from vrprobe.data import load_dataset
from vrprobe.interventions.hooks import layer_parts
from vrprobe.metrics.lens import lock_depth, lock_layer, margin
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch

from conftest import FAMILIES
from numerics import SUM, assert_close

A, B = 7, 3


def test_lock_layer_by_hand():
    assert lock_layer([A, B, A, A], A) == 2
    assert lock_layer([A, A, A, A], A) == 0
    assert lock_layer([B, B, B, A], A) == 3  # only at the last layer: L - 1
    assert lock_layer([A, A, A, B], A) == 4  # not top-1 at the last layer: never locks, L
    assert lock_layer(np.array([B, A, B, A]), A) == 3
    assert lock_layer([], A) == 0
    assert lock_depth(2, 4) == 0.5 and lock_depth(4, 4) == 1.0 and math.isnan(lock_depth(0, 0))


def test_margin_by_hand():
    assert margin([1.0, 3.0, 2.5]) == 0.5
    assert margin([2.0, 2.0, -1.0]) == 0.0  # a tie
    assert math.isnan(margin([4.0]))  # no runner-up
    assert np.array_equal(margin(np.array([[0.0, 1.0, 4.0], [5.0, -1.0, 2.0]])), [3.0, 3.0])


def test_signals_declare_their_costs():
    assert [s.column for s in SIGNALS] == ["lens_lock_layer", "lens_lock_depth", "lens_margin"]
    assert [s.higher_is_reliable for s in SIGNALS] == [False, False, True]
    assert all(s.forwards == s.backwards == 0 and not s.causal and s.granularity == "layer" for s in SIGNALS)


def float64_adapter(family: str):
    """A fresh zoo model in float64 (its own copy: the constructed test edits weights). Scored one sample per batch:
    in float64, transformers' eager mask turns a padded row's keys to NaN (finfo.min + finfo.min = -inf), which
    reaches every row through the values; an unpadded batch has none."""
    adapter = load_adapter(f"zoo:{family}")
    adapter.model.to(torch.float64)
    return adapter


@torch.no_grad()
def reference_lens(adapter, sample) -> torch.Tensor:
    """Lens logits [L, V] in a plain loop over transformers' own `output_hidden_states`: the embeddings, then each
    layer's output, the last one already through the final norm (so only the others get it), then the LM head."""
    batch = adapter.encode_samples([sample])
    out = adapter.model(**batch.inputs, output_hidden_states=True, use_cache=False)
    norm, head = adapter.model.get_decoder().norm, adapter.model.get_output_embeddings()
    states = out.hidden_states[1:]
    rows = [head(norm(h[0, -1])) for h in states[:-1]] + [head(states[-1][0, -1])]
    assert_close(rows[-1], out.logits[0, -1], ulps=SUM, what="reference last layer vs the model's logits")
    return torch.stack(rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_lens_matches_a_plain_loop_over_transformers_hidden_states(family):
    adapter = float64_adapter(family)
    assert getattr(adapter.model.config.get_text_config(), "final_logit_softcapping", None) is None
    for sample in load_dataset("easy-vqa:test", limit=6, seed=0).samples:
        record = score_batch(adapter, [sample], hidden=True)[0]
        expected = reference_lens(adapter, sample)
        lens = lens_logits(adapter, record["hidden_last"])
        # `hidden_last` is kept in float32, so the lens of a float64 model is as exact as float32
        assert_close(lens, expected, dtype=torch.float32, ulps=SUM, what=f"{family} lens per layer")
        ids = candidate_tokens(adapter, sample.choices)
        final = ids.index(adapter.answer_ids(record["predicted"])[0])
        ref = expected[:, ids]
        row = compute(adapter, [sample], [record])[0]
        assert row["lens_lock_layer"] == lock_layer(ref.argmax(-1).numpy(), final)
        assert row["lens_lock_depth"] == row["lens_lock_layer"] / adapter.num_layers
        assert_close(row["lens_margin"], margin(ref[-1].numpy()), dtype=torch.float32, scale=expected.abs().max())


def test_last_layer_lens_is_the_models_logits(adapter):
    """float32, a padded batch: the lens at the last layer reproduces the real last-position logits; the answer's
    final-layer margin is its top-1 minus top-2 candidate logit under them."""
    samples = load_dataset("easy-vqa:test", limit=5, seed=1).samples
    batch = adapter.encode_samples(samples)
    records = score_batch(adapter, samples, batch, hidden=True)
    with torch.no_grad():
        real = adapter.forward(batch, use_cache=False).logits[:, -1]
    rows = compute(adapter, samples, records)
    for i, (sample, record) in enumerate(zip(samples, records, strict=True)):
        lens = lens_logits(adapter, record["hidden_last"])
        assert lens.shape == (adapter.num_layers, real.shape[-1])
        assert_close(lens[-1], real[i], ulps=SUM, what=f"{adapter.family} last layer")
        scores = real[i, candidate_tokens(adapter, sample.choices)]
        # a difference of two logits, each within SUM
        assert_close(
            rows[i]["lens_margin"], margin(scores.numpy()), dtype=torch.float32, scale=real[i].abs().max(), ulps=2 * SUM
        )


def test_open_ended_final_answer_is_the_greedy_first_token(adapter):
    samples = [dataclasses.replace(s, choices=None) for s in load_dataset("easy-vqa:test", limit=4, seed=2).samples]
    batch = adapter.encode_samples(samples)
    records = score_batch(adapter, samples, batch, hidden=True, max_new_tokens=2)
    with torch.no_grad():
        real = adapter.forward(batch, use_cache=False).logits[:, -1]
    rows = compute(adapter, samples, records)
    for i, (sample, record) in enumerate(zip(samples, records, strict=True)):
        scores, final = lens_answers(adapter, sample, record)
        assert scores.shape[1] == real.shape[-1]  # the whole vocabulary
        assert final == int(real[i].argmax())  # the greedy first token
        assert rows[i]["lens_lock_layer"] == lock_layer(scores.argmax(-1).numpy(), final) <= adapter.num_layers - 1
        assert_close(
            rows[i]["lens_margin"],
            margin(real[i].numpy()),
            dtype=torch.float32,
            scale=real[i].abs().max(),
            ulps=2 * SUM,
        )


def test_candidates_without_two_distinct_first_tokens_give_nan(adapter):
    sample = load_dataset("easy-vqa:test", limit=1, seed=0).samples[0]
    record = score_batch(adapter, [sample], hidden=True)[0]
    same = dataclasses.replace(sample, choices=(record["predicted"], record["predicted"]))
    assert all(math.isnan(v) for v in compute(adapter, [same], [record])[0].values())


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_layers_from_k_on_lock_the_answer_by_layer_k_minus_1(family):
    """Zeroing every weight of the attention and MLP blocks of layers k … L−1 makes them identities on the residual
    stream: their outputs equal layer k−1's, so the lens's top-1 cannot change after k−1 and the model's answer is the
    intact model's lens top-1 at k−1. Layers before k are untouched, so the lock layer is known exactly from the
    intact model's lens: lock_layer(intact top-1 [0 … k−1], intact top-1 at k−1) ≤ k−1, equal to k−1 where the top-1
    at k−2 differs."""
    adapter = float64_adapter(family)
    samples = load_dataset("easy-vqa:test", limit=8, seed=0).samples
    n = adapter.num_layers
    intact = [score_batch(adapter, [s], hidden=True)[0] for s in samples]
    intact_top1 = [lens_answers(adapter, s, r)[0].argmax(-1).numpy() for s, r in zip(samples, intact, strict=True)]
    exactly_k_minus_1 = 0
    with torch.no_grad():
        for k in range(n - 1, 0, -1):  # zero one more layer each time: layers k … L−1 are identities
            for block in layer_parts(adapter.decoder_layers[k]).values():
                for p in block.parameters():
                    p.zero_()
            for s, before, top1 in zip(samples, intact, intact_top1, strict=True):
                record = score_batch(adapter, [s], hidden=True)[0]
                hidden = torch.as_tensor(record["hidden_last"])
                # x + 0 = x: exact by construction; the untouched prefix runs the same kernels on the same shapes
                assert all(torch.equal(hidden[layer], hidden[k - 1]) for layer in range(k, n))
                assert torch.equal(hidden[:k], torch.as_tensor(before["hidden_last"])[:k])
                expected = lock_layer(top1[:k], int(top1[k - 1]))
                row = compute(adapter, [s], [record])[0]
                assert row["lens_lock_layer"] == expected <= k - 1
                exactly_k_minus_1 += k >= 2 and expected == k - 1
    assert exactly_k_minus_1 > 0  # some case locks at exactly k−1 > 0: the bound is reached, not vacuous
