"""`KVPrefix`: the keys and values of earlier positions, held once per noise draw and shared by blocks of rows.

The tracing engine's restored runs recompute only positions first..T−1; positions 0..first−1 keep the keys and values
of a known run. Rather than copy them into every row's cache, `run_layers` passes one `KVPrefix` per layer to
vrprobe's attention function as its `vrprobe_prefix` argument (`vrprobe.interventions.attention.SharedPrefix`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vrprobe.interventions.attention import repeat_kv


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
        keys = repeat_kv(self.keys, query.shape[1] // self.keys.shape[1])
        return self._unstack(torch.matmul(self._stack(query), keys.transpose(2, 3)), query.shape[2])

    def output(self, probs: torch.Tensor) -> torch.Tensor:
        """probabilities on the prefix [B, H, T, P] · prefix values -> [B, H, T, D]."""
        values = repeat_kv(self.values, probs.shape[1] // self.values.shape[1])
        return self._unstack(torch.matmul(self._stack(probs), values), probs.shape[2])

    def per_row(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """keys and values [batch, H_kv, P, D]: row r gets prefix r mod n (a copy per row, for SDPA)."""
        reps = batch // self.keys.shape[0]
        return self.keys.repeat(reps, 1, 1, 1), self.values.repeat(reps, 1, 1, 1)
