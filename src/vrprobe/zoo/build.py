"""Tiny configs of LLaVA, PaliGemma and Qwen2-VL, an offline word-level tokenizer, and the real processors.

Which models exist, at which image size and shape, is `catalog.py`'s; this module builds them. Every function takes a
zoo model's name (`llava`, `qwen2vl-scenes`, ...; an easy-VQA model's name is its family's). Vocabulary: every word of
the training data's questions and answers (easy-VQA's; scenes' and easy-VQA's for the scenes models) and of the three
prompt templates, lower-cased, plus each family's special tokens (~60–90 tokens; PaliGemma's processor adds its 1,152
`<loc>`/`<seg>` tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GemmaConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from vrprobe.models.base import Adapter
from vrprobe.models.llava import LlavaAdapter
from vrprobe.models.paligemma import PaliGemmaAdapter
from vrprobe.models.qwen2vl import Qwen2VLAdapter, Qwen2VLImageOnlyProcessor
from vrprobe.zoo.catalog import TEXT, ZooModel, zoo_model

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
FAMILY_SPECIAL = {
    "llava": ["<image>"],
    "paligemma": ["<image>"],
    "qwen2vl": ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
}
ADAPTER_CLASSES: dict[str, type[Adapter]] = {
    "llava": LlavaAdapter,
    "paligemma": PaliGemmaAdapter,
    "qwen2vl": Qwen2VLAdapter,
}


def _template(cls: type[Adapter]) -> str:
    """The family's prompt around an empty question. These families' `prompt` reads class attributes only, so an
    instance made without `__init__` (no model, no processor) serves."""
    return object.__new__(cls).prompt("")


def corpus(dataset: str = "easy-vqa") -> list[str]:
    """Texts whose words make the vocabulary: easy-VQA's questions and answers (and, for `scenes`, every scenes
    split's questions and answer choices), and the prompt templates."""
    import easy_vqa

    texts = list(easy_vqa.get_train_questions()[0]) + list(easy_vqa.get_test_questions()[0])
    texts += list(easy_vqa.get_answers())
    if dataset == "scenes":
        from vrprobe.data.scenes import CHOICES, SPLITS, load_scenes

        for split in SPLITS:
            texts += sorted({s.question for s in load_scenes(split)})
        texts += [c for choices in CHOICES.values() for c in choices]
    texts += [_template(LlavaAdapter), _template(PaliGemmaAdapter), _template(Qwen2VLAdapter)]
    return texts


def build_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A lower-casing WordLevel tokenizer over the model's `corpus`, with its family's special tokens; adds no
    BOS/EOS."""
    zoo = zoo_model(name)
    family = zoo.family
    specials = SPECIAL + FAMILY_SPECIAL[family]
    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for text in corpus(zoo.dataset):
        for special in specials:
            text = text.replace(special, " ")
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {t: i for i, t in enumerate(specials + sorted(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.add_special_tokens({"additional_special_tokens": FAMILY_SPECIAL[family]})
    tok.padding_side = "left"
    return tok


def paligemma_processor(
    image_processor: SiglipImageProcessorPil, tokenizer: Any, image_seq_length: int
) -> PaliGemmaProcessor:
    """PaliGemma's processor, which reads `image_seq_length` (image tokens per image) off its image processor."""
    # Real checkpoints carry it in preprocessor_config.json; no image-processor class declares it (transformers
    # itself checks with `hasattr`), so the stubs know no such attribute.
    image_processor.image_seq_length = image_seq_length  # type: ignore[attr-defined]
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_processor(name: str) -> Any:
    """The zoo model's processor: its image size and patch (Qwen2-VL: patches merged 2×2)."""
    zoo = zoo_model(name)
    return family_processor(zoo.family, build_tokenizer(name), zoo.image_size, zoo.patch)


