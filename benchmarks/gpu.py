"""Benchmark: the one script to run when a GPU is available. LLaVA-1.5-7B's shape in bfloat16, built in the GPU's
memory with random weights (nothing read from or written to disk but the dataset's images), timed under a wall-clock
budget.

The model: LLaVA-1.5-7B's real configuration (`vrprobe.zoo.replica.REAL_SHAPES["llava"]`: 32 layers, hidden 4096, MLP
11008, 32 heads of 128, vocabulary 32,064; CLIP ViT-L/14 at 336 px: 24 layers, hidden 1024, 576 image tokens),
initialised directly on the device in `--dtype` (transformers' own random init, std 0.02, seed 0; about 14 GB in
bfloat16), with the language model on vrprobe's attention function as `vrprobe.load` puts it. The processor: the real
one from `--replicas` (default `../shared/replicas/llava-1.5-7b-hf`) when present, else the zoo tokenizer with the real
image geometry (same 576 image tokens; the prompt is a few tokens shorter). Samples: the first ones of `--data`
(default easy-VQA test).

Steps, in order, each timed to completion (`torch.cuda.synchronize`); a step that would not fit in what is left of
`--budget-s` (estimated from the steps before it) is skipped and says so, and the script still prints everything it
measured:

1. the device's matmul peak for the dtype (`timing.matmul_peak`: best of 5 square products, 8192 on a GPU);
2. build; one untimed warm-up eval batch (skipped with eval when the two would not fit, estimated at a third of
   the peak);
3. eval: `score_batch` (what `vrprobe eval` runs per batch: the prompt forward recording the answer position's
   attention at every layer, candidate scoring) in batches of `--eval-batch`, up to `--eval-samples` samples; FLOPs
   of the forwards it runs (`real_shape.eval_flops`: 2 per weight per token in the decoder, attention 4 · d per
   attended key, causal average, the LM head where logits are taken);
4. resid trace: `Tracer.trace` (what `vrprobe trace` runs per sample) with kinds resid, `--noise-samples` draws (default
   10, vrprobe's), up to `--trace-samples` samples; σ measured apart, once, untimed;
5. full trace: the same with kinds resid, mlp, attn (window 3): the figure P4 asks for, with its FLOP limit: the least
   work any exact engine must do for it (`vrprobe.tracing.exact_work`, row × layer × position units, times
   `real_shape.layer_flops` per unit, plus the LM head per row), the time that work takes at the measured peak
   (flop_limit_s = flop / peak) and the achieved fraction of the peak (flop_limit_s / measured s per sample).

Prints (X numbers; GiB = 2^30 bytes; TFLOP = 1e12 FLOP; TFLOP/s = 1e12 FLOP/s; a skipped figure prints as `n/a`):

    gpu[device]: device=cuda:0 name="NVIDIA H100 80GB HBM3" dtype=bfloat16 torch=2.x cuda=12.x budget_s=X
    gpu[peak]: matmul_peak_tflops=X (bfloat16 8192x8192, best of 5)
    gpu[build]: params=P weights_gib=X build_s=X layers=32 hidden=4096 tokens=T image_tokens=576 processor=replica|zoo
    gpu[eval]: samples=N batch=B s_per_sample=X tflop_per_sample=X peak_fraction=X peak_memory_gib=X
    gpu[trace_resid]: samples=N s_per_sample=X restorations=R draws=D peak_memory_gib=X
    gpu[trace_full]: samples=N s_per_sample=X restorations=R draws=D tflop_per_sample=X flop_limit_s=X
                     peak_fraction=X peak_memory_gib=X                  (one line)
    gpu[STEP]: skipped (needs about X s, Y s of the budget left)       (in place of a step's line)
    gpu[STEP]: failed: out of memory (...)                              (in place of a step's line)
    gpu: device="NAME" dtype=bfloat16 eval_s_per_sample=X resid_trace_s_per_sample=X full_trace_s_per_sample=X
         full_trace_tflop=X full_trace_flop_limit_s=X full_trace_peak_fraction=X peak_memory_gib=X elapsed_s=X
         budget_s=X skipped=none|STEP,STEP(out_of_memory)               (one line, the last)

elapsed_s and the budget count from the script's start after its imports (about 5-10 s before). Needs a CUDA build of
torch and vrprobe importable (`pip install -e .`); no network. peak_memory_gib: `torch.cuda.max_memory_allocated`
since the start (weights included) on a GPU; on the CPU the process's peak resident memory (`VmHWM`). The CPU runs
only with `--allow-cpu` (the test runs it there at `--tiny` width: text hidden 64, 2 layers; vision hidden 32, 2
layers). Without a GPU and without `--allow-cpu` the script exits 2 with one line.

    python benchmarks/gpu.py [--budget-s 480] [--device cuda] [--dtype bfloat16] [--eval-samples 32]
                             [--eval-batch 8] [--trace-samples 3] [--noise-samples 10] [--data easy-vqa:test]
                             [--replicas DIR] [--allow-cpu] [--tiny] [--threads T]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText
from transformers.utils import logging as hf_logging

from real_shape import eval_flops, layer_flops
from timing import cpu, cpu_model, matmul_peak, positive_ints, set_threads, status_kib
from vrprobe.data import load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.interventions.attention import register
from vrprobe.interventions.sites import positions_mask
from vrprobe.models.llava import LlavaAdapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig, Tracer, exact_work, measure_sigma, trace_jobs
from vrprobe.tracing.replay import attends
from vrprobe.zoo import replica

REPLICAS = Path(__file__).resolve().parents[2] / "shared" / "replicas"
GIB = 2**30
#: CLIP ViT-L/14-336, LLaVA-1.5's vision tower
VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
TINY_TEXT = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=2, head_dim=32)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
STEPS = ("eval", "trace_resid", "trace_full")


class Clock:
    """Wall time since the start against the budget; `sync` waits for the device's queued work."""

    def __init__(self, budget: float, device: torch.device) -> None:
        self.start, self.budget, self.device = time.perf_counter(), budget, device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()


