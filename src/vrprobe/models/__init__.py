"""Model adapters, one per family, behind `Adapter`. Loading a model from a spec is `vrprobe.registry.load_adapter`
(outside this package, because it also registers vrprobe's attention function, and `models` never imports
`interventions`)."""

from vrprobe.models.base import GROUPS, Adapter, Batch, Encoded, TokenGroups

__all__ = ["GROUPS", "Adapter", "Batch", "Encoded", "TokenGroups"]
