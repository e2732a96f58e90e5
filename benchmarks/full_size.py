"""Benchmark: LLaVA-1.5-7B at its real size, saved as a checkpoint and run through vrprobe's normal path.

1. Build (a child process): LLaVA-1.5-7B's real configuration (`config.json` of `../shared/replicas/llava-1.5-7b-hf`:
   Vicuna-7B, 32 layers, hidden 4096, MLP 11008, vocabulary 32,064; CLIP ViT-L/14 at 336 px, 576 image tokens),
   initialised directly in bfloat16 with transformers' own random init (normal, std 0.02: finite logits; no float32
   copy is ever made) and a fixed seed, written with `save_pretrained` (safetensors, 5 GB shards as the hub's) into a
   scratch folder together with the real tokenizer, processor and chat-template files, so that the folder loads as
   the hub checkpoint does.
2. Measure (a fresh child process, so that nothing of the build counts):
   `vrprobe.load(DIR, options=LoadOptions(device="cpu", dtype="bfloat16"))`, `vrprobe.eval` and `vrprobe.corrupt`
   (band `--band`) on the first `--samples` samples of `--data`, no run directory written, called exactly as a user
   would (no `torch.no_grad()` around them: vrprobe's own forwards must not keep a graph). Memory: the
   resident memory right after loading (`VmRSS`; transformers memory-maps the safetensors files, so the weights
   become resident as the first forward reads them, and count there, file-backed) and the process's peak (`VmHWM`,
   /proc/self/status) after each call, against the weights' size (the sum of the safetensors files); the target is
   peak ≤ 1.15 × weights + 2 GiB, i.e. no second copy of the weights (nor activations of that size) is ever held.
   Speed: FLOP/s of each call = the FLOPs of every forward it ran, counted by torch's `FlopCounterMode` as the ops
   execute (`timing.flop_counter`) ÷ the call's wall time (everything in the call: image preprocessing, candidate
   scoring, σ for the band). The count is, per forward, 2 × (weights in matrix products: attention projections,
   MLP, vision tower, projector, LM head where logits are taken) × tokens + attention's 4 · L · H · T_q · T_k · d_head
   (every key counted, the causal half too); a prompt of T = 594 tokens thus costs about
   2 · 6.6e9 · 594 + 4 · 32 · 594² · 4096 ≈ 8.0 TFLOP. Against this machine's bfloat16 matmul peak with the same
   threads (`timing.matmul_peak`: the best of 3 products of each of 4096³ and the MLP's two shapes at 1,188 rows,
   measured before loading and again after the runs, the higher taken: a shared CPU's speed drifts by tens of per
   cent over minutes).
3. The scratch folder (made inside `--scratch`, default the temporary directory on the disk with the most free space)
   is removed in every case (`--keep` keeps it); SIGTERM and Ctrl-C remove it too. A child killed by a signal (the
   out-of-memory killer's SIGKILL) is reported as `full_size: FAIL ...`.

Skips with one line `full_size: SKIP <reason>` (exit 0) when the replicas folder is absent, when the scratch disk has
less free space than 2.2 × the weights, or when MemAvailable is below 1.3 × the weights + 2 GiB. `--tiny` builds the
same architecture at a tiny width (text hidden 64, MLP 172, 2 layers; vision tower hidden 32, 2 layers), every step
the same: what the test runs.

Prints (`X` numbers; sizes in GiB = 2^30 bytes, FLOP rates in GFLOP/s = 1e9 FLOP/s):

    full_size[cpu]: model="..." cores=N torch_threads=T
    full_size[plan]: params=P weights_gib=X free_disk_gib=X mem_available_gib=X scratch=DIR
    full_size[build]: params=P weights_gib=X shards=N build_s=X build_peak_rss_gib=X (...)
    full_size[load]: load_s=X rss_after_load_gib=X peak_rss_after_load_gib=X dtype=bfloat16
    full_size[eval]: samples=N s_per_sample=X tflop=X gflops=X accuracy=X peak_rss_gib=X
    full_size[corrupt]: samples=N band=A-B s_per_sample=X tflop=X gflops=X peak_rss_gib=X
    full_size[peak]: matmul_peak_gflops=X before_gflops=X after_gflops=X (...)
    full_size: weights_gib=X peak_rss_gib=X rss_after_load_gib=X memory_target_gib=X memory_ratio=X load_s=X
               eval_s_per_sample=X corrupt_s_per_sample=X eval_peak_fraction=X corrupt_peak_fraction=X gflops=X
               peak_gflops=X peak_fraction=X
    full_size[check]: PASS|FAIL peak_rss_gib=X <= memory_target_gib=X (...)      (with --check)
    full_size[cleanup]: removed DIR | kept DIR

(the closing `full_size:` line is one line; memory_ratio = peak / weights; gflops and peak_fraction over eval and
corrupt together.) Exit status 1 when a child fails or a `--check` line FAILs; 2 with one line
(`full_size: error: ...`, nothing built) for a `--band` outside the model's layers or a `--data` that does not load.

    python benchmarks/full_size.py [--samples 2] [--data easy-vqa:test] [--band 12-16] [--scratch DIR] [--keep]
                                   [--threads T] [--check] [--tiny] [--replicas DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.utils import logging as hf_logging

import vrprobe
from timing import cpu, flop_counter, matmul_peak, positive_ints, set_threads, status_kib
from vrprobe import LoadOptions
from vrprobe.analyses.band import parse_band
from vrprobe.data import load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.runtime.batching import free_bytes
from vrprobe.zoo import replica

REPLICAS = Path(__file__).resolve().parents[2] / "shared" / "replicas"
FOLDER = "llava-1.5-7b-hf"
DTYPE = torch.bfloat16
GIB = 2**30
#: the memory target: peak resident memory ≤ FACTOR × weights + SLACK
FACTOR, SLACK = 1.15, 2 * GIB
#: skip unless free disk ≥ DISK × weights and MemAvailable ≥ MEMORY × weights + SLACK
DISK, MEMORY = 2.2, 1.3
SHARD = "5GB"
TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=32,
)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
#: the real files copied beside the weights (save_pretrained writes config.json itself)
SKIP_FILES = ("config.json",)


def model_config(src: Path, tiny: bool) -> Any:
    """LLaVA-1.5-7B's config from the replica folder; `tiny`: the same architecture at a tiny width."""
    cfg = AutoConfig.from_pretrained(str(src))
    if tiny:
        cfg = replica.resize(cfg, "llava", TINY_TEXT, TINY_VISION, init_range=0.02)
    return cfg


