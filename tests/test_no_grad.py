"""vrprobe's own forwards keep no autograd graph: at 7B a graph holds every layer's activations (benchmarks/full_size.py
was killed for memory in `corrupt` before `score_batch` ran under `torch.no_grad()`). A forward hook on the model
records the grad mode of every forward that eval, corrupt and trace run, called as a user calls them, and of the
clean run the benchmarks call on their own (`Tracer.clean_states`)."""

from __future__ import annotations

import pytest
import torch

import vrprobe
from vrprobe.data import load_dataset
from vrprobe.tracing import TraceConfig, Tracer


@pytest.fixture(scope="module")
def model():
    return vrprobe.load("zoo:llava")


def grad_modes(model, call) -> list[bool]:
    modes: list[bool] = []
    handle = model.model.register_forward_pre_hook(lambda module, args: modes.append(torch.is_grad_enabled()))
    try:
        call()
    finally:
        handle.remove()
    return modes


@pytest.mark.parametrize(
    "call",
    [
        lambda m: vrprobe.eval(m, "easy-vqa:test", limit=3, make_report=False),
        lambda m: vrprobe.corrupt(m, "easy-vqa:test", band="2-4", limit=3, trace_limit=2, make_report=False),
        lambda m: vrprobe.trace(m, "easy-vqa:test", limit=2, kinds=("resid",), noise_samples=2, make_report=False),
        lambda m: Tracer(m, 1.0, TraceConfig(kinds=("resid",))).clean_states(
            m.encode_samples(load_dataset("easy-vqa:test", limit=1).samples)
        ),
    ],
    ids=["eval", "corrupt", "trace", "clean_states"],
)
def test_forwards_run_without_autograd(model, call):
    assert torch.is_grad_enabled()  # the caller's default: nothing below may rely on the caller turning it off
    modes = grad_modes(model, lambda: call(model))
    assert modes, "no forward was seen"
    assert not any(modes), f"{sum(modes)} of {len(modes)} forwards ran with autograd on"
