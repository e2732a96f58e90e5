"""Benchmark: vrprobe's batched tracing engine vs ROME's per-restoration loop, on the same model, grid and noise.

The reference is ROME's `trace_with_patch` algorithm: for every (kind, layer, group) one forward of batch 1 + N, row 0
clean, rows 1..N with noise on the image-token embeddings, and hooks that copy row 0's state into rows 1..N at the
restored site. Both use the same noise draws, so their p_restored must agree. Made fair: the reference computes logits
at the answer position only (`logits_to_keep=1`), as the engine does.

Prints the CPU (`trace_speed[cpu]: model="..." cores=N torch_threads=T`), one line per model and, last, the worst case
over models:
    trace_speed: speedup=<median> [<min>-<max>] max_abs_diff=<x> hook_overhead=<median> [<min>-<max>]
Every timed comparison runs `--repeats` rounds in which the two sides take turns (the order reversed each turn, so that
drift in the machine's speed hits both alike; `timing.alternate`), and prints the median of the paired per-round
ratios with their range. speedup = reference time / engine time, a round tracing `--samples` samples on each side;
hook_overhead = forward time while recording what eval and tracing record (every layer's output and the answer
position's attention at every layer, through vrprobe's attention function), the recorded states then taken as eval
takes them (`read`), / plain eager forward time (no hooks), same batch of 1 + N rows, `--forwards` forwards per side
per round, alternating forward by forward. The per-model line also gives the ratio when every attention- and
MLP-block output is recorded as well, and that of a plain SDPA forward (transformers' default attention, no hooks)
over the same eager one.

    python benchmarks/trace_speed.py [--model zoo:llava --model zoo:qwen2vl] [--samples 2] [--noise-samples 10]
                                     [--repeats 5] [--forwards 20] [--threads T]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from timing import Spread, alternate, cpu, positive_ints, ratios, set_threads
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


def hook_overhead(spec: str, samples, rows: int, site_sets, repeats: int, forwards: int) -> list[Spread]:
    """Per set of sites: forward time while recording them / plain eager forward time (no hooks), as the paired
    ratios of `repeats` rounds of `forwards` forwards per side, the two sides alternating forward by forward (each
    comparison apart, so that no third side's memory traffic falls between them). The last entry is a plain SDPA
    forward (no hooks, transformers' default attention) over the same eager forward."""
    plain = load_adapter(spec, attn_implementation="eager")
    sdpa = load_adapter(spec, attn_implementation="sdpa")
    probe = load_adapter(spec)
    chosen = samples[:rows]
    batch_p, batch_s, batch_r = (
        a.collate([a.encode_one(s.load_image(), s.question) for s in chosen]) for a in (plain, sdpa, probe)
    )

    def recorded(sites):
        def run():
            with intervene(probe, batch_r.groups, record=sites) as rec:
                probe.forward(batch_r, use_cache=False)
            read(rec, sites)

        return run

    def base():
        plain.forward(batch_p, use_cache=False)

    others = [recorded(sites_for(probe.num_layers)) for sites_for in site_sets]
    others.append(lambda: sdpa.forward(batch_s, use_cache=False))
    out = []
    with torch.no_grad():
        for other in others:
            alternate([base, other], 1, calls=3)  # warm-up
            t_base, t_other = alternate([base, other], repeats, calls=forwards)
            out.append(ratios(t_other, t_base))
    return out


def read(rec, sites) -> None:
    """Take the recorded states as eval does: attention stacked over layers (sharpness), hidden states one tensor
    per layer (the probes' features), so that what reading costs counts in the overhead."""
    for site in sites:
        if site.component == "attn_probs":
            rec.stacked(site)
        else:
            rec.layers(site)


def standard_sites(num_layers: int) -> list[Site]:
    """What vrprobe records in eval and tracing: every layer's output and the answer position's attention."""
    layers = tuple(range(num_layers))
    return [Site("resid", layers, "all"), Site("attn_probs", layers, "last")]


def all_block_sites(num_layers: int) -> list[Site]:
    """Everything: every layer's output, attention-block and MLP-block outputs, and the answer position's attention."""
    layers = tuple(range(num_layers))
    return [Site(k, layers, "all") for k in ("resid", "attn", "mlp")] + [Site("attn_probs", layers, "last")]


@dataclass
class Result:
    speedup: Spread
    diff: float
    overhead: Spread


def bench(spec: str, n_samples: int, noise_samples: int, repeats: int, forwards: int) -> Result:
    adapter = load_adapter(spec)
    samples = load_dataset("easy-vqa:test", limit=max(32, n_samples), seed=0).samples
    cfg = TraceConfig(noise_samples=noise_samples)
    tracer = Tracer(adapter, measure_sigma(adapter, samples), cfg)
    chosen = samples[:n_samples]
    out: dict[str, list[torch.Tensor]] = {}
    for s in chosen[:1]:  # warm-up
        tracer.trace(s, 0)

    def ours():
        out["ours"] = [tracer.trace(s, i).p_restored for i, s in enumerate(chosen)]

    def reference():
        out["ref"] = [rome_trace(adapter, s, tracer, cfg, i) for i, s in enumerate(chosen)]

    t_ours, t_ref = alternate([ours, reference], repeats)  # the sides take turns, so drift hits both alike
    diff = max(float((a - b).abs().max()) for a, b in zip(out["ours"], out["ref"], strict=True))
    overhead, all_blocks, sdpa = hook_overhead(
        spec, samples, noise_samples + 1, (standard_sites, all_block_sites), repeats, forwards
    )
    speedup = ratios(t_ref, t_ours)
    per_sample = 1 / len(chosen)
    print(
        f"trace_speed[{spec}]: speedup={speedup} max_abs_diff={diff:.2e} hook_overhead={overhead.fmt(3)} "
        f"(engine {Spread.of(t_ours).scaled(per_sample)} s/sample, reference {Spread.of(t_ref).scaled(per_sample)} "
        f"s/sample, {len(cfg.kinds) * adapter.num_layers * len(cfg.groups)} restorations x {noise_samples} draws; "
        f"recording attn and mlp block outputs too: {all_blocks.fmt(3)}; plain sdpa forward: {sdpa.fmt(3)}; "
        f"median [min-max] of {repeats} alternating rounds, {forwards} forwards per side per round for the overheads)",
        flush=True,
    )
    return Result(speedup, diff, overhead)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model spec (repeatable); default: the three zoo models")
    parser.add_argument("--samples", type=int, default=2, help="samples traced per round (default 2)")
    parser.add_argument("--noise-samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds of each comparison (default 5)")
    parser.add_argument("--forwards", type=int, default=20, help="forwards per side per overhead round (default 20)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    args = parser.parse_args()
    positive_ints(parser, args, ("samples", "noise_samples", "repeats", "forwards", "threads"))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    set_threads(args.threads)
    print(f"trace_speed[cpu]: {cpu()}", flush=True)
    models = args.model or ["zoo:llava", "zoo:paligemma", "zoo:qwen2vl"]
    results = [bench(m, args.samples, args.noise_samples, args.repeats, args.forwards) for m in models]
    slowest = min(results, key=lambda r: r.speedup.median)
    costliest = max(results, key=lambda r: r.overhead.median)
    print(
        f"trace_speed: speedup={slowest.speedup} max_abs_diff={max(r.diff for r in results):.2e} "
        f"hook_overhead={costliest.overhead.fmt(3)}"
    )


if __name__ == "__main__":
    main()
