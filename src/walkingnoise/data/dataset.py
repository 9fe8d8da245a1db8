"""The in-memory dataset type shared by every loader."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from walkingnoise.data.augmentation import Augmentation


@dataclass(frozen=True)
class Split:
    """One split of a dataset: inputs ``x`` (N, *input_shape) float32, labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"split has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """Return this split with both tensors on ``device``."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class InMemoryDataset:
    """A whole dataset held as tensors, so training never touches a per-sample DataLoader.

    Inputs are already normalized; ``input_shape`` excludes the batch dimension.

    Attributes:
        class_weights: optional (K,) float32 weights for a weighted cross-entropy, e.g. inverse
            class density for Speech Commands; None means unweighted.
        augmentation: the published training augmentation of the dataset, applied to training
            batches when the recipe asks for it (``Recipe.augment``); None: there is none.
            Loaders themselves never augment.
        metadata: free-form facts about the data for later stages, e.g. ``normalization``
            (mean/std applied), ``paper_augmentation`` (what the papers' training added, in
            words), ``source`` (where the files were read).
    """

    name: str
    train: Split
    validation: Split
    test: Split
    class_names: tuple[str, ...]
    class_weights: torch.Tensor | None = field(default=None, compare=False)
    augmentation: Augmentation | None = field(default=None, compare=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        weights = self.class_weights
        if weights is not None and tuple(weights.shape) != (len(self.class_names),):
            raise ValueError(
                f"class_weights has shape {tuple(weights.shape)}, expected "
                f"({len(self.class_names)},) for {len(self.class_names)} classes"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension (e.g. ``(1, 28, 28)``)."""
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.class_names)

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of guessing, 1/K: the floor a_min of the midpoint fit."""
        return 1.0 / self.num_classes

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """This dataset with its splits and class weights on ``device`` (itself if there)."""
        if self.train.x.device == torch.device(device):
            return self
        weights = None if self.class_weights is None else self.class_weights.to(device)
        splits = {s: self.split(s).to(device) for s in ("train", "validation", "test")}
        return dataclasses.replace(self, **splits, class_weights=weights)

    def split(self, name: str) -> Split:
        """Return the split called ``train``, ``validation`` or ``test``."""
        if name not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {name!r}; choose train, validation or test")
        return getattr(self, name)
