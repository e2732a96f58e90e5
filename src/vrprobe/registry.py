"""Model specs → adapters.

Spec forms: `zoo:NAME` (a checkpoint shipped inside vrprobe), `hf:ORG/NAME` (the local Hugging Face cache only; nothing
is downloaded), or a path to a local model directory laid out as `save_pretrained` writes it.

This is where models are loaded, so it is also where vrprobe's attention function is registered with transformers
(`vrprobe.interventions.attention.register`); the adapters in `vrprobe.models` know nothing of interventions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vrprobe.devices import Placement
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.interventions.attention import NAME as ATTENTION_NAME
from vrprobe.interventions.attention import register
from vrprobe.models.base import Adapter
from vrprobe.models.llava import LlavaAdapter
from vrprobe.models.paligemma import PaliGemmaAdapter
from vrprobe.models.qwen2vl import Qwen2VLAdapter

ADAPTERS: tuple[type[Adapter], ...] = (LlavaAdapter, PaliGemmaAdapter, Qwen2VLAdapter)
ZOO_DIR = Path(__file__).resolve().parent / "zoo" / "checkpoints"
ZOO_NAMES = ("llava", "paligemma", "qwen2vl")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def resolve(spec: str) -> Path:
    """The local directory a model spec names; raises a one-line error when it is not there."""
    if spec.startswith("zoo:"):
        name = spec[4:]
        if name not in ZOO_NAMES:
            raise UsageError(f"unknown zoo model '{name}' (known: {', '.join('zoo:' + n for n in ZOO_NAMES)})")
        path = ZOO_DIR / name
        if not (path / "config.json").is_file():
            raise VrprobeError(f"zoo model '{name}' is not trained yet: run `vrprobe zoo train {name}`")
        return path
    if spec.startswith("hf:"):
        repo = spec[3:]
        if repo.count("/") != 1:
            raise UsageError(f"hf spec is hf:ORG/NAME, got '{spec}'")
        from huggingface_hub import snapshot_download

        try:
            cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, not at import
            return Path(snapshot_download(repo, local_files_only=True, cache_dir=cache_dir))
        except Exception:
            raise VrprobeError(
                f"'{repo}' is not in the local Hugging Face cache (vrprobe never downloads); "
                "save it there or pass its directory"
            ) from None
    if ":" in spec.split("/")[0] and not Path(spec).exists():
        raise UsageError(f"unknown model spec '{spec}' (use zoo:NAME, hf:ORG/NAME or a directory)")
    path = Path(spec)
    if not path.is_dir():
        raise VrprobeError(f"model directory not found: {spec}")
    return path


def family_of(path: Path) -> type[Adapter]:
    """The adapter class for a model directory, from `config.json`'s `model_type`."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise VrprobeError(f"{path} has no config.json: not a model directory")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VrprobeError(f"malformed JSON in {cfg_file}") from None
    except OSError as exc:
        raise VrprobeError(f"cannot read {cfg_file}: {exc.strerror}") from None
    if not isinstance(config, dict):
        raise VrprobeError(f"{cfg_file} is not a model config: expected a JSON object")
    model_type = config.get("model_type")
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    known = ", ".join(t for c in ADAPTERS for t in c.model_types)
    raise VrprobeError(f"{path}: model_type '{model_type}' is not supported (supported: {known})")


def load_adapter(
    spec: str,
    *,
    attn_implementation: str = "vrprobe",
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Adapter:
    """Resolve a spec, check the directory has processor and tokenizer files, and load it with its family adapter on
    `device` in `dtype` (`vrprobe.devices`: auto = cuda, else mps, else cpu; bfloat16 on a GPU that supports it,
    float16 on other GPUs, float32 on the CPU), or across devices with `device_map="auto"`; `min_pixels` /
    `max_pixels` bound Qwen2-VL's image resizing."""
    where, precision, device_map = Placement(device, dtype, device_map, min_pixels, max_pixels).resolve()
    path = resolve(spec)
    cls = family_of(path)
    if not any((path / f).is_file() for f in PROCESSOR_FILES):
        raise VrprobeError(f"{path} has no processor files ({' or '.join(PROCESSOR_FILES)}): save the processor too")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise VrprobeError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    if attn_implementation == ATTENTION_NAME:
        register()
    try:
        adapter = cls.load(
            path,
            attn_implementation=attn_implementation,
            dtype=precision,
            device=where,
            device_map=device_map,
            name=spec,
        )
    except VrprobeError:
        raise
    except Exception as exc:  # transformers, safetensors and tokenizers raise many types for damaged files
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        if "ignore_mismatched_sizes" in first:  # transformers points at a report it logged, which the CLI hides
            first = "the weights' shapes do not match config.json"
        what = first if isinstance(exc, OSError) and first else f"{type(exc).__name__}: {first}".rstrip(": ")
        raise VrprobeError(f"cannot load model from {path}: {what}") from exc
    adapter.set_pixel_limits(min_pixels, max_pixels)
    return adapter
