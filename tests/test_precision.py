"""bfloat16 beside float32 on the trained zoo (CPU): the figures a user reads must not depend on the precision.

Probabilities, log-probabilities and entropies are computed in float32 whatever the model's dtype (attention
probabilities are recorded in float32, logits are cast before softmax); what remains is the model's own bf16
arithmetic. Per sample: prediction agreement, |Δ confidence| (probability), |Δ sharpness| (nats), and |Δ effect|
(probability) over the whole trace grid (resid, mlp, attn) of two samples; asserted on the mean and the 95th
percentile, the maxima printed.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from vrprobe.data import load_dataset
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig, Tracer, measure_sigma

TOL = 0.02


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "paligemma", "qwen2vl"])
def test_bfloat16_agrees_with_float32(family):
    samples = load_dataset("easy-vqa:test", limit=64, seed=0).samples
    sigma = measure_sigma(load_adapter(f"zoo:{family}"), samples[:16])  # one noise unit for both precisions
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        adapter = load_adapter(f"zoo:{family}", dtype=dtype)
        assert adapter.dtype == dtype
        with torch.no_grad():
            records = score_batch(adapter, samples[:32]) + score_batch(adapter, samples[32:])
        tracer = Tracer(adapter, sigma, TraceConfig(noise_samples=4))
        traces = [tracer.trace(samples[i], index=i) for i in range(2)]
        runs[dtype] = records, traces
    (r32, t32), (r16, t16) = runs[torch.float32], runs[torch.bfloat16]
    agree = sum(a["predicted"] == b["predicted"] for a, b in zip(r32, r16, strict=True)) / len(r32)
    conf = [abs(a["confidence"] - b["confidence"]) for a, b in zip(r32, r16, strict=True)]
    sharp = [abs(a["sharpness"] - b["sharpness"]) for a, b in zip(r32, r16, strict=True)]
    effect = torch.cat([(a.effect - b.effect).abs().flatten() for a, b in zip(t32, t16, strict=True)]).tolist()
    print(
        f"{family}: agreement {agree:.3f}; |Δconfidence| mean {statistics.mean(conf):.4f} max {max(conf):.4f}; "
        f"|Δsharpness| mean {statistics.mean(sharp):.4f} max {max(sharp):.4f} nats; "
        f"|Δeffect| mean {statistics.mean(effect):.4f} max {max(effect):.4f}"
    )
    assert agree >= 0.99
    for name, diffs in (("confidence", conf), ("sharpness", sharp), ("effect", effect)):
        assert statistics.mean(diffs) <= TOL and p95(diffs) <= TOL, (name, statistics.mean(diffs), p95(diffs))
