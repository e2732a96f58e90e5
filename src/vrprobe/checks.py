"""Checks on values a user hands over, one small function per rule, each raising a one-line error.

Every API entry point (`vrprobe.api`) runs these before it creates a run directory or loads a model, so the CLI and
the Python API refuse the same inputs with the same words. `name` is the option as the CLI spells it (`--noise`).

- `finite_nonneg(name, value)`: a real number, finite and >= 0 (noise scales). NaN and inf are refused.
- `in_range(name, value, lo, hi)`: a finite real number in [lo, hi].
- `positive_int(name, value)`: an integer >= 1 (sizes, counts); `nonneg_int`: an integer >= 0.
- `seed(name, value)`: an integer in [0, 2**32 - 1] (what numpy, torch and `derive_seed` all accept).
- `options(**values)`: the rules above applied to the API's keyword arguments by name (`RULES`).
- `band_spec(text)`: `A-B` with 0 <= A <= B, or `auto` (the upper end is checked against the model later).
- `spec_list(name, specs)`: a comma-separated string or a list of specs, at least one, none twice.
- `finite_logits(logits, sample_ids)`: a model's output holds no NaN or inf (`VrprobeError` naming the sample).

The value checks raise `UsageError` (CLI exit 2); `finite_logits` raises `VrprobeError` (exit 1): the input was valid,
the model is not.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from vrprobe.errors import UsageError, VrprobeError

SEED_MAX = 2**32 - 1


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {value!r}")
    return float(value)


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    return int(value)


def finite_nonneg(name: str, value: Any) -> float:
    """`value` as a float; refuses NaN, ±inf and negative numbers (`--noise must be a finite number >= 0, got nan`)."""
    x = _real(name, value)
    if not math.isfinite(x) or x < 0:
        raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    return x


def in_range(name: str, value: Any, lo: float, hi: float) -> float:
    """`value` as a float; refuses NaN and anything outside the closed interval [lo, hi]."""
    x = _real(name, value)
    if not lo <= x <= hi:  # False for NaN
        raise UsageError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value}")
    return x


def positive_int(name: str, value: Any) -> int:
    """`value` as an int; refuses non-integers (2.5, True) and anything below 1."""
    n = _int(name, value)
    if n < 1:
        raise UsageError(f"{name} must be an integer >= 1, got {value}")
    return n


def nonneg_int(name: str, value: Any) -> int:
    """`value` as an int; refuses non-integers and negative numbers."""
    n = _int(name, value)
    if n < 0:
        raise UsageError(f"{name} must be an integer >= 0, got {value}")
    return n


def seed(name: str, value: Any) -> int:
    """`value` as an int in [0, 2**32 - 1]: numpy refuses negative seeds and torch overflows above 2**64."""
    n = _int(name, value)
    if not 0 <= n <= SEED_MAX:
        raise UsageError(f"{name} must be an integer in [0, {SEED_MAX}], got {value}")
    return n


def _optional(rule: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else rule(name, value)


#: keyword argument of the API -> its rule; the CLI option is `--` + the name with `_` as `-`
RULES: dict[str, Callable[[str, Any], Any]] = {
    "limit": _optional(positive_int),
    "batch_size": positive_int,
    "seed": seed,
    "max_new_tokens": positive_int,
    "noise": finite_nonneg,
    "noise_samples": positive_int,
    "window": positive_int,
    "trace_limit": positive_int,
    "probe_limit": positive_int,
    "stage1_steps": _optional(nonneg_int),
    "stage2_steps": _optional(nonneg_int),
}


def options(**values: Any) -> None:
    """Apply `RULES` to each keyword argument: `options(limit=0)` raises `--limit must be an integer >= 1, got 0`."""
    for key, value in values.items():
        RULES[key]("--" + key.replace("_", "-"), value)


def band_spec(text: Any) -> str:
    """`auto`, or `A-B` with integers 0 <= A <= B; whether B exists is checked once the model is loaded."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text) if isinstance(text, str) else None
    if text != "auto" and m is None:
        raise UsageError(f"--band must be A-B (e.g. 2-4) or auto, got '{text}'")
    if m and int(m[1]) > int(m[2]):
        raise UsageError(f"--band {text}: the first layer must not be above the last (e.g. {m[2]}-{m[1]})")
    return text


def spec_list(name: str, specs: Sequence[str] | str) -> tuple[str, ...]:
    """Specs from a comma-separated string or a sequence, stripped; at least one and no spec twice."""
    parts = specs.split(",") if isinstance(specs, str) else list(specs)
    out = tuple(str(p).strip() for p in parts if str(p).strip())
    if not out:
        raise UsageError(f"{name} needs at least one spec")
    twice = sorted({s for s in out if out.count(s) > 1})
    if twice:
        raise UsageError(f"{name} lists {', '.join(twice)} more than once")
    return out


def finite_logits(logits: torch.Tensor, sample_ids: Sequence[str], *, model: str = "", what: str = "logits") -> None:
    """Raise `VrprobeError` naming the first sample whose `logits` hold NaN or ±inf; do nothing when all are finite.

    `logits` [B, ...] with B == len(sample_ids) maps row i to sample i; any other shape (e.g. several noise draws of
    one sample stacked) is blamed on all of `sample_ids`. Non-finite logits come from broken weights (a half-precision
    checkpoint that overflowed), a dtype too narrow for the activations, or noise so large that a state overflows.
    """
    bad = ~torch.isfinite(logits.detach())
    if not bool(bad.any()):
        return
    ids = list(sample_ids)
    if bad.dim() and bad.shape[0] == len(ids):
        ids = [ids[i] for i in bad.reshape(len(ids), -1).any(1).nonzero().flatten().tolist()]
    kind = "NaN" if bool(torch.isnan(logits.detach()).any()) else "inf"
    more = f" (and {len(ids) - 1} more)" if len(ids) > 1 else ""
    source = f"model {model}" if model else "the model"
    raise VrprobeError(
        f"{source} produced {kind} {what} for sample {ids[0] if ids else '?'}{more}: broken weights or a numeric "
        "overflow; check the checkpoint (a half-precision one may need float32)"
    )
