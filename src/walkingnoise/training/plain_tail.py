"""The clean end of a stack's graph, run as plain calls on its copies' merged batch.

Copies of one model evaluating share every layer after their noisy site, so that part of the
graph runs as the model's own layers, called one after the other on the K·B rows at once
(``StackedModel``). Two things make it cheaper than the calls alone, without changing a bit of
what they compute:

- a ReLU acts in place on activations the tail made itself, not on a new tensor (not on
  those a hook saw, which it may keep, nor on those a backward pass may read);
- with ``class_major``, a closing Linear layer's output is copied class-major, (C, N) in
  memory, returned as the (N, C) view: a loss reduces over a few classes several times
  faster in that order (``stacked_loop._loss_and_correct``).

A module watched by a hook is called as itself, so the hook sees what it would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from walkingnoise.noise.weight import hooked_beyond_weight_noise

#: Modules that return their input, or a view of it, in evaluation mode.
_PASSING_ON = (nn.Flatten, nn.Identity, nn.Dropout)


class PlainTail:
    """Per-sample modules in evaluation mode, run one after the other on a merged batch."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)

    def __call__(self, x: torch.Tensor, *, class_major: bool = False) -> torch.Tensor:
        """``x`` (N, ...) through the modules; with ``class_major``, a closing Linear layer's
        output in (C, N) memory (see the module's docstring)."""
        owned = False  # whether x is memory the tail made, which no one else reads
        for i, module in enumerate(self.modules):
            if class_major and i == len(self.modules) - 1 and _writes_by_class(module, x):
                return _linear_by_class(module, x)
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


def _writes_by_class(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` is a Linear layer of PyTorch's, on (N, I) input, that no hook
    watches: one whose output may be written class-major."""
    return type(module) is nn.Linear and x.dim() == 2 and not hooked_beyond_weight_noise(module)


def _linear_by_class(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for x (N, I), copied into (C, N) memory and returned as its (N, C) view.
    Computed as the layer computes it, x·Wᵀ + b: BLAS picks other kernels for W·xᵀ, whose
    dot products of a few hundred terms and more round otherwise, and the logits would
    differ in their last bits from those of a stack without a plain-call tail."""
    return F.linear(x, layer.weight, layer.bias).t().contiguous().t()
