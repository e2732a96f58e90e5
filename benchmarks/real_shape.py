"""Benchmark: the tracing engine at each family's real token structure, against ROME's loop and the exact-work ceiling.

1. Per family, a random-init float32 model with the real depth, image-token count and vocabulary (`REAL_SHAPES` in
   `vrprobe.zoo.replica`: LLaVA-1.5-7B 32 layers / 576 image tokens / 32,064; PaliGemma-3B 18 / 256 / 257,216, its
   bidirectional prefix; Qwen2-VL-7B 28 / 391 / 152,064, the image tokens of a 640×480 image, the size of a typical
   VQA v2 / COCO photo), at hidden size `--width` (heads of 32, key/value heads and MLP width in the real proportions),
   built from the real processor files in `../shared/replicas/` when present (else the zoo tokenizer with the real
   image geometry). easy-VQA test images, upscaled to 640×480. On the same model, grid (resid, mlp, attn × 3 groups
   × every layer), noise draws and samples it times the engine (`Tracer.trace`) and ROME's per-restoration loop
   (`trace_speed.rome_trace`, logits at the answer position only), and prints
   `real_shape[FAMILY]: layers=L image_tokens=N speedup=X exact_ceiling=C fraction_of_ceiling=F max_abs_diff=D
   recording_overhead=R` with exact_ceiling = `reference_work / exact_work` (`vrprobe.tracing.restoration`, in
   row × layer × position units) and fraction_of_ceiling = speedup / exact_ceiling. recording_overhead is eval's
   recording at this structure: the prompt forward of `--eval-batch` samples recording every layer's output and the
   answer position's attention at every layer, over the same forward in plain eager attention (and, in the details,
   over a plain SDPA forward, transformers' default).
2. Compute efficiency at LLaVA-1.5-7B's real width (hidden 4096, MLP 11008, 32 heads, vocabulary 32,064;
   `--slice-layers` decoder layers, 594 tokens): this machine's matmul peak for the dtype (`matmul_peak`), then
   `score_batch` on `--eval-batch` samples (what `vrprobe eval` runs per batch: prompt forward with the answer
   position's attention recorded, candidate scoring) and a trace of one sample (1 draw), each as FLOP/s / peak.
   FLOPs are counted from the config and token counts (`layer_flops`): for eval, those of the forwards it runs
   (`eval_flops`); for the trace, the least work any exact engine must do (`exact_work`), so the engine's own
   overhead counts against it.
3. Memory flat in dataset size: peak resident memory of `vrprobe eval` on zoo:llava (batch size 8) over 10 and over
   2,000 samples, each in a fresh process, as a ratio.

Every timed comparison (engine / reference, and each overhead) runs `--repeats` rounds in which the sides take turns,
the order reversed each turn (`timing.alternate`), and prints the median of the paired per-round figures with their
range, `median [min-max]`; the first line names the CPU (`real_shape[cpu]: model="..." cores=N torch_threads=T`).
Defaults (1 sample per family, 2 noise draws, width 128, 2 slice layers, 3 rounds) take about 25 minutes on a 2-core
CPU, three quarters of it in ROME's loop. Last line: `real_shape: min_fraction_of_ceiling=F max_abs_diff=D
flop_efficiency_eval=E1 flop_efficiency_trace=E2 memory_ratio=M recording_overhead=R` (F, E1, E2, R as
`median [min-max]`; F of the family with the lowest median, R of the one with the highest).

    python benchmarks/real_shape.py [--families llava,paligemma,qwen2vl] [--width 128] [--samples 1]
                                    [--noise-samples 2] [--slice-layers 2] [--eval-batch 2]
                                    [--memory-samples 10,2000] [--layers L] [--slice-width W]
                                    [--repeats 3] [--forwards 3] [--threads T]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from timing import Spread, alternate, cpu, positive_ints, ratios, set_threads
from trace_speed import read, rome_trace, standard_sites
from vrprobe.data import load_dataset
from vrprobe.interventions import intervene
from vrprobe.interventions.sites import positions_mask
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig, Tracer, exact_work, measure_sigma, reference_work, trace_jobs
from vrprobe.tracing.replay import attends
from vrprobe.zoo import replica

REPLICAS = Path(__file__).resolve().parents[2] / "shared" / "replicas"
IMAGE_SIZE = (640, 480)
FAMILIES = ("llava", "paligemma", "qwen2vl")


def samples(n: int):
    """The first n easy-VQA test samples (a type-stratified subset), images upscaled to IMAGE_SIZE."""
    chosen = load_dataset("easy-vqa:test", limit=max(n, 4), seed=0).samples[:n]
    return [dataclasses.replace(s, image_fn=lambda s=s: s.load_image().resize(IMAGE_SIZE)) for s in chosen]


def replicas() -> Path | None:
    return REPLICAS if replica.available(REPLICAS) else None


def family_speed(family: str, root: Path, args) -> dict:
    """Engine vs ROME's loop on one family's real-shape model, `--repeats` alternating rounds; the exact-work ceiling
    from the same prompts; eval's recording overhead on the same model."""
    path = replica.real_shape(family, root / family, args.width, replicas(), layers=args.layers)
    a = load_adapter(str(path), device="cpu", dtype="float32")
    chosen = samples(args.samples)
    cfg = TraceConfig(noise_samples=args.noise_samples)
    tracer = Tracer(a, measure_sigma(a, chosen), cfg)
    score_batch(a, chosen[:1])  # warm-up
    out: dict[str, list[torch.Tensor]] = {}

    def ours():
        out["ours"] = [tracer.trace(s, i).p_restored for i, s in enumerate(chosen)]

    def reference():
        out["ref"] = [rome_trace(a, s, tracer, cfg, i) for i, s in enumerate(chosen)]

    t_ours, t_ref = alternate([ours, reference], args.repeats)  # the sides take turns, so drift hits both alike
    diff = max(float((x - y).abs().max()) for x, y in zip(out["ours"], out["ref"], strict=True))
    ref_units = least_units = 0
    for s in chosen:
        batch = a.encode_samples([s])
        calls = tracer.clean_states(batch)["calls"]
        masks = [positions_mask(g, batch.groups)[0] for g in cfg.groups]
        jobs = trace_jobs(cfg.kinds, a.num_layers, len(cfg.groups), cfg.window)
        noised, T = batch.groups.image[0], batch.groups.image.shape[1]
        least_units += exact_work(attends(calls), noised, masks, jobs, a.num_layers, cfg.noise_samples, cfg.window)
        ref_units += reference_work(len(jobs), a.num_layers, T, cfg.noise_samples)
        image_tokens = int(noised.sum())
    speedup, ceiling = ratios(t_ref, t_ours), ref_units / least_units
    fraction = speedup.scaled(1 / ceiling)
    overhead, vs_sdpa = recording_overhead(path, samples(args.eval_batch), args.repeats, args.forwards)
    engine, ref = (Spread.of(t).scaled(1 / len(chosen)).fmt(1) for t in (t_ours, t_ref))
    print(
        f"real_shape[{family}]: layers={a.num_layers} image_tokens={image_tokens} speedup={speedup} "
        f"exact_ceiling={ceiling:.2f} fraction_of_ceiling={fraction} max_abs_diff={diff:.2e} "
        f"recording_overhead={overhead.fmt(3)} (tokens {T}, width {args.width}, engine {engine} s/sample, "
        f"reference {ref} s/sample, {len(jobs)} restorations x {cfg.noise_samples} draws; recording over a plain "
        f"SDPA forward {vs_sdpa.fmt(3)}, batch {args.eval_batch}; median [min-max] of {args.repeats} rounds)",
        flush=True,
    )
    return {"fraction": fraction, "diff": diff, "overhead": overhead}


