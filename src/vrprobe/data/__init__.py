"""Datasets: `Sample`, loaders and spec strings. Never touches a model."""

from vrprobe.data.sample import Sample
from vrprobe.data.spec import Dataset, load_dataset, stratified_subset

__all__ = ["Dataset", "Sample", "load_dataset", "stratified_subset"]
