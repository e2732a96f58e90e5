"""Benchmark: peak memory of recording the answer position's attention, with and without the SDPA split.

One attention call at LLaVA-1.5-7B's shape (32 heads × head dim 128, causal mask, `--tokens` positions, default 600),
recording the last query row's probabilities as `vrprobe eval` does for sharpness:
- `split`: vrprobe's attention function (explicit float32 probabilities for the recorded row only, SDPA for the rest);
- `eager`: every row explicit (the function's eager path, as before the split), recording the same row.
Each variant runs in its own fresh process; its peak is the rise of the process's peak resident memory (CPU) or of
`torch.cuda.max_memory_allocated` (GPU) over the moment the inputs were allocated. The recorded rows are compared
too (they must agree to 1e-5).

    python benchmarks/attention_memory.py [--tokens 600] [--batch 1] [--device cpu]
Last line: `attention_memory: tokens=T batch=B eager_mib=X split_mib=Y ratio=X/Y max_abs_diff=D`
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

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
    parser.add_argument("--child", choices=("split", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tokens < 2 or args.batch < 1:
        parser.error("--tokens must be at least 2 and --batch at least 1")
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.batch, args.device)))
        return
    runs = {}
    for variant in ("eager", "split"):
        cmd = [sys.executable, __file__, "--child", variant, "--tokens", str(args.tokens), "--batch", str(args.batch)]
        out = subprocess.run([*cmd, "--device", args.device], capture_output=True, text=True, check=True).stdout
        runs[variant] = json.loads(out.strip().splitlines()[-1])
        print(f"attention_memory[{variant}]: peak rise {runs[variant]['rise_mib']:.1f} MiB")
    diff = max(abs(a - b) for a, b in zip(runs["eager"]["row"], runs["split"]["row"], strict=True))
    eager, split = runs["eager"]["rise_mib"], runs["split"]["rise_mib"]
    print(
        f"attention_memory: tokens={args.tokens} batch={args.batch} eager_mib={eager:.1f} split_mib={split:.1f} "
        f"ratio={eager / max(split, 0.1):.1f} max_abs_diff={diff:.2e}"
    )


if __name__ == "__main__":
    main()
