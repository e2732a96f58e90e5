"""vrprobe's attention function, registered with `transformers.AttentionInterface` under the name "vrprobe".

It computes attention exactly (grouped-query expansion, scaling, optional soft-capping, fp32 softmax): explicit
probabilities for the query rows that are recorded or edited, SDPA for the rest (`vrprobe_attention`; in a small
call, `ALL_ROWS_UP_TO`, every row explicit). The same name is registered in `AttentionMaskInterface` with the eager
mask function: without it the function would receive no causal or padding mask at all. Selected for the text model
only (`{"text_config": "vrprobe", "vision_config": "eager"}`).

State reaches it as keyword arguments, which transformers' decoder layers and attention modules pass through unchanged
(never as attributes set on modules):
- `vrprobe_hook` (`AttentionHook`): edits of the scores before softmax and of the probabilities after it, and
  recording; added to the attention module's call by `intervene` (a forward pre-hook inside its `with` block).
- `vrprobe_prefix` (`SharedPrefix`): keys and values of earlier positions that the caller holds apart from the batch's
  own (the tracing engine's `vrprobe.tracing.prefix.KVPrefix`): the function asks it for two products, or for a
  copy per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from vrprobe.interventions.ops import AttentionIntervention

NAME = "vrprobe"
#: the keyword arguments the function reads (see the module docstring)
HOOK_KWARG = "vrprobe_hook"
PREFIX_KWARG = "vrprobe_prefix"


#: A call whose scores hold at most this many elements (batch × heads × queries × keys: 512 KiB in float32) computes
#: every query row explicitly, also when only some rows are recorded or edited: at that size the explicit products
#: cost less than SDPA plus a second product for those rows (zoo shapes, 11 rows of 30 tokens: about 0.6×), and the
#: memory is small. Above it only the recorded or edited rows are explicit (`benchmarks/attention_memory.py`).
ALL_ROWS_UP_TO = 1 << 17


#: query rows to compute explicitly: None = every row; a slice (a view, e.g. the last row) or sorted positions [K]
Rows = slice | torch.Tensor | None


@dataclass
class AttentionHook:
    """What one attention module does inside an `intervene` block: edits (with their query masks and generators) and
    whether to record probabilities (all query rows [B, H, T, S], or only the last one [B, H, S])."""

    image_keys: torch.Tensor
    edits: list[tuple[AttentionIntervention, torch.Tensor, torch.Generator]] = field(default_factory=list)
    record: bool = False
    record_last_only: bool = False
    records: list[torch.Tensor] = field(default_factory=list)
    #: `explicit_rows` per (query length, edits, record flags): computed once, not in every call
    _rows: dict[tuple[int, int, bool, bool], Rows] = field(default_factory=dict, repr=False, compare=False)

    def active(self, query_len: int) -> bool:
        return self.image_keys.shape[1] == query_len

    def rows(self, query_len: int) -> Rows:
        """`explicit_rows(self, query_len)`, computed once per query length and configuration."""
        key = (query_len, len(self.edits), self.record, self.record_last_only)
        if key not in self._rows:
            self._rows[key] = explicit_rows(self, query_len)
        return self._rows[key]


class SharedPrefix(Protocol):
    """Keys and values of positions 0..length−1 supplied apart from the batch's own keys: the function asks only for
    the unscaled scores of its queries against them and for the output of probabilities over them."""

    @property
    def length(self) -> int: ...

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """query [B, H, T, D] -> unscaled scores [B, H, T, length]."""
        ...

    def output(self, probs: torch.Tensor) -> torch.Tensor:
        """probabilities [B, H, T, length] -> their weighted values [B, H, T, D]."""
        ...

    def per_row(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """keys and values [batch, H_kv, length, D], one copy per row of the batch."""
        ...


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def explicit_rows(hook: AttentionHook | None, query_len: int) -> Rows:
    """The query positions whose probabilities must be computed explicitly (recorded or edited): a slice when they
    are contiguous (the last row alone: `slice(T − 1, T)`), else sorted positions [K]; an empty slice for none;
    None when every row must be (all rows recorded, or an edit of the pre-softmax scores, whose draws span every
    row)."""
    if hook is None:
        return slice(0, 0)
    if hook.record and not hook.record_last_only:
        return None
    if not hook.edits:  # recording alone (eval's sharpness): no tensor work to find the rows
        return slice(query_len - 1, query_len) if hook.record else slice(0, 0)
    if any(type(edit).on_logits is not AttentionIntervention.on_logits for edit, _, _ in hook.edits):
        return None
    needed = torch.zeros(query_len, dtype=torch.bool)
    for _, mask, _ in hook.edits:
        needed |= mask.detach().cpu().any(0)
    if hook.record:
        needed[-1] = True
    positions = needed.nonzero().squeeze(1)
    if len(positions) == 0:
        return slice(0, 0)
    first, last = int(positions[0]), int(positions[-1])
    return slice(first, last + 1) if last - first + 1 == len(positions) else positions


def _on(rows: slice | torch.Tensor, device: torch.device) -> slice | torch.Tensor:
    return rows if isinstance(rows, slice) else rows.to(device)


def _add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + y, in place in x (this function's own tensor) when that gives the same result: same dtype, and y
    broadcasts to x's shape."""
    if y.dtype == x.dtype and y.dim() == x.dim() and all(m in (1, n) for m, n in zip(y.shape, x.shape, strict=True)):
        return x.add_(y)
    return x + y


