"""Replaying decoder layers directly: what lets the tracing engine skip work ROME's loop recomputes.

- `forward_signature`: the signature replay reads a module's arguments by, its class's own `forward` bound to it, so
  that no wrapper another library puts into the instance's `forward` (accelerate, nnsight) changes it.
- `capture_layer_calls`: record the arguments (masks, rotary embeddings, ...) each decoder layer is called with in a
  clean forward, and anything the model adds between layers (Qwen3-VL's deepstack features); they broadcast over any
  batch size of the same prompt.
- `run_layers`: run layers start..L−1 on given hidden states with those arguments, optionally only for positions
  first..T−1 with earlier keys/values from a `DynamicCache`, or shared by blocks of rows (a `KVPrefix` per layer,
  passed in the layer call as vrprobe's attention function's `vrprobe_prefix` argument).
- `attends`, `reachable`, `closed_subset`: which positions a change can reach through the attention masks, and which
  clean positions stay clean.
- `patch_blocks`: a `with` block replacing attention/MLP block outputs at masked rows and positions.
- `last_position_mlp`: a `with` block running the last layer's MLP on the last position only.
Every hook is removed in `finally`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from vrprobe.errors import UsageError
from vrprobe.interventions.attention import PREFIX_KWARG
from vrprobe.interventions.hooks import first_output, layer_parts, replace_output
from vrprobe.models.base import Adapter
from vrprobe.tracing.prefix import KVPrefix

#: every name a decoder layer has taken its key/value cache under: `past_key_values` up to transformers 5.23,
#: `cache` from 5.24 on (where `past_key_values` is a deprecated alias, ignored when both are passed)
CACHE_KWARGS = ("cache", "past_key_values")


def forward_signature(module: torch.nn.Module) -> inspect.Signature:
    """The signature of `module`'s own forward: its class's `forward` bound to it (`self` dropped), read once per
    function and through transformers' `functools.wraps` decorators on that function. The one rule by which replay
    reads what a module takes.

    Never read from `module.forward`: another library may have put a wrapper into the instance's `forward`, and what
    a wrapper reports is not what the module takes: `(*args, **kwargs)` for a plain `def wrapper(*args, **kwargs)`,
    or the class's unbound function, `self` first, for one made with `functools.update_wrapper(w, type(m).forward)`
    (nnsight 0.8's `Controller`), which binds the hidden states to `self`. Modules are still called as `module(...)`,
    never through `forward` or the class's function, so that hooks and instance wrappers run as in the model's own
    forward (accelerate's offload hook loads the module's weights there)."""
    return _forward_signature(type(module).forward)


@functools.cache
def _forward_signature(forward: Callable[..., Any]) -> inspect.Signature:
    """The signature of a class's `forward` function, `self` dropped (once per function)."""
    sig = inspect.signature(forward)
    params = list(sig.parameters.values())
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # `self`, bound to the module (a `*args` first takes it and stays, as in a bound method)
    return sig.replace(parameters=params)


def _parameters(module: torch.nn.Module) -> Mapping[str, inspect.Parameter]:
    """The parameters of `module`'s own forward (`forward_signature`)."""
    return forward_signature(module).parameters


def cache_kwarg(layer: torch.nn.Module) -> str:
    """The keyword under which `layer`'s forward takes the key/value cache, read from `forward_signature`."""
    params = _parameters(layer)
    for name in CACHE_KWARGS:
        if name in params:
            return name
    raise UsageError(
        f"{type(layer).__name__}.forward takes none of {', '.join(CACHE_KWARGS)}: this transformers version calls "
        "decoder layers in a way vrprobe does not know"
    )


def with_cache(layer: torch.nn.Module, kwargs: dict[str, Any], cache: Any) -> dict[str, Any]:
    """`kwargs` for a layer call that reads and extends `cache`: the cache under the layer's own name for it, any
    cache argument under another name dropped."""
    out = {k: v for k, v in kwargs.items() if k not in CACHE_KWARGS}
    out[cache_kwarg(layer)] = cache
    out["use_cache"] = True
    return out


def kv_cache(rows: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]] = ()) -> Any:
    """A transformers `DynamicCache`: empty, or holding per layer (keys, values) [B, H, P, D] ((None, None): that
    layer left empty). Filled through `update(keys, values, layer)`, which every 5.x has and which adds the layers it
    skips empty; `DynamicCache(ddp_cache_data=...)` fails on an empty layer before 5.17 (5.10.4 does)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(rows):
        if k is not None and v is not None:
            cache.update(k, v, i)
    return cache


def cached_kv(cache: Any, num_layers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [B, H, T, D] a replay left in `cache`; raises when a layer did not fill it (a layer
    that ignored the cache argument, as 5.24's layers do when passed `past_key_values` beside their own `cache`)."""
    layers = getattr(cache, "layers", [])
    if len(layers) != num_layers or any(getattr(layer, "keys", None) is None for layer in layers):
        raise UsageError(
            f"the decoder layers filled {len(layers)} of {num_layers} cache layers: this transformers version "
            "does not take the key/value cache the way vrprobe passes it"
        )
    return [(layer.keys, layer.values) for layer in layers]


