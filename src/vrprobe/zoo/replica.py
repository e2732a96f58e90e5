"""Random-weight models with a real checkpoint's structure, built offline from its non-weight files.

Two uses: the test suite's tiny replicas of the checkpoints users bring (`tests/replicas.py`), and
`benchmarks/real_shape.py`, which needs each family's real token structure (depth, image-token count, vocabulary) at a
width a CPU can run. Both read the real configs, tokenizers and processor files from a `replicas` folder laid out as
`../shared/replicas/` is (see its README); nothing from it is copied.

- llava: the folder's own tokenizer, CLIP processor (336 px / patch 14: 576 image tokens) and chat template.
- qwen2vl: the fast tokenizer from `vocab.json` + `merges.txt` and the real `tokenizer_config.json`; the real
  `preprocessor_config.json` (patch 14, merge 2: a 640×480 image becomes 644×476, 46×34 patches, 391 image tokens);
  the base chat template.
- paligemma: PaliGemma's own tokenizer and preprocessor files are not available offline, so they are assembled from
  the pieces that are: the Gemma-1 SentencePiece model (needs `sentencepiece` + `protobuf`), plus `<loc0000>`..
  `<loc1023>` (ids 256000–257023), `<seg000>`..`<seg127>` (257024–257151) and `<image>` (257152), added in that
  order so the ids match the real tokenizer; a SigLIP image processor at 224 px (bicubic, rescale 1/255, mean = std =
  0.5) with `image_seq_length` 256.

Without a replicas folder, `processor(family, None)` falls back to the zoo's word-level tokenizer with each family's
real image size and patch size, so the image-token counts are still the real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FOLDERS = {"llava": "llava-1.5-7b-hf", "qwen2vl": "qwen2-vl-2b", "paligemma": "paligemma-3b-pt-224"}
#: PaliGemma's tokens after Gemma's 256,000: 1,024 location tokens, 128 segmentation tokens, then `<image>`
LOC_SEG = [f"<loc{i:04d}>" for i in range(1024)] + [f"<seg{i:03d}>" for i in range(128)]


@dataclass(frozen=True)
class RealShape:
    """A checkpoint's language-model structure: what tracing cost depends on."""

    checkpoint: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


#: LLaVA-1.5-7B (Vicuna-7B), PaliGemma-3B (Gemma-2B), Qwen2-VL-7B (Qwen2-7B), from their config files
REAL_SHAPES = {
    "llava": RealShape("llava-hf/llava-1.5-7b-hf", 32, 4096, 11008, 32, 32, 128, 32064),
    "paligemma": RealShape("google/paligemma-3b-pt-224", 18, 2048, 16384, 8, 1, 256, 257216),
    "qwen2vl": RealShape("Qwen/Qwen2-VL-7B", 28, 3584, 18944, 28, 4, 128, 152064),
}


def available(replicas: Path | None) -> bool:
    """True when `replicas` holds the three checkpoints' config files."""
    return replicas is not None and all((replicas / f / "config.json").is_file() for f in FOLDERS.values())