def planned_params(cfg: Any) -> int:
    """Parameters of the model `cfg` builds (counted on the meta device: nothing allocated)."""
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=DTYPE)
    return sum(p.numel() for p in model.parameters())


def roomiest_tmp() -> Path:
    """Of the usual scratch places that exist and are writable, the one on the disk with the most free space."""
    places = [Path(tempfile.gettempdir()), Path("/var/tmp"), Path.home(), Path(__file__).resolve().parents[2]]
    ok = [p for p in places if p.is_dir() and os.access(p, os.W_OK)]
    return max(ok, key=lambda p: shutil.disk_usage(p).free)


def weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


# ---- phase 1: build (child process) ------------------------------------------------------------------------------
def build(args: argparse.Namespace) -> None:
    src, out = args.replicas / FOLDER, Path(args.dir)
    t0 = time.perf_counter()
    cfg = model_config(src, args.tiny)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg, dtype=DTYPE)  # built in bfloat16: no float32 copy
    params = sum(p.numel() for p in model.parameters())
    t_init = time.perf_counter() - t0
    model.save_pretrained(str(out), max_shard_size=SHARD)
    del model
    for f in src.iterdir():
        if f.is_file() and f.name not in SKIP_FILES:
            shutil.copy2(f, out / f.name)
    shards = len(list(out.glob("*.safetensors")))
    text = cfg.text_config
    print(
        f"full_size[build]: params={params} weights_gib={gib(weights_bytes(out))} shards={shards} "
        f"build_s={time.perf_counter() - t0:.1f} build_peak_rss_gib={gib(status_kib('VmHWM') * 1024)} "
        f"(init {t_init:.1f} s; {text.num_hidden_layers} layers, hidden {text.hidden_size}, MLP "
        f"{text.intermediate_size}, vocabulary {text.vocab_size}; bfloat16 safetensors, shards up to {SHARD})",
        flush=True,
    )


