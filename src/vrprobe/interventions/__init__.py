"""Input Intervention Module.

- `Site` (sites.py): component × layers × positions; components `embed`, `resid`, `attn`, `mlp`, `attn_probs`;
  positions `image`, `question`, `last`, `all` or explicit indices.
- Interventions (ops.py): hidden states — `GaussianNoise` (k·σ), `Add`, `Replace`, `Zero`, `Mean`;
  attention — `LogitNoise`, `UniformMix` (α), `Knockout` (cross-modal).
- `intervene` (hooks.py): the `with` block that applies edits and records sites; hooks removed in `finally`.
- `vrprobe_attention` / `register` (attention.py): the attention function registered with `AttentionInterface`.
- replay.py: running decoder layers directly from captured calls (used by the tracing engine).
"""

from vrprobe.interventions.attention import register
from vrprobe.interventions.hooks import Recording, intervene, layer_parts
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
