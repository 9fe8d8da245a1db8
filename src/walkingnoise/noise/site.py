"""The NoiseSite module: one point in a network's activation path where noise may be injected."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from walkingnoise.noise.models import NoiseLevel, NoiseModel

#: Length of every site's level vector: the most levels a noise model has (mixed: 2).
MAX_LEVELS = 2
#: Most elements drawn at once for a multi-executed site; more executions run in chunks.
EXECUTION_CHUNK_ELEMENTS = 1 << 22


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

    Multi-execution (Walking Noise's guided multi-execution): with ``executions`` n > 1 the site
    returns the mean of n noisy copies of its input, each with fresh noise, as if the layer
    before it ran n times on noisy hardware and the results were averaged. The copies go
    through the noise model itself (one draw of shape (k, *x.shape) per chunk of k executions,
    summed), so the mean is exact for every noise model, including mixed additive-first noise,
    whose mean is not a rescaled single draw; a Gaussian noise's std falls as 1/√n.
    """

    levels: torch.Tensor

    def __init__(self, info: SiteInfo) -> None:
        super().__init__()
        self.info = info
        self.noise: NoiseModel | None = None
        self.enabled = True
        self.generator: torch.Generator | None = None
        self.executions = 1
        self.register_buffer("levels", torch.zeros(MAX_LEVELS), persistent=False)

    def set_noise(self, noise: NoiseModel | None, sigma: NoiseLevel | None = None) -> None:
        """Switch noise on with ``noise`` at level ``sigma``, or off with ``noise=None``."""
        like = self.levels
        if noise is None or sigma is None:
            self.noise = None
            self.levels = torch.zeros(MAX_LEVELS, dtype=like.dtype, device=like.device)
            return
        values = noise.levels(sigma)
        self.noise = noise if noise.injects(values) else None
        padded = list(values) + [0.0] * (MAX_LEVELS - len(values))
        self.levels = torch.tensor(padded, dtype=like.dtype, device=like.device)

    def set_executions(self, executions: int) -> None:
        """Execute this site ``executions`` times with fresh noise and average (1: once)."""
        try:
            count = operator.index(executions)
        except TypeError:
            count = 0
        if isinstance(executions, bool) or count < 1:
            raise ValueError(
                f"site {self.info.index}: executions must be an integer ≥ 1, got {executions!r}"
            )
        self.executions = count

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
            return (self._noisy(x[0]), *x[1:])
        return self._noisy(x)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with noise; the mean of ``executions`` independent noisy copies when > 1."""
        assert self.noise is not None
        if self.executions == 1:
            return self.noise.apply(x, self.levels, generator=self.generator)
        chunk = max(1, min(self.executions, EXECUTION_CHUNK_ELEMENTS // max(x.numel(), 1)))
        total = torch.zeros_like(x)
        done = 0
        while done < self.executions:
            k = min(chunk, self.executions - done)
            copies = x.unsqueeze(0).expand(k, *x.shape)
            total = total + self.noise.apply(copies, self.levels, generator=self.generator).sum(0)
            done += k
        return total / self.executions

    def extra_repr(self) -> str:
        noise = self.noise.name if self.noise is not None else "off"
        text = f"{self.info.index}: {self.info.name}, noise={noise}, sigma={self.sigma}"
        return text + (f", executions={self.executions}" if self.executions > 1 else "")
