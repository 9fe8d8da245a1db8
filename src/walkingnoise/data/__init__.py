"""Datasets held in memory as tensors, loaded by name from their published file formats.

Registered: ``digits`` (bundled with scikit-learn), ``mnist``, ``mnist-t10k``, ``fashion_mnist``,
``cifar10``, ``svhn`` and ``speech_commands`` (needs ``pip install 'walkingnoise[speech]'``).
Each file-based loader finds torchvision's layouts under its root and accepts ``download=True``.

Example:
    >>> from walkingnoise.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> ds.input_shape, ds.num_classes
    ((1, 8, 8), 10)
"""

from walkingnoise.data import cifar, digits, fashion_mnist, mnist, speech, svhn
from walkingnoise.data.class_weights import inverse_density_weights
from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.download import (
    DownloadError,
    RemoteFile,
    download_dataset,
    official_files,
)
from walkingnoise.data.errors import DatasetFormatError
from walkingnoise.data.idx import IdxFormatError, read_idx
from walkingnoise.data.registry import (
    DatasetNotFoundError,
    UnknownDatasetError,
    data_root,
    dataset_names,
    dataset_status,
    load_dataset,
    register_dataset,
    split_train_validation,
)
from walkingnoise.data.status import DatasetStatus

__all__ = [
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetStatus",
    "DownloadError",
    "IdxFormatError",
    "InMemoryDataset",
    "RemoteFile",
    "Split",
    "UnknownDatasetError",
    "cifar",
    "data_root",
    "dataset_names",
    "dataset_status",
    "digits",
    "download_dataset",
    "fashion_mnist",
    "inverse_density_weights",
    "load_dataset",
    "mnist",
    "official_files",
    "read_idx",
    "register_dataset",
    "speech",
    "split_train_validation",
    "svhn",
]
