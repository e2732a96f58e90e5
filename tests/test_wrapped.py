"""Tracing, knockout and attribution on models whose modules another library has wrapped, against the plain load, on
every zoo family: accelerate's offload hooks (`device_map="auto"` with decoder layers offloaded to disk), forward
hooks, an instance `forward` with and without `__wrapped__`, one whose `__wrapped__` is the class's unbound function
(nnsight 0.8's `Controller`), and nnsight's `NNsight` itself.

Every comparison is exact (`torch.equal`): hooks that return None and wrappers that pass their arguments through
change no number, and offloaded weights are the checkpoint's bits loaded back before the same CPU kernels run on the
same shapes, so any difference is a bug, not rounding.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from vrprobe.analyses.knockout import run_knockout
from vrprobe.data import load_dataset
from vrprobe.registry import load_adapter
from vrprobe.tracing import TraceConfig, Tracer, measure_sigma
from vrprobe.tracing.attribution import Attributor
from vrprobe.tracing.replay import cache_kwarg, forward_signature

CFG = TraceConfig(noise_samples=2)
EDGES = ["image->question", "image->last"]


@pytest.fixture(scope="module")
def samples():
    return load_dataset("easy-vqa:test", limit=2, seed=2).samples


def results(adapter, samples) -> dict[str, torch.Tensor]:
    """σ, one sample's trace and attribution, and a knockout sweep (window 2) over `samples`, as tensors by name."""
    sigma = measure_sigma(adapter, samples)
    trace = Tracer(adapter, sigma, CFG).trace(samples[0], index=0)
    att = Attributor(adapter, sigma, CFG).attribute(samples[0], index=0)
    records, rows = run_knockout(adapter, samples, EDGES, window=2)
    return {
        "sigma": torch.tensor(sigma),
        "trace p_clean": torch.tensor(trace.p_clean),
        "trace p_corrupted": torch.tensor(trace.p_corrupted),
        "trace p_restored": trace.p_restored,
        "attribution estimate": att.estimate,
        "attribution estimate_linear": att.estimate_linear,
        "knockout p_clean": torch.tensor([r["p_clean"] for r in records]),
        "knockout p_knocked": torch.tensor([r["p_knocked"] for r in rows]),
    }


def assert_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), f"{key}: max |diff| {(got[key] - value).abs().max():.3g}"


@pytest.fixture(scope="module")
def reference(adapter, samples):
    return results(adapter, samples)


# ---- wrappers another library may put around a model's modules --------------------------------------------------


def none_hooks(module: torch.nn.Module, seen: list) -> list:
    """Pre-hooks and forward hooks, with and without kwargs, that note the call in `seen` and return None."""

    def pre(mod, args):
        seen.append(mod)

    def pre_kw(mod, args, kwargs):
        seen.append(mod)

    def post(mod, args, output):
        seen.append(mod)

    def post_kw(mod, args, kwargs, output):
        seen.append(mod)

    return [
        module.register_forward_pre_hook(pre),
        module.register_forward_pre_hook(pre_kw, with_kwargs=True),
        module.register_forward_hook(post),
        module.register_forward_hook(post_kw, with_kwargs=True),
    ]


def with_wraps(module: torch.nn.Module, seen: list) -> Callable:
    """`functools.wraps` around the bound forward: `__wrapped__` leads to it, and the signature reads through."""
    orig = module.forward
    return functools.wraps(orig)(lambda *args, **kwargs: seen.append(module) or orig(*args, **kwargs))


def without_wrapped(module: torch.nn.Module, seen: list) -> Callable:
    """A plain `def wrapper(*args, **kwargs)`: no `__wrapped__`, its signature says nothing about the layer's."""
    orig = module.forward

    def wrapper(*args, **kwargs):
        seen.append(module)
        return orig(*args, **kwargs)

    return wrapper


def wrapping_unbound(module: torch.nn.Module, seen: list) -> Callable:
    """A wrapper whose `__wrapped__` is the class's unbound `forward` (`self` first), as nnsight 0.8's `Controller`
    does: `inspect.signature(module.forward)` then binds the hidden states to `self`."""
    return functools.update_wrapper(without_wrapped(module, seen), type(module).forward)


FORWARDS = {"wraps": with_wraps, "no_wrapped": without_wrapped, "unbound": wrapping_unbound}


@contextmanager
def wrapped(adapter, how: str) -> Iterator[list]:
    """Wrap every module of every decoder layer (the layer, its attention, MLP, projections and norms) as `how` says;
    yields the list each hook or wrapper appends its module to when it runs. Hooks are removed and instance
    `forward`s put back as they were in `finally`, so the session's shared adapter is never left wrapped."""
    modules = [m for layer in adapter.decoder_layers for m in layer.modules()]
    handles, saved, seen = [], [], []
    try:
        for m in modules:
            if how == "hooks":
                handles += none_hooks(m, seen)
            else:
                saved.append((m, m.__dict__.get("forward")))
                m.forward = FORWARDS[how](m, seen)
        yield seen
    finally:
        for h in handles:
            h.remove()
        for m, forward in saved:
            if forward is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = forward


