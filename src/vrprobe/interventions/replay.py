"""Replaying decoder layers directly: what lets the tracing engine skip work ROME's loop recomputes.

- `capture_layer_calls`: record the arguments (masks, rotary embeddings, ...) each decoder layer is called with in a
  clean forward; they broadcast over any batch size of the same prompt.
- `run_layers`: run layers start..L−1 on given hidden states with those arguments, optionally only for positions
  first..T−1 with earlier keys/values from a `DynamicCache`.
- `first_reachable`: the first position a change at some positions can reach through the attention masks.
- `patch_blocks`: a `with` block replacing attention/MLP block outputs at masked rows and positions.
Every hook is removed in `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from vrprobe.interventions.hooks import _first, layer_parts
from vrprobe.models.base import Adapter


@contextmanager
def capture_layer_calls(adapter: Adapter) -> Iterator[list[tuple[tuple, dict]]]:
    """Record the arguments (besides the hidden states) every decoder layer is called with, in layer order."""
    calls: list[tuple[tuple, dict]] = []

    def pre(module, args, kwargs):
        calls.append((args[1:], {k: v for k, v in kwargs.items() if k != "hidden_states"}))

    handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in adapter.decoder_layers]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@contextmanager
def patch_blocks(adapter: Adapter, patches: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Replace block outputs (kind in attn/mlp, layer) at mask [B, T] with a clean value [1, T, D]."""
    handles = []
    try:
        for (kind, layer), (mask, clean) in patches.items():

            def post(module, args, output, mask=mask, clean=clean):
                x = _first(output)
                new = torch.where(mask[..., None], clean.to(x.dtype), x)
                return (new, *output[1:]) if isinstance(output, tuple) else new

            handles.append(layer_parts(adapter.decoder_layers[layer])[kind].register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()


SLICED_KWARGS = ("attention_mask", "position_embeddings", "position_ids", "cache_position")


def run_layers(
    adapter: Adapter,
    hidden: torch.Tensor,
    start: int,
    calls: Sequence[tuple[tuple, dict]],
    *,
    keep: bool = False,
    cache: Any = None,
    first: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run decoder layers start..L−1 on `hidden` [B, T', D] with the per-layer arguments captured from a clean forward;
    returns the last position's hidden state [B, D] and (when `keep`) every layer's output.

    With `first` > 0, `hidden` holds only positions first..T−1 and `cache` (a `DynamicCache`) the keys and values of
    positions 0..first−1 at every layer run: the layer arguments are sliced to those query positions."""
    outs = []
    for i in range(start, adapter.num_layers):
        args, kwargs = calls[i]
        if cache is not None:
            kwargs = {**kwargs, "past_key_values": cache, "use_cache": True}
        if first:
            kwargs = {**kwargs, **_slice_queries(kwargs, first)}
        hidden = _first(adapter.decoder_layers[i](hidden, *args, **kwargs))
        if keep:
            outs.append(hidden)
    return hidden[:, -1], outs


def _slice_queries(kwargs: dict[str, Any], first: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in SLICED_KWARGS:
        value = kwargs.get(key)
        if value is None:
            continue
        if key == "position_embeddings":
            out[key] = tuple(t[..., first:, :] for t in value)
        elif key == "attention_mask":
            out[key] = value[..., first:, :]
        else:
            out[key] = value[..., first:]
    return out


def first_reachable(calls: Sequence[tuple[tuple, dict]], positions: torch.Tensor, num_layers: int) -> int:
    """The first position whose state a change at `positions` [T] can reach through attention, in any layer.

    Closure of "query i attends to key j" over the layers' masks: causal models give min(positions); a prefix that
    attends bidirectionally (PaliGemma) pulls in the whole prefix. 0 when the masks cannot be read."""
    allowed = None
    for _, kwargs in calls:
        mask = kwargs.get("attention_mask")
        if (
            not isinstance(mask, torch.Tensor)
            or mask.dim() != 4
            or any(isinstance(v, torch.Tensor) and k not in SLICED_KWARGS for k, v in kwargs.items())
        ):
            return 0
        m = (mask[0, 0] > torch.finfo(mask.dtype).min / 2) if mask.is_floating_point() else mask[0, 0].bool()
        allowed = m if allowed is None else allowed | m
    reached = positions.clone()
    for _ in range(num_layers):
        reached = reached | (allowed & reached[None, :]).any(1)
    idx = reached.nonzero()
    return int(idx[0]) if len(idx) else 0