def processor(family: str, replicas: Path | None) -> Any:
    """The family's processor from the replicas folder's real files, or (None) the zoo's tokenizer with the family's
    real image processing (LLaVA 336 px / patch 14, PaliGemma 224 px / patch 14, Qwen2-VL patch 14 / merge 2)."""
    if replicas is None:
        return _zoo_processor(family)
    from transformers import (
        AddedToken,
        AutoConfig,
        AutoImageProcessor,
        AutoProcessor,
        AutoTokenizer,
        GemmaTokenizer,
        SiglipImageProcessorPil,
    )

    from vrprobe.models.qwen2vl import Qwen2VLImageOnlyProcessor
    from vrprobe.zoo.build import paligemma_processor

    src = replicas / FOLDERS[family]
    if family == "llava":
        return AutoProcessor.from_pretrained(str(src))
    if family == "qwen2vl":
        tokenizer = AutoTokenizer.from_pretrained(str(src))
        image_processor = AutoImageProcessor.from_pretrained(str(src))
        template = json.loads((src / "chat_template.json").read_text())["chat_template"]
        return Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    if family == "paligemma":
        tokenizer = GemmaTokenizer.from_pretrained(str(replicas / "gemma-tokenizer"))
        tokenizer.add_tokens(LOC_SEG)
        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<image>", special=True)]})
        vision = AutoConfig.from_pretrained(str(src)).vision_config
        siglip = SiglipImageProcessorPil(
            size={"height": vision.image_size, "width": vision.image_size},
            resample=3,  # bicubic
            rescale_factor=1 / 255,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        return paligemma_processor(siglip, tokenizer, vision.num_image_tokens)
    raise ValueError(f"unknown family '{family}'")


def _zoo_processor(family: str) -> Any:
    """The family's processor at its real checkpoint's geometry (LLaVA-1.5 336 px patch 14, PaliGemma-224 256 tokens,
    Qwen2-VL patch 14 with its pixel budget) around the zoo tokenizer."""
    from vrprobe.zoo.build import build_tokenizer, family_processor

    pixels = (3136, 12845056) if family == "qwen2vl" else None  # Qwen2-VL-2B's min_pixels, max_pixels
    return family_processor(
        family, build_tokenizer(family), {"llava": 336, "paligemma": 224}.get(family, 56), 14, pixels
    )


def config(family: str, replicas: Path | None) -> Any:
    """The family's full-size model config: the replicas folder's real one, else the zoo's with the real vision
    geometry (image size, patch size) so that image-token counts match; `resize` then sets the widths and depths."""
    from transformers import AutoConfig

    if replicas is not None:
        return AutoConfig.from_pretrained(str(replicas / FOLDERS[family]))
    from vrprobe.zoo.build import build_model

    proc = _zoo_processor(family)
    cfg = build_model(family, proc).config  # tiny, built to read its config
    vision = cfg.vision_config
    if family == "llava":
        vision.image_size, vision.patch_size = 336, 14
    elif family == "paligemma":
        vision.image_size, vision.patch_size = 224, 14
        cfg.text_config.num_image_tokens = vision.num_image_tokens = 256
    else:
        vision.patch_size = 14
    return cfg


def resize(cfg: Any, family: str, text: dict[str, Any], vision: dict[str, Any], init_range: float) -> Any:
    """Set the text model's and vision tower's sizes (`text`, `vision`: config fields) and the weight init range,
    keeping what prompts and token ids depend on."""
    tc, vc = cfg.text_config, cfg.vision_config
    for key, value in text.items():
        setattr(tc, key, value)
    tc.initializer_range = cfg.initializer_range = init_range
    hidden = tc.hidden_size
    if family == "llava":
        for key, value in vision.items():
            setattr(vc, key, value)
        vc.projection_dim = vision["hidden_size"]
    elif family == "paligemma":
        for key, value in vision.items():
            setattr(vc, key, value)
        vc.projection_dim = cfg.projection_dim = cfg.hidden_size = hidden
    elif family == "qwen2vl":
        heads = tc.num_attention_heads
        half = tc.head_dim // 2 if getattr(tc, "head_dim", None) else hidden // heads // 2
        # M-RoPE splits head_dim / 2 rotary frequencies over (time, height, width) in the real 16:24:24 proportion
        t = max(1, round(half * 16 / 64))
        h = (half - t) // 2
        tc.rope_parameters = {**tc.rope_parameters, "mrope_section": [t, h, half - t - h]}
        tc.layer_types = ["full_attention"] * tc.num_hidden_layers
        tc.max_window_layers = tc.num_hidden_layers
        vc.depth = vision["num_hidden_layers"]
        vc.embed_dim = vision["hidden_size"]
        vc.num_heads = vision["num_attention_heads"]
        vc.mlp_ratio = vision["intermediate_size"] // vision["hidden_size"]
        vc.hidden_size = hidden  # the merger's output, which must match the text model
    vc.initializer_range = init_range
    return cfg


def save(cfg: Any, proc: Any, out: Path, seed: int = 0, dtype: torch.dtype | None = None) -> Path:
    """Initialise a model from `cfg` with `seed`, cast it to `dtype` (default: the config's own), and write model
    and processor into `out` with `save_pretrained`, laid out as the hub repository is."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(cfg)
    if dtype is None:
        dtype = cfg.dtype if isinstance(cfg.dtype, torch.dtype) else getattr(torch, str(cfg.dtype or "float32"))
    model.to(dtype).save_pretrained(str(out))
    proc.save_pretrained(str(out))
    cfg_file = out / "processor_config.json"
    saved = json.loads(cfg_file.read_text())
    if saved.get("processor_class") == "Qwen2VLImageOnlyProcessor":  # the hub repo names the stock class
        saved["processor_class"] = "Qwen2VLProcessor"
        cfg_file.write_text(json.dumps(saved, indent=2))
    return out


def real_shape(
    family: str,
    out: Path,
    width: int,
    replicas: Path | None,
    *,
    head_dim: int = 32,
    layers: int | None = None,
    seed: int = 0,
) -> Path:
    """A random-init float32 checkpoint with the family's real depth (or `layers`), vocabulary and image-token
    structure (`REAL_SHAPES`), at hidden size `width`: heads of `head_dim`, key/value heads and MLP width in the real
    model's proportions; a small vision tower (2 layers, width 32) with the real image and patch sizes."""
    shape = REAL_SHAPES[family]
    heads = max(1, width // head_dim)
    kv = max(1, heads * shape.kv_heads // shape.heads)
    while heads % kv:
        kv -= 1
    text = dict(
        hidden_size=width,
        intermediate_size=round(width * shape.intermediate / shape.hidden),
        num_hidden_layers=layers or shape.layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        vocab_size=shape.vocab,
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = resize(config(family, replicas), family, text, vision, init_range=0.02)
    cfg.vocab_size = shape.vocab
    return save(cfg, processor(family, replicas), out, seed=seed, dtype=torch.float32)