def wrapping_state(adapter) -> list:
    """Per module of the model: its instance `forward` (None: the class's) and the ids of its hooks."""
    return [
        (m.__dict__.get("forward"), list(m._forward_pre_hooks), list(m._forward_hooks)) for m in adapter.model.modules()
    ]


def placed_on(device_map: dict[str, str], name: str) -> str:
    """The device accelerate's map gives module `name`: its own entry or its nearest parent's."""
    while name not in device_map:
        name = name.rpartition(".")[0]
    return device_map[name]


# ---- tests -------------------------------------------------------------------------------------------------------


class Layer(torch.nn.Module):
    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, **kwargs):
        return hidden_states


@pytest.mark.parametrize("how", sorted(FORWARDS))
def test_signature_is_the_class_forward_bound_to_the_module(how):
    """Whatever sits in the instance's `forward`, replay reads the class's own, `self` bound."""
    layer = Layer()
    expected = inspect.signature(Layer().forward)
    layer.forward = FORWARDS[how](layer, [])
    assert forward_signature(layer) == expected
    assert list(forward_signature(layer).parameters)[0] == "hidden_states"
    assert cache_kwarg(layer) == "past_key_values"


@pytest.mark.parametrize("how", ["hooks", *sorted(FORWARDS)])
def test_wrapped_modules_trace_knock_out_and_attribute_as_the_plain_model(adapter, samples, reference, how):
    """Hooks returning None, or a pass-through instance `forward` (with `__wrapped__`, without it, or pointing at the
    unbound class function) on every module of the decoder layers: the same numbers, bit for bit."""
    before = wrapping_state(adapter)
    with wrapped(adapter, how) as seen:
        got = results(adapter, samples)
    assert set(seen) == {m for layer in adapter.decoder_layers for m in layer.modules()}  # every wrapper ran
    assert wrapping_state(adapter) == before  # unwrapped
    assert_equal(got, reference)


def test_nnsight_wrapped_model_traces_knocks_out_and_attributes_as_the_plain_model(adapter, samples, reference):
    """nnsight's `NNsight` around the very model vrprobe traces (a fresh load, so the shared adapter stays plain):
    nnsight puts a `Controller` into every module's `forward`; outside an nnsight trace it runs the module's own
    forward, and vrprobe gives the plain model's numbers."""
    nnsight = pytest.importorskip("nnsight")
    fresh = load_adapter(adapter.name)
    nnsight.NNsight(fresh.model)
    assert type(fresh.decoder_layers[0].__dict__["forward"]).__name__ == "Controller"
    assert_equal(results(fresh, samples), reference)


def test_offloaded_to_disk_traces_knocks_out_and_attributes_as_the_plain_load(
    adapter, samples, reference, tmp_path, monkeypatch
):
    """`device_map="auto"` through `load_adapter` (what `--device-map auto` runs), with accelerate told it has the
    model's size less four decoder layers of CPU memory: the later decoder layers (and the head) are offloaded to
    disk under `tmp_path`, their weights on the meta device between calls and loaded back by accelerate's hook around
    each call. Both loads run on the CPU in float32, so the numbers are the plain load's exactly."""
    from transformers import AutoModelForImageTextToText

    if adapter.device.type == "cpu" and adapter.dtype == torch.float32:
        plain = reference
    else:  # a GPU session: the plain reference on the offloaded load's device and dtype
        plain = results(load_adapter(adapter.name, device="cpu", dtype="float32"), samples)
    size = sum(p.numel() * 4 for p in adapter.model.parameters())
    per_layer = sum(p.numel() * 4 for p in adapter.decoder_layers[0].parameters())
    budget = {"max_memory": {"cpu": size - 4 * per_layer}, "offload_folder": str(tmp_path)}
    load = AutoModelForImageTextToText.from_pretrained
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", functools.partial(load, **budget))
    placed = load_adapter(adapter.name, device="cpu", dtype="float32", device_map="auto")
    monkeypatch.undo()

    names = {m: n for n, m in placed.model.named_modules()}
    devices = [placed_on(placed.model.hf_device_map, names[layer]) for layer in placed.decoder_layers]
    assert set(devices) == {"cpu", "disk"}, placed.model.hf_device_map
    offloaded = devices.index("disk")
    assert next(placed.decoder_layers[offloaded].parameters()).device.type == "meta"
    assert "_hf_hook" in placed.decoder_layers[offloaded].__dict__
    assert_equal(results(placed, samples), plain)
