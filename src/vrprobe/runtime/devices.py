"""Where a model runs and in what precision, chosen once, at load (`--device`, `--dtype`, `--device-map`).

- `resolve_device("auto")`: cuda when available, else mps, else cpu; `cpu`, `cuda`, `cuda:N`, `mps` are checked
  against what this machine has.
- `resolve_dtype("auto", device)`: bfloat16 on a GPU that supports it, float16 on other GPUs (and mps), float32 on the
  CPU; `float32`, `bfloat16`, `float16` as named (a `torch.dtype` is accepted too).
- `--device-map auto`: accelerate's placement of the model across the GPUs and CPU RAM, for a model larger than one
  device; inputs then go to the device of the input embeddings (`Adapter.device`).
Every tensor vrprobe makes afterwards follows the device of the tensor it meets.

`LoadOptions` holds the six loading options once (`vrprobe.eval(..., options=LoadOptions(dtype="bfloat16"))`);
`LoadOptions.from_kwargs` also reads the six keywords the API functions took before, with a `DeprecationWarning`.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from vrprobe import checks
from vrprobe.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_MAPS = ("auto",)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device a `--device` value names; one clear error when it is malformed or not on this machine."""
    if isinstance(device, torch.device):
        return device
    text = (device or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UsageError("--device mps: no Apple GPU (MPS) is available on this machine")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise UsageError(f"unknown --device '{device}' (known: {', '.join(DEVICES)})")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA device is available on this machine")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype a `--dtype` value names for a model on `device` (see the module docstring for `auto`)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise UsageError(f"unsupported dtype {dtype} (known: {', '.join(DTYPES)})")
        return dtype
    text = (dtype or "auto").strip().lower()
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if text not in DTYPES:
        raise UsageError(f"unknown --dtype '{dtype}' (known: auto, {', '.join(DTYPES)})")
    return DTYPES[text]


def check_device_map(device_map: str | None) -> str | None:
    """`None` or `auto`; `auto` needs the accelerate package."""
    if device_map is None:
        return None
    if device_map not in DEVICE_MAPS:
        raise UsageError(f"unknown --device-map '{device_map}' (known: {', '.join(DEVICE_MAPS)})")
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise UsageError("--device-map auto needs the accelerate package: pip install accelerate") from None
    return device_map


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: the name written into manifests and summaries."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class LoadOptions:
    """The load options every command shares (`--device`, `--dtype`, `--device-map`, `--min-pixels`,
    `--max-pixels`, `--trust-remote-code`), as the user gave them; written into the run's manifest. The resolved
    device and dtype go into the summary (`facts`)."""

    device: str | torch.device = "auto"
    dtype: str | torch.dtype = "auto"
    device_map: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    trust_remote_code: bool = False

    def resolve(self) -> tuple[torch.device, torch.dtype, str | None]:
        """(device, dtype, device_map) these options name on this machine; one clear error for a malformed or
        unavailable value (pixel bounds included), before anything is loaded."""
        where = resolve_device(self.device)
        precision = resolve_dtype(self.dtype, where)
        device_map = check_device_map(self.device_map)
        for name, value in (("--min-pixels", self.min_pixels), ("--max-pixels", self.max_pixels)):
            if value is not None:
                checks.positive_int(name, value)
        return where, precision, device_map

    def check(self) -> LoadOptions:
        """`resolve` for its errors only; returns these options."""
        self.resolve()
        return self

    @classmethod
    def from_kwargs(cls, options: LoadOptions | None, legacy: Mapping[str, Any], caller: str) -> LoadOptions:
        """The loading options an API function `caller` was given: `options` (None: the defaults), or the six keywords
        of the same names it took before (`legacy`; deprecated: a `DeprecationWarning` naming `options=`). Any other
        keyword in `legacy` is an `UnknownOption`, and both forms at once a `UsageError`. Not checked yet (`check`)."""
        names = [f.name for f in fields(cls)]
        unknown = [k for k in legacy if k not in names]
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean options=LoadOptions({close[0]}=...)?)" if close else ""
            raise UnknownOption(f"vrprobe.{caller}() got an unexpected keyword argument '{unknown[0]}'{hint}")
        if options is not None and not isinstance(options, cls):
            raise UsageError(f"vrprobe.{caller}(options=...) takes a vrprobe.LoadOptions, got {type(options).__name__}")
        if not legacy:
            return options if options is not None else cls()
        given = ", ".join(f"{k}={v!r}" for k, v in legacy.items())
        if options is not None:
            raise UsageError(f"vrprobe.{caller}() got options= and {given}: pass the loading options once, in options=")
        warnings.warn(
            f"vrprobe.{caller}({given}) is deprecated: pass options=LoadOptions({given})",
            DeprecationWarning,
            stacklevel=3,
        )
        return cls(**legacy)


class UnknownOption(UsageError, TypeError):
    """A keyword an API function does not take: a `TypeError` as Python raises it, and a `UsageError` (one line)."""


def facts(adapter: Any) -> dict[str, str]:
    """Where the numbers were produced: the input device and the model's dtype (and the device map, if any)."""
    out = {"device": str(adapter.device), "dtype": dtype_name(adapter.dtype)}
    device_map = getattr(adapter.model, "hf_device_map", None)
    if device_map:
        out["device_map"] = ", ".join(sorted({str(d) for d in device_map.values()}))
    return out
