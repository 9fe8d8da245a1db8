"""The NoiseSite module: one point in a network's activation path where noise may be injected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from walkingnoise.noise.models import NoiseLevel, NoiseModel

#: Length of every site's level vector: the most levels a noise model has (mixed: 2).
MAX_LEVELS = 2


@dataclass(frozen=True)
class SiteInfo:
    """One row of the site table.

    Attributes:
        index: position in forward order; 0 is the network input.
        name: what the site follows, ``module.path:ClassName`` or ``scope:op`` for functions.
        kind: the category used for selection (``input``, ``linear``, ``conv``, ``batchnorm``,
            ``norm``, ``activation``, ``pool``, ``attention``, ``embedding``, ``add``, ``matmul``).
        shape: the activation's shape for the example input, batch dimension included.
    """

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]


class NoiseSite(nn.Module):
    """Injects the configured noise into the tensor passing through it; the identity otherwise.

    The noise levels live in a non-persistent buffer of ``MAX_LEVELS`` entries (unused ones are
    0), so σ can be changed at run time (``set_noise``) without rebuilding the model and without
    touching its ``state_dict``, and the levels of several models stack into one tensor.
    A tuple output (e.g. ``nn.MultiheadAttention``'s) gets noise on its first element. Draws
    come from ``generator`` when set, else from PyTorch's global generator.
    """

    levels: torch.Tensor

    def __init__(self, info: SiteInfo) -> None:
        super().__init__()
        self.info = info
        self.noise: NoiseModel | None = None
        self.enabled = True
        self.generator: torch.Generator | None = None
        self.register_buffer("levels", torch.zeros(MAX_LEVELS), persistent=False)

    def set_noise(self, noise: NoiseModel | None, sigma: NoiseLevel | None = None) -> None:
        """Switch noise on with ``noise`` at level ``sigma``, or off with ``noise=None``."""
        like = self.levels
        if noise is None or sigma is None:
            self.noise = None
            self.levels = torch.zeros(MAX_LEVELS, dtype=like.dtype, device=like.device)
            return
        values = noise.levels(sigma)
        self.noise = noise if any(v > 0 for v in values) else None
        padded = list(values) + [0.0] * (MAX_LEVELS - len(values))
        self.levels = torch.tensor(padded, dtype=like.dtype, device=like.device)

    @property
    def sigma(self) -> tuple[float, ...]:
        """The current levels as floats, one per ``noise.level_names`` (empty when off)."""
        if self.noise is None:
            return ()
        return tuple(self.levels.tolist()[: len(self.noise.level_names)])

    def is_active(self) -> bool:
        """Whether a forward pass in the current train/eval mode injects noise."""
        return self.enabled and self.noise is not None and self.noise.active_in(self.training)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | tuple:
        """Return ``x`` with noise when active, else ``x`` itself."""
        if not self.is_active():
            return x
        assert self.noise is not None
        if isinstance(x, tuple):
            return (self.noise.apply(x[0], self.levels, generator=self.generator), *x[1:])
        return self.noise.apply(x, self.levels, generator=self.generator)

    def extra_repr(self) -> str:
        noise = self.noise.name if self.noise is not None else "off"
        return f"{self.info.index}: {self.info.name}, noise={noise}, sigma={self.sigma}"
