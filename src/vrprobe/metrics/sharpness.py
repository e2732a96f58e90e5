"""Attention sharpness: entropy of the answer position's attention over the image tokens.

Definition. For one layer and head, let a_j be the attention probability from the answer (last) position to key j.
Renormalise over the image tokens I: p_i = a_i / Σ_{j∈I} a_j. Then
    H = −Σ_{i∈I} p_i · log p_i            (nats; 0·log 0 = 0; range [0, log |I|])
and the normalised entropy H / log |I| ∈ [0, 1] compares models with different image-token counts. Lower entropy =
sharper attention. When the row puts no mass on image tokens at all, p is taken as uniform (H = log |I|).
Computed in float64 whatever the input dtype (fp16/bf16 safe).
"""

from __future__ import annotations

import math

import torch


def image_attention_entropy(probs: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over image tokens of attention rows.

    `probs` [..., B, H, S]: one query row per (batch, head), e.g. the last position, with any leading dims (layers);
    `image_mask` [B, S] bool. Returns [..., B, H] float64.
    """
    image_mask = image_mask.to(probs.device)
    p = probs.to(torch.float64) * image_mask[:, None, :].to(torch.float64)
    total = p.sum(-1, keepdim=True)
    n = image_mask.sum(-1).to(torch.float64)[:, None, None]
    uniform = image_mask[:, None, :].to(torch.float64) / n
    p = torch.where(total > 0, p / total.clamp_min(1e-300), uniform)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    return -plogp.sum(-1)


def normalised_entropy(entropy: torch.Tensor, n_image_tokens: torch.Tensor | int) -> torch.Tensor:
    """entropy / log(#image tokens) ∈ [0, 1]; for a single image token the entropy is 0 and so is this."""
    n = torch.as_tensor(n_image_tokens, dtype=torch.float64)
    return torch.where(n > 1, entropy / torch.log(n.clamp_min(2)), torch.zeros_like(entropy))


def max_entropy(n_image_tokens: int) -> float:
    """log(n): the entropy of uniform attention over n image tokens (nats)."""
    return math.log(n_image_tokens)
