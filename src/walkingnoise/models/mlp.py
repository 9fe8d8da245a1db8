"""The fully connected network of Walking Noise ("TFC"): three hidden layers, ReLU, optional BN."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from walkingnoise.models.registry import register_model


class MLP(nn.Module):
    """Flatten, then [Linear, (BatchNorm1d), ReLU] per hidden layer, then a Linear output layer.

    With the default instrumentation this has 1 + 3·len(hidden) + 1 noise sites with BatchNorm
    (11 for three hidden layers) and 1 + 2·len(hidden) + 1 without (8).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (64, 64, 64),
        *,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of inputs of any shape (flattened first)."""
        return self.layers(x)


def _mlp_builder(width: int):
    def build(input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool) -> nn.Module:
        return MLP(math.prod(input_shape), num_classes, (width,) * 3, batchnorm=batchnorm)

    build.__doc__ = f"MLP with three hidden layers of {width} units."
    return build


register_model("mlp")(_mlp_builder(64))
register_model("mlp256")(_mlp_builder(256))
register_model("mlp1024")(_mlp_builder(1024))