def peak_memory(device: torch.device) -> float:
    """Bytes: the most allocated on the GPU since the start, or this process's peak resident memory."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return float(status_kib("VmHWM") * 1024)


def build(device: torch.device, dtype: torch.dtype, tiny: bool, replicas: Path | None) -> LlavaAdapter:
    """LLaVA-1.5-7B's shape (or `tiny`) with random weights, built on `device` in `dtype`, wrapped as vrprobe
    loads it."""
    shape = replica.REAL_SHAPES["llava"]
    text = dict(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        head_dim=shape.head_dim,
    )
    text, vision = (TINY_TEXT, TINY_VISION) if tiny else (text, VISION)
    text = {**text, "num_key_value_heads": text["num_attention_heads"], "vocab_size": shape.vocab}
    cfg = replica.resize(replica.config("llava", replicas), "llava", text, vision, init_range=0.02)
    cfg.vocab_size = shape.vocab
    register()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            cfg, dtype=dtype, attn_implementation={"text_config": "vrprobe", "vision_config": "eager"}
        )
    model.eval()
    adapter = LlavaAdapter(model, replica.processor("llava", replicas), name="llava-1.5-7b shape, random weights")
    if not adapter.records_attention:
        raise RuntimeError("the language model is not on vrprobe's attention function")
    return adapter


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def skipped(step: str, need: float, clock: Clock, skips: list[str]) -> None:
    skips.append(step)
    print(f"gpu[{step}]: skipped (needs about {need:.0f} s, {max(0.0, clock.left()):.0f} s of the budget left)")


def run_eval(a: LlavaAdapter, chosen: list, args, clock: Clock, peak: float) -> tuple[float, float] | None:
    """Eval batches while the next one fits: (s per sample, FLOP per sample), or None when none ran."""
    text = a.model.config.get_text_config()
    seconds = flops = 0.0
    done, per_batch = 0, 0.0
    for start in range(0, len(chosen), args.eval_batch):
        part = chosen[start : start + args.eval_batch]
        if not clock.fits(per_batch):
            break
        batch = a.encode_samples(part)
        multi = [n for n in (len(a.answer_ids(c)) for s in part for c in s.choices) if n > 1]
        t0 = clock.now()
        score_batch(a, part, batch)
        per_batch = clock.now() - t0
        seconds += per_batch
        T = batch.groups.image.shape[1]
        # eval_flops counts per sample the multi-token candidates of one sample; here they are summed over the batch
        flops += eval_flops(text, T, len(part), []) + eval_flops(text, T, 1, multi)
        done += len(part)
    if not done:
        return None
    print(
        f"gpu[eval]: samples={done} batch={args.eval_batch} s_per_sample={seconds / done:.4f} "
        f"tflop_per_sample={flops / done / 1e12:.4g} peak_fraction={flops / seconds / peak:.3f} "
        f"peak_memory_gib={peak_memory(clock.device) / GIB:.2f}",
        flush=True,
    )
    return seconds / done, flops / done


def trace_work(a: LlavaAdapter, tracer: Tracer, sample: Any) -> tuple[float, int]:
    """(the least FLOPs any exact engine must spend on `sample`'s trace, restorations): `exact_work` units times
    `layer_flops` at the causal average of attended keys, plus the LM head (2·d·V) per row run."""
    cfg, text = tracer.cfg, a.model.config.get_text_config()
    batch = a.encode_samples([sample])
    calls = tracer.clean_states(batch)["calls"]
    masks = [positions_mask(g, batch.groups)[0] for g in cfg.groups]
    jobs = trace_jobs(cfg.kinds, a.num_layers, len(cfg.groups), cfg.window)
    units = exact_work(attends(calls), batch.groups.image[0], masks, jobs, a.num_layers, cfg.noise_samples, cfg.window)
    T = batch.groups.image.shape[1]
    rows = 1 + cfg.noise_samples * (1 + len(jobs))
    return units * layer_flops(text, (T + 1) / 2) + rows * 2 * text.hidden_size * text.vocab_size, len(jobs)


def run_trace(
    step: str, a: LlavaAdapter, chosen: list, sigma: float, kinds: tuple[str, ...], args, clock: Clock,
    rate: float, peak: float, skips: list[str],
) -> tuple[float, float] | None:  # fmt: skip
    """Trace samples while the next one fits (its time estimated from its least work at `rate` FLOP/s until one has
    run): (s per sample, least FLOP per sample), or None when none ran."""
    tracer = Tracer(a, sigma, TraceConfig(kinds=kinds, noise_samples=args.noise_samples))
    seconds = flops = 0.0
    done = restorations = 0
    for i, s in enumerate(chosen):
        work, restorations = trace_work(a, tracer, s)
        need = seconds / done if done else work / rate
        if not clock.fits(need):
            if not done:
                skipped(step, need, clock, skips)
            break
        t0 = clock.now()
        tracer.trace(s, i)
        seconds += clock.now() - t0
        flops += work
        done += 1
    if not done:
        return None
    per, limit = seconds / done, flops / done / peak
    extra = f" tflop_per_sample={flops / done / 1e12:.4g} flop_limit_s={limit:.3f} peak_fraction={limit / per:.3f}"
    print(
        f"gpu[{step}]: samples={done} s_per_sample={per:.3f} restorations={restorations} "
        f"draws={args.noise_samples}{extra if step == 'trace_full' else ''} "
        f"peak_memory_gib={peak_memory(clock.device) / GIB:.2f}",
        flush=True,
    )
    return per, flops / done


def guarded(step: str, skips: list[str], device: torch.device, fn: Callable[[], Any]) -> Any:
    """`fn()`, or None after one line when the device runs out of memory (the later steps still run)."""
    try:
        return fn()
    except torch.OutOfMemoryError as exc:
        skips.append(f"{step}(out_of_memory)")
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
        print(f"gpu[{step}]: failed: out of memory ({first[:200]})", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def device_of(args) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        if not args.allow_cpu:
            print(f"gpu: no CUDA device here (torch {torch.__version__}); --allow-cpu runs on the CPU", flush=True)
            sys.exit(2)
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget in seconds (default 480)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is there (tests)")
    parser.add_argument("--dtype", default="bfloat16", help="model dtype (default bfloat16)")
    parser.add_argument("--eval-samples", type=int, default=32, help="samples evaluated at most (default 32)")
    parser.add_argument("--eval-batch", type=int, default=8, help="eval batch size (default 8)")
    parser.add_argument("--trace-samples", type=int, default=3, help="samples traced at most per step (default 3)")
    parser.add_argument("--noise-samples", type=int, default=10, help="noise draws per trace (default 10)")
    parser.add_argument("--data", default="easy-vqa:test", help="dataset spec (default easy-vqa:test)")
    parser.add_argument("--replicas", type=Path, default=REPLICAS, help="folder holding llava-1.5-7b-hf's files")
    parser.add_argument("--tiny", action="store_true", help="a tiny width (tests)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on the CPU (default: torch's own)")
    args = parser.parse_args()
    positive_ints(parser, args, ("eval_samples", "eval_batch", "trace_samples", "noise_samples", "threads"))
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        parser.error(f"--dtype {args.dtype} is not a torch dtype")
    try:  # a bad --data ends here, before the budget is spent on the peak and the build
        chosen = load_dataset(args.data, limit=max(args.eval_samples, args.trace_samples), seed=0).samples
    except VrprobeError as e:
        parser.error(str(e))
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    set_threads(args.threads)
    device = device_of(args)
    clock = Clock(args.budget_s, device)
    dtype_name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        where = f'name="{name}" dtype={dtype_name} torch={torch.__version__} cuda={torch.version.cuda}'
        size, repeats = 8192, 5
    else:
        name = cpu_model()
        where = f"{cpu()} dtype={dtype_name} torch={torch.__version__}"
        size, repeats = (1024, 3) if args.tiny else (4096, 3)
    print(f"gpu[device]: device={device} {where} budget_s={args.budget_s:.0f}", flush=True)

    peak = matmul_peak(dtype, size=size, repeats=repeats, device=device)
    print(
        f"gpu[peak]: matmul_peak_tflops={peak / 1e12:.2f} ({dtype_name} {size}x{size}, best of {repeats})", flush=True
    )

    replicas = args.replicas if replica.available(args.replicas) else None
    t0 = clock.now()
    a = build(device, dtype, args.tiny, replicas)
    build_s = clock.now() - t0
    params = a.num_params
    first = a.encode_samples(chosen[:1])
    text = a.model.config.get_text_config()
    print(
        f"gpu[build]: params={params} weights_gib={params * dtype.itemsize / GIB:.2f} build_s={build_s:.1f} "
        f"layers={a.num_layers} hidden={text.hidden_size} tokens={first.groups.image.shape[1]} "
        f"image_tokens={int(first.groups.image[0].sum())} processor={'replica' if replicas else 'zoo'}",
        flush=True,
    )
    skips: list[str] = []
    results: dict[str, tuple[float, float] | None] = dict.fromkeys(STEPS)
    # the warm-up batch and one timed batch, at a third of the peak
    need = 2 * eval_flops(text, first.groups.image.shape[1], args.eval_batch, []) / (peak / 3)
    if clock.fits(need):
        score_batch(a, chosen[: args.eval_batch])  # warm-up: kernels, allocator
        results["eval"] = guarded(
            "eval", skips, device, lambda: run_eval(a, chosen[: args.eval_samples], args, clock, peak)
        )
    else:
        skipped("eval", need, clock, skips)
    rate = peak / 3 if results["eval"] is None else results["eval"][1] / results["eval"][0]
    traced = chosen[: args.trace_samples]
    sigma = measure_sigma(a, traced)
    results["trace_resid"] = guarded(
        "trace_resid", skips, device,
        lambda: run_trace("trace_resid", a, traced, sigma, ("resid",), args, clock, rate, peak, skips),
    )  # fmt: skip
    resid = results["trace_resid"]
    if resid is not None:  # the resid trace's own rate estimates the full one
        rate = resid[1] / resid[0]
    full_kinds = ("resid", "mlp", "attn")
    results["trace_full"] = guarded(
        "trace_full", skips, device,
        lambda: run_trace("trace_full", a, traced, sigma, full_kinds, args, clock, rate, peak, skips),
    )  # fmt: skip
    full = results["trace_full"]
    print(
        f'gpu: device="{name}" dtype={dtype_name} eval_s_per_sample={fmt(results["eval"] and results["eval"][0], 4)} '
        f"resid_trace_s_per_sample={fmt(resid and resid[0])} full_trace_s_per_sample={fmt(full and full[0])} "
        f"full_trace_tflop={fmt(full and full[1] / 1e12, 2)} "
        f"full_trace_flop_limit_s={fmt(full and full[1] / peak)} "
        f"full_trace_peak_fraction={fmt(full and full[1] / peak / full[0])} "
        f"peak_memory_gib={peak_memory(device) / GIB:.2f} elapsed_s={clock.elapsed():.0f} budget_s={args.budget_s:.0f} "
        f"skipped={','.join(skips) or 'none'}",
        flush=True,
    )


if __name__ == "__main__":
    main()