class LayerCalls(list):
    """Per decoder layer, (args, kwargs) it was called with besides the hidden states; `before[i]` is what the model
    added to the hidden states between layer i−1's output and layer i's input ([1, T, D], None for nothing): Qwen3-VL
    adds its deepstack visual features there, at the image positions of its first layers. The addition does not depend
    on the hidden states, so a replay adds the same tensor whatever state it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.before: list[torch.Tensor | None] = []


@contextmanager
def capture_layer_calls(adapter: Adapter) -> Iterator[LayerCalls]:
    """Record the arguments (besides the hidden states) every decoder layer is called with, in layer order, and any
    addition the model makes between layers (`LayerCalls.before`)."""
    calls = LayerCalls()
    last_out: list[torch.Tensor] = []

    def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # By name, read from the layer's own signature (a version passing an argument positionally still replays,
        # whatever wraps the instance's `forward`); the cache is left out: `run_layers` passes its own, under the
        # layer's name for it.
        params = _parameters(module)
        bound = forward_signature(module).bind(*args, **kwargs).arguments
        items = list(bound.items())
        hidden = items[0][1]  # the first argument is the hidden states
        named: dict[str, Any] = {}
        for name, value in items[1:]:
            if params[name].kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            else:
                named[name] = value
        calls.append(((), {k: v for k, v in named.items() if k not in CACHE_KWARGS and k != "use_cache"}))
        added = None
        if last_out and hidden is not last_out[0] and not torch.equal(hidden, last_out[0]):
            added = (hidden - last_out[0])[:1].detach()
        calls.before.append(added)
        last_out.clear()

    def post(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        last_out[:] = [first_output(output)]

    handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in adapter.decoder_layers]
    handles += [layer.register_forward_hook(post) for layer in adapter.decoder_layers]
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

            def post(
                module: torch.nn.Module,
                args: tuple[Any, ...],
                output: Any,
                mask: torch.Tensor = mask,
                clean: torch.Tensor = clean,
            ) -> Any:
                x = first_output(output)
                return replace_output(output, torch.where(mask[..., None], clean.to(x.dtype), x))

            handles.append(layer_parts(adapter.decoder_layers[layer])[kind].register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def last_position_mlp(adapter: Adapter) -> Iterator[None]:
    """Run the last decoder layer's MLP on the last position only and broadcast its output over the positions.

    Exact for the last position (an MLP acts on each position alone), which is all a caller reading the answer
    position of the last layer uses; the other positions of that layer's output are then meaningless."""
    mlp = layer_parts(adapter.decoder_layers[-1])["mlp"]
    shape: list[torch.Size] = []

    def pre(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        shape.clear()
        if not args:
            return None
        shape[:] = [args[0].shape]
        return (args[0][:, -1:], *args[1:]), kwargs

    def post(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if not shape:
            return None
        x = first_output(output)
        return replace_output(output, x.expand(shape[0][:-1] + x.shape[-1:]))

    handles = [
        mlp.register_forward_pre_hook(pre, with_kwargs=True, prepend=True),
        mlp.register_forward_hook(post, with_kwargs=True, prepend=True),
    ]
    try:
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
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    first: int = 0,
    enter: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run decoder layers start..L−1 on `hidden` [B, T', D] with the per-layer arguments captured from a clean forward;
    returns the last position's hidden state [B, D] and (when `keep`) every layer's output; without `keep` the last
    layer's MLP runs on the last position only (`last_position_mlp`).

    With `first` > 0, `hidden` holds only positions first..T−1, and the keys and values of positions 0..first−1 at every
    layer run come from `cache` (a `DynamicCache` with a row per batch row) or `prefix` (per layer, [n, H, first, D]
    shared by blocks of n rows; see `KVPrefix`): the layer arguments are sliced to those query positions.
    `hidden` is the state a layer's forward hook sees leaving layer start−1 (the embeddings for start 0); what the model
    adds between layers (`LayerCalls.before`) is added on entering each layer, as the model does.
    `enter(i, hidden)`, when given, may replace rows of the state entering layer i > start (L: after the last layer)."""
    if prefix is not None and not adapter.records_attention:
        raise UsageError("shared key/value prefixes need the language model on vrprobe's attention function")
    outs = []
    with ExitStack() as stack:
        if not keep:
            stack.enter_context(last_position_mlp(adapter))
        before = getattr(calls, "before", None) or [None] * adapter.num_layers
        for i in range(start, adapter.num_layers):
            args, kwargs = calls[i]
            if before[i] is not None:
                hidden = hidden + before[i][:, first:].to(hidden.dtype)
            if cache is not None:
                kwargs = with_cache(adapter.decoder_layers[i], kwargs, cache)
            if first:
                kwargs = {**kwargs, **_slice_queries(kwargs, first)}
            layer_prefix = prefix[i] if prefix is not None else None
            if layer_prefix is not None:
                kwargs = {**kwargs, PREFIX_KWARG: KVPrefix(*layer_prefix)}
            # called as a module (hooks and instance wrappers run, as in the model's forward), arguments by name
            hidden = first_output(adapter.decoder_layers[i](hidden, *args, **kwargs))
            if enter is not None:
                hidden = enter(i + 1, hidden)
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


def attends(calls: Sequence[tuple[tuple, dict]]) -> torch.Tensor | None:
    """[T, T] bool: query i may attend to key j in some decoder layer (union of the captured masks); None when a
    layer's mask cannot be read (then no position can be assumed untouched)."""
    allowed = None
    for _, kwargs in calls:
        mask = kwargs.get("attention_mask")
        if (
            not isinstance(mask, torch.Tensor)
            or mask.dim() != 4
            or any(isinstance(v, torch.Tensor) and k not in SLICED_KWARGS for k, v in kwargs.items())
        ):
            return None
        m = (mask[0, 0] > torch.finfo(mask.dtype).min / 2) if mask.is_floating_point() else mask[0, 0].bool()
        m = m.cpu()  # compared with token-group masks, which live on the CPU
        allowed = m if allowed is None else allowed | m
    return allowed


def reachable(allowed: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
    """[T] bool: the positions whose state a change at `positions` [T] can reach through attention, over any number
    of layers (every position when `allowed` is None)."""
    if allowed is None:
        return torch.ones_like(positions)
    reached = positions.clone()
    while True:
        grown = reached | (allowed & reached[None, :]).any(1)
        if torch.equal(grown, reached):
            return reached
        reached = grown


def closed_subset(allowed: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
    """[T] bool: the largest subset S of `positions` whose members attend only to members of S. If every position
    of S holds its clean state at some layer, they all keep their clean states in every later layer (empty when
    `allowed` is None)."""
    if allowed is None:
        return torch.zeros_like(positions)
    kept = positions.clone()
    while True:
        pruned = kept & ~(allowed & ~kept[None, :]).any(1)
        if torch.equal(pruned, kept):
            return kept
        kept = pruned
