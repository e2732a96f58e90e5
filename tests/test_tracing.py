"""Causal Tracing Engine on every zoo family, checked against a plain ROME-style loop written here."""

from __future__ import annotations

import pytest
import torch

from vrprobe.analyses.band import auto_band, band_edits, corrupt_band, parse_band
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError
from vrprobe.interventions import Add, Replace, Site, intervene
from vrprobe.registry import load_adapter
from vrprobe.tracing import TraceConfig, Tracer, mean_grid, measure_sigma, restoration, window_layers
from vrprobe.tracing.replay import attends, capture_layer_calls, closed_subset, reachable

from numerics import FORWARD, assert_close


@pytest.fixture(scope="module")
def samples():
    return load_dataset("easy-vqa:test", limit=30, seed=2).samples


def reference_loop(adapter, sample, tracer, cfg):
    """ROME's algorithm: per (kind, layer, group) one forward of batch 1 + N (row 0 clean, rows 1..N noised)."""
    batch = adapter.encode([sample.load_image()], [sample.question])
    target = adapter.answer_ids(sample.answers[0])[0]
    n, L = cfg.noise_samples, adapter.num_layers
    rows = adapter.collate(batch.items * (n + 1))
    dim = adapter.model.config.get_text_config().hidden_size
    # the engine's draws: N standard normals of the embeddings' shape from the sample's generator
    eps = torch.randn((n, batch.inputs["input_ids"].shape[1], dim), generator=tracer.generator(0))
    delta = torch.zeros(n + 1, *eps.shape[1:])
    img = batch.groups.image[0]
    delta[1:, img] = cfg.noise * tracer.sigma * eps[:, img]
    sites = {k: Site(k, tuple(range(L)), "all") for k in cfg.kinds}
    with torch.no_grad(), intervene(adapter, batch.groups, record=list(sites.values())) as rec:
        adapter.forward(batch, use_cache=False)
    out = torch.zeros(len(cfg.kinds), L, len(cfg.groups))
    for k, kind in enumerate(cfg.kinds):
        for layer in range(L):
            for g, group in enumerate(cfg.groups):
                layers = [layer] if kind == "resid" else list(window_layers(layer, cfg.window, L))
                edits = [(Site("embed", positions="image"), Add(delta))]
                edits += [(Site(kind, (w,), group), Replace(rec[sites[kind]][w])) for w in layers]
                with torch.no_grad(), intervene(adapter, rows.groups, edits=edits):
                    logits = adapter.forward(rows, use_cache=False).logits[1:, -1]
                out[k, layer, g] = torch.softmax(logits.float(), -1)[:, target].mean()
    return out


def test_engine_equals_plain_loop(adapter, samples):
    cfg = TraceConfig(noise_samples=3, window=3)
    tracer = Tracer(adapter, measure_sigma(adapter, samples[:8]), cfg)
    sample = samples[1]
    trace = tracer.trace(sample, index=0)
    ref = reference_loop(adapter, sample, tracer, cfg)
    assert_close(trace.p_restored, ref, scale=1.0, ulps=FORWARD, what="engine vs plain loop (probability)")
    assert trace.target == sample.answers[0]


