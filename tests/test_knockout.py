"""Attention knockout (`vrprobe.analyses.knockout`), the `vrprobe knockout` command, and the controls of issue 14:
per-head sharpness with Benjamini-Hochberg, band sweep, non-image band corruption."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from vrprobe.analyses.band import band_sweep, corrupt_band
from vrprobe.analyses.knockout import (
    edge_edits,
    integration_layers,
    knockout,
    parse_edges,
    run_knockout,
    target_probs,
    window_effects,
    window_size,
    windows,
)
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError
from vrprobe.interventions import Knockout, Site, intervene
from vrprobe.interventions.ops import _BlockKeys
from vrprobe.metrics.heads import head_sharpness
from vrprobe.metrics.stats import benjamini_hochberg, mean_interval
from vrprobe.scoring.evaluate import score_batch

from conftest import run_cli
from numerics import FORWARD, assert_close


@pytest.fixture(scope="module")
def samples():
    return load_dataset("easy-vqa:test", limit=8, seed=0).samples


def test_block_keys_equals_minus_infinity_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 5, 7, generator=g)
    keys = torch.zeros(2, 7, dtype=torch.bool)
    keys[0, [1, 4]] = True
    keys[1, 0] = True
    rows = torch.zeros(2, 5, dtype=torch.bool)
    rows[:, [2, 4]] = True
    got = _BlockKeys(keys).on_probs(torch.softmax(scores, -1), rows, keys, torch.ones(2, 1, 5, 7, dtype=torch.bool))
    masked = scores.masked_fill(rows[:, None, :, None] & keys[:, None, None, :], float("-inf"))
    torch.testing.assert_close(got, torch.softmax(masked, -1))
    every = _BlockKeys(torch.ones(2, 7, dtype=torch.bool))
    nothing = every.on_probs(torch.softmax(scores, -1), rows, keys, torch.ones(2, 1, 5, 7, dtype=torch.bool))
    assert nothing[:, :, [2, 4]].abs().max() == 0 and torch.equal(nothing[:, :, 0], torch.softmax(scores, -1)[:, :, 0])


def test_blocking_image_to_question_and_last_everywhere_makes_the_model_blind(adapter, samples):
    """No non-image query reads an image key at any layer: the answer position's logits cannot depend on the image,
    in every family (PaliGemma's bidirectional prefix included)."""
    edits = edge_edits(["image->question", "image->last"], range(adapter.num_layers))
    other = [replace(s, image_fn=samples[(i + 3) % len(samples)].load_image) for i, s in enumerate(samples)]
    out = []
    for chunk in (samples, other):
        batch = adapter.encode_samples(chunk)
        with torch.no_grad(), intervene(adapter, batch.groups, edits=edits):
            out.append(adapter.forward(batch, use_cache=False, logits_to_keep=1).logits[:, -1])
    assert_close(out[0], out[1], ulps=FORWARD, what="logits with the image cut off, another image")
    batch = adapter.encode_samples(samples)
    with torch.no_grad():
        clean = [
            adapter.forward(adapter.encode_samples(c), use_cache=False, logits_to_keep=1).logits[:, -1]
            for c in (samples, other)
        ]
    assert (clean[0] - clean[1]).abs().max() > 1e-2  # without knockout the image matters


def test_paligemma_prefix_keeps_question_to_image_open():
    """Inside PaliGemma's bidirectional prefix, image->question blocks question queries from image keys only: image
    queries still read the question."""
    from vrprobe.registry import load_adapter

    a = load_adapter("zoo:paligemma")
    s = load_dataset("easy-vqa:test", limit=2, seed=0).samples
    batch = a.encode_samples(s)
    site = Site("attn_probs", (0,), "all")
    with torch.no_grad(), intervene(a, batch.groups, edits=edge_edits(["image->question"], [0]), record=[site]) as rec:
        a.forward(batch, use_cache=False, logits_to_keep=1)
    probs = rec.stacked(site)[0]  # [B, H, T, S] of layer 0
    g = batch.groups
    text = g.valid & ~g.image & ~g.last
    for b in range(len(s)):
        t_rows, i_keys = text[b].nonzero().squeeze(1), g.image[b].nonzero().squeeze(1)
        assert probs[b][:, t_rows][:, :, i_keys].abs().max() == 0
        assert probs[b][:, i_keys][:, :, t_rows].sum(-1).min() > 0


def test_full_knockout_falls_to_the_blank_image_level(adapter):
    """The issue's natural check: with image->question and image->last blocked at every layer, color and shape
    accuracy fall from the clean level to about the blank-image level."""
    ds = load_dataset("easy-vqa:test", limit=32, seed=1)
    blank = load_dataset("easy-vqa:test", limit=32, seed=1, image_ablation="blank")
    records, _ = run_knockout(adapter, ds.samples, ["image->question", "image->last"], "all", blank=blank.samples)
    visual = [r for r in records if r["question_type"] in ("color", "shape")]
    clean = np.mean([r["correct"] for r in visual])
    knocked = np.mean([r["knocked_correct"] for r in visual])
    blind = np.mean([r["blank_correct"] for r in visual])
    assert clean > 0.8
    assert knocked < 0.5 and abs(knocked - blind) < 0.25


def test_qwen2vl_knockout_batched_equals_one_at_a_time():
    """Qwen2-VL's per-sample image-token count: two image sizes in one batch give each sample's own p(target)."""
    from vrprobe.registry import load_adapter

    a = load_adapter("zoo:qwen2vl")
    base = load_dataset("easy-vqa:test", limit=2, seed=0).samples
    big = replace(base[1], id="wide", image_fn=lambda: base[1].load_image().resize((128, 64)))
    chunk = [base[0], big]
    batch = a.encode_samples(chunk)
    counts = batch.groups.image.sum(1).tolist()
    assert counts[0] != counts[1]
    ids = [a.answer_ids(s.gold)[0] for s in chunk]
    edits = edge_edits(["image->last", "question->last"], [1, 2])
    together = target_probs(a, batch, ids, edits)
    alone = [target_probs(a, a.encode_samples([s]), [i], edits)[0] for s, i in zip(chunk, ids, strict=True)]
    assert_close(together, alone, dtype=torch.float32, ulps=FORWARD, what="p(target) batched vs alone")


def test_windows_edges_and_effects():
    assert windows(8, 2) == [(i, i + 1) for i in range(7)]
    assert window_size(None, 8) == 2 and window_size("all", 8) == 8 and window_size("3", 28) == 3
    assert window_size(None, 32) == 8 and window_size(None, 2) == 1
    with pytest.raises(UsageError, match="wider"):
        window_size(9, 8)
    with pytest.raises(UsageError, match="unknown edge"):
        parse_edges("image->answer")
    rows = [
        {"sample_id": str(i), "edge": "image->question", "start": a, "end": a + 1, "clean_correct": c}
        | {"relative_change": v}
        for a, values in ((0, [-0.5, -0.4, -0.6, 3.0]), (1, [-0.1, 0.1, 0.0, 9.0]), (2, [-0.2, -0.3, -0.25, 0.0]))
        for i, (v, c) in enumerate(zip(values, (1, 1, 1, 0), strict=True))
    ]
    effects = window_effects(rows, n_boot=500)
    assert [e["n"] for e in effects] == [3, 3, 3]  # the wrong answer's row is left out
    assert effects[0]["effect"] == pytest.approx(-0.5)
    layers = integration_layers(effects)["image->question"]
    assert layers["peak"] == [0, 1] and layers["last"] == [2, 3]


def test_benjamini_hochberg_and_mean_interval_match_references():
    p = np.random.default_rng(0).uniform(size=40) ** 2
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    q = benjamini_hochberg([0.01, np.nan, 0.04])
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.02)
    v = np.random.default_rng(1).normal(size=30)
    mean, (lo, hi) = mean_interval(v, n_boot=4000, seed=3)
    rng = np.random.default_rng(3)
    ref = np.quantile(v[rng.integers(0, 30, size=(4000, 30))].mean(1), [0.025, 0.975])
    assert mean == pytest.approx(v.mean()) and (lo, hi) == pytest.approx(tuple(ref))


