"""The data vrprobe passes between its modules: one sample's inputs (`Encoded`), a left-padded batch (`Batch`) with
its `TokenGroups`, and a greedy answer (`Generated`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Per-token model inputs that are padded on the left; every other processor output is per image and concatenated.
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
DROP_KEYS = ("labels",)
GROUPS = ("image", "question", "last")


@dataclass
class TokenGroups:
    """Boolean masks [B, T] over a padded batch: image tokens, question tokens, and the last (answer) position;
    `valid` marks real (non-padding) tokens and `pad` [B] counts each row's left padding."""

    image: torch.Tensor
    question: torch.Tensor
    last: torch.Tensor
    valid: torch.Tensor
    pad: torch.Tensor

    def mask(self, name: str) -> torch.Tensor:
        if name not in GROUPS:
            raise ValueError(f"unknown token group '{name}' (known: {', '.join(GROUPS)})")
        return getattr(self, name)


@dataclass
class Encoded:
    """One sample's processor outputs (batch dim 1, unpadded), the [start, end) span of its question tokens, and the
    original image's size `(width, height)` in pixels (what image-token geometry maps back to)."""

    inputs: dict[str, torch.Tensor]
    question_span: tuple[int, int]
    image_size: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


@dataclass
class Generated:
    """A greedy answer: its text, token ids (end-of-sequence excluded) and their log-probabilities (nats)."""

    text: str
    ids: list[int]
    logprobs: list[float]
    stop_logprob: float | None

    @property
    def confidence(self) -> float:
        """Probability of the generated answer sequence: the product of its token probabilities (EOS excluded); for
        an empty answer, the probability of stopping at once."""
        if not self.ids:
            return math.exp(self.stop_logprob) if self.stop_logprob is not None else 0.0
        return math.exp(sum(self.logprobs))

    @property
    def first_token_prob(self) -> float:
        lp = self.logprobs[0] if self.logprobs else self.stop_logprob
        return math.exp(lp) if lp is not None else 0.0

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("nan")


@dataclass
class Batch:
    """Left-padded model inputs for several samples; the last position of every row is the answer position."""

    inputs: dict[str, torch.Tensor]
    groups: TokenGroups
    items: list[Encoded]

    def __len__(self) -> int:
        return len(self.items)


def pad_trailing(parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-image inputs of several samples brought to one shape by zero-padding every dimension after the first at
    its end, as processors pad the images of one call (LLaVA-NeXT's tiles, Idefics3's splits, Pixtral's sizes): the
    models read the real extent from `image_sizes` / `pixel_attention_mask` or drop all-zero images."""
    if len({p.shape[1:] for p in parts}) <= 1:
        return list(parts)
    dims = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
    out = []
    for p in parts:
        pad: list[int] = []
        for d in reversed(range(1, p.dim())):
            pad += [0, dims[d - 1] - p.shape[d]]
        out.append(torch.nn.functional.pad(p, pad))
    return out
