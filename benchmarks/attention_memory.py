"""Benchmark: peak memory of recording the answer position's attention, with and without the SDPA split.

One attention call at LLaVA-1.5-7B's shape (32 heads × head dim 128, causal mask, `--tokens` positions, default 600),
recording the last query row's probabilities as `vrprobe eval` does for sharpness:
- `split`: vrprobe's attention function (explicit float32 probabilities for the recorded row only, SDPA for the rest);
- `eager`: every row explicit (the function's eager path, as before the split), recording the same row.
Each variant runs in its own fresh process; its peak is the rise of the process's peak resident memory (CPU) or of
`torch.cuda.max_memory_allocated` (GPU) over the moment the inputs were allocated. The recorded rows are compared
too (they must agree to 1e-5). `--repeats` fresh processes per variant, the variants taking turns (the order reversed
each round); each figure is printed as `median [min-max]` over them, the ratio over the paired rounds. The first
line names the CPU (`attention_memory[cpu]: model="..." cores=N torch_threads=T`).

    python benchmarks/attention_memory.py [--tokens 600] [--batch 1] [--device cpu] [--repeats 3] [--threads T]
Last line: `attention_memory: tokens=T batch=B eager_mib=X split_mib=Y ratio=X/Y max_abs_diff=D`
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from timing import Spread, cpu, ratios, set_threads

HEADS, HEAD_DIM = 32, 128


def peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(variant: str, tokens: int, batch: int, device: str) -> dict:
    """Run one variant in this (fresh) process and return its peak rise and the recorded row."""
    from vrprobe.interventions.attention import AttentionHook, _explicit, vrprobe_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, HEADS, tokens, HEAD_DIM, generator=gen).to(device) for _ in range(3))
    mask = torch.full((tokens, tokens), torch.finfo(torch.float32).min).triu(1)[None, None].expand(batch, 1, -1, -1)
    mask = mask.to(device)
    image_keys = torch.zeros(batch, tokens, dtype=torch.bool)
    module = torch.nn.Module().eval()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_mib(device)
    hook = AttentionHook(image_keys=image_keys, record=True, record_last_only=True)
    with torch.no_grad():
        if variant == "split":
            vrprobe_attention(module, q, k, v, mask, HEAD_DIM**-0.5, vrprobe_hook=hook)
        else:
            _explicit(q, k, v, mask, HEAD_DIM**-0.5, None, hook, None, None, 0.0, False)
    return {"rise_mib": peak_mib(device) - before, "row": hook.records[-1][0, 0].cpu().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant, alternating (default 3)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--child", choices=("split", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tokens < 2 or args.batch < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--tokens must be at least 2, --batch, --repeats and --threads at least 1")
    if args.child:
        set_threads(args.threads)
        print(json.dumps(child(args.child, args.tokens, args.batch, args.device)))
        return
    set_threads(args.threads)
    print(f"attention_memory[cpu]: {cpu()}", flush=True)
    peaks: dict[str, list[float]] = {"eager": [], "split": []}
    rows: dict[str, list[float]] = {}
    for r in range(args.repeats):  # fresh processes, the variants taking turns (the order reversed each round)
        for variant in ("eager", "split") if r % 2 == 0 else ("split", "eager"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--tokens",
                str(args.tokens),
                "--batch",
                str(args.batch),
            ]
            threads = ["--threads", str(torch.get_num_threads())]
            out = subprocess.run([*cmd, *threads, "--device", args.device], capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[variant].append(run["rise_mib"])
            rows[variant] = run["row"]
    for variant, values in peaks.items():
        print(f"attention_memory[{variant}]: peak rise {Spread.of(values).fmt(1)} MiB")
    diff = max(abs(a - b) for a, b in zip(rows["eager"], rows["split"], strict=True))
    eager, split = Spread.of(peaks["eager"]), Spread.of(peaks["split"])
    ratio = ratios(peaks["eager"], [max(x, 0.1) for x in peaks["split"]])
    print(
        f"attention_memory: tokens={args.tokens} batch={args.batch} eager_mib={eager.fmt(1)} split_mib={split.fmt(1)} "
        f"ratio={ratio.fmt(1)} max_abs_diff={diff:.2e}"
    )


if __name__ == "__main__":
    main()
