"""Gradient saliency (input × gradient, Grad-CAM): gradients against finite differences in float64, the token grid,
batching, the target against the scoring records, the signals, and a model left as it was."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.numerics import FORWARD, SUM, assert_close, tolerance

from vrprobe.analyses.signals.base import SignalOptions
from vrprobe.analyses.signals.saliency import (
    SIGNALS,
    answer_logprob,
    compute,
    saliency_maps,
    vision_projector,
)
from vrprobe.data import load_dataset
from vrprobe.errors import VrprobeError
from vrprobe.metrics.grounding import target_weights
from vrprobe.metrics.maps import spatial_entropy
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch

FAMILIES = ("llava", "paligemma", "qwen2vl")
#: the finite-difference step makes f's rounding this fraction of the derivative (see `check_derivative`)
ROUNDING_SHARE = 0.02


@pytest.fixture(scope="module", params=FAMILIES)
def double(request):
    """A zoo model converted to float64 (its own copy: the session's float32 models stay as they are)."""
    adapter = load_adapter(f"zoo:{request.param}")
    adapter.model.double()
    return adapter


@contextmanager
def shifted(module: torch.nn.Module, v: torch.Tensor, t: float, where: str) -> Iterator[None]:
    """Add t · v to `module`'s input (`where="in"`) or output ("out") in every forward inside the block: v has the
    tensor's shape (as rows), or is one image's rows [N, D], added to every image of a [R, N, D] tensor."""

    def like(x: torch.Tensor) -> torch.Tensor:
        return v.reshape(x.shape) if v.numel() == x.numel() else v.expand(x.shape)

    def pre(module, args):
        return (args[0] + t * like(args[0]), *args[1:])

    def post(module, args, out):
        return out + t * like(out)

    handle = module.register_forward_pre_hook(pre) if where == "in" else module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


def check_derivative(adapter, samples, batch, answers, where: str, v: torch.Tensor, want: float) -> None:
    """Central difference D(h) = (f(x + hv) − f(x − hv)) / 2h of sample 0's target against the gradient's `want` =
    g · v, for f = `answer_logprob` with x the projector's input (`where="in"`, the Grad-CAM feature map) or output
    ("out", the image tokens' input embeddings, which the projector's output fills in order).

    Tolerance from the dtype and h: even in a float64 model transformers' RMS norms compute in float32, so f carries
    float32 rounding, r = SUM · eps(float32) · |f| (measured ≈ 2 ulps of |f|); D(h) is then off by at most r/h from
    rounding and by c·h² from truncation, which |D(h) − D(2h)| (= 3c·h² + rounding) bounds. h is chosen so that
    r/h = ROUNDING_SHARE · |want|. The tolerance must stay under a quarter of |want|, so the check cannot pass
    vacuously. The other samples' targets must not move at all: each row's forward reads only its own inputs (the
    same kernels on the same shapes, so `==`)."""
    module = vision_projector(adapter)
    with torch.no_grad():
        f0, _ = answer_logprob(adapter, samples, batch, answers=answers)
    r = tolerance(torch.float32, scale=abs(float(f0[0])), ulps=SUM)
    h = r / (ROUNDING_SHARE * max(abs(want), torch.finfo(torch.float64).tiny))

    def central(step: float) -> float:
        values = []
        for t in (step, -step):
            with torch.no_grad(), shifted(module, v, t, where):
                f, _ = answer_logprob(adapter, samples, batch, answers=answers)
            assert torch.equal(f[1:], f0[1:]), "another sample's target moved"
            values.append(float(f[0]))
        return (values[0] - values[1]) / (2 * step)

    d1, d2 = central(h), central(2 * h)
    tol = r / h + abs(d1 - d2)
    assert tol <= 0.25 * abs(want), f"{where}: no useful step (tolerance {tol:.3g} for a derivative {want:.3g})"
    assert abs(d1 - want) <= tol, f"{where}: finite difference {d1:.6g} vs gradient {want:.6g} (tolerance {tol:.3g})"


def test_gradients_match_finite_differences(double):
    """∂log p/∂x (image-token embeddings) and ∂log p/∂A (the feature map feeding the projector) along the gradient's
    own direction, a random direction on three tokens (first, middle, last), and, for input × gradient, the scaling of
    the token with the largest |ixg| (whose derivative is ixg itself): each against finite differences."""
    adapter = double
    samples = load_dataset("easy-vqa:test", limit=2).samples
    batch = adapter.encode_samples(samples)
    with torch.no_grad():
        _, answers = answer_logprob(adapter, samples, batch)
    maps = saliency_maps(adapter, samples, batch, answers=answers, gradients=True)
    gen = torch.Generator().manual_seed(0)
    for where, key in (("out", "embeds"), ("in", "features")):
        x, g = (torch.from_numpy(maps[0][k]) for k in (key, key + "_grad"))
        assert x.dtype == g.dtype == torch.float64 and x.shape == g.shape
        n = x.shape[0]
        rows = torch.zeros(2 * n, x.shape[1], dtype=torch.float64)  # both samples' rows; sample 0's come first

        def along(v: torch.Tensor, want: float, rows: torch.Tensor = rows, n: int = n, where: str = where) -> None:
            rows = rows.clone()
            rows[:n] = v
            check_derivative(adapter, samples, batch, answers, where, rows, want)

        along(g / g.norm(), float(g.norm()))
        v = torch.zeros_like(x)
        v[[0, n // 2, n - 1]] = torch.randn(3, x.shape[1], generator=gen, dtype=torch.float64)
        along(v, float((g * v).sum()))
        if where == "out":
            t = int(np.argmax(np.abs(maps[0]["ixg"])))
            v = torch.zeros_like(x)
            v[t] = x[t]
            along(v, float(maps[0]["ixg"][t]))
            assert_close(maps[0]["ixg"], (x * g).sum(1), dtype=torch.float64, ulps=SUM * x.shape[1])


@pytest.mark.parametrize("double", ["llava"], indirect=True)
def test_multi_token_candidates_and_open_answers(double):
    """The target sums each sample's gradients over every forward it runs in: candidates of several tokens (scored
    as `Adapter.score_candidates` scores them) and a greedy open-ended answer (its log-probability = the log of the
    record's confidence), both against finite differences (one sample; one family suffices: the forwards are the same
    code for every family)."""
    adapter = double
    base = load_dataset("easy-vqa:test", limit=1).samples[0]
    multi = replace(base, choices=("red circle", "blue", "green triangle"))
    assert [len(adapter.answer_ids(c)) for c in multi.choices or ()] == [2, 1, 2]
    batch = adapter.encode_samples([multi])
    loglik = adapter.score_candidates(batch, [multi.choices or ()])[0].double()
    with torch.no_grad():
        logp, answers = answer_logprob(adapter, [multi], batch)
    # score_candidates reads its log-softmax in float32: compare at float32's precision
    want_logp = torch.log_softmax(loglik, 0)[answers[0]]
    assert_close(logp[0], want_logp, dtype=torch.float32, scale=max(1.0, float(loglik.abs().max())), ulps=FORWARD)
    opened = replace(base, choices=None)
    record = score_batch(adapter, [opened])[0]
    for sample in (multi, opened):
        batch = adapter.encode_samples([sample])
        maps = saliency_maps(adapter, [sample], batch, gradients=True)[0]
        if sample is opened:
            assert_close(float(maps["logp"]), math.log(record["confidence"]), dtype=torch.float32, ulps=FORWARD)
        with torch.no_grad():
            _, answers = answer_logprob(adapter, [sample], batch)
        for where, key in (("out", "embeds"), ("in", "features")):
            g = torch.from_numpy(maps[key + "_grad"])
            check_derivative(adapter, [sample], batch, answers, where, g / g.norm(), float(g.norm()))
            v = torch.randn(g.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            check_derivative(adapter, [sample], batch, answers, where, v, float((g * v).sum()))


def test_maps_on_the_token_grid_and_batching(adapter):
    """One value per image token (the cells of `attention_image`), Grad-CAM's patches summed per token (Qwen2-VL: 4
    consecutive patches per token), finite maps, and a batch of four equal to the samples one at a time."""
    samples = load_dataset("easy-vqa:test", limit=4, seed=3).samples
    batch = adapter.encode_samples(samples)
    together = saliency_maps(adapter, samples, batch)
    for i, (s, maps) in enumerate(zip(samples, together, strict=True)):
        n = int(batch.groups.image[i].sum())
        geometry = adapter.image_geometry(batch.items[i])
        assert maps["ixg"].shape == maps["gradcam"].shape == (n,) == (len(geometry.cells),)
        k = 4 if adapter.family == "qwen2vl" else 1
        assert maps["gradcam_patch"].shape == (k * n,) and (maps["gradcam_patch"] >= 0).all()
        assert np.isfinite(maps["ixg"]).all() and np.isfinite(maps["gradcam"]).all()
        assert_close(maps["gradcam"], maps["gradcam_patch"].reshape(n, k).sum(1), dtype=np.float64, ulps=k)
        alone = saliency_maps(adapter, [s])[0]
        for key in ("ixg", "gradcam", "logp"):
            assert_close(maps[key], alone[key], dtype=torch.float32, ulps=FORWARD, what=f"{adapter.family} {key}")


def test_target_is_the_log_confidence(adapter):
    samples = load_dataset("easy-vqa:test", limit=4, seed=2).samples
    records = score_batch(adapter, samples)
    maps = saliency_maps(adapter, samples)
    logp = [float(m["logp"]) for m in maps]
    assert_close(logp, [math.log(r["confidence"]) for r in records], dtype=torch.float32, ulps=FORWARD)


def test_model_unchanged_and_no_hooks_left():
    """Parameters, their `requires_grad` and `.grad`, and eval mode are as before; every module holds the hooks it held
    before (none of ours is left), also when the block raises (a batch mixing closed-set and open-ended samples)."""
    adapter = load_adapter("zoo:llava")
    model = adapter.model

    def hooks() -> list[tuple[int, ...]]:  # transformers keeps hooks of its own (output capturing): compare, by id
        kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        return [tuple(k for kind in kinds for k in getattr(m, kind)) for m in model.modules()]

    samples = load_dataset("easy-vqa:test", limit=2).samples
    score_batch(adapter, samples)  # transformers installs its own hooks at the first forward
    held = hooks()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    saliency_maps(adapter, samples)
    with pytest.raises(VrprobeError, match="mixes"):
        saliency_maps(adapter, [samples[0], replace(samples[1], choices=None)])
    assert not model.training and all(not m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # exact: nothing wrote them
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert hooks() == held


def test_signals_and_columns(adapter):
    """Every declared column per sample: the maps' spatial entropy within [0, log N], and on-target saliency = Σ p w
    of the normalised map (NaN without boxes, or with an empty box list); recomputed from maps of a separate call."""
    assert [s.column for s in SIGNALS] == ["ixg_sharpness", "ixg_on_target", "gradcam_sharpness", "gradcam_on_target"]
    assert all(s.backwards == 1 and s.forwards == 1 and not s.causal and not s.needs_labels for s in SIGNALS)
    assert [s.granularity for s in SIGNALS] == ["token", "token", "patch", "patch"]
    assert [s.requires for s in SIGNALS] == [(), ("boxes",), (), ("boxes",)]
    assert [s.higher_is_reliable for s in SIGNALS] == [False, True, False, True]
    samples = load_dataset("easy-vqa:test", limit=4, seed=4).samples
    boxes = [((8.0, 8.0, 20.0, 16.0),), None, (), ((20.0, 20.0, 24.0, 24.0), (0.0, 0.0, 10.0, 64.0))]
    samples = [replace(s, boxes=b) for s, b in zip(samples, boxes, strict=True)]
    records = score_batch(adapter, samples)
    rows = compute(adapter, samples, records, SignalOptions())
    batch = adapter.encode_samples(samples)
    maps = saliency_maps(adapter, samples, batch)
    for i, (s, row, m) in enumerate(zip(samples, rows, maps, strict=True)):
        assert set(row) == {sig.column for sig in SIGNALS}
        n = len(m["ixg"])
        for key in ("ixg_sharpness", "gradcam_sharpness"):
            assert 0.0 <= row[key] <= math.log(n) + tolerance(np.float64, math.log(n), SUM)
        for key, values in (("ixg_sharpness", np.abs(m["ixg"])), ("gradcam_sharpness", m["gradcam"])):
            want = spatial_entropy(values, (1, n))
            assert_close(row[key], want, dtype=torch.float32, scale=math.log(n), ulps=FORWARD, what=key)
        if not s.boxes:
            assert math.isnan(row["ixg_on_target"]) and math.isnan(row["gradcam_on_target"])
            continue
        w = target_weights(adapter.image_geometry(batch.items[i]).cells, s.boxes)
        for key, values in (("ixg_on_target", np.abs(m["ixg"])), ("gradcam_on_target", m["gradcam"])):
            assert 0.0 <= row[key] <= 1.0
            share = values @ w / values.sum() if values.sum() > 0 else w.mean()  # an all-zero map counts as uniform
            assert_close(row[key], share, dtype=torch.float32, scale=1.0, ulps=FORWARD)


def test_a_feature_map_that_does_not_map_onto_tokens_gives_nan_gradcam(tmp_path):
    """Idefics3 pixel-shuffles its features (no projector of the known kinds): input × gradient still exists, Grad-CAM
    is NaN with a warning."""
    from tests.tiny_other_types import BUILDERS

    adapter = load_adapter(str(BUILDERS["idefics3"](tmp_path / "idefics3")))
    samples = load_dataset("easy-vqa:test", limit=2).samples
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = saliency_maps(adapter, samples)
    assert any("Grad-CAM" in str(w.message) for w in caught)
    for m in maps:
        assert np.isfinite(m["ixg"]).all() and np.isnan(m["gradcam"]).all() and m["gradcam_patch"].size == 0
