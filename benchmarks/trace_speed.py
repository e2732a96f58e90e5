"""Benchmark: vrprobe's batched tracing engine vs ROME's per-restoration loop, on the same model, grid and noise.

The reference is ROME's `trace_with_patch` algorithm: for every (kind, layer, group) one forward of batch 1 + N, row 0
clean, rows 1..N with noise on the image-token embeddings, and hooks that copy row 0's state into rows 1..N at the
restored site. Both use the same noise draws, so their p_restored must agree. Made fair: the reference computes logits
at the answer position only (`logits_to_keep=1`), as the engine does.

Prints one line per model and, last, the worst case over models:
    trace_speed: speedup=<ratio> max_abs_diff=<x> hook_overhead=<ratio>
speedup = reference time / engine time; hook_overhead = forward time while recording what eval and tracing record (every
layer's output and the answer position's attention at every layer, through vrprobe's attention function) / plain eager
forward time (no hooks), same batch of 1 + N rows, medians of interleaved repeats. The per-model line also gives the
ratio when every attention- and MLP-block output is retained as well (memory retention, not hook calls, costs there).

    python benchmarks/trace_speed.py [--model zoo:llava --model zoo:qwen2vl] [--samples 5] [--noise-samples 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vrprobe.data import load_dataset
from vrprobe.interventions import Site, intervene, layer_parts
from vrprobe.registry import load_adapter
from vrprobe.tracing import TraceConfig, Tracer, measure_sigma, window_layers


def rome_trace(adapter, sample, tracer: Tracer, cfg: TraceConfig, index: int) -> torch.Tensor:
    """p_restored [K, L, G] by ROME's loop: one (1 + N)-row forward per restoration, patched from row 0."""
    batch = adapter.encode_samples([sample])
    target = adapter.answer_ids(sample.gold)[0]
    n, L = cfg.noise_samples, adapter.num_layers
    rows = adapter.collate(batch.items * (n + 1))
    img = batch.groups.image[0]
    dim = adapter.model.config.get_text_config().hidden_size
    eps = torch.randn((n, img.shape[0], dim), generator=tracer.generator(index))[:, img] * cfg.noise * tracer.sigma
    layers = adapter.decoder_layers
    out = torch.zeros(len(cfg.kinds), L, len(cfg.groups))

    def add_noise(module, args, kwargs):
        h = (args[0] if args else kwargs["hidden_states"]).clone()
        h[1:, img] += eps.to(h.dtype)
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    def copy_row0(positions):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            h = h.clone()
            h[1:, positions] = h[0, positions]
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    for k, kind in enumerate(cfg.kinds):
        for layer in range(L):
            for g, group in enumerate(cfg.groups):
                positions = batch.groups.mask(group)[0]
                window = [layer] if kind == "resid" else list(window_layers(layer, cfg.window, L))
                handles = [layers[0].register_forward_pre_hook(add_noise, with_kwargs=True)]
                for w in window:
                    module = layers[w] if kind == "resid" else layer_parts(layers[w])[kind]
                    handles.append(module.register_forward_hook(copy_row0(positions)))
                try:
                    with torch.no_grad():
                        logits = adapter.forward(rows, use_cache=False, logits_to_keep=1).logits[1:, -1]
                finally:
                    for h in handles:
                        h.remove()
                out[k, layer, g] = torch.softmax(logits.float(), -1)[:, target].mean()
    return out


def hook_overhead(spec: str, samples, rows: int, sites_for, repeats: int = 30) -> float:
    plain = load_adapter(spec, attn_implementation="eager")
    probe = load_adapter(spec)
    batch_p = plain.collate([plain.encode_one(s.load_image(), s.question) for s in samples[:rows]])
    batch_r = probe.collate([probe.encode_one(s.load_image(), s.question) for s in samples[:rows]])
    sites = sites_for(probe.num_layers)
    t_plain, t_rec = [], []
    with torch.no_grad():
        for _ in range(3):
            plain.forward(batch_p, use_cache=False)
            probe.forward(batch_r, use_cache=False)
        for _ in range(repeats):  # interleaved, so drift hits both alike
            t0 = time.perf_counter()
            plain.forward(batch_p, use_cache=False)
            t1 = time.perf_counter()
            with intervene(probe, batch_r.groups, record=sites):
                probe.forward(batch_r, use_cache=False)
            t2 = time.perf_counter()
            t_plain.append(t1 - t0)
            t_rec.append(t2 - t1)
    return statistics.median(t_rec) / statistics.median(t_plain)


def standard_sites(num_layers: int) -> list[Site]:
    """What vrprobe records in eval and tracing: every layer's output and the answer position's attention."""
    layers = tuple(range(num_layers))
    return [Site("resid", layers, "all"), Site("attn_probs", layers, "last")]


def all_block_sites(num_layers: int) -> list[Site]:
    """Everything: every layer's output, attention-block and MLP-block outputs, and the answer position's attention."""
    layers = tuple(range(num_layers))
    return [Site(k, layers, "all") for k in ("resid", "attn", "mlp")] + [Site("attn_probs", layers, "last")]


def bench(spec: str, n_samples: int, noise_samples: int) -> tuple[float, float, float]:
    adapter = load_adapter(spec)
    samples = load_dataset("easy-vqa:test", limit=max(32, n_samples), seed=0).samples
    cfg = TraceConfig(noise_samples=noise_samples)
    tracer = Tracer(adapter, measure_sigma(adapter, samples), cfg)
    chosen = samples[:n_samples]
    for s in chosen[:1]:  # warm-up
        tracer.trace(s, 0)
    t_ours = t_ref = diff = 0.0
    for i, s in enumerate(chosen):  # interleaved, so drift in machine speed hits both alike
        t0 = time.perf_counter()
        ours = tracer.trace(s, i).p_restored
        t1 = time.perf_counter()
        ref = rome_trace(adapter, s, tracer, cfg, i)
        t2 = time.perf_counter()
        t_ours, t_ref = t_ours + t1 - t0, t_ref + t2 - t1
        diff = max(diff, float((ours - ref).abs().max()))
    overhead = hook_overhead(spec, samples, noise_samples + 1, standard_sites)
    all_blocks = hook_overhead(spec, samples, noise_samples + 1, all_block_sites)
    speedup = t_ref / t_ours
    print(
        f"trace_speed[{spec}]: speedup={speedup:.2f} max_abs_diff={diff:.2e} hook_overhead={overhead:.3f} "
        f"(engine {t_ours / len(chosen):.2f} s/sample, reference {t_ref / len(chosen):.2f} s/sample, "
        f"{len(cfg.kinds) * adapter.num_layers * len(cfg.groups)} restorations x {noise_samples} draws; "
        f"recording attn and mlp block outputs too: {all_blocks:.3f})",
        flush=True,
    )
    return speedup, diff, overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model spec (repeatable); default: the three zoo models")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--noise-samples", type=int, default=10)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    results = [
        bench(m, args.samples, args.noise_samples) for m in args.model or ["zoo:llava", "zoo:paligemma", "zoo:qwen2vl"]
    ]
    print(
        f"trace_speed: speedup={min(r[0] for r in results):.2f} max_abs_diff={max(r[1] for r in results):.2e} "
        f"hook_overhead={max(r[2] for r in results):.3f}"
    )


if __name__ == "__main__":
    main()
