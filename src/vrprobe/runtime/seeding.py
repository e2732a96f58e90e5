"""One rule for seeds derived from a user's seed: `derive_seed`."""

from __future__ import annotations

import torch

#: a prime larger than any index used, so (seed, index) pairs never collide for indices below it
SEED_STRIDE = 1_000_003


def derive_seed(seed: int, index: int) -> int:
    """The seed of stream `index` under the user's `seed`: seed · 1,000,003 + index.

    Used for every seeded draw vrprobe makes: each edit of an `intervene` block (index = its position in the edit
    list), each traced sample's noise (index = the sample's position in the dataset), each band-corrupted batch
    (index = the batch's first sample index), so a resumed run draws exactly what an uninterrupted one does."""
    return int(seed) * SEED_STRIDE + int(index)


def generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(seed, index)` (CPU, so one seed gives the same draws everywhere)."""
    return torch.Generator().manual_seed(derive_seed(seed, index))
