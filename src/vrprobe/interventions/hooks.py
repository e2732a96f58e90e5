"""`intervene`: the one `with` block that applies interventions at sites and records states.

    with intervene(adapter, batch.groups, edits=[(Site("resid", (3,), "image"), GaussianNoise(3.0, sigma))],
                   record=[Site("attn_probs", (5,), "last")], seed=0) as rec:
        out = adapter.forward(batch)
    probs = rec[Site("attn_probs", (5,), "last")]      # [B, H, S]

Forward hooks on the decoder layers (resid), their attention and MLP blocks (attn, mlp), a forward pre-hook on the
first decoder layer (embed), and an `AttentionHook` attached to attention modules (attn_probs) — all removed in
`finally`, also when the block raises. Each intervention gets its own generator seeded from (`seed`, its index), so
the same seed gives bit-identical results on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from vrprobe.errors import UsageError
from vrprobe.interventions.attention import HOOK_ATTR, AttentionHook
from vrprobe.interventions.ops import AttentionIntervention, HiddenIntervention
from vrprobe.interventions.sites import Site
from vrprobe.models.base import Adapter, TokenGroups

Edit = tuple[Site, Any]


def layer_parts(layer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """A decoder layer's attention and MLP blocks, found by role (the module with a `layer_idx` that computes
    attention; the module whose class name ends in MLP), not by a path written per family."""
    attn = next((m for m in layer.children() if hasattr(m, "layer_idx") and hasattr(m, "config")), None)
    mlp = next((m for m in layer.children() if type(m).__name__.lower().endswith("mlp")), None)
    if attn is None or mlp is None:
        raise UsageError(f"cannot find the attention and MLP blocks of {type(layer).__name__}")
    return {"attn": attn, "mlp": mlp}


class Recording(dict):
    """States recorded in an `intervene` block, keyed by `Site` (after any edit at that site), filled when the block
    exits: [B, T, D] for one layer, [L, B, T, D] stacked in the site's layer order for several; attention
    probabilities [B, H, T, S], or [B, H, S] for `last`. With several forwards in one block, the last prompt forward
    is kept."""

    def stacked(self, site: Site) -> torch.Tensor:
        """The site's states with a leading layer dimension [len(layers), ...], also when it names one layer."""
        states = self[site]
        return states if len(site.layers) > 1 else states[None]


def _replace_output(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def check_sites(adapter: Adapter, sites: Sequence[Site]) -> None:
    for site in sites:
        site.check(adapter.num_layers)
        if site.component == "attn_probs" and not adapter.records_attention:
            raise UsageError("attention sites need the model loaded with vrprobe's attention function")


@contextmanager
def intervene(
    adapter: Adapter,
    groups: TokenGroups,
    edits: Sequence[Edit] = (),
    record: Sequence[Site] = (),
    seed: int = 0,
) -> Iterator[Recording]:
    """Apply `edits` (site, intervention) and record `record` sites during the forwards inside the block."""
    check_sites(adapter, [s for s, _ in edits] + list(record))
    layers = adapter.decoder_layers
    width = groups.image.shape[1]
    rec = Recording()
    handles: list[Any] = []
    attn_hooks: dict[int, AttentionHook] = {}
    by_target: dict[tuple[str, int], list[tuple[Any, torch.Tensor, torch.Generator]]] = {}
    for i, (site, op) in enumerate(edits):
        if site.component == "attn_probs":
            if not isinstance(op, AttentionIntervention):
                raise UsageError(f"{type(op).__name__} is not an attention intervention (site {site})")
        elif not isinstance(op, HiddenIntervention) or isinstance(op, AttentionIntervention):
            raise UsageError(f"{type(op).__name__} is not a hidden-state intervention (site {site})")
        rng = torch.Generator().manual_seed(seed * 1_000_003 + i)
        for layer in site.layers or (0,):
            by_target.setdefault((site.component, layer), []).append((op, site.mask(groups), rng))
    recorded: dict[tuple[str, int], list[Site]] = {}
    for site in record:
        for layer in site.layers or (0,):
            recorded.setdefault((site.component, layer), []).append(site)

    def hidden_hook(component: str, layer: int):
        ops = by_target.get((component, layer), [])
        sites = recorded.get((component, layer), [])

        def edit(x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] != width:  # a decoding step after the prompt: sites name prompt positions only
                return x
            for op, mask, rng in ops:
                x = op.apply(x, mask.to(x.device), rng)
            for site in sites:
                rec.setdefault(site, {})[layer] = x.detach()
            return x

        return edit

    try:
        for component, layer in sorted(set(by_target) | set(recorded)):
            fn = hidden_hook(component, layer)
            if component == "embed":

                def pre(module, args, kwargs, fn=fn):
                    if args:
                        return (fn(args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

                handles.append(layers[0].register_forward_pre_hook(pre, with_kwargs=True))
            elif component in ("resid", "attn", "mlp"):
                module = layers[layer] if component == "resid" else layer_parts(layers[layer])[component]

                def post(module, args, output, fn=fn):
                    return _replace_output(output, fn(_first(output)))

                handles.append(module.register_forward_hook(post))
            else:  # attn_probs
                hook = attn_hooks.setdefault(layer, AttentionHook(image_keys=groups.image))
                hook.edits.extend(by_target.get((component, layer), []))
                sites = recorded.get((component, layer), [])
                if sites:
                    hook.record = True
                    hook.record_last_only = all(s.positions == "last" for s in sites)
                module = layer_parts(layers[layer])["attn"]
                setattr(module, HOOK_ATTR, hook)
        yield rec
    finally:
        for h in handles:
            h.remove()
        for layer in attn_hooks:
            module = layer_parts(layers[layer])["attn"]
            if hasattr(module, HOOK_ATTR):
                delattr(module, HOOK_ATTR)
    for (component, layer), sites in recorded.items():
        if component == "attn_probs" and attn_hooks[layer].records:
            for site in sites:
                rec.setdefault(site, {})[layer] = attn_hooks[layer].records[-1]
    for site, per_layer in rec.items():
        layers_seen = site.layers or (0,)
        if all(i in per_layer for i in layers_seen):
            rec[site] = (
                per_layer[layers_seen[0]] if len(layers_seen) == 1 else torch.stack([per_layer[i] for i in layers_seen])
            )
