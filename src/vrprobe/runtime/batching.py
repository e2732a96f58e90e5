"""Batches that fit: `--batch-size auto` and halving on out-of-memory.

- `auto_batch_size(adapter, tokens)`: the largest batch whose estimated activation memory (`activation_bytes`) fits
  in half of the device's free memory (`free_bytes`), between 1 and `cap`.
- `run_batches(samples, size, work)`: calls `work(indices, chunk)` on consecutive batches of the samples not yet done;
  on an out-of-memory error the batch size is halved and the same samples retried (one log line), so nothing is lost
  or duplicated. A batch holds only samples not yet done, so a resumed run never writes a sample twice.
- `run_index_batches(todo, size, work)`: the same over sample positions (what an executor runs per shard).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

from vrprobe import checks
from vrprobe.errors import VrprobeError
from vrprobe.runtime.progress import Progress, Ticker

#: what torch raises when a device runs out of memory (CUDA, MPS; CPU allocation failures raise RuntimeError)
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)
#: fraction of the free memory the activations of one batch may take
MEMORY_FRACTION = 0.5
#: positions whose vocabulary logits a scoring forward keeps (the answer position, or a multi-token candidate's)
LOGIT_POSITIONS = 8


def free_bytes(device: torch.device) -> int:
    """Free memory on `device`: `torch.cuda.mem_get_info` on a GPU, the available RAM (/proc/meminfo) on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def activation_bytes(adapter: Any, tokens: int) -> int:
    """Estimated peak memory (bytes) of one sample's forward at `tokens` positions: one decoder layer's live
    activations (residual, attention q/k/v/output, the MLP's gate/up/down, ≈ 6 + 3·intermediate/hidden vectors of the
    hidden size per position), the recorded answer-row attention of every layer (float32, heads × tokens), and the
    logits of the positions scored (`LOGIT_POSITIONS`: the forward keeps only those) in the model's dtype and float32
    — times the model's element size where it applies."""
    text = adapter.model.config.get_text_config()
    hidden, layers = int(text.hidden_size), adapter.num_layers
    inter = int(getattr(text, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads, vocab = int(text.num_attention_heads), int(text.vocab_size)
    elem = torch.finfo(adapter.dtype).bits // 8
    per_layer = tokens * hidden * (6 + 3 * inter / hidden) * elem
    recorded = layers * heads * tokens * 4
    logits = min(tokens, LOGIT_POSITIONS) * vocab * (elem + 4)
    return int(per_layer + recorded + logits)


def auto_batch_size(adapter: Any, tokens: int, *, cap: int = 256, free: int | None = None) -> int:
    """The largest batch (1..cap) whose estimated activations fit in MEMORY_FRACTION of the free memory."""
    free = free_bytes(adapter.device) if free is None else free
    per_sample = max(1, activation_bytes(adapter, tokens))
    return max(1, min(cap, int(free * MEMORY_FRACTION) // per_sample))


def batch_size_option(value: int | str) -> int | str:
    """`--batch-size`: an integer >= 1 or `auto` (digits given as text count as an integer)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return checks.positive_int("--batch-size", value)


def choose_batch_size(adapter: Any, samples: Sequence[Any], requested: int | str, *, extra_tokens: int = 16) -> int:
    """`requested` itself, or for `auto` the `auto_batch_size` at the first sample's prompt length plus
    `extra_tokens` (answer tokens appended when candidates span several tokens, or generated)."""
    if requested != "auto":
        return int(requested)
    if not samples:
        return 1
    tokens = int(adapter.encode_samples(samples[:1]).inputs["input_ids"].shape[1]) + extra_tokens
    return auto_batch_size(adapter, tokens)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_batches(
    samples: Sequence[Any],
    size: int,
    work: Callable[[list[int], list[Any]], None],
    *,
    done: Collection[str] = (),
    progress: Progress | None = None,
    stage: str = "",
    log: Callable[[str], None] = _log,
) -> int:
    """Run `work(indices, chunk)` over the samples whose id is not in `done`, `size` at a time (indices: positions in
    `samples`); halve `size` and retry the same samples on out-of-memory. Returns the batch size in use at the end."""
    tick = Ticker(progress, stage, len(samples))
    todo = [i for i, s in enumerate(samples) if s.id not in done]
    tick(len(samples) - len(todo))

    def run(indices: list[int]) -> None:
        work(indices, [samples[i] for i in indices])
        tick(len(indices))

    return run_index_batches(todo, size, run, log=log)


def run_index_batches(
    todo: Sequence[int], size: int, work: Callable[[list[int]], None], *, log: Callable[[str], None] = _log
) -> int:
    """`work(indices)` on consecutive slices of `todo`, `size` at a time; on out-of-memory `size` is halved and the
    same indices retried (one log line), so nothing is lost or duplicated. Returns the size in use at the end."""
    todo = list(todo)
    pos = 0
    while pos < len(todo):
        indices = todo[pos : pos + size]
        try:
            work(indices)
        except OUT_OF_MEMORY:
            if size == 1:
                raise VrprobeError(
                    "out of memory with a batch of 1: use a smaller model, --dtype bfloat16, --device-map auto, or "
                    "(Qwen2-VL) a smaller --max-pixels"
                ) from None
            size //= 2
            log(f"out of memory: retrying samples {indices[0]}.. with --batch-size {size}")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        pos += len(indices)
    return size
