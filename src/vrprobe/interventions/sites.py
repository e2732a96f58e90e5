"""`Site`: where an intervention acts or a state is recorded — component × layers × token positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vrprobe.errors import UsageError
from vrprobe.models.base import GROUPS, TokenGroups

#: embed: input of the first decoder layer (token embeddings with the projected image features in place);
#: resid: a decoder layer's output; attn / mlp: the attention / MLP block's output inside a layer (before it is added
#: to the residual stream); attn_probs: the attention probabilities [B, heads, query, key] of a layer.
COMPONENTS = ("embed", "resid", "attn", "mlp", "attn_probs")
#: derived position sets: `text` every real position that is neither an image token nor the last (the question's words
#: and the prompt template's: BOS, "USER:", "ASSISTANT", vision start/end markers), so that image, text and last
#: partition the prompt; `non_image` every real position that is not an image token (text and the last).
DERIVED = ("text", "non_image")
POSITIONS = (*GROUPS, "all", *DERIVED)


@dataclass(frozen=True)
class Site:
    """Layer(s) × component × positions. `positions` is a token group name (`image`, `question`, `last`), `all`, a
    `DERIVED` set (`text`, `non_image`) or explicit indices into each row's own unpadded sequence (negative counts
    from the end). For `attn_probs` the positions select query rows. `layers` is ignored for `embed`."""

    component: str
    layers: tuple[int, ...] = ()
    positions: str | tuple[int, ...] = "all"

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise UsageError(f"unknown component '{self.component}' (known: {', '.join(COMPONENTS)})")
        if isinstance(self.positions, str) and self.positions not in POSITIONS:
            raise UsageError(f"unknown positions '{self.positions}' (known: {', '.join(POSITIONS)} or indices)")
        if self.component != "embed" and not self.layers:
            raise UsageError(f"site '{self.component}' needs at least one layer")
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if not isinstance(self.positions, str):
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))

    def check(self, num_layers: int) -> None:
        """Raise one clear error when a layer index is out of range for a model with `num_layers` layers."""
        for layer in self.layers:
            if not 0 <= layer < num_layers:
                raise UsageError(f"layer {layer} is out of range: the model has layers 0..{num_layers - 1}")

    def mask(self, groups: TokenGroups) -> torch.Tensor:
        """Boolean mask [B, T] of the positions this site names in a batch."""
        return positions_mask(self.positions, groups)

    def __str__(self) -> str:
        layers = "" if self.component == "embed" else "@" + ",".join(map(str, self.layers))
        pos = self.positions if isinstance(self.positions, str) else ",".join(map(str, self.positions))
        return f"{self.component}{layers}[{pos}]"


def positions_mask(positions: str | tuple[int, ...], groups: TokenGroups) -> torch.Tensor:
    """[B, T] mask for a group name or explicit per-row indices (offset by each row's left padding)."""
    if positions == "all":
        return groups.valid.clone()
    if positions == "non_image":
        return groups.valid & ~groups.image
    if positions == "text":
        return groups.valid & ~groups.image & ~groups.last
    if isinstance(positions, str):
        return groups.mask(positions).clone()
    mask = torch.zeros_like(groups.valid)
    width = mask.shape[1]
    for row in range(mask.shape[0]):
        pad = int(groups.pad[row])
        length = width - pad
        for p in positions:
            q = p + length if p < 0 else p
            if not 0 <= q < length:
                raise UsageError(f"position {p} is out of range for a sequence of {length} tokens")
            mask[row, pad + q] = True
    return mask
