"""Tiny random-weight checkpoints built from the real non-weight files of the three checkpoints users bring.

`../shared/replicas/` (beside the clone; see its README) holds the real configs, tokenizers, processor configs and chat
templates of `llava-hf/llava-1.5-7b-hf`, `Qwen/Qwen2-VL-2B` and `google/paligemma-3b-pt-224`. `build(family, out)`
reads them where they lie, shrinks only width and depth (text model: hidden 64, 2 layers, 4 heads; vision tower:
hidden 32, 2 layers, 2 heads), keeps everything a prompt, a token id or an image-token count depends on (vocabulary
size, special token ids, image size, patch size, merge size, normalisation), initialises the weights with a fixed
seed, casts them to the checkpoint's own dtype, and writes model and processor with `save_pretrained` into `out` (a
pytest tmp dir). Nothing from `../shared` is copied into the project.

How each family's processor is put together from those files: `vrprobe.zoo.replica`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig

from vrprobe.zoo import replica as rep

REPLICAS = Path(__file__).resolve().parents[1].parent / "shared" / "replicas"
FOLDERS = rep.FOLDERS
FAMILIES = tuple(FOLDERS)
SEED = 0
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
KV_HEADS = {"llava": 4, "paligemma": 1, "qwen2vl": 2}  # PaliGemma: Gemma's multi-query attention, as in the real model
#: a wider weight init than the default 0.02, so that random models give clearly different scores to different
#: inputs and a padding or position bug cannot hide inside near-uniform probabilities
INIT_RANGE = 0.3


def available() -> bool:
    return rep.available(REPLICAS)


def replica(family: str) -> Path:
    return REPLICAS / FOLDERS[family]


def shrunk_config(family: str) -> Any:
    """The real config with width and depth shrunk; vocabulary, token ids, image and patch sizes untouched."""
    text = {**TEXT, "num_key_value_heads": KV_HEADS[family]}
    return rep.resize(AutoConfig.from_pretrained(str(replica(family))), family, text, VISION, INIT_RANGE)


def build_processor(family: str) -> Any:
    """The family's processor from the replica's real files (PaliGemma: assembled, see `vrprobe.zoo.replica`)."""
    return rep.processor(family, REPLICAS)


def build(family: str, out: Path) -> Path:
    """Write a tiny random-weight checkpoint of `family` into `out` (model + processor, `save_pretrained`), in the
    checkpoint's own dtype."""
    return rep.save(shrunk_config(family), build_processor(family), out, seed=SEED)
