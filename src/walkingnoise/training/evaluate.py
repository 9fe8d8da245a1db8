"""Evaluation of a model on a split, with its noise sites as configured, repeated R times."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from walkingnoise.data.dataset import Split
from walkingnoise.noise.instrument import NoisyModel


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and loss over R repeated passes; the spread comes from fresh noise each pass."""

    accuracies: tuple[float, ...]
    losses: tuple[float, ...]

    @property
    def accuracy(self) -> float:
        """Mean accuracy over the repeats (fraction in [0, 1])."""
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def accuracy_std(self) -> float:
        """Sample standard deviation of the accuracy over the repeats (0 for one repeat)."""
        return _std(self.accuracies)

    @property
    def loss(self) -> float:
        """Mean cross-entropy over the repeats."""
        return sum(self.losses) / len(self.losses)

    @property
    def loss_std(self) -> float:
        """Sample standard deviation of the loss over the repeats."""
        return _std(self.losses)

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Flat metrics ``{prefix}_accuracy``, ``{prefix}_accuracy_std``, ``{prefix}_loss``, ..."""
        return {
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_accuracy_std": self.accuracy_std,
            f"{prefix}_loss": self.loss,
            f"{prefix}_loss_std": self.loss_std,
        }


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, which must be a tensor of logits: a model that gives a tuple or a dict
    (auxiliary outputs) is refused in one line, not deep inside the loss."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor):
        named = getattr(model, "source", model)  # the user's model inside a NoisyModel
        raise TypeError(
            f"{type(named).__name__} gives {type(logits).__name__} for a batch, not a tensor "
            "of logits (batch, classes): training and evaluation need one; wrap the model so "
            "that its forward returns the logits alone"
        )
    return logits


def _std(values: tuple[float, ...]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@torch.no_grad()
def accuracy_and_loss(
    model: nn.Module, split: Split, batch_size: int = 1024
) -> tuple[float, float]:
    """One pass over ``split`` in eval mode: (accuracy, mean cross-entropy)."""
    was_training = model.training
    model.eval()
    # summed where the batches are and read once: no GPU sync per batch
    correct = torch.zeros((), dtype=torch.int64, device=split.x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
    try:
        for start in range(0, len(split), batch_size):
            x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
            logits = logits_of(model, x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(split), loss_sum.item() / len(split)


def evaluate(
    model: NoisyModel, split: Split, *, repeats: int = 1, batch_size: int = 1024
) -> Evaluation:
    """Evaluate with the model's evaluation noise, ``repeats`` times when any site is active."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    was_training = model.training
    model.eval()
    noisy = any(site.is_active() for site in model.sites)
    model.train(was_training)
    runs = [accuracy_and_loss(model, split, batch_size) for _ in range(repeats if noisy else 1)]
    return Evaluation(tuple(a for a, _ in runs), tuple(loss for _, loss in runs))


def evaluate_clean(model: NoisyModel, split: Split, *, batch_size: int = 1024) -> Evaluation:
    """Evaluate with every noise site switched off."""
    with model.noise_disabled():
        return evaluate(model, split, batch_size=batch_size)
