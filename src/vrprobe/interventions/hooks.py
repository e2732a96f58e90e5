"""`intervene`: the one `with` block that applies interventions at sites and records states.

    with intervene(adapter, batch.groups, edits=[(Site("resid", (3,), "image"), GaussianNoise(3.0, sigma))],
                   record=[Site("attn_probs", (5,), "last")], seed=0) as rec:
        out = adapter.forward(batch)
    probs = rec[Site("attn_probs", (5,), "last")]      # [B, H, S], once the block has exited

Forward hooks on the decoder layers (resid), their attention and MLP blocks (attn, mlp), a forward pre-hook on the
first decoder layer (embed), and a forward pre-hook on attention modules that hands an `AttentionHook` to vrprobe's
attention function as its `vrprobe_hook` argument (attn_probs) — all removed in `finally`, also when the block raises.
Every edit is checked (a `Site` with layers in range, an instance of the right intervention base class) before any
hook is attached. Each intervention gets its own generator seeded from (`seed`, its index; `derive_seed`), so the
same seed gives bit-identical results on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from vrprobe.errors import UsageError, VrprobeError
from vrprobe.interventions.attention import HOOK_KWARG, AttentionHook
from vrprobe.interventions.ops import AttentionIntervention, HiddenIntervention
from vrprobe.interventions.sites import Site
from vrprobe.models.base import Adapter, TokenGroups
from vrprobe.runtime.seeding import generator

StateFn = Callable[[torch.Tensor], torch.Tensor]  # what a hook does to a state it edits or records

Edit = tuple[Site, HiddenIntervention | AttentionIntervention]


def layer_parts(layer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """A decoder layer's attention and MLP blocks, found by role (the module with a `layer_idx` that computes
    attention; the module whose class name ends in MLP), not by a path written per family."""
    attn = mlp = None
    for m in layer.children():
        if attn is None and hasattr(m, "layer_idx") and hasattr(m, "config"):
            attn = m
        if mlp is None and type(m).__name__.lower().endswith("mlp"):
            mlp = m
    if attn is None or mlp is None:
        raise UsageError(f"cannot find the attention and MLP blocks of {type(layer).__name__}")
    return {"attn": attn, "mlp": mlp}


class Recording(Mapping):
    """States recorded in an `intervene` block, keyed by `Site` (after any edit at that site), available once the
    block has exited: [B, T, D] for one layer, [L, B, T, D] stacked in the site's layer order for several; attention
    probabilities [B, H, T, S], or [B, H, S] for `last`. With several forwards in one block, the last prompt forward
    is kept. Reading a site inside the block, a site not asked for, or a site some of whose layers no forward
    reached is an error that says which.

    Recording copies nothing: each layer's state is kept as the module returned it (detached; a module's output is
    not changed after it returns), and a site of several layers is stacked the first time it is read (`layers` gives
    them without stacking)."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self._sites = tuple(dict.fromkeys(sites))
        self._states: dict[Site, torch.Tensor] = {}
        self._missing: dict[Site, list[int]] = {}
        self._closed = False
        # each site's states by slot (position in `site.layers`), as the forwards reach them
        self._slots: dict[Site, dict[int, torch.Tensor]] = {}

    def _put(self, site: Site, slots: Sequence[int], x: torch.Tensor) -> None:
        """Record `x` as the state of the site's layer(s) at `slots` (positions in `site.layers`); a forward of another
        shape starts the site afresh, so that its layers always come from one forward."""
        x = x.detach()
        held = self._slots.get(site)
        if held is None or next(iter(held.values())).shape != x.shape:
            held = self._slots[site] = {}
        for slot in slots:
            held[slot] = x

    def _fill(self) -> None:
        """Close the recording (called once, when the block exits): note the sites some of whose layers are missing."""
        for site in self._sites:
            held = self._slots.get(site, {})
            missing = [layer for slot, layer in enumerate(site.layers or (0,)) if slot not in held]
            if missing:
                self._missing[site] = list(dict.fromkeys(missing))
                self._slots.pop(site, None)
        self._closed = True

    def _check(self, site: Site) -> None:
        if not self._closed:
            raise VrprobeError("recorded states are available once the `with intervene(...)` block has exited")
        if site in self._missing:
            layers = ", ".join(map(str, self._missing[site]))
            raise VrprobeError(f"site {site} holds nothing for layer(s) {layers}: no prompt forward reached them")
        if site not in self._states and site not in self._slots:
            raise KeyError(site)

    def __getitem__(self, site: Site) -> torch.Tensor:
        self._check(site)
        if site not in self._states:
            held = self._slots.pop(site)
            states = [held[slot] for slot in range(len(held))]
            self._states[site] = states[0] if len(states) == 1 else torch.stack(states)
        return self._states[site]

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def stacked(self, site: Site) -> torch.Tensor:
        """The site's states with a leading layer dimension [len(layers), ...], also when it names one layer."""
        states = self[site]
        return states if len(site.layers) > 1 else states[None]

    def layers(self, site: Site) -> tuple[torch.Tensor, ...]:
        """The site's states one per layer, in the site's layer order, without stacking them."""
        self._check(site)
        if site in self._states:
            return tuple(self.stacked(site))
        held = self._slots[site]
        return tuple(held[slot] for slot in range(len(held)))


def replace_output(output: Any, new: torch.Tensor) -> Any:
    """A module's output with its first tensor replaced (modules return a tensor or a tuple starting with one)."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def first_output(output: Any) -> torch.Tensor:
    """The first tensor of a module's output."""
    return output[0] if isinstance(output, tuple) else output


