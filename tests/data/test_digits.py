"""Tests for the ``digits`` loader (scikit-learn's bundled 8×8 digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_load_digits

from walkingnoise.data import InMemoryDataset, load_dataset
from walkingnoise.data.digits import load_digits

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits() -> InMemoryDataset:
    """The digits dataset with default options."""
    return load_dataset("digits")


def _row_keys(x: torch.Tensor) -> list[bytes]:
    """One hashable key per sample (its raw float32 bytes); digits has no duplicate images."""
    flat = x.reshape(len(x), -1).numpy()
    return [row.tobytes() for row in flat]


def test_shapes_dtypes_and_sizes(digits: InMemoryDataset) -> None:
    assert digits.input_shape == (1, 8, 8)
    assert digits.class_names == tuple(str(c) for c in range(10))
    assert digits.num_classes == 10
    sizes = [len(digits.train), len(digits.validation), len(digits.test)]
    assert sum(sizes) == N_DIGITS
    assert abs(len(digits.test) - 0.2 * N_DIGITS) <= 10
    assert len(digits.validation) == round(0.1 * (N_DIGITS - len(digits.test)))
    for split in (digits.train, digits.validation, digits.test):
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64


def test_splits_are_disjoint_and_cover_sklearn_data(digits: InMemoryDataset) -> None:
    reference = sklearn_load_digits()
    expected_x = (reference.images.astype(np.float32) / 16 - 0.5) / 0.5
    keys = _row_keys(torch.from_numpy(expected_x))
    expected = dict(zip(keys, reference.target.tolist(), strict=True))
    assert len(expected) == N_DIGITS  # every image is distinct, so bytes identify samples

    seen: list[bytes] = []
    for split in (digits.train, digits.validation, digits.test):
        keys = _row_keys(split.x)
        assert [expected[k] for k in keys] == split.y.tolist()  # labels stay with their images
        seen.extend(keys)
    assert len(seen) == len(set(seen)) == N_DIGITS
    assert set(seen) == set(expected)


def test_test_split_is_stratified(digits: InMemoryDataset) -> None:
    all_labels = torch.cat([digits.train.y, digits.validation.y, digits.test.y])
    per_class = torch.bincount(all_labels, minlength=10)
    test_per_class = torch.bincount(digits.test.y, minlength=10)
    assert (test_per_class > 0).all()
    assert torch.equal(test_per_class, torch.round(per_class * 0.2).long())
    assert set(digits.validation.y.tolist()) == set(range(10))


def test_deterministic_across_loads_and_global_seeds() -> None:
    torch.manual_seed(0)
    first = load_digits()
    torch.manual_seed(12345)
    second = load_digits()
    for name in ("train", "validation", "test"):
        assert torch.equal(first.split(name).x, second.split(name).x)
        assert torch.equal(first.split(name).y, second.split(name).y)


def test_normalization_range(digits: InMemoryDataset) -> None:
    x = torch.cat([digits.train.x, digits.validation.x, digits.test.x])
    assert x.min().item() == -1.0
    assert x.max().item() == 1.0
    raw = load_digits(normalize=False)
    x_raw = torch.cat([raw.train.x, raw.validation.x, raw.test.x])
    assert x_raw.min().item() == 0.0
    assert x_raw.max().item() == 1.0
    assert torch.allclose((raw.train.x - 0.5) / 0.5, digits.train.x)


def test_fraction_options_and_ignored_root() -> None:
    dataset = load_dataset("digits", "/no/such/dir", val_fraction=0.25, test_fraction=0.1)
    assert abs(len(dataset.test) - 180) <= 10
    assert len(dataset.validation) == round(0.25 * (N_DIGITS - len(dataset.test)))
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == N_DIGITS
