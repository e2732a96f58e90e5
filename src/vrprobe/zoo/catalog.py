"""The zoo's models: which architecture, trained on which data, at which image size and shape.

Two dataset families, the same three real architectures in each:

- easy-VQA (`llava`, `paligemma`, `qwen2vl`): 64×64 images of one shape, 16 image tokens (patch 16; Qwen2-VL patch 8
  merged 2×2), CLIP/SigLIP tower hidden 64 × 2 layers.
- scenes (`llava-scenes`, `paligemma-scenes`, `qwen2vl-scenes`): 128×128 scenes of 2–6 objects, 64 image tokens
  (patch 16; Qwen2-VL patch 8 merged 2×2), a wider tower (hidden 96 × 3 layers) so that a 16-px cell can tell a small
  triangle from a small circle.

Every model's text model: hidden 128, 8 decoder layers, 4 heads, MLP 256 (so layer bands mean something).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict


class TextShape(TypedDict):
    """The text model's shape, shared by the three families (keyword arguments of their text configs)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


class VisionShape(TypedDict):
    """The vision tower's shape (LLaVA's CLIP, PaliGemma's SigLIP; Qwen2-VL reads width, depth and heads)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int


TEXT = TextShape(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4)
EASY_VISION = VisionShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
SCENES_VISION = VisionShape(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=3)
DATASETS = ("easy-vqa", "scenes")


@dataclass(frozen=True)
class ZooModel:
    """One zoo model. `family`: llava | paligemma | qwen2vl. `dataset`: the training data's family, easy-vqa or
    scenes (it also fixes the vocabulary). `image_size`: the side the processor resizes to, px. `patch`: the vision
    tower's patch side, px (Qwen2-VL's patches are merged 2×2 into one token)."""

    name: str
    family: str
    dataset: str
    image_size: int
    patch: int
    vision: VisionShape

    @property
    def image_tokens(self) -> int:
        """Image tokens per image: (side / patch)², Qwen2-VL's ÷ 4 after its 2×2 merge."""
        n = (self.image_size // self.patch) ** 2
        return n // 4 if self.family == "qwen2vl" else n


def _model(family: str, dataset: str) -> ZooModel:
    scenes = dataset == "scenes"
    name = f"{family}-scenes" if scenes else family
    size = 128 if scenes else 64
    patch = 8 if family == "qwen2vl" else 16
    return ZooModel(name, family, dataset, size, patch, SCENES_VISION if scenes else EASY_VISION)


CATALOG: dict[str, ZooModel] = {
    m.name: m for m in (_model(f, d) for d in DATASETS for f in ("llava", "paligemma", "qwen2vl"))
}


def zoo_model(name: str) -> ZooModel:
    """The catalog entry of `name` (a KeyError names the known ones)."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown zoo model '{name}' (known: {', '.join(CATALOG)})") from None
