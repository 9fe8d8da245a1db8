"""Training-time data augmentation of the published experiments, on batches of tensors.

A dataset names its augmentation (``InMemoryDataset.augmentation``); training applies it to
each training batch when the recipe asks for it (``Recipe.augment``), drawing from a generator
of its own so that the batches (their order) stay those of training without augmentation.
Images are augmented here; speech, whose augmentation acts on the waveforms before the
features, in :mod:`walkingnoise.data.speech_augmentation`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["Augmentation", "RandomCropFlip", "augmentation_generator", "black"]


class Augmentation(Protocol):
    """Maps a training batch (B, ...) to an augmented batch of the same shape, drawing from
    ``generator``. ``index`` (B,) holds the batch's positions in the training split, for an
    augmentation that starts from the data the inputs were computed from (speech: waveforms)."""

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class RandomCropFlip:
    """A random crop of the image padded by ``padding`` pixels on every side, then a
    horizontal flip with probability 1/2, per sample: torchvision's ``RandomCrop(size,
    padding)`` and ``RandomHorizontalFlip()`` as the papers apply them to the raw images.

    Attributes:
        padding: pixels added on each side before cropping back to the image size.
        fill: per channel, the value a raw black pixel has after the dataset's normalisation
            (what the padding holds); one value is used for every channel.
    """

    padding: int = 4
    fill: tuple[float, ...] = (0.0,)

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Crop and flip each image of ``x`` (B, C, H, W) independently (``index`` unused)."""
        if x.ndim != 4:
            raise ValueError(f"RandomCropFlip needs images (B, C, H, W), not {tuple(x.shape)}")
        b, c, h, w = x.shape
        p = self.padding
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator).to(x.device)
        flipped = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device)
        padded = fill.view(1, -1, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        across = torch.arange(w, device=x.device)
        columns = torch.where(flipped.unsqueeze(1), w - 1 - across, across)
        rows = offsets[:, :1] + torch.arange(h, device=x.device)
        columns = offsets[:, 1:] + columns
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        # advanced indices around a slice: the result is (B, H, W, C)
        picked = padded[batch, :, rows.unsqueeze(2), columns.unsqueeze(1)]
        return picked.permute(0, 3, 1, 2).contiguous()


def black(mean: Sequence[float], std: Sequence[float], normalized: bool) -> tuple[float, ...]:
    """Per channel, the value of a raw black pixel after (x - mean) / std, or 0 if the
    inputs are not normalised: what a crop's padding holds."""
    if not normalized:
        return (0.0,)
    return tuple(-m / s for m, s in zip(mean, std, strict=True))


def augmentation_generator(seed: int) -> torch.Generator:
    """The generator of a training's augmentation, derived from its seed: independent of the
    generator that orders its batches."""
    derived = int(hashlib.sha256(f"{seed}:augmentation".encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(derived)