def test_restorations_that_cannot_change_the_answer_are_not_run(adapter, samples, monkeypatch):
    """A restoration whose restored states cannot reach the answer position (by the exact-work analysis) is not run:
    its p_restored is p_corrupted itself, so its effect is exactly 0 on any CPU, where the plain loop gets 0 up to
    rounding. Every other restoration runs; restoring the last layer's output at the image is one that cannot."""
    cfg = TraceConfig(noise_samples=2)
    tracer = Tracer(adapter, measure_sigma(adapter, samples[:8]), cfg)
    ran: list[restoration.Job] = []
    real = restoration.restore

    def counting(a, runs, jobs, *args):
        ran.extend(jobs)
        return real(a, runs, jobs, *args)

    monkeypatch.setattr("vrprobe.tracing.engine.restore", counting)
    trace = tracer.trace(samples[2], index=0)  # the reference loop draws sample 0's noise
    L, G = adapter.num_layers, len(cfg.groups)
    jobs = restoration.trace_jobs(cfg.kinds, L, G, cfg.window)
    skipped = [job for job in jobs if job not in ran]
    assert restoration.Job(0, "resid", L - 1, cfg.groups.index("image"), L) in skipped
    assert len(ran) + len(skipped) == len(jobs) and len(ran) > len(jobs) // 2
    for job in skipped:
        assert float(trace.effect[job.k, job.layer, job.group]) == 0.0, job  # exact by construction
    ref = reference_loop(adapter, samples[2], tracer, cfg)
    assert_close(trace.p_restored, ref, scale=1.0, ulps=FORWARD, what="engine vs plain loop (probability)")


def test_batching_choices_do_not_change_results(adapter, samples, monkeypatch):
    """One job per batch, the default schedule, every start layer in one batch, and another attention function
    (keys and values copied per row instead of shared per draw) all give the same p_restored."""
    cfg = TraceConfig(noise_samples=2)
    sigma = measure_sigma(adapter, samples[:8])
    default = Tracer(adapter, sigma, cfg).trace(samples[3], index=3)
    alone = Tracer(adapter, sigma, TraceConfig(noise_samples=2, max_rows=2)).trace(samples[3], index=3)
    monkeypatch.setattr(restoration, "LAYER_CALL_COST", 10**9)
    merged_jobs = [restoration.Job(0, "resid", s, 0, s) for s in range(8)]
    assert len(restoration.schedule(merged_jobs, 8, 10, 100)) == 1
    assert [len(b) for b in restoration.schedule(merged_jobs, 8, 10, 3)] == [3, 3, 2]
    merged = Tracer(adapter, sigma, cfg).trace(samples[3], index=3)
    eager = load_adapter(f"zoo:{adapter.family}", attn_implementation="eager")
    copied = Tracer(eager, sigma, cfg).trace(samples[3], index=3)
    for other in (alone, merged, copied):
        assert_close(default.p_restored, other.p_restored, scale=1.0, ulps=FORWARD, what="other batching (probability)")


def test_only_positions_attending_to_clean_states_stay_clean(adapter, samples):
    """What the engine may reuse after restoring the image tokens' layer output: in a causal model the image tokens
    (and the text before them) see only clean states and stay clean, so only the text after them is recomputed;
    PaliGemma's bidirectional prefix lets the image tokens see the corrupted text, so nothing stays clean there."""
    batch = adapter.encode_samples(samples[:1])
    with torch.no_grad(), capture_layer_calls(adapter) as calls:
        adapter.forward(batch, use_cache=False)
    img = batch.groups.image[0]
    allowed = attends(calls)
    untouched = ~reachable(allowed, img)
    closed = closed_subset(allowed, img | untouched)
    end = int(img.nonzero()[-1]) + 1
    if adapter.family == "paligemma":
        assert not untouched.any() and not closed.any()
    else:
        assert untouched[: int(img.nonzero()[0])].all() and closed[:end].all() and not closed[end:].any()


def test_restoring_all_positions_gives_clean_and_zero_noise_changes_nothing(adapter, samples):
    sigma = measure_sigma(adapter, samples[:8])
    full = Tracer(adapter, sigma, TraceConfig(kinds=("resid",), groups=("all",), noise_samples=4))
    t = full.trace(samples[0])
    assert_close(t.p_restored, t.p_clean, scale=1.0, ulps=FORWARD, what="restoring everything gives p_clean")
    quiet = Tracer(adapter, sigma, TraceConfig(noise=0.0, noise_samples=2)).trace(samples[0])
    assert_close(quiet.p_corrupted, quiet.p_clean, dtype=torch.float32, scale=1.0, ulps=FORWARD)
    assert_close(quiet.effect, 0.0, scale=1.0, ulps=FORWARD, what="no noise, no effect (probability)")


