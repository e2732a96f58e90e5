"""Model adapters, one per family, behind `Adapter`; `load_adapter(spec)` is the entry point."""

from vrprobe.models.base import GROUPS, Adapter, Batch, Encoded, TokenGroups
from vrprobe.models.registry import load_adapter, resolve

__all__ = ["GROUPS", "Adapter", "Batch", "Encoded", "TokenGroups", "load_adapter", "resolve"]