# ---- phase 2: measure (a fresh child process) ---------------------------------------------------------------------
def peak_shapes(cfg: Any, tokens: int = 2 * 594) -> list[tuple[int, int, int]]:
    """The matmuls the peak is measured on: square 4096, and the MLP's two products at `tokens` rows (a batch of
    2 prompts)."""
    text = cfg.get_text_config()
    d, f = text.hidden_size, text.intermediate_size
    return [(4096, 4096, 4096), (tokens, d, f), (tokens, f, d)]


def measure(args: argparse.Namespace) -> int:
    path = Path(args.dir)
    shapes = peak_shapes(model_config(path, tiny=False))
    peak_before = matmul_peak(DTYPE, repeats=3, shapes=shapes)
    weights = weights_bytes(path)
    t0 = time.perf_counter()
    model = vrprobe.load(str(path), options=LoadOptions(device="cpu", dtype="bfloat16"))
    load_s = time.perf_counter() - t0
    rss_load, hwm_load = status_kib("VmRSS") * 1024, status_kib("VmHWM") * 1024
    dtype = str(model.model.dtype).removeprefix("torch.")
    print(
        f"full_size[load]: load_s={load_s:.1f} rss_after_load_gib={gib(rss_load)} "
        f"peak_rss_after_load_gib={gib(hwm_load)} dtype={dtype}",
        flush=True,
    )

    def timed(fn) -> tuple[Any, float, float]:
        with flop_counter() as counter:
            t = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - t
        return result, seconds, float(counter.get_total_flops())

    n = args.samples
    res, t_eval, f_eval = timed(lambda: vrprobe.eval(model, args.data, limit=n, make_report=False))
    done = len(res.records)
    accuracy = sum(float(r["correct"]) for r in res.records) / max(1, done)
    print(
        f"full_size[eval]: samples={done} s_per_sample={t_eval / done:.2f} tflop={f_eval / 1e12:.4g} "
        f"gflops={f_eval / t_eval / 1e9:.1f} accuracy={accuracy:.2f} peak_rss_gib={gib(status_kib('VmHWM') * 1024)}",
        flush=True,
    )
    res, t_band, f_band = timed(lambda: vrprobe.corrupt(model, args.data, band=args.band, limit=n, make_report=False))
    done_band = len(res.records)
    print(
        f"full_size[corrupt]: samples={done_band} band={res.band[0]}-{res.band[1]} "
        f"s_per_sample={t_band / done_band:.2f} tflop={f_band / 1e12:.4g} gflops={f_band / t_band / 1e9:.1f} "
        f"peak_rss_gib={gib(status_kib('VmHWM') * 1024)}",
        flush=True,
    )
    hwm = status_kib("VmHWM") * 1024
    peak_after = matmul_peak(DTYPE, repeats=3, shapes=shapes)
    peak = max(peak_before, peak_after)
    print(
        f"full_size[peak]: matmul_peak_gflops={peak / 1e9:.1f} before_gflops={peak_before / 1e9:.1f} "
        f"after_gflops={peak_after / 1e9:.1f} (bfloat16; best of 3 of each of "
        f"{', '.join('x'.join(map(str, s)) for s in shapes)} (m x k x n), before loading and after the runs; "
        f"{torch.get_num_threads()} threads)",
        flush=True,
    )
    target = FACTOR * weights + SLACK
    rate = (f_eval + f_band) / (t_eval + t_band)
    print(
        f"full_size: weights_gib={gib(weights)} peak_rss_gib={gib(hwm)} rss_after_load_gib={gib(rss_load)} "
        f"memory_target_gib={gib(target)} memory_ratio={hwm / weights:.3f} load_s={load_s:.1f} "
        f"eval_s_per_sample={t_eval / done:.2f} corrupt_s_per_sample={t_band / done_band:.2f} "
        f"eval_peak_fraction={f_eval / t_eval / peak:.3f} corrupt_peak_fraction={f_band / t_band / peak:.3f} "
        f"gflops={rate / 1e9:.1f} peak_gflops={peak / 1e9:.1f} peak_fraction={rate / peak:.3f}",
        flush=True,
    )
    if args.check:
        ok = hwm <= target
        print(
            f"full_size[check]: {'PASS' if ok else 'FAIL'} peak_rss_gib={gib(hwm)} <= memory_target_gib={gib(target)} "
            f"({FACTOR} x weights + {SLACK // GIB} GiB)",
            flush=True,
        )
        return 0 if ok else 1
    return 0


