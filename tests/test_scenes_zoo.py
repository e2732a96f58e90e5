"""The scenes zoo: three models of the real architectures trained on `scenes:train` (vrprobe.zoo.catalog), loaded
through the Auto classes as a real checkpoint is, batched equal to one at a time, and drawn to `scenes:lures`' lure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from vrprobe.data import load_dataset
from vrprobe.metrics.grounding import attention_on_target, target_weights
from vrprobe.registry import ZOO_DIR, load_adapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.zoo.catalog import CATALOG

from numerics import FORWARD, assert_close

# the scenes models whose checkpoint is present (all three are committed)
SCENES_MODELS = tuple(
    n for n, m in CATALOG.items() if m.dataset == "scenes" and (ZOO_DIR / n / "config.json").is_file()
)
ARCHITECTURES = {"llava": "LlavaForConditionalGeneration", "paligemma": "PaliGemmaForConditionalGeneration"}
ARCHITECTURES["qwen2vl"] = "Qwen2VLForConditionalGeneration"
LURE_LIMIT = 200  # lure and test questions per model (type-stratified: 50 of each kind)


@pytest.fixture(scope="module", params=SCENES_MODELS)
def scenes_adapter(request):
    """Each scenes zoo model through vrprobe's loading path (the Auto classes, vrprobe's attention)."""
    return load_adapter(f"zoo:{request.param}")


@pytest.fixture(scope="module")
def samples():
    return load_dataset("scenes:test", limit=8, seed=5).samples


def test_scenes_model_is_a_real_checkpoint(scenes_adapter):
    name = scenes_adapter.name.removeprefix("zoo:")
    zoo = CATALOG[name]
    folder = ZOO_DIR / name
    model = AutoModelForImageTextToText.from_pretrained(str(folder))
    processor = type(scenes_adapter).load_processor(folder)  # AutoProcessor, image-only for Qwen2-VL
    assert type(model).__name__ == ARCHITECTURES[zoo.family]
    assert model.config.get_text_config().num_hidden_layers >= 8
    assert sum(f.stat().st_size for f in folder.iterdir()) < 20e6
    sample = load_dataset("scenes:test", limit=1).samples[0]
    inputs = processor(images=[sample.load_image()], text=[scenes_adapter.prompt(sample.question)], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == zoo.image_tokens >= 64
    with torch.no_grad():  # the same weights as vrprobe's adapter: the same answer distribution
        plain = model(**inputs).logits[0, -1].softmax(-1)
        ours = scenes_adapter.model(**inputs).logits[0, -1].softmax(-1)
    assert_close(ours, plain, dtype=torch.float32, scale=1.0, ulps=FORWARD, what="Auto class vs vrprobe's adapter")


def test_scenes_batched_equals_one_at_a_time(scenes_adapter, samples):
    together = score_batch(scenes_adapter, samples)
    alone = [score_batch(scenes_adapter, [s])[0] for s in samples]
    for a, b in zip(together, alone, strict=True):
        assert a["predicted"] == b["predicted"] or abs(a["confidence"] - b["confidence"]) < 1e-3
        assert_close(a["probs"], b["probs"], dtype=torch.float32, scale=1.0, ulps=FORWARD, what="batched vs alone")
        assert_close(
            a["attention_image"], b["attention_image"], dtype=torch.float32, ulps=FORWARD, what="attention map"
        )


def lure_mass(adapter, records, samples) -> np.ndarray:
    """Each record's attention mass (layer-averaged `attention_image`) on its sample's lure box."""
    out = []
    for r, s in zip(records, samples, strict=True):
        cells = adapter.image_geometry(adapter.encode_one(s.load_image(), s.question)).cells
        p = np.asarray(r["attention_image"], dtype=np.float64)
        p = p.mean(0) if p.ndim == 2 else p
        out.append(float(attention_on_target(p, target_weights(cells, s.meta["lure_boxes"]))))
    return np.array(out)


def test_scenes_model_is_drawn_to_the_lure(scenes_adapter):
    lures = load_dataset("scenes:lures", limit=LURE_LIMIT).samples
    test = load_dataset("scenes:test", limit=LURE_LIMIT).samples
    on_lures = [r for i in range(0, LURE_LIMIT, 50) for r in score_batch(scenes_adapter, lures[i : i + 50])]
    on_test = [r for i in range(0, LURE_LIMIT, 50) for r in score_batch(scenes_adapter, test[i : i + 50])]
    wrong = np.array([not r["correct"] for r in on_lures])
    assert wrong.mean() > np.mean([not r["correct"] for r in on_test])  # more errors beside a lure
    took_lure = np.array([r["predicted"] == s.meta["lure_answer"] for r, s in zip(on_lures, lures, strict=True)])
    assert took_lure.sum() > 0  # some errors are the lure's answer
    mass = lure_mass(scenes_adapter, on_lures, lures)
    # Measured (200 lure questions): the errors' attention mass on the lure box is barely, not measurably, higher
    # than the correct answers' (llava-scenes 0.107 vs 0.103, paligemma-scenes 0.091 vs 0.089, qwen2vl-scenes 0.090
    # vs 0.100): errors beside a lure are not explained by the averaged attention map. Asserted as measured: within
    # 0.05 of each other.
    assert abs(mass[wrong].mean() - mass[~wrong].mean()) < 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--models", "gpt5"], "unknown zoo model 'gpt5'"), (["--models", "llava-scenes", "--limit", "0"], "limit")],
)
def test_zoo_table_bad_input_is_one_error_line(args, message):
    from conftest import run_cli

    result = run_cli("zoo", "table", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
