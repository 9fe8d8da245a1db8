"""The ``digits`` dataset: scikit-learn's bundled 8×8 handwritten digits, the offline default."""

from __future__ import annotations

from pathlib import Path

import torch

from walkingnoise.data.dataset import InMemoryDataset, Split
from walkingnoise.data.registry import (
    register_dataset,
    split_train_validation,
    stratified_holdout_indices,
)

__all__ = ["DIGITS_MAX_VALUE", "load_digits"]

DIGITS_MAX_VALUE = 16.0
"""Largest pixel value in the digits images (4-bit counts of set pixels in 4×4 blocks)."""


@register_dataset("digits")
def load_digits(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    normalize: bool = True,
) -> InMemoryDataset:
    """Load the 1797 UCI digits bundled with scikit-learn as (N, 1, 8, 8) tensors; no download.

    A fixed stratified hold-out of ``test_fraction`` per class is the test split; the rest is split
    into train and validation by :func:`split_train_validation`. Pixels are scaled to [0, 1] by
    /16 and, with ``normalize``, mapped to [-1, 1] by (x - 0.5) / 0.5. ``root`` is ignored.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX_VALUE
    if normalize:
        x = (x - 0.5) / 0.5
    y = torch.as_tensor(bunch.target, dtype=torch.int64)

    rest_idx, test_idx = stratified_holdout_indices(y, test_fraction)
    train, validation = split_train_validation(x[rest_idx], y[rest_idx], val_fraction)
    return InMemoryDataset(
        name="digits",
        train=train,
        validation=validation,
        test=Split(x[test_idx], y[test_idx]),
        class_names=tuple(str(c) for c in range(10)),
        metadata={
            "normalization": {"mean": (0.5,), "std": (0.5,)} if normalize else None,
            "paper_augmentation": "none",
        },
    )