# ---- the parent: plan, run both children, clean up ------------------------------------------------------------------
def skip(reason: str) -> None:
    print(f"full_size: SKIP {reason}", flush=True)
    sys.exit(0)


def child(phase: str, scratch: Path, args: argparse.Namespace) -> int:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--dir", str(scratch)]
    cmd += ["--replicas", str(args.replicas), "--samples", str(args.samples), "--data", args.data, "--band", args.band]
    cmd += ["--tiny"] * args.tiny + ["--check"] * args.check
    cmd += ["--threads", str(args.threads)] if args.threads else []
    rc = subprocess.run(cmd).returncode
    if rc < 0:  # killed by a signal: say so, the child could not
        why = " (SIGKILL: the kernel's out-of-memory killer?)" if rc == -signal.SIGKILL else ""
        print(f"full_size: FAIL the {phase} process was killed by signal {-rc}{why}", flush=True)
        return 1
    if rc:
        print(f"full_size: FAIL the {phase} process exited with status {rc}", flush=True)
    return rc


def orchestrate(args: argparse.Namespace) -> int:
    print(f"full_size[cpu]: {cpu()}", flush=True)
    src = args.replicas / FOLDER
    if not (src / "config.json").is_file():
        skip(f"{src} is absent (the real non-weight files of llava-hf/llava-1.5-7b-hf; see ../shared/replicas)")
    cfg = model_config(src, args.tiny)
    try:  # a bad --band or --data ends here, not in the measure process after minutes of building
        parse_band(args.band, cfg.get_text_config().num_hidden_layers)
        load_dataset(args.data, limit=args.samples)
    except VrprobeError as e:
        print(f"full_size: error: {e}", file=sys.stderr, flush=True)
        return 2
    params = planned_params(cfg)
    weights = params * DTYPE.itemsize
    where = Path(args.scratch) if args.scratch else roomiest_tmp()
    if not where.is_dir():
        skip(f"--scratch {where} is not a directory")
    free, available = shutil.disk_usage(where).free, free_bytes(torch.device("cpu"))
    print(
        f"full_size[plan]: params={params} weights_gib={gib(weights)} free_disk_gib={gib(free)} "
        f"mem_available_gib={gib(available)} scratch={where}",
        flush=True,
    )
    if free < DISK * weights:
        skip(f"{gib(free)} GiB free on {where}, under {DISK} x the weights' {gib(weights)} GiB")
    if available and available < MEMORY * weights + SLACK:
        skip(f"MemAvailable {gib(available)} GiB, under {MEMORY} x the weights' {gib(weights)} GiB + 2 GiB")
    scratch = Path(tempfile.mkdtemp(prefix="vrprobe-full-size-", dir=where))
    try:
        rc = child("build", scratch, args)
        if rc == 0:
            rc = child("measure", scratch, args)
        return rc
    finally:
        if args.keep:
            print(f"full_size[cleanup]: kept {scratch}", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"full_size[cleanup]: removed {scratch}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2, help="samples for eval and for corrupt (default 2)")
    parser.add_argument("--data", default="easy-vqa:test", help="dataset spec (default easy-vqa:test)")
    parser.add_argument("--band", default="12-16", help="corrupt's band of layers, A-B (default 12-16)")
    parser.add_argument("--scratch", help="folder in which the scratch folder is made (default: the roomiest tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (default: removed)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--check", action="store_true", help="print PASS/FAIL for the memory target; FAIL exits 1")
    parser.add_argument("--tiny", action="store_true", help="the same architecture at a tiny width (tests)")
    parser.add_argument("--replicas", type=Path, default=REPLICAS, help="the replicas folder (default ../shared)")
    parser.add_argument("--phase", choices=("build", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    positive_ints(parser, args, ("samples", "threads"))
    if args.tiny and args.band == parser.get_default("band"):
        args.band = "0-1"  # the tiny model's 2 layers
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    set_threads(args.threads)
    if args.phase == "build":
        build(args)
        return
    if args.phase == "measure":
        sys.exit(measure(args))

    def terminated(signum, frame):  # run the cleanup in `finally` (subprocess.run kills the running child)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    sys.exit(orchestrate(args))


if __name__ == "__main__":
    main()