def recording_overhead(path: Path, chosen, repeats: int, forwards: int) -> tuple[Spread, Spread]:
    """Eval's recording overhead at this structure: the prompt forward (`logits_to_keep=1`, as `score_batch` runs
    it) recording every layer's output and the answer position's attention at every layer, the records then taken
    as eval takes them (`trace_speed.read`), over the same forward in plain eager attention, and over it in SDPA (no
    hooks); each comparison apart, `repeats` rounds of `forwards` forwards per side, the two sides alternating
    forward by forward."""
    plains = [
        load_adapter(str(path), device="cpu", dtype="float32", attn_implementation=impl) for impl in ("eager", "sdpa")
    ]
    probe = load_adapter(str(path), device="cpu", dtype="float32")
    batch = probe.encode_samples(chosen)
    sites = standard_sites(probe.num_layers)

    def plain(x):
        b = x.encode_samples(chosen)
        return lambda: x.forward(b, use_cache=False, logits_to_keep=1)

    def recorded():
        with intervene(probe, batch.groups, record=sites) as rec:
            probe.forward(batch, use_cache=False, logits_to_keep=1)
        read(rec, sites)

    out = []
    with torch.no_grad():
        for base in map(plain, plains):
            alternate([base, recorded], 1)  # warm-up
            t_base, t_rec = alternate([base, recorded], repeats, calls=forwards)
            out.append(ratios(t_rec, t_base))
    return out[0], out[1]


