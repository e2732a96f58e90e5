"""`exact_work` (the tracing engine's ceiling) against the states that really differ, run by run, on every zoo family.

For each restoration of a grid, a plain run (the edits written here, one row) records every layer's output; the
positions where it differs from both the clean and the corrupted run are counted and compared with the count
`exact_work` derives from the attention masks alone."""

from __future__ import annotations

import torch

from vrprobe.data import load_dataset
from vrprobe.interventions import Add, Replace, Site, intervene
from vrprobe.interventions.sites import positions_mask
from vrprobe.tracing import TraceConfig, exact_work, reference_work, trace_jobs, window_layers
from vrprobe.tracing.replay import attends, capture_layer_calls


def layer_outputs(adapter, batch, edits=()):
    """Every decoder layer's output [L, B, T, D] under `edits`, and the layer calls."""
    site = Site("resid", tuple(range(adapter.num_layers)), "all")
    with (
        torch.no_grad(),
        intervene(adapter, batch.groups, edits=edits, record=[site]) as rec,
        capture_layer_calls(adapter) as calls,
    ):
        adapter.forward(batch, use_cache=False)
    return rec.stacked(site), calls


def differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Positions [.., T] whose states differ at all. Exact by construction: every run here is one row of the same
    shape, so a state whose inputs are equal is computed by the same kernels from the same numbers."""
    return (a != b).any(-1)


def test_exact_work_counts_the_states_that_differ(adapter):
    sample = load_dataset("easy-vqa:test", limit=4, seed=0).samples[0]
    cfg = TraceConfig(noise_samples=1)
    L = adapter.num_layers
    batch = adapter.encode_samples([sample])
    image = batch.groups.image[0]
    dim = adapter.model.config.get_text_config().hidden_size
    gen = torch.Generator().manual_seed(0)
    delta = torch.zeros(1, image.shape[0], dim)
    delta[:, image] = 3.0 * torch.randn(1, int(image.sum()), dim, generator=gen)
    noise = (Site("embed", positions="image"), Add(delta))
    clean, calls = layer_outputs(adapter, batch)
    corrupted, _ = layer_outputs(adapter, batch, [noise])
    clean, corrupted = clean[:, 0], corrupted[:, 0]  # [L, T, D]
    masks = [positions_mask(g, batch.groups)[0] for g in cfg.groups]
    allowed = attends(calls)
    base = exact_work(allowed, image, masks, [], L, 1, cfg.window)
    assert base == L * image.shape[0] + int(differs(corrupted, clean).sum())
    blocks = {k: Site(k, tuple(range(L)), "all") for k in ("attn", "mlp")}
    with torch.no_grad(), intervene(adapter, batch.groups, record=list(blocks.values())) as rec:
        adapter.forward(batch, use_cache=False)
    jobs = trace_jobs(cfg.kinds, L, len(cfg.groups), cfg.window)
    for job in jobs:
        group = cfg.groups[job.group]
        if job.kind == "resid":
            edits = [(Site("resid", (job.layer,), group), Replace(clean[job.layer][None]))]
        else:
            block = rec.stacked(blocks[job.kind])
            edits = [(Site(job.kind, (w,), group), Replace(block[w])) for w in window_layers(job.layer, cfg.window, L)]
        restored, _ = layer_outputs(adapter, batch, [noise, *edits])
        measured = int((differs(restored[:, 0], clean) & differs(restored[:, 0], corrupted)).sum())
        counted = exact_work(allowed, image, masks, [job], L, 1, cfg.window) - base
        assert measured == counted, (job, measured, counted)
    total = exact_work(allowed, image, masks, jobs, L, 1, cfg.window)
    assert total < reference_work(len(jobs), L, image.shape[0], 1)
