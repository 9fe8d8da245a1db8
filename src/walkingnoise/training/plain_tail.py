"""The clean end of a stack's graph, run as plain calls on its copies' merged batch.

Copies of one model evaluating share every layer after their noisy site, so that part of the
graph runs as the model's own layers, called one after the other on the K·B rows at once
(``StackedModel``). A ReLU there acts in place on activations the tail made itself, which no
one else reads, instead of writing a new tensor: the same numbers with one pass over fresh
memory fewer. An activation a hook saw, or one a backward pass may read, is not overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from walkingnoise.noise.weight import hooked_beyond_weight_noise

#: Modules that return their input, or a view of it, in evaluation mode.
_PASSING_ON = (nn.Flatten, nn.Identity, nn.Dropout)


class PlainTail:
    """Per-sample modules in evaluation mode, run one after the other on a merged batch."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, ...) through the modules (see the module's docstring)."""
        owned = False  # whether x is memory the tail made, which no one else reads
        for module in self.modules:
            if owned and type(module) is nn.ReLU and not hooked_beyond_weight_noise(module):
                x = torch.relu_(x)
                continue
            out = module(x)
            if hooked_beyond_weight_noise(module) or out.requires_grad:
                owned = False  # a hook may keep it, a backward pass may read it
            elif out is not x and type(module) not in _PASSING_ON:
                owned = True
            x = out
        return x