def test_head_sharpness_cells_match_an_independent_correlation(adapter):
    s = load_dataset("easy-vqa:test", limit=40, seed=2).samples
    records = score_batch(adapter, s)
    for r, x in zip(records, adapter.encode_samples(s).groups.image.sum(1).tolist(), strict=True):
        r["n_image_tokens"] = x
    result = head_sharpness(records)
    n_layers, n_heads = np.asarray(records[0]["entropy_by_head"]).shape
    assert result["n_tests"] <= n_layers * (n_heads + 1)
    cell = next(c for c in result["cells"] if c["layer"] == 1 and c["head"] == 0)
    x = -np.array([r["entropy_by_head"][1][0] / np.log(r["n_image_tokens"]) for r in records])
    y = np.array([r["correct"] for r in records])
    if np.ptp(y) > 0:
        assert cell["r_correct"] == pytest.approx(stats.pointbiserialr(y, x).statistic, abs=1e-9)
    # shuffled correctness: no cell survives BH (deterministic shuffle)
    shuffled = [{**r, "correct": c} for r, c in zip(records, np.random.default_rng(0).permutation(y), strict=True)]
    assert head_sharpness(shuffled)["predicts_correctness"] == []


def test_band_sweep_matches_band_corruption_and_non_image_positions():
    from vrprobe.registry import load_adapter

    a = load_adapter("zoo:llava")
    s = load_dataset("easy-vqa:test", limit=12, seed=0).samples
    sweep = band_sweep(a, s, 2, positions="all", noise=3.0, seed=0, batch_size=12)
    assert [b["band"] for b in sweep["bands"]] == [[i, i + 1] for i in range(a.num_layers - 1)]
    one = corrupt_band(a, s, (2, 3), target="hidden", positions="all", noise=3.0, seed=0, batch_size=12).summary()
    row = sweep["bands"][2]
    assert row["accuracy"] == pytest.approx(one["accuracy_corrupted"])
    assert row["drop_abs"] == pytest.approx(sweep["accuracy_clean"] - row["accuracy"])
    non_image = corrupt_band(a, s, (2, 3), positions="non_image", noise=3.0, seed=0, batch_size=12)
    assert len(non_image.corrupted) == len(s)


