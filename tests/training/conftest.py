"""Fixtures for the training tests: the bundled digits, loaded once."""

from __future__ import annotations

import pytest

from walkingnoise.data import InMemoryDataset, load_dataset


@pytest.fixture(scope="session")
def digits() -> InMemoryDataset:
    """scikit-learn's 8×8 digits as tensors (train 1294, validation 144, test 359)."""
    return load_dataset("digits")