def test_same_seed_is_bit_identical(adapter, samples):
    sigma = measure_sigma(adapter, samples[:8])
    cfg = TraceConfig(kinds=("resid", "mlp"), noise_samples=2, seed=3)
    a = Tracer(adapter, sigma, cfg).trace(samples[4], index=4)
    b = Tracer(adapter, sigma, cfg).trace(samples[4], index=4)
    c = Tracer(adapter, sigma, TraceConfig(kinds=("resid", "mlp"), noise_samples=2, seed=4)).trace(samples[4], index=4)
    assert torch.equal(a.p_restored, b.p_restored) and a.p_corrupted == b.p_corrupted
    assert not torch.equal(a.p_restored, c.p_restored)
    grid = mean_grid(a.rows() + b.rows())
    assert len(grid) == 2 * adapter.num_layers * 3
    cell = next(c for c in grid if c["kind"] == "mlp" and c["layer"] == 1 and c["group"] == "question")
    # the grid's mean of two equal effects, in float64, against the effect subtracted in float32
    assert_close(cell["effect"], float(a.effect[1, 1, 1]), dtype=torch.float32, scale=1.0)


def test_band_corruption_drops_accuracy_and_reports_sharpness(adapter, samples):
    res = corrupt_band(adapter, samples[:16], (2, 4), target="both", noise=8.0, batch_size=8)
    s = res.summary()
    assert s["n"] == 16 and s["band"] == [2, 4]
    assert s["accuracy_corrupted"] <= s["accuracy_clean"]
    assert s["drop_abs"] == pytest.approx(s["accuracy_clean"] - s["accuracy_corrupted"])
    import math

    n_img = int(adapter.encode([samples[0].load_image()], ["x"]).groups.image.sum())
    assert 0 <= s["sharpness_clean"] <= math.log(n_img) + 1e-9
    quiet = corrupt_band(adapter, samples[:8], (2, 4), target="hidden", noise=0.0, batch_size=8).summary()
    assert quiet["drop_abs"] == 0  # the same predictions, counted
    assert_close(quiet["sharpness_clean"], quiet["sharpness_corrupted"], dtype=torch.float32, ulps=FORWARD)


def test_band_and_trace_errors(adapter):
    with pytest.raises(UsageError, match="out of range"):
        parse_band(f"2-{adapter.num_layers}", adapter.num_layers)
    with pytest.raises(UsageError, match="A-B"):
        parse_band("middle", adapter.num_layers)
    with pytest.raises(UsageError, match="target"):
        band_edits((1, 2), "weights", "image", 3.0, {1: 1.0, 2: 1.0})
    with pytest.raises(UsageError, match="unknown restoration kind"):
        TraceConfig(kinds=("heads",))
    grid = [{"kind": "resid", "layer": i, "group": "image", "effect": float(i == 5 or i == 6)} for i in range(8)]
    assert auto_band(grid, 8, width=2) == (5, 6)


def test_replay_reads_the_cache_argument_from_the_layer_signature(adapter):
    """transformers 5.24 renamed the decoder layers' `past_key_values` to `cache`: replay reads the name."""
    from vrprobe.tracing.replay import CACHE_KWARGS, cache_kwarg, with_cache

    class Old(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, **kwargs): ...

    class New(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None, cache=None, use_cache=False, **kwargs): ...

    class Unknown(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None): ...

    assert cache_kwarg(Old()) == "past_key_values" and cache_kwarg(New()) == "cache"
    assert cache_kwarg(adapter.decoder_layers[0]) in CACHE_KWARGS
    assert with_cache(New(), {"past_key_values": None, "attention_mask": 1}, "C") == {
        "attention_mask": 1,
        "cache": "C",
        "use_cache": True,
    }
    with pytest.raises(UsageError, match="takes none of cache, past_key_values"):
        cache_kwarg(Unknown())
