"""Intervention objects: small, typed, one method each, serialisable into a run manifest (`describe()`).

Two base classes, one per kind of state; `intervene` refuses anything that is not an instance of the right one.
- `HiddenIntervention.apply(x, mask, rng)`: `x` [B, T, D] is the state at a site, `mask` [B, T] the positions to edit;
  anything outside the mask is returned unchanged. `GaussianNoise`, `Add`, `Replace`, `Zero`, `Mean`.
- `AttentionIntervention.on_logits(logits, mask, rng)` (pre-softmax scores [B, H, T, S] after the attention mask is
  added) and/or `on_probs(probs, mask, image_keys, allowed)` (post-softmax); `mask` [B, T] selects query rows,
  `image_keys` [B, S] the image-token keys and `allowed` [B, 1, T, S] the keys each query may see (causal + padding).
  Every attention edit keeps each row a probability distribution. `LogitNoise`, `UniformMix`, `Knockout`.
Parameters are checked when an object is made (a NaN noise scale is an error, not NaN results).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from vrprobe.errors import UsageError


def _check_scale(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(f"{name} must be a finite number >= 0, got {value}")


def _check_tensor(name: str, value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"{name} must be a tensor, got {type(value).__name__}")


class HiddenIntervention(ABC):
    """Base of hidden-state interventions: `apply(x, mask, rng)` returns x edited at the masked positions."""

    @abstractmethod
    def apply(self, x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor: ...


def _where(mask: torch.Tensor, new: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[..., None].to(x.device), new.to(x.device, x.dtype), x)


def describe(obj: Any) -> dict[str, Any]:
    """A JSON-able description of an intervention: its class and scalar parameters (tensors by shape)."""
    out: dict[str, Any] = {"type": type(obj).__name__}
    for k, v in vars(obj).items():
        out[k] = list(v.shape) if isinstance(v, torch.Tensor) else v
    return out


@dataclass
class GaussianNoise(HiddenIntervention):
    """x + scale·sigma·ε at the masked positions, ε ~ N(0, 1) of x's shape drawn (float32, on the CPU) from the given
    seeded generator, then moved to x's device and dtype.

    ROME's rule for `sigma`: the standard deviation of the input embeddings over the image-token span, measured on a
    calibration set (`vrprobe.tracing.measure_sigma`); `scale` is the k in k·σ. The tracing engine's corruption is
    this intervention. Both must be finite and ≥ 0.
    """

    scale: float
    sigma: float = 1.0

    def __post_init__(self) -> None:
        _check_scale("noise scale", self.scale)
        _check_scale("noise sigma", self.sigma)

    def apply(self, x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.scale == 0:
            return x
        eps = torch.randn(x.shape, generator=rng, dtype=torch.float32).to(x.device, x.dtype)
        return _where(mask, x + self.scale * self.sigma * eps, x)


@dataclass
class Add(HiddenIntervention):
    """x + delta at the masked positions; `delta` broadcasts against x [B, T, D] (pre-drawn noise, steering)."""

    delta: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensor("Add.delta", self.delta)

    def apply(self, x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return _where(mask, x + self.delta.to(x.device, x.dtype), x)


@dataclass
class Replace(HiddenIntervention):
    """The state from another run at the masked positions (restoration, activation patching); broadcasts to x."""

    source: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensor("Replace.source", self.source)

    def apply(self, x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return _where(mask, self.source.expand_as(x), x)


@dataclass
class Zero(HiddenIntervention):
    """Zero ablation: 0 at the masked positions."""

    def apply(self, x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return _where(mask, torch.zeros_like(x), x)


@dataclass
class Mean(HiddenIntervention):
    """Mean ablation: a fixed mean vector [D] (e.g. over a dataset) at the masked positions."""

    mean: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensor("Mean.mean", self.mean)

    def apply(self, x: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return _where(mask, self.mean.expand_as(x), x)


class AttentionIntervention:
    """Base of attention perturbations: identity on logits and probabilities; a subclass overrides one or both.
    `bind(groups)` gives the object used in one forward (default itself): a subclass that names token positions
    resolves them there against that forward's token groups."""

    def bind(self, groups: Any) -> AttentionIntervention:
        return self

    def on_logits(self, logits: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return logits

    def on_probs(
        self, probs: torch.Tensor, mask: torch.Tensor, image_keys: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        return probs


@dataclass
class LogitNoise(AttentionIntervention):
    """Gaussian noise of standard deviation `scale` (logit units) added to the attention scores of the masked query
    rows before softmax; masked-out keys stay masked, so rows remain distributions over the same keys."""

    scale: float

    def __post_init__(self) -> None:
        _check_scale("attention noise scale", self.scale)

    def on_logits(self, logits: torch.Tensor, mask: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.scale == 0:
            return logits
        eps = torch.randn(logits.shape, generator=rng, dtype=torch.float32).to(logits.device, logits.dtype)
        return logits + self.scale * eps * mask[:, None, :, None].to(logits.device, logits.dtype)


@dataclass
class UniformMix(AttentionIntervention):
    """(1 − α)·p + α·u on the masked query rows, u uniform over the keys the row may attend to under the causal and
    padding mask. α = 0 is the identity, α = 1 erases all focus."""

    alpha: float

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise UsageError(f"uniform-mix alpha must be in [0, 1], got {self.alpha}")

    def on_probs(
        self, probs: torch.Tensor, mask: torch.Tensor, image_keys: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        allowed = allowed.to(probs.dtype)
        uniform = allowed / allowed.sum(-1, keepdim=True).clamp_min(1)
        mixed = (1 - self.alpha) * probs + self.alpha * uniform
        return torch.where(mask[:, None, :, None].to(probs.device), mixed, probs)


@dataclass
class Knockout(AttentionIntervention):
    """Attention knockout: attention from the masked query rows to the keys at `keys` (a position set of
    `vrprobe.interventions.sites`: default `image`, cross-modal knockout; `text`, `last`, …) set to 0, each row
    renormalised over its remaining keys, which equals setting those scores to −inf before softmax (Geva et al. 2023).
    The position set is resolved against each forward's token groups (`bind`). A row left with no key at all (e.g.
    the last position with image, text and last blocked) gets all-zero weights: it reads nothing, and the attention
    block adds only its output projection's bias there."""

    keys: str = "image"

    def __post_init__(self) -> None:
        from vrprobe.interventions.sites import POSITIONS

        if self.keys not in POSITIONS:
            raise UsageError(f"unknown knockout keys '{self.keys}' (known: {', '.join(POSITIONS)})")

    def bind(self, groups: Any) -> AttentionIntervention:
        from vrprobe.interventions.sites import positions_mask

        return _BlockKeys(positions_mask(self.keys, groups))


@dataclass
class _BlockKeys(AttentionIntervention):
    """`Knockout` bound to one batch: `keys` [B, S] the blocked keys."""

    keys: torch.Tensor

    def on_probs(
        self, probs: torch.Tensor, mask: torch.Tensor, image_keys: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        if self.keys.shape != (probs.shape[0], probs.shape[-1]):
            raise UsageError(
                f"knockout keys of shape {tuple(self.keys.shape)} for attention of {probs.shape[0]} rows of "
                f"{probs.shape[-1]} keys"
            )
        drop = mask[:, None, :, None].to(probs.device) & self.keys[:, None, None, :].to(probs.device)
        kept = probs.masked_fill(drop, 0.0)
        total = kept.sum(-1, keepdim=True)
        rows = mask[:, None, :, None].to(probs.device).expand_as(total)
        # a row left with no key reads nothing: all-zero weights (see the docstring)
        return torch.where(rows, kept / total.clamp_min(torch.finfo(probs.dtype).tiny), probs)