def family_processor(family: str, tok: Any, side: int, patch: int, pixels: tuple[int, int] | None = None) -> Any:
    """The family's processor class around `tok`, for images of `side` px cut into `patch`-px patches: LLaVA resizes
    the shortest side and centre-crops, PaliGemma resizes to side × side ((side / patch)² image tokens), Qwen2-VL
    resizes to a pixel budget (`pixels` = (min, max), default side² both) and merges 2×2 patches."""
    if family == "llava":
        clip = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        return LlavaProcessor(
            image_processor=clip,
            tokenizer=tok,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
    if family == "paligemma":
        siglip = SiglipImageProcessorPil(size={"height": side, "width": side})
        return paligemma_processor(siglip, tok, (side // patch) ** 2)
    if family == "qwen2vl":
        low, high = pixels or (side * side, side * side)
        qwen = Qwen2VLImageProcessorPil(
            patch_size=patch, merge_size=2, temporal_patch_size=2, size={"shortest_edge": low, "longest_edge": high}
        )
        return Qwen2VLImageOnlyProcessor(image_processor=qwen, tokenizer=tok)
    raise ValueError(f"unknown zoo family '{family}'")


def build_model(name: str, processor: Any, seed: int = 0) -> Any:
    """A freshly initialised tiny model of the zoo model's family and shape, sized to the processor's vocabulary
    (seeded)."""
    zoo = zoo_model(name)
    family, vision_shape = zoo.family, _vision(zoo)
    tok = processor.tokenizer
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    if family == "llava":
        clip = CLIPVisionConfig(**vision_shape)
        llama = LlamaConfig(vocab_size=len(tok), num_key_value_heads=4, max_position_embeddings=512, **TEXT, **ids)
        llava = LlavaConfig(
            vision_config=clip,
            text_config=llama,
            image_token_index=tok.convert_tokens_to_ids("<image>"),  # the field `image_token_id` names
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
        return LlavaForConditionalGeneration(llava)
    if family == "paligemma":
        siglip = SiglipVisionConfig(**vision_shape)
        gemma = GemmaConfig(
            vocab_size=len(tok), num_key_value_heads=1, head_dim=32, max_position_embeddings=512, **TEXT, **ids
        )
        paligemma = PaliGemmaConfig(
            vision_config=siglip,
            text_config=gemma,
            image_token_index=tok.convert_tokens_to_ids("<image>"),  # the field `image_token_id` names
            projection_dim=TEXT["hidden_size"],
        )
        return PaliGemmaForConditionalGeneration(paligemma)
    if family == "qwen2vl":
        vision = dict(
            depth=zoo.vision["num_hidden_layers"],
            embed_dim=zoo.vision["hidden_size"],
            hidden_size=TEXT["hidden_size"],
            num_heads=zoo.vision["num_attention_heads"],
            mlp_ratio=zoo.vision["intermediate_size"] // zoo.vision["hidden_size"],
            patch_size=zoo.patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        )
        text = dict(
            vocab_size=len(tok),
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            **TEXT,
            **ids,
        )
        qwen2vl = Qwen2VLConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=processor.image_token_id,
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
            **ids,
        )
        return Qwen2VLForConditionalGeneration(qwen2vl)
    raise ValueError(f"unknown zoo family '{family}'")


def _vision(zoo: ZooModel) -> dict[str, Any]:
    """CLIP/SigLIP vision-config keywords: the tower's shape at the model's image size and patch."""
    return {**zoo.vision, "image_size": zoo.image_size, "patch_size": zoo.patch}


def build_adapter(name: str, seed: int = 0) -> Adapter:
    """Processor first (PaliGemma's adds tokens), then the model, wrapped in the family's adapter."""
    processor = build_processor(name)
    model = build_model(name, processor, seed)
    return ADAPTER_CLASSES[zoo_model(name).family](model, processor, name=f"zoo:{name}")


def save_checkpoint(adapter: Adapter, out: Path) -> None:
    """`save_pretrained` model and processor, laid out as the family's real checkpoints are.

    The image-only Qwen2-VL processor is saved under the stock class name, so the folder reads as a Qwen2-VL
    checkpoint (vrprobe picks the image-only class again when torchvision is missing).
    """
    out.mkdir(parents=True, exist_ok=True)
    adapter.model.save_pretrained(str(out))
    adapter.processor.save_pretrained(str(out))
    cfg_file = out / "processor_config.json"
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("processor_class") == Qwen2VLImageOnlyProcessor.__name__:
        cfg["processor_class"] = "Qwen2VLProcessor"
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
