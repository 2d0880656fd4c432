"""Datasets in one uniform form; see `base.Dataset`."""

from echobench.data.base import DATASETS, Dataset, data_root, load_dataset

__all__ = ["DATASETS", "Dataset", "data_root", "load_dataset"]