def _explicit(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None,
    hook: AttentionHook | None,
    rows: Rows,
    prefix: SharedPrefix | None,
    dropout: float,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention for the query rows `query` [B, H, K, D] (positions `rows` of the full query, None = all):
    scores, the hook's edits, softmax, recording — probabilities in float32 whatever the model's dtype. Returns
    (output [B, H, K, D], float32 probabilities [B, H, K, S])."""
    logits = torch.matmul(query, key.transpose(2, 3))
    if prefix is not None:
        logits = torch.cat([prefix.scores(query), logits], dim=-1)
    logits = logits.mul_(scaling)  # in place: the product is this function's own tensor (a float keeps its dtype)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if attention_mask is not None:
        logits = _add(logits, attention_mask)
    edits = [] if hook is None else hook.edits
    if edits and rows is not None:
        edits = [(e, m[:, _on(rows, m.device)], g) for e, m, g in edits]
    for edit, mask, rng in edits:
        logits = edit.on_logits(logits, mask, rng)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # edited and recorded in float32, any model dtype
    if edits:
        if attention_mask is None:
            allowed = torch.ones_like(probs[:, :1], dtype=torch.bool)
        else:
            allowed = attention_mask > torch.finfo(attention_mask.dtype).min / 2
        assert hook is not None  # edits come from the hook
        for edit, mask, _ in edits:
            probs = edit.on_probs(probs, mask, hook.image_keys, allowed)
    if hook is not None and hook.record:
        if not hook.record_last_only:
            hook.records.append(probs.detach())
        else:  # the last row alone; copied when more rows were computed, so that they are not held with it
            last = probs[:, :, -1].detach()
            hook.records.append(last.clone() if probs.shape[2] > 1 else last)
    probs_used = probs.to(query.dtype)
    if training and dropout > 0:
        probs_used = torch.nn.functional.dropout(probs_used, p=dropout, training=True)
    if prefix is None:
        return torch.matmul(probs_used, value), probs
    p = prefix.length
    return prefix.output(probs_used[..., :p]) + torch.matmul(probs_used[..., p:], value), probs


def vrprobe_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    vrprobe_hook: AttentionHook | None = None,
    vrprobe_prefix: SharedPrefix | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention with optional edits/recording (`vrprobe_hook`) and keys of earlier positions held apart
    (`vrprobe_prefix`). Returns (output [B, T, H, D], probabilities [B, H, T, S] or None).

    Explicit probabilities (scores, softmax in float32, edits, recording) are computed only for the query rows that
    are recorded or edited (`explicit_rows`: O(rows·S) memory per head, e.g. the answer position for sharpness); every
    other row goes through `torch.nn.functional.scaled_dot_product_attention`. All rows are explicit (eager, with
    probabilities returned) when every row is recorded, an edit changes the scores, soft-capping or training
    dropout is on, or some rows are recorded or edited in a call whose scores hold at most `ALL_ROWS_UP_TO` elements
    (there that is cheaper than SDPA plus the rows apart).

    A prefix no longer than the batch's own keys is copied into each row's keys (at most doubling them) so that SDPA
    runs; a longer one (few queries against many earlier positions, where explicit scores are small) stays shared."""
    prefix = vrprobe_prefix
    if attention_mask is not None:
        extra = prefix.length if prefix is not None else 0
        attention_mask = attention_mask[:, :, :, : key.shape[2] + extra]
    if prefix is not None and prefix.length <= key.shape[2]:
        keys, values = prefix.per_row(key.shape[0])
        key, value, prefix = (
            torch.cat([keys.to(key.dtype), key], 2),
            torch.cat([values.to(value.dtype), value], 2),
            None,
        )
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    hook = vrprobe_hook if vrprobe_hook is not None and vrprobe_hook.active(query.shape[2]) else None
    rows = slice(0, 0) if hook is None else hook.rows(query.shape[2])
    some = rows is None or not isinstance(rows, slice) or rows.stop > rows.start
    small = some and query.shape[0] * query.shape[1] * query.shape[2] * key.shape[2] <= ALL_ROWS_UP_TO
    dropping = module.training and dropout > 0
    if rows is None or small or prefix is not None or softcap is not None or dropping:
        out, probs = _explicit(
            query, key, value, attention_mask, scaling, softcap, hook, None, prefix, dropout, module.training
        )
        return out.transpose(1, 2).contiguous(), probs
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
    if some:
        index = _on(rows, query.device)
        mask = attention_mask[:, :, index] if attention_mask is not None else None
        part, _ = _explicit(query[:, :, index], key, value, mask, scaling, None, hook, rows, None, 0.0, False)
        out[:, :, index] = part.to(out.dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the function and its mask (idempotent); returns the implementation name to select."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, vrprobe_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
