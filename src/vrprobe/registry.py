"""Model specs → adapters.

Spec forms: `zoo:NAME` (a checkpoint shipped inside vrprobe), `hf:ORG/NAME` (the local Hugging Face cache only; nothing
is downloaded), or a path to a local model directory laid out as `save_pretrained` writes it.

This is where models are loaded, so it is also where vrprobe's attention function is registered with transformers
(`vrprobe.interventions.attention.register`); the adapters in `vrprobe.models` know nothing of interventions.
A loaded adapter remembers what it was loaded from: `adapter.spec` and `adapter.load_options` (a `LoadOptions`), so
that `as_adapter` lets every API function take a spec or a loaded adapter and record the same manifest for both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vrprobe.errors import UsageError, VrprobeError
from vrprobe.interventions.attention import NAME as ATTENTION_NAME
from vrprobe.interventions.attention import register
from vrprobe.models.base import Adapter
from vrprobe.models.generic import GenericAdapter
from vrprobe.models.llava import LlavaAdapter
from vrprobe.models.paligemma import PaliGemmaAdapter
from vrprobe.models.qwen2vl import Qwen2VLAdapter
from vrprobe.runtime.devices import LoadOptions

ADAPTERS: tuple[type[Adapter], ...] = (LlavaAdapter, PaliGemmaAdapter, Qwen2VLAdapter)
ZOO_DIR = Path(__file__).resolve().parent / "zoo" / "checkpoints"
#: the zoo's models (their shapes and data: `vrprobe.zoo.catalog`): easy-VQA's three, then the scenes three
ZOO_NAMES = ("llava", "paligemma", "qwen2vl", "llava-scenes", "paligemma-scenes", "qwen2vl-scenes")
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


#: model types run and checked in vrprobe's tests, and how: a trained zoo model and a tiny random-weight model built
#: from the real checkpoint's non-weight files (`replica`), or a tiny random config with the family's real processor
#: class and chat template (`tiny`). Any other decoder-only image-text-to-text type runs through `GenericAdapter`.
TESTED_TYPES: dict[str, str] = {
    "llava": "zoo, replica",
    "paligemma": "zoo, replica",
    "qwen2_vl": "zoo, replica",
    "qwen2_5_vl": "tiny",
    "qwen3_vl": "tiny",
    "gemma3": "tiny",
    "llava_next": "tiny",
    "llava_onevision": "tiny",
    "idefics3": "tiny",
    "internvl": "tiny",
    "mistral3": "tiny",
}


def _read_config(path: Path) -> dict:
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
    return config


def _why_not(config: Any) -> str | None:
    """Why a VLM of this config has no image positions in its decoder's sequence (None when it has them): an
    encoder-decoder model (Florence-2, Pix2Struct) or one whose image enters through cross-attention layers (Mllama,
    IDEFICS 1)."""
    text = config.get_text_config()
    if getattr(config, "is_encoder_decoder", False) or getattr(text, "is_encoder_decoder", False):
        return "an encoder-decoder model (the image is encoded apart from the decoder's token sequence)"
    for cfg in (config, text):
        if getattr(cfg, "cross_attention_layers", None) or getattr(cfg, "cross_layer_interval", None):
            return "a cross-attention VLM (the image reaches the text through cross-attention layers, not as tokens)"
        if getattr(cfg, "add_cross_attention", False):
            return "a cross-attention model (the image reaches the text through cross-attention, not as tokens)"
    return None


def family_of(path: Path, *, trust_remote_code: bool = False) -> type[Adapter]:
    """The adapter class for a model directory, from `config.json`: the family's own adapter for the zoo's three
    families, `GenericAdapter` for any other image-text-to-text type with image tokens in the decoder's sequence; a
    one-line refusal (naming the reason and the tested types) for everything else. Reads configs, never weights."""
    config = _read_config(path)
    model_type = config.get("model_type")
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    tested = ", ".join(TESTED_TYPES)
    remote = model_type not in CONFIG_MAPPING_NAMES
    if remote and not config.get("auto_map"):
        raise VrprobeError(
            f"{path}: model_type '{model_type}' is not supported: transformers does not know it and the "
            f"checkpoint ships no code for it (tested types: {tested})"
        )
    if remote and not trust_remote_code:
        raise VrprobeError(
            f"{path}: model_type '{model_type}' runs code shipped with the checkpoint (auto_map in config.json); "
            "pass --trust-remote-code if you trust it"
        )
    try:
        cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise VrprobeError(f"cannot read the config in {path}: {first}") from exc
    why = _why_not(cfg)
    if why:
        raise VrprobeError(
            f"{path}: model_type '{model_type}' is not supported: {why}, so vrprobe has no image positions to trace "
            f"(tested types: {tested}; any decoder-only image-text-to-text model runs through the generic adapter)"
        )
    if not remote and model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise VrprobeError(
            f"{path}: model_type '{model_type}' is not supported: not an image-text-to-text model "
            f"(tested types: {tested})"
        )
    return GenericAdapter


def check_model(spec: str, *, trust_remote_code: bool = False) -> None:
    """Refuse a model spec that does not resolve to a model directory of a supported family (reads the config only:
    no weights are loaded)."""
    family_of(resolve(spec), trust_remote_code=trust_remote_code)


def load_adapter(
    spec: str,
    options: LoadOptions | None = None,
    *,
    attn_implementation: str = "vrprobe",
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    trust_remote_code: bool = False,
) -> Adapter:
    """Resolve a spec, check the directory has processor and tokenizer files, and load it with its family adapter on
    `device` in `dtype` (`vrprobe.runtime.devices`: auto = cuda, else mps, else cpu; bfloat16 on a GPU that supports it,
    float16 on other GPUs, float32 on the CPU), or across devices with `device_map="auto"`; `min_pixels` /
    `max_pixels` bound a native-resolution processor's image resizing (Qwen2-VL and its successors);
    `trust_remote_code` lets a checkpoint's own code run (off by default: `--trust-remote-code`). The six loading
    options come either as `options` (a `LoadOptions`) or as the keywords, not both. The adapter gets `spec` and
    `load_options` attributes: what it was loaded from."""
    given = LoadOptions(device or "auto", dtype or "auto", device_map, min_pixels, max_pixels, trust_remote_code)
    if options is not None and given != LoadOptions():
        raise UsageError("load_adapter: pass the loading options once, as options= or as keywords")
    options = options if options is not None else given
    where, precision, device_map = options.resolve()
    path = resolve(spec)
    cls = family_of(path, trust_remote_code=options.trust_remote_code)
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
            trust_remote_code=options.trust_remote_code,
        )
    except VrprobeError:
        raise
    except Exception as exc:  # transformers, safetensors and tokenizers raise many types for damaged files
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        if "ignore_mismatched_sizes" in first:  # transformers points at a report it logged, which the CLI hides
            first = "the weights' shapes do not match config.json"
        what = first if isinstance(exc, OSError) and first else f"{type(exc).__name__}: {first}".rstrip(": ")
        raise VrprobeError(f"cannot load model from {path}: {what}") from exc
    adapter.set_pixel_limits(options.min_pixels, options.max_pixels)
    adapter.spec, adapter.load_options = spec, options  # type: ignore[attr-defined]
    return adapter


def model_ref(model: str | os.PathLike | Adapter, options: LoadOptions | None = None) -> tuple[str, LoadOptions]:
    """The spec and the checked loading options a `model` argument stands for, loading nothing: a spec with `options`
    (None: the defaults), or a loaded adapter with the ones it was loaded with. A loaded adapter with other non-default
    `options`, or one not loaded by `load_adapter` with vrprobe's attention function, is a `UsageError`."""
    if isinstance(model, (str, os.PathLike)):
        return str(model), (options if options is not None else LoadOptions()).check()
    if not isinstance(model, Adapter):
        raise UsageError(f"model must be a spec (zoo:NAME, hf:ORG/NAME, a directory) or a loaded model, got {model!r}")
    spec, loaded = getattr(model, "spec", None), getattr(model, "load_options", None)
    if spec is None or loaded is None:
        raise UsageError(f"{model.name} was not loaded by vrprobe.load: its spec and loading options are unknown")
    if not model.records_attention:
        raise UsageError(f"{spec} was loaded with another attention function: load it with vrprobe.load(spec)")
    if options is not None and options not in (loaded, LoadOptions()):
        raise UsageError(
            f"{spec} is already loaded (with {_changed(loaded)}): options={_changed(options)} cannot apply to it; "
            "pass the spec instead, or load it with those options"
        )
    return spec, loaded


def as_adapter(model: str | os.PathLike | Adapter, options: LoadOptions | None = None) -> Adapter:
    """`model` itself when it is a loaded adapter (checked as `model_ref` checks it), else the adapter loaded from the
    spec with `options`: what every API function does with its `model` argument."""
    spec, options = model_ref(model, options)
    return model if isinstance(model, Adapter) else load_adapter(spec, options)


def _changed(options: LoadOptions) -> str:
    """`LoadOptions(dtype='bfloat16')`: the fields that differ from the defaults."""
    default = LoadOptions()
    fields = {k: v for k, v in vars(options).items() if getattr(default, k) != v}
    return f"LoadOptions({', '.join(f'{k}={v!r}' for k, v in fields.items())})"
