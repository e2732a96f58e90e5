"""`vrprobe.zoo.replica.real_shape`: random-init models with each family's real depth, vocabulary and image-token
structure (what `benchmarks/real_shape.py` measures), built from `../shared/replicas` and, without it, from the zoo's
tokenizer; both load through `load_adapter` and run eval and trace."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import AutoConfig

import replicas
from vrprobe.data import load_dataset
from vrprobe.registry import load_adapter
from vrprobe.scoring.evaluate import score_batch
from vrprobe.tracing import TraceConfig, Tracer
from vrprobe.zoo.replica import REAL_SHAPES, real_shape

SOURCES = [
    pytest.param(True, id="replicas", marks=pytest.mark.skipif(not replicas.available(), reason="no ../shared")),
    pytest.param(False, id="zoo-tokenizer"),
]
SIZE = (640, 480)


def expected_image_tokens(family: str, config) -> int:
    """From the saved config: (image size / patch)² for the fixed-size families; for Qwen2-VL, the 640×480 image
    resized to multiples of patch·merge, in patches, merged merge² to one token."""
    vision = config.vision_config
    if family != "qwen2vl":
        return (vision.image_size // vision.patch_size) ** 2
    unit = vision.patch_size * vision.spatial_merge_size
    h, w = (round(side / unit) * unit for side in (SIZE[1], SIZE[0]))
    return (h // vision.patch_size) * (w // vision.patch_size) // vision.spatial_merge_size**2


@pytest.mark.parametrize("use_replicas", SOURCES)
@pytest.mark.parametrize("family", ["llava", "paligemma", "qwen2vl"])
def test_real_shape_keeps_depth_vocabulary_and_image_tokens(family, use_replicas, tmp_path):
    path = real_shape(family, tmp_path / family, 32, replicas.REPLICAS if use_replicas else None)
    config = AutoConfig.from_pretrained(str(path))
    text = config.get_text_config()
    shape = REAL_SHAPES[family]
    assert (text.num_hidden_layers, text.vocab_size, text.hidden_size) == (shape.layers, shape.vocab, 32)
    assert text.num_attention_heads % text.num_key_value_heads == 0
    adapter = load_adapter(str(path), device="cpu")
    original = load_dataset("easy-vqa:test", limit=4, seed=0).samples[0]
    sample = dataclasses.replace(original, image_fn=lambda: original.load_image().resize(SIZE))
    batch = adapter.encode_samples([sample])
    assert int(batch.groups.image.sum()) == expected_image_tokens(family, config)
    record = score_batch(adapter, [sample], batch)[0]
    assert record["predicted"] in sample.choices and len(record["entropy_by_layer"]) == shape.layers
    if family == "paligemma":  # one trace at real structure: the bidirectional prefix, the largest vocabulary
        trace = Tracer(adapter, 1.0, TraceConfig(noise_samples=1, kinds=("resid",))).trace(sample)
        assert trace.p_restored.shape == (1, shape.layers, 3)


def test_eval_of_a_one_layer_model_keeps_its_layer_dimension(tmp_path):
    """A single decoder layer's recorded attention still has a layer dimension (it lost it once, and eval failed)."""
    adapter = load_adapter(str(real_shape("llava", tmp_path / "one", 32, None, layers=1)), device="cpu")
    sample = load_dataset("easy-vqa:test", limit=4, seed=0).samples[0]
    record = score_batch(adapter, [sample])[0]
    assert len(record["entropy_by_layer"]) == 1 and record["sharpness"] == record["entropy_by_layer"][0]
