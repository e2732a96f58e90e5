"""Tiny random-weight checkpoints built from the real non-weight files of the three checkpoints users bring.

`../shared/replicas/` (beside the clone; see its README) holds the real configs, tokenizers, processor configs and chat
templates of `llava-hf/llava-1.5-7b-hf`, `Qwen/Qwen2-VL-2B` and `google/paligemma-3b-pt-224`. `build(family, out)`
reads them where they lie, shrinks only width and depth (text model: hidden 64, 2 layers, 4 heads; vision tower:
hidden 32, 2 layers, 2 heads), keeps everything a prompt, a token id or an image-token count depends on (vocabulary
size, special token ids, image size, patch size, merge size, normalisation), initialises the weights with a fixed
seed, casts them to the checkpoint's own dtype, and writes model and processor with `save_pretrained` into `out` (a
pytest tmp dir). Nothing from `../shared` is copied into the project.

- llava: the replica's own tokenizer, CLIP processor (336 px / patch 14: 576 image tokens) and chat template, loaded
  with `AutoProcessor` and saved again.
- qwen2vl: the fast tokenizer built by `AutoTokenizer` from `vocab.json` + `merges.txt` and the real
  `tokenizer_config.json`; the real `preprocessor_config.json` unchanged (min_pixels 3136, max_pixels 12845056, patch
  14, merge 2: a 64×64 easy-VQA image becomes 56×56, 4×4 patches, 4 image tokens; 224×224 gives 64); the base chat
  template. Saved with the stock processor class name, as the hub repo names it.
- paligemma: PaliGemma's own tokenizer and preprocessor files are not available offline (the replicas README says
  so), so they are built here from the pieces that are: the Gemma-1 SentencePiece model, converted by transformers
  (needs `sentencepiece` + `protobuf`), plus `<loc0000>`..`<loc1023>` (ids 256000–257023), `<seg000>`..`<seg127>`
  (257024–257151) and `<image>` (257152), added in that order so the ids match the real tokenizer; a SigLIP image
  processor at 224 px (bicubic, rescale 1/255, mean = std = 0.5) with `image_seq_length` 256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AddedToken,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GemmaTokenizer,
    PaliGemmaProcessor,
    SiglipImageProcessorPil,
)

from vrprobe.models.qwen2vl import Qwen2VLImageOnlyProcessor

REPLICAS = Path(__file__).resolve().parents[1].parent / "shared" / "replicas"
FOLDERS = {"llava": "llava-1.5-7b-hf", "qwen2vl": "qwen2-vl-2b", "paligemma": "paligemma-3b-pt-224"}
FAMILIES = tuple(FOLDERS)
SEED = 0
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
#: a wider weight init than the default 0.02, so that random models give clearly different scores to different
#: inputs and a padding or position bug cannot hide inside near-uniform probabilities
INIT_RANGE = 0.3
#: PaliGemma's tokens after Gemma's 256,000: 1,024 location tokens, 128 segmentation tokens, then `<image>`
LOC_SEG = [f"<loc{i:04d}>" for i in range(1024)] + [f"<seg{i:03d}>" for i in range(128)]


def available() -> bool:
    return all((REPLICAS / name / "config.json").is_file() for name in FOLDERS.values())


def replica(family: str) -> Path:
    return REPLICAS / FOLDERS[family]


def _set(config: Any, **values: Any) -> None:
    for key, value in values.items():
        setattr(config, key, value)


def shrunk_config(family: str) -> Any:
    """The real config with width and depth shrunk; vocabulary, token ids, image and patch sizes untouched."""
    cfg = AutoConfig.from_pretrained(str(replica(family)))
    text, vision = cfg.text_config, cfg.vision_config
    _set(text, **TEXT, initializer_range=INIT_RANGE)
    if family == "llava":
        _set(text, num_key_value_heads=4)
        _set(vision, **VISION, projection_dim=32, initializer_range=INIT_RANGE)
    elif family == "paligemma":
        _set(text, num_key_value_heads=1)  # Gemma's multi-query attention, as in the real model
        _set(vision, **VISION, projection_dim=TEXT["hidden_size"], initializer_range=INIT_RANGE)
        _set(cfg, projection_dim=TEXT["hidden_size"], hidden_size=TEXT["hidden_size"])
    elif family == "qwen2vl":
        _set(text, num_key_value_heads=2)
        # M-RoPE splits head_dim / 2 rotary frequencies over (time, height, width), in the real 16:24:24 proportion
        text.rope_parameters = {**text.rope_parameters, "mrope_section": [2, 3, 3]}
        _set(text, layer_types=["full_attention"] * TEXT["num_hidden_layers"], max_window_layers=2)
        # `hidden_size` of the vision config is the merger's output, which must match the text model
        _set(vision, depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=TEXT["hidden_size"])
        _set(vision, initializer_range=INIT_RANGE)
    _set(cfg, initializer_range=INIT_RANGE)
    return cfg


def build_processor(family: str) -> Any:
    """The family's processor from the replica's real files (PaliGemma: assembled, see the module docstring)."""
    src = replica(family)
    if family == "llava":
        return AutoProcessor.from_pretrained(str(src))
    if family == "qwen2vl":
        tokenizer = AutoTokenizer.from_pretrained(str(src))
        image_processor = AutoImageProcessor.from_pretrained(str(src))
        template = json.loads((src / "chat_template.json").read_text())["chat_template"]
        return Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    if family == "paligemma":
        tokenizer = GemmaTokenizer.from_pretrained(str(REPLICAS / "gemma-tokenizer"))
        tokenizer.add_tokens(LOC_SEG)
        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<image>", special=True)]})
        vision = AutoConfig.from_pretrained(str(src)).vision_config
        image_processor = SiglipImageProcessorPil(
            size={"height": vision.image_size, "width": vision.image_size},
            resample=3,  # bicubic
            rescale_factor=1 / 255,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        image_processor.image_seq_length = vision.num_image_tokens
        return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    raise ValueError(f"unknown family '{family}'")


def build(family: str, out: Path) -> Path:
    """Write a tiny random-weight checkpoint of `family` into `out` (model + processor, `save_pretrained`)."""
    cfg = shrunk_config(family)
    processor = build_processor(family)
    torch.manual_seed(SEED)
    model = AutoModelForImageTextToText.from_config(cfg)
    dtype = cfg.dtype if isinstance(cfg.dtype, torch.dtype) else getattr(torch, str(cfg.dtype or "float32"))
    model.to(dtype).save_pretrained(str(out))
    processor.save_pretrained(str(out))
    if family == "qwen2vl":  # the hub repo names the stock class; vrprobe picks the image-only one without torchvision
        cfg_file = out / "processor_config.json"
        saved = json.loads(cfg_file.read_text())
        saved["processor_class"] = "Qwen2VLProcessor"
        cfg_file.write_text(json.dumps(saved, indent=2))
    return out
