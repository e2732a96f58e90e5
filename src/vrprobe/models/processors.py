"""Loading a checkpoint's processor, including on machines without torchvision.

Processors with a video slot (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, InternVL, ...) cannot be built by
`AutoProcessor` when torchvision is missing: their video processors need it, and `ProcessorMixin` checks every slot
named in the processor's `__init__`, even one given None. vrprobe feeds images only, so on such machines the processor
is rebuilt without that slot: a subclass of the checkpoint's own processor class whose `get_attributes()` leaves
`video_processor` out. Everything else — image processor and tokenizer (through their Auto classes, from the same
files), chat template, the processor's own settings and its image-token expansion — is the stock code.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.utils import is_torchvision_available

from vrprobe.errors import VrprobeError

if TYPE_CHECKING:
    from transformers import ProcessorMixin

VIDEO_SLOT = "video_processor"


def load_processor(path: Path, *, trust_remote_code: bool = False) -> Any:
    """The processor saved in checkpoint folder `path`.

    `AutoProcessor` when it can build it (torchvision installed, or no video slot); otherwise — or when
    `AutoProcessor` fails on a folder with no video processor config — the checkpoint's processor class without its
    video slot, for images only. Raises a one-line `VrprobeError` when neither works.
    """
    from transformers import AutoProcessor

    path = Path(path)
    cls = processor_class(path)
    has_video_slot = cls is not None and VIDEO_SLOT in cls.get_attributes()
    if is_torchvision_available() or not has_video_slot:
        try:
            return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except Exception:
            if not has_video_slot and cls is not None and not is_torchvision_available():
                try:  # the class itself, imported through `without_torchvision` (Pixtral's processor)
                    return cls.from_pretrained(str(path), trust_remote_code=trust_remote_code)
                except Exception:
                    pass
            if not has_video_slot:
                raise  # a damaged file: the caller names the folder and the first line of the error
            # e.g. a folder with no video processor config: images only still work
    assert cls is not None  # has_video_slot
    try:
        # mypy does not see a class object (`type[...]`) as Hashable, as `functools.cache` asks (python/mypy#11470)
        return image_only(cls).from_pretrained(  # type: ignore[arg-type]
            str(path), trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        need = (
            "" if is_torchvision_available() else "; its video processor needs torchvision (`pip install torchvision`)"
        )
        raise VrprobeError(f"cannot load the processor of {path} (a {cls.__name__}){need}: {_first_line(exc)}") from exc


def processor_class(path: Path) -> type[ProcessorMixin] | None:
    """The processor class the checkpoint names (processor_config.json, else tokenizer_config.json), else the one
    transformers maps its `model_type` to; None when neither names a class transformers has (e.g. remote code)."""
    from transformers import ProcessorMixin
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES, processor_class_from_name

    path = Path(path)
    name = _read(path / "processor_config.json").get("processor_class")
    name = name or _read(path / "tokenizer_config.json").get("processor_class")
    if not name:
        name = PROCESSOR_MAPPING_NAMES.get(_read(path / "config.json").get("model_type", ""))
    if not name:
        return None
    try:
        cls = processor_class_from_name(name)
        # `hasattr` first: a placeholder class (its backend missing) raises ImportError on any attribute
        usable = isinstance(cls, type) and hasattr(cls, "get_attributes") and issubclass(cls, ProcessorMixin)
    except ImportError:  # the lazy name is a placeholder that refuses without torchvision
        cls = without_torchvision(name)
        usable = cls is not None
    return cls if usable else None


def without_torchvision(name: str) -> type[ProcessorMixin] | None:
    """Processor class `name` imported on a machine without torchvision, where its module imports a helper from the
    family's torchvision image-processing module (`processing_pixtral` takes `get_resize_output_image_size` from
    `image_processing_pixtral`): the family's PIL image-processing module, which defines the same helpers, stands in
    for that module during the import and is removed afterwards. None when that does not give the class."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    family = next((t for t, n in PROCESSOR_MAPPING_NAMES.items() if n == name), None)
    if family is None:
        return None
    package = f"transformers.models.{family}"
    fast, pil = f"{package}.image_processing_{family}", f"{package}.image_processing_pil_{family}"
    saved = sys.modules.get(fast)
    try:
        sys.modules[fast] = importlib.import_module(pil)
        sys.modules.pop(f"{package}.processing_{family}", None)
        cls = getattr(importlib.import_module(f"{package}.processing_{family}"), name, None)
    except ImportError:
        return None
    finally:
        if saved is None:
            sys.modules.pop(fast, None)
        else:
            sys.modules[fast] = saved
    return cls


@functools.cache
def image_only(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`cls` without its video slot: same name, same code, `get_attributes()` without `video_processor`.

    The stock `__init__` still receives `video_processor=None` and passes it on positionally; `ProcessorMixin`
    pairs positional arguments with `get_attributes()`, so the None is dropped instead of checked. The saved
    `processor_class` stays the stock name, so a folder saved from it reads as an ordinary checkpoint.
    """

    def get_attributes(klass: type[ProcessorMixin]) -> list[str]:
        return [a for a in cls.get_attributes() if a != VIDEO_SLOT]

    def from_args_and_dict(
        klass: type[ProcessorMixin], args: Any, processor_dict: dict[str, Any], **kwargs: Any
    ) -> Any:
        processor_dict = {k: v for k, v in processor_dict.items() if k != VIDEO_SLOT}
        kwargs.pop(VIDEO_SLOT, None)
        # `cls`'s own method (`sub`'s base); mypy resolves `super(sub, ...)` from the bases of `sub`'s declared type,
        # ProcessorMixin, as a class made by `type()` has no static bases
        return super(sub, klass).from_args_and_dict(args, processor_dict, **kwargs)  # type: ignore[misc]

    namespace = {
        "__module__": cls.__module__,
        "__doc__": f"{cls.__name__} for images only (no video processor, so no torchvision needed).",
        "get_attributes": classmethod(get_attributes),
        "from_args_and_dict": classmethod(from_args_and_dict),
    }
    sub: type[ProcessorMixin] = type(cls.__name__, (cls,), namespace)
    sub.__qualname__ = cls.__qualname__
    return sub


def _read(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
