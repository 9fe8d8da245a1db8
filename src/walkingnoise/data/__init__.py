"""Datasets held in memory as tensors, loaded by name from their published file formats.

Example:
    >>> from walkingnoise.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> ds.input_shape, ds.num_classes
    ((1, 8, 8), 10)
"""

from walkingnoise.data import digits, mnist
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.idx import IdxFormatError, read_idx
from walkingnoise.data.registry import (
    DatasetNotFoundError,
    UnknownDatasetError,
    dataset_names,
    load_dataset,
    register_dataset,
    split_train_validation,
)

__all__ = [
    "DatasetNotFoundError",
    "IdxFormatError",
    "InMemoryDataset",
    "Split",
    "UnknownDatasetError",
    "dataset_names",
    "digits",
    "load_dataset",
    "mnist",
    "read_idx",
    "register_dataset",
    "split_train_validation",
]