def matmul_peak(dtype: torch.dtype, size: int = 3072, repeats: int = 5) -> float:
    """This machine's matmul peak (FLOP/s) for `dtype`: the best of `repeats` square matmuls of `size`."""
    x, y = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(x, y)
    best = min(_timed(lambda: torch.matmul(x, y)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def layer_flops(cfg, keys: float) -> float:
    """FLOPs of one position through one decoder layer: 2 per weight of the attention projections (query, key,
    value, output; grouped keys/values counted at their size) and of the gated MLP (3 matrices), plus 4·d_head·heads
    per attended key (scores and weighted values); `keys` = the number of keys the position attends to."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or d // heads
    weights = d * dh * (2 * heads + 2 * kv) + 3 * d * f
    return 2 * weights + 4 * dh * heads * keys


def eval_flops(cfg, tokens: int, samples: int, multi: list[int]) -> float:
    """FLOPs of the forwards `score_batch` runs for `samples` prompts of `tokens` positions: each prompt (causal: a
    position attends to (T + 1) / 2 keys on average) with its answer position's LM head (2·d·V); then, per sample,
    one row per candidate of more than one token (`multi`: their token counts n), the prompt plus the candidate's
    first n − 1 tokens, with the LM head at those n − 1 positions."""
    L, head = cfg.num_hidden_layers, 2 * cfg.hidden_size * cfg.vocab_size
    prompt = L * tokens * layer_flops(cfg, (tokens + 1) / 2) + head
    rows = sum(L * (tokens + n - 1) * layer_flops(cfg, (tokens + n) / 2) + (n - 1) * head for n in multi)
    return samples * (prompt + rows)


def efficiency(root: Path, args) -> tuple[Spread, Spread]:
    """flop_efficiency of an eval batch and of a trace at LLaVA-1.5-7B's width, `--slice-layers` layers, each over
    `--repeats` rounds (peak: the best of the matmuls)."""
    shape = replica.REAL_SHAPES["llava"]
    width = args.slice_width or shape.hidden
    path = replica.real_shape(
        "llava", root / "slice", width, replicas(), head_dim=shape.head_dim, layers=args.slice_layers
    )
    a = load_adapter(str(path), device="cpu", dtype="float32")
    text = a.model.config.get_text_config()
    peak = matmul_peak(torch.float32)
    s = samples(1)
    batch = a.encode_samples(s)
    T = batch.groups.image.shape[1]
    chosen = samples(args.eval_batch)
    score_batch(a, s, batch)  # warm-up
    eval_batch = a.encode_samples(chosen)
    T_eval = eval_batch.groups.image.shape[1]
    multi = [len(a.answer_ids(c)) for c in chosen[0].choices if len(a.answer_ids(c)) > 1]
    cfg = TraceConfig(noise_samples=1)
    tracer = Tracer(a, measure_sigma(a, s), cfg)
    # eval batches and traces take turns, as the two sides of a comparison do
    t_eval, t_trace = alternate(
        [lambda: score_batch(a, chosen, eval_batch), lambda: tracer.trace(s[0], 0)], args.repeats
    )
    e_eval = Spread.of([eval_flops(text, T_eval, len(chosen), multi) / t / peak for t in t_eval])
    calls = tracer.clean_states(batch)["calls"]
    masks = [positions_mask(g, batch.groups)[0] for g in cfg.groups]
    jobs = trace_jobs(cfg.kinds, a.num_layers, len(cfg.groups), cfg.window)
    units = exact_work(attends(calls), batch.groups.image[0], masks, jobs, a.num_layers, cfg.noise_samples, cfg.window)
    rows = 1 + cfg.noise_samples * (1 + len(jobs))
    useful = units * layer_flops(text, (T + 1) / 2) + rows * 2 * text.hidden_size * text.vocab_size
    e_trace = Spread.of([useful / t / peak for t in t_trace])
    print(
        f"real_shape[efficiency]: peak_gflops={peak / 1e9:.1f} "
        f"eval_s_per_sample={Spread.of(t_eval).scaled(1 / len(chosen))} flop_efficiency_eval={e_eval} "
        f"trace_s={Spread.of(t_trace).fmt(1)} flop_efficiency_trace={e_trace} "
        f"(float32, hidden {text.hidden_size}, {text.num_hidden_layers} layers, {T} tokens; trace: "
        f"{len(jobs)} restorations x {cfg.noise_samples} draw; eval batch {len(chosen)}, candidates of >1 token: "
        f"{len(multi)} per sample; median [min-max] of {args.repeats} alternating rounds)",
        flush=True,
    )
    return e_eval, e_trace


# VmHWM, the peak resident memory of this process's address space (getrusage's ru_maxrss would carry over the
# forking parent's peak across exec)
MEMORY_CHILD = """
import re, sys, vrprobe
vrprobe.eval("zoo:llava", "easy-vqa:test", limit=int(sys.argv[1]), out=sys.argv[2], batch_size=8, make_report=False)
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


def memory_ratio(root: Path, sizes: tuple[int, int]) -> float:
    """Peak resident memory of `vrprobe eval` (zoo:llava, easy-VQA test, batch size 8 in both, so that only the
    dataset size differs) over sizes[1] samples / over sizes[0]."""
    peaks = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(n), str(root / f"eval-{n}")],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks.append(int(out.stdout.strip().splitlines()[-1]) / 1024)
    ratio = peaks[1] / peaks[0]
    print(
        f"real_shape[memory]: eval_peak_mib_{sizes[0]}={peaks[0]:.0f} eval_peak_mib_{sizes[1]}={peaks[1]:.0f} "
        f"memory_ratio={ratio:.3f} (zoo:llava, batch 8; peak resident memory of each process)",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of " + ", ".join(FAMILIES))
    parser.add_argument("--width", type=int, default=128, help="hidden size of the real-shape models (default 128)")
    parser.add_argument("--samples", type=int, default=1, help="samples traced per family (default 1)")
    parser.add_argument("--noise-samples", type=int, default=2, help="noise draws per sample (default 2)")
    parser.add_argument("--slice-layers", type=int, default=2, help="decoder layers of the real-width slice")
    parser.add_argument(
        "--slice-width", type=int, help="width of the slice (default LLaVA-1.5-7B's 4096; quick checks)"
    )
    parser.add_argument("--eval-batch", type=int, default=2, help="samples in the timed eval batch (default 2)")
    parser.add_argument("--memory-samples", default="10,2000", help="the two eval sizes compared (default 10,2000)")
    parser.add_argument("--layers", type=int, help="override every family's depth (quick checks; not the real shape)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating rounds of each timed comparison (default 3)"
    )
    parser.add_argument("--forwards", type=int, default=3, help="forwards per side per overhead round (default 3)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    bad = [f for f in families if f not in FAMILIES]
    sizes = tuple(int(x) for x in args.memory_samples.split(","))
    if bad or not families:
        parser.error(f"unknown family {', '.join(bad) or '(none)'} (known: {', '.join(FAMILIES)})")
    names = ("width", "samples", "noise_samples", "slice_layers", "eval_batch", "layers", "slice_width", "repeats")
    positive_ints(parser, args, (*names, "forwards", "threads"))
    if len(sizes) != 2 or min(sizes) < 1:
        parser.error("--memory-samples takes two positive sizes, e.g. 10,2000")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    set_threads(args.threads)
    print(f"real_shape[cpu]: {cpu()}", flush=True)
    print(f"real_shape: replicas {'from ' + str(REPLICAS) if replicas() else 'absent: zoo tokenizer'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vrprobe-real-shape-") as tmp:
        root = Path(tmp)
        results = [family_speed(f, root, args) for f in families]
        e_eval, e_trace = efficiency(root, args)
        ratio = memory_ratio(root, sizes)
    worst = min(results, key=lambda r: r["fraction"].median)
    costliest = max(results, key=lambda r: r["overhead"].median)
    print(
        f"real_shape: min_fraction_of_ceiling={worst['fraction']} max_abs_diff={max(r['diff'] for r in results):.2e} "
        f"flop_efficiency_eval={e_eval} flop_efficiency_trace={e_trace} memory_ratio={ratio:.3f} "
        f"recording_overhead={costliest['overhead'].fmt(3)}"
    )


if __name__ == "__main__":
    main()
