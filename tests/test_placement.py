"""Device, precision and memory options (`--device`, `--dtype`, `--device-map`, `--batch-size auto`, `--max-pixels`)
on the real zoo models. The GPU paths run where a GPU is present; here they are checked for their refusals."""

from __future__ import annotations

import json

import pytest
import torch

import vrprobe
from vrprobe.data import load_dataset
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.registry import load_adapter
from vrprobe.runtime.batching import activation_bytes, auto_batch_size, run_batches
from vrprobe.runtime.devices import LoadOptions, resolve_device, resolve_dtype
from vrprobe.scoring.evaluate import score_batch

from numerics import FORWARD, SUM, assert_close


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16 and resolve_dtype(torch.float16, cpu) == torch.float16
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps") and resolve_device("cpu") == cpu
    for bad, message in (("gpu", "unknown --device"), ("cuda:x", "unknown --device")):
        with pytest.raises(UsageError, match=message):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(UsageError, match="unknown --dtype 'half'"):
        resolve_dtype("half", cpu)
    with pytest.raises(UsageError, match="unknown --device-map"):
        LoadOptions(device_map="balanced").check()
    with pytest.raises(UsageError, match="--max-pixels must be an integer >= 1"):
        LoadOptions(max_pixels=0).check()


def test_eval_records_device_and_dtype(tmp_path):
    res = vrprobe.eval(
        "zoo:qwen2vl", "easy-vqa:test", limit=8, options=LoadOptions(dtype="bfloat16"), out=tmp_path / "run"
    )
    assert res.summary["model"]["dtype"] == "bfloat16" and res.summary["model"]["device"] == "cpu"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]
    assert manifest["dtype"] == "bfloat16" and manifest["device"] == "auto"
    assert 0 < res.summary["accuracy"] <= 1


def test_auto_batch_size_follows_the_memory_estimate(adapter):
    per_sample = activation_bytes(adapter, 100)
    assert per_sample > 0
    assert auto_batch_size(adapter, 100, free=int(per_sample * 2 * 7.5)) == 7  # half the free memory
    assert auto_batch_size(adapter, 100, free=1) == 1
    assert auto_batch_size(adapter, 100, free=10**15) == 256
    assert activation_bytes(adapter, 200) > per_sample


def test_out_of_memory_halves_the_batch_and_loses_nothing(adapter):
    """The device's memory limit is simulated (a batch over 3 samples raises torch's OutOfMemoryError); the model and
    the scoring are real. Every sample is scored once, as a batch of 3 would score it."""
    samples = load_dataset("easy-vqa:test", limit=10, seed=1).samples
    rows, logs = {}, []

    def work(indices, chunk):
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("simulated: batch too large for the device")
        for i, r in zip(indices, score_batch(adapter, chunk), strict=True):
            assert i not in rows
            rows[i] = r

    done = {samples[0].id}
    used = run_batches(samples, 16, work, done=done, log=logs.append)
    assert used == 2 and len(logs) == 3 and "retrying samples 1.. with --batch-size 8" in logs[0]
    assert sorted(rows) == list(range(1, 10))
    reference = score_batch(adapter, samples[1:4])
    for i, r in enumerate(reference, start=1):
        assert rows[i]["predicted"] == r["predicted"]
        assert_close(rows[i]["confidence"], r["confidence"], dtype=torch.float32, scale=1.0, ulps=FORWARD)

    def never(indices, chunk):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(VrprobeError, match="out of memory with a batch of 1"):
        run_batches(samples, 2, never, log=logs.append)


def test_qwen2vl_pixel_limits_change_the_image_tokens():
    image = load_dataset("easy-vqa:test", limit=1).samples[0].load_image()
    native = load_adapter("zoo:qwen2vl").encode([image], ["what shape is this?"])
    small = load_adapter("zoo:qwen2vl", min_pixels=16 * 16, max_pixels=32 * 32).encode([image], ["what shape is this?"])
    assert int(native.groups.image.sum()) == 16 and int(small.groups.image.sum()) == 4
    with pytest.raises(UsageError, match="native-resolution image processors only"):
        load_adapter("zoo:llava", max_pixels=1024)
    with pytest.raises(UsageError, match="--min-pixels 5000 is above --max-pixels 1024"):
        load_adapter("zoo:qwen2vl", min_pixels=5000, max_pixels=1024)


def test_device_map_auto_loads_and_scores():
    """accelerate's placement: on a machine without a GPU everything lands on the CPU and scores as usual."""
    placed = load_adapter("zoo:llava", device_map="auto")
    samples = load_dataset("easy-vqa:test", limit=4).samples
    plain = score_batch(load_adapter("zoo:llava"), samples)
    for a, b in zip(score_batch(placed, samples), plain, strict=True):
        assert a["predicted"] == b["predicted"]
        assert_close(a["confidence"], b["confidence"], dtype=torch.float32, scale=1.0, ulps=SUM)