def check_sites(adapter: Adapter, sites: Sequence[Site], num_layers: int | None = None) -> None:
    """One clear error for a site that is not a `Site`, names a layer the model lacks, or needs recorded attention
    (`num_layers`: the adapter's, when the caller has it at hand)."""
    records_attention = None
    for site in sites:
        if not isinstance(site, Site):
            raise UsageError(f"expected a Site, got {type(site).__name__}: {site!r:.80}")
        if num_layers is None:
            num_layers = adapter.num_layers
        site.check(num_layers)
        if site.component == "attn_probs":
            if records_attention is None:
                records_attention = adapter.records_attention
            if not records_attention:
                raise UsageError("attention sites need the model loaded with vrprobe's attention function")


def check_edits(adapter: Adapter, edits: Sequence[Any], num_layers: int | None = None) -> list[Edit]:
    """Each edit as a (Site, intervention) pair whose intervention is an instance of the base class its site's
    component needs (`AttentionIntervention` for `attn_probs`, `HiddenIntervention` otherwise); else one error naming
    the site."""
    checked: list[Edit] = []
    for edit in edits:
        if not (isinstance(edit, tuple) and len(edit) == 2 and isinstance(edit[0], Site)):
            raise UsageError(f"an edit is a (Site, intervention) pair, got {edit!r:.80}")
        site, op = edit
        check_sites(adapter, [site], num_layers)
        want = AttentionIntervention if site.component == "attn_probs" else HiddenIntervention
        kind = "an attention" if want is AttentionIntervention else "a hidden-state"
        if isinstance(op, type):
            raise UsageError(f"site {site}: {op.__name__} is a class; pass an instance, e.g. {op.__name__}(...)")
        if not isinstance(op, want):
            raise UsageError(f"site {site}: {type(op).__name__} is not {kind} intervention")
        checked.append((site, op))
    return checked


@contextmanager
def intervene(
    adapter: Adapter,
    groups: TokenGroups,
    edits: Sequence[Edit] = (),
    record: Sequence[Site] = (),
    seed: int = 0,
) -> Iterator[Recording]:
    """Apply `edits` (site, intervention) and record `record` sites during the forwards inside the block."""
    layers = list(adapter.decoder_layers)
    edits = check_edits(adapter, edits, len(layers))
    check_sites(adapter, record, len(layers))
    width = groups.image.shape[1]
    rec = Recording(record)
    handles: list[Any] = []
    attn_hooks: dict[int, AttentionHook] = {}
    by_target: dict[tuple[str, int], list[tuple[Any, torch.Tensor, torch.Generator]]] = {}
    for i, (site, op) in enumerate(edits):
        rng = generator(seed, i)
        bound = op.bind(groups) if isinstance(op, AttentionIntervention) else op
        for layer in site.layers or (0,):
            by_target.setdefault((site.component, layer), []).append((bound, site.mask(groups), rng))
    # (component, layer) -> [(site, the site's slots naming that layer)]
    recorded: dict[tuple[str, int], list[tuple[Site, tuple[int, ...]]]] = {}
    for site in rec:
        by_layer: dict[int, list[int]] = {}
        for j, layer in enumerate(site.layers or (0,)):
            by_layer.setdefault(layer, []).append(j)
        for layer, js in by_layer.items():
            recorded.setdefault((site.component, layer), []).append((site, tuple(js)))
    parts: dict[int, dict[str, torch.nn.Module]] = {}

    def part(layer: int, component: str) -> torch.nn.Module:
        if layer not in parts:
            parts[layer] = layer_parts(layers[layer])
        return parts[layer][component]

    def hidden_hook(component: str, layer: int) -> tuple[StateFn, bool]:
        ops = by_target.get((component, layer), [])
        sites = recorded.get((component, layer), [])

        def edit(x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] != width:  # a decoding step after the prompt: sites name prompt positions only
                return x
            for op, mask, rng in ops:
                x = op.apply(x, mask.to(x.device), rng)
            for site, slots in sites:
                rec._put(site, slots, x)
            return x

        return edit, bool(ops)

    try:
        for component, layer in sorted(set(by_target) | set(recorded)):
            if component == "attn_probs":
                hook = attn_hooks.setdefault(layer, AttentionHook(image_keys=groups.image))
                hook.edits.extend(by_target.get((component, layer), []))
                sites = [site for site, _ in recorded.get((component, layer), [])]
                if sites:
                    hook.record = True
                    hook.record_last_only = all(s.positions == "last" for s in sites)

                def give(
                    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], hook: AttentionHook = hook
                ) -> tuple[tuple[Any, ...], dict[str, Any]]:
                    return args, {**kwargs, HOOK_KWARG: hook}

                handles.append(part(layer, "attn").register_forward_pre_hook(give, with_kwargs=True))
                continue
            fn, edits_here = hidden_hook(component, layer)
            if component == "embed":

                def pre(
                    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], fn: StateFn = fn
                ) -> tuple[tuple[Any, ...], dict[str, Any]]:
                    if args:
                        return (fn(args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

                handles.append(layers[0].register_forward_pre_hook(pre, with_kwargs=True))
            else:  # resid, attn, mlp
                module = layers[layer] if component == "resid" else part(layer, component)

                def post(
                    module: torch.nn.Module,
                    args: tuple[Any, ...],
                    output: Any,
                    fn: StateFn = fn,
                    edits_here: bool = edits_here,
                ) -> Any:
                    x = fn(first_output(output))
                    return replace_output(output, x) if edits_here else None  # None: the output stays as it is

                handles.append(module.register_forward_hook(post))
        yield rec
    finally:
        for h in handles:
            h.remove()
        for (component, layer), targets in recorded.items():
            if component == "attn_probs" and attn_hooks[layer].records:
                for site, where in targets:
                    rec._put(site, where, attn_hooks[layer].records[-1])
        rec._fill()
