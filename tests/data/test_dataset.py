"""The in-memory dataset type: moving it to a device."""

from __future__ import annotations

import dataclasses

import torch

from walkingnoise.data import InMemoryDataset, load_dataset


def test_a_dataset_moves_its_splits_and_class_weights_to_a_device() -> None:
    """PyTorch's ``meta`` device stands in for a GPU."""
    digits = load_dataset("digits")
    weighted = dataclasses.replace(digits, class_weights=torch.ones(digits.num_classes))
    moved = weighted.to("meta")
    for name in ("train", "validation", "test"):
        split = moved.split(name)
        assert (split.x.device.type, split.y.device.type) == ("meta", "meta")
        assert split.x.shape == weighted.split(name).x.shape
    assert moved.class_weights is not None
    assert moved.class_weights.device.type == "meta"
    assert (moved.name, moved.class_names, moved.augmentation) == (
        weighted.name,
        weighted.class_names,
        weighted.augmentation,
    )
    assert weighted.train.x.device.type == "cpu"  # the original stays where it was


def test_a_dataset_already_on_the_device_is_itself() -> None:
    digits: InMemoryDataset = load_dataset("digits")
    assert digits.to("cpu") is digits
