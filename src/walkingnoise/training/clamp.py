"""Weight clamping: keep weights within [-c, c] after each optimizer step."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

from walkingnoise.noise.kinds import module_kind


def clampable_weights(model: nn.Module) -> list[torch.Tensor]:
    """The ``weight`` parameters of every module that is not a normalisation layer; a
    parametrized weight is no parameter, and is not computed (which could change its state)."""
    weights = []
    for module in model.modules():
        if module_kind(module) in ("batchnorm", "norm") or is_parametrized(module, "weight"):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            weights.append(weight)
    return weights


@torch.no_grad()
def clamp_weights(model: nn.Module, limit: float) -> None:
    """Clamp weights in place to [-limit, limit]; BatchNorm/LayerNorm parameters and biases stay."""
    for weight in clampable_weights(model):
        weight.clamp_(-limit, limit)
