"""vrprobe's attention function, registered with `transformers.AttentionInterface` under the name "vrprobe".

It computes eager attention exactly (grouped-query expansion, scaling, optional soft-capping, fp32 softmax) and, when
an `intervene` block has attached an `AttentionHook` to the attention module, lets the hook edit the scores before
softmax, edit the probabilities after it, and record them. The same name is registered in `AttentionMaskInterface`
with the eager mask function: without it the function would receive no causal or padding mask at all.
Selected for the text model only (`{"text_config": "vrprobe", "vision_config": "eager"}`). A `KVPrefix` attached to the
module (the tracing engine's replay) supplies the keys and values of earlier positions shared by blocks of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vrprobe.interventions.ops import AttentionIntervention

NAME = "vrprobe"
HOOK_ATTR = "_vrprobe_attention_hook"
PREFIX_ATTR = "_vrprobe_kv_prefix"


@dataclass
class AttentionHook:
    """What one attention module does inside an `intervene` block: edits (with their query masks and generators) and
    whether to record probabilities (all query rows [B, H, T, S], or only the last one [B, H, S])."""

    image_keys: torch.Tensor
    edits: list[tuple[AttentionIntervention, torch.Tensor, torch.Generator]] = field(default_factory=list)
    record: bool = False
    record_last_only: bool = False
    records: list[torch.Tensor] = field(default_factory=list)

    def active(self, query_len: int) -> bool:
        return self.image_keys.shape[1] == query_len


@dataclass
class KVPrefix:
    """Keys and values [n, H_kv, P, D] of positions 0..P−1, shared by the batch's rows in blocks: with B = m·n rows,
    row r attends to prefix r mod n before its own keys. Attention to the prefix is computed per prefix (the queries
    of its m rows stacked), so the prefix is never copied into each row's cache."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def length(self) -> int:
        return self.keys.shape[2]

    def _stack(self, x: torch.Tensor) -> torch.Tensor:  # [m·n, H, T, X] -> [n, H, m·T, X]
        n = self.keys.shape[0]
        b, h, t, d = x.shape
        return x.view(b // n, n, h, t, d).permute(1, 2, 0, 3, 4).reshape(n, h, (b // n) * t, d)

    def _unstack(self, x: torch.Tensor, t: int) -> torch.Tensor:  # [n, H, m·T, X] -> [m·n, H, T, X]
        n, h, mt, d = x.shape
        return x.view(n, h, mt // t, t, d).permute(2, 0, 1, 3, 4).reshape((mt // t) * n, h, t, d)

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """query [B, H, T, D] · prefix keys -> unscaled scores [B, H, T, P]."""
        keys = _repeat_kv(self.keys, query.shape[1] // self.keys.shape[1])
        return self._unstack(torch.matmul(self._stack(query), keys.transpose(2, 3)), query.shape[2])

    def output(self, probs: torch.Tensor) -> torch.Tensor:
        """probabilities on the prefix [B, H, T, P] · prefix values -> [B, H, T, D]."""
        values = _repeat_kv(self.values, probs.shape[1] // self.values.shape[1])
        return self._unstack(torch.matmul(self._stack(probs), values), probs.shape[2])


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def vrprobe_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with optional edits/recording. Returns (output [B, T, H, D], probabilities [B, H, T, S])."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    prefix: KVPrefix | None = getattr(module, PREFIX_ATTR, None)
    logits = torch.matmul(query, key.transpose(2, 3))
    if prefix is not None:
        logits = torch.cat([prefix.scores(query), logits], dim=-1)
    logits = logits * scaling
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : logits.shape[-1]]
        logits = logits + attention_mask
    hook: AttentionHook | None = getattr(module, HOOK_ATTR, None)
    use = hook is not None and hook.active(query.shape[2])
    if use:
        for edit, mask, rng in hook.edits:
            logits = edit.on_logits(logits, mask, rng)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    if use:
        if hook.edits:
            if attention_mask is None:
                allowed = torch.ones_like(probs[:, :1], dtype=torch.bool)
            else:
                allowed = attention_mask > torch.finfo(attention_mask.dtype).min / 2
            for edit, mask, _ in hook.edits:
                probs = edit.on_probs(probs, mask, hook.image_keys, allowed)
        if hook.record:
            hook.records.append((probs[:, :, -1] if hook.record_last_only else probs).detach())
    probs_used = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    if prefix is None:
        out = torch.matmul(probs_used, value)
    else:
        p = prefix.length
        out = prefix.output(probs_used[..., :p]) + torch.matmul(probs_used[..., p:], value)
    out = out.transpose(1, 2).contiguous()
    return out, probs


def register() -> str:
    """Register the function and its mask (idempotent); returns the implementation name to select."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, vrprobe_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
