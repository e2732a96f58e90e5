"""Tolerances that follow from the numbers: every float comparison of the suite that is not exact by construction
states its tolerance here, from the dtype and the magnitude of what is compared.

Why: a float result depends on the order of its sums, and another CPU (another BLAS kernel, AVX-512 or not, another
thread count) sums in another order. Two computations of one value in precision `dtype` agree to about
`ulps · eps(dtype) · scale`, where `eps` is the dtype's machine epsilon (float32 1.19e-7, bfloat16 7.8e-3),
`scale` the magnitude of the operands (for a probability, or a difference of probabilities, 1) and `ulps` a budget
for how much rounding the two computations can accumulate apart:

- `SUM` (8): one reduction in another order, or a copy through another dtype and back.
- `FORWARD` (2**10): a whole forward of a small model computed on other shapes (another batch size, a prefix of the
  sequence, SDPA against eager attention, a replayed layer): each layer's dot products (length ≤ ~600) round apart and
  the difference grows through the layers and the softmax. Measured over every FORWARD comparison of the suite
  (`VRPROBE_ULPS_LOG`, AMD EPYC, 1 thread): at most 48 eps·scale (batched vs one at a time, probabilities), most
  under 10; 2**10 leaves 20x for other kernels.

`VRPROBE_ULPS_LOG=FILE` appends each comparison's largest difference, in eps · scale, to FILE.

What is exact by construction (the same kernels on the same shapes: a seeded rerun, an effect the exact-work
analysis proves 0) is compared with `==` / `torch.equal` instead, and says why.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

SUM = 8
FORWARD = 2**10

_NUMPY = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}


def eps(dtype: torch.dtype | np.dtype | type) -> float:
    """Machine epsilon of a torch or numpy floating dtype (the gap between 1 and the next float)."""
    if not isinstance(dtype, torch.dtype):
        dtype = _NUMPY[np.dtype(dtype)]
    return torch.finfo(dtype).eps


def tolerance(dtype: torch.dtype | np.dtype | type, scale: float = 1.0, ulps: int = SUM) -> float:
    """The absolute tolerance `ulps · eps(dtype) · scale` (see the module docstring for the budgets)."""
    return ulps * eps(dtype) * float(scale)


def _tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def assert_close(
    actual: Any,
    expected: Any,
    *,
    dtype: torch.dtype | np.dtype | type | None = None,
    scale: float | None = None,
    ulps: int = SUM,
    what: str = "",
) -> None:
    """Assert |actual − expected| ≤ `tolerance(dtype, scale, ulps)` elementwise.

    `dtype`: the precision the values were computed in (default: the dtype of `actual` when it is a floating tensor;
    plain Python floats and lists need it stated). `scale`: the magnitude of the compared values' operands (default:
    the largest |value| of either side, at least the smallest normal number). The message gives the largest
    difference in units of eps · scale, so a failure shows how far off it was."""
    a, e = _tensor(actual), _tensor(expected)
    if dtype is None:
        if not (isinstance(actual, torch.Tensor) and actual.is_floating_point()):
            raise TypeError("assert_close: say in which dtype plain numbers were computed (dtype=...)")
        dtype = actual.dtype
    where = f"{what}: " if what else ""
    assert a.shape == e.shape or e.numel() == 1, f"{where}shapes {tuple(a.shape)} != {tuple(e.shape)}"
    a, e = a.double(), e.double()
    if scale is None:
        finite = torch.cat([a.flatten(), e.flatten()])
        finite = finite[finite.isfinite()]
        scale = max(float(finite.abs().max()) if finite.numel() else 0.0, torch.finfo(torch.float64).tiny)
    atol = tolerance(dtype, scale, ulps)
    diff = float((a - e).abs().max()) if a.numel() else 0.0
    units = diff / (eps(dtype) * scale)
    if os.environ.get("VRPROBE_ULPS_LOG"):  # calibrating the budgets: one line per comparison
        with open(os.environ["VRPROBE_ULPS_LOG"], "a") as log:
            log.write(f"{units:.2f}\t{ulps}\t{dtype}\t{what}\n")
    assert diff <= atol, f"{where}max |diff| {diff:.3g} = {units:.1f} eps·scale > {ulps} (scale {scale:.3g}, {dtype})"
