"""Input Intervention Module.

- `Site` (sites.py): component × layers × positions; components `embed`, `resid`, `attn`, `mlp`, `attn_probs`;
  positions `image`, `question`, `last`, `all` or explicit indices.
- Interventions (ops.py): hidden states — `GaussianNoise` (k·σ), `Add`, `Replace`, `Zero`, `Mean`;
  attention — `LogitNoise`, `UniformMix` (α), `Knockout` (cross-modal).
- `HiddenIntervention` / `AttentionIntervention` (ops.py): the two base classes every intervention derives from.
- `intervene` (hooks.py): the `with` block that checks edits, applies them and records sites (`Recording`, filled when
  the block exits); hooks removed in `finally`. `Edit` = (Site, intervention).
- `vrprobe_attention` / `register` (attention.py): the attention function registered with `AttentionInterface`; it
  records and edits attention, with state passed as arguments.
"""

from vrprobe.interventions.attention import register
from vrprobe.interventions.hooks import Edit, Recording, intervene, layer_parts
from vrprobe.interventions.ops import (
    Add,
    AttentionIntervention,
    GaussianNoise,
    HiddenIntervention,
    Knockout,
    LogitNoise,
    Mean,
    Replace,
    UniformMix,
    Zero,
    describe,
)
from vrprobe.interventions.sites import COMPONENTS, POSITIONS, Site

__all__ = [
    "COMPONENTS",
    "POSITIONS",
    "Add",
    "Edit",
    "AttentionIntervention",
    "GaussianNoise",
    "HiddenIntervention",
    "Knockout",
    "LogitNoise",
    "Mean",
    "Recording",
    "Replace",
    "Site",
    "UniformMix",
    "Zero",
    "describe",
    "intervene",
    "layer_parts",
    "register",
]