@pytest.mark.slow
def test_knockout_command_writes_the_summary_and_resumes(tmp_path):
    out = tmp_path / "ko"
    args = ["knockout", "--model", "zoo:llava", "--data", "easy-vqa:test", "--out", str(out), "--limit", "6"]
    first = run_cli(*args, "--edges", "image->question,last->last")
    assert first.returncode == 0, first.stderr
    s = json.loads((out / "summary.json").read_text())
    assert {"windows", "integration_layers", "accuracy_clean"} <= set(s)
    assert {w["edge"] for w in s["windows"]} == {"image->question", "last->last"}
    assert len(s["windows"]) == 2 * 7 and all(len(w["ci"]) == 2 for w in s["windows"])
    again = run_cli(*args, "--edges", "image->question,last->last")
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text())["windows"] == s["windows"]
    full = run_cli(*args[:6], str(tmp_path / "all"), "--limit", "6", "--window", "all")
    assert full.returncode == 0, full.stderr
    s = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert {"accuracy_knocked_out", "accuracy_by_type_knocked_out", "accuracy_blank"} <= set(s)
    assert all(w["start"] == 0 and w["end"] == 7 for w in s["windows"])


def test_knockout_api_refuses_bad_options_before_writing(tmp_path):
    for kwargs, message in (({"window": "0"}, "--window"), ({"edges": "image->x"}, "unknown edge")):
        with pytest.raises(UsageError, match=message):
            knockout("zoo:llava", "easy-vqa:test", out=tmp_path / "x", limit=2, **kwargs)
    assert not (tmp_path / "x").exists()
    with pytest.raises(UsageError, match="knockout keys"):
        Knockout("everything")
