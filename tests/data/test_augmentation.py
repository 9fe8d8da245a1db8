"""The papers' training augmentation: random crop of the padded image, then a horizontal flip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from walkingnoise.data.augmentation import RandomCropFlip, augmentation_generator, black
from walkingnoise.data.cifar import CIFAR10_MEAN, CIFAR10_STD

H = W = 12
PADDING = 4


def _coded(b: int, channels: int = 1) -> torch.Tensor:
    """Images whose pixel (r, c) of channel ch holds 1 + r·W + c + ch·1000: any output pixel
    tells where in the source it came from (the padding holds 0 or less)."""
    grid = 1.0 + torch.arange(H).view(H, 1) * W + torch.arange(W).view(1, W)
    per_channel = torch.stack([grid + 1000 * ch for ch in range(channels)])
    return per_channel.expand(b, channels, H, W).clone()


def _decode(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row offset, column offset, flipped) of each output, read from two centre pixels."""
    r, c = H // 2, W // 2
    first = out[:, 0, r, c].long() - 1
    second = out[:, 0, r, c + 1].long() - 1
    flipped = second < first
    rows = first // W - r + PADDING
    columns = torch.where(flipped, first % W - (W - 1 - c), first % W - c) + PADDING
    return rows, columns, flipped


def _reference(x: torch.Tensor, rows, columns, flipped, fill) -> torch.Tensor:
    """Crop and flip one image at a time as torchvision would (pad, slice, flip)."""
    out = []
    for k in range(x.shape[0]):
        padded = torch.stack(
            [F.pad(x[k, ch], (PADDING,) * 4, value=fill[ch]) for ch in range(x.shape[1])]
        )
        crop = padded[:, rows[k] : rows[k] + H, columns[k] : columns[k] + W]
        out.append(crop.flip(-1) if flipped[k] else crop)
    return torch.stack(out)


def test_each_image_is_the_padded_image_cropped_and_maybe_flipped() -> None:
    fill = (-2.0, -3.0, -4.0)
    x = _coded(64, channels=3)
    out = RandomCropFlip(PADDING, fill)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    rows, columns, flipped = _decode(out)
    assert int(rows.min()) >= 0
    assert int(rows.max()) <= 2 * PADDING
    assert int(columns.min()) >= 0
    assert int(columns.max()) <= 2 * PADDING
    torch.testing.assert_close(out, _reference(x, rows, columns, flipped, fill), rtol=0, atol=0)


def test_offsets_are_uniform_and_half_the_images_are_flipped() -> None:
    """Over n images each of the 2p + 1 offsets has frequency 1/(2p + 1) and a flip 1/2, within
    4.5 binomial standard errors (a test that fails by chance about once in 10⁵ runs per count)."""
    n = 6000
    out = RandomCropFlip(PADDING)(_coded(n), torch.Generator().manual_seed(1))
    rows, columns, flipped = _decode(out)
    choices = 2 * PADDING + 1
    p = 1 / choices
    tolerance = 4.5 * math.sqrt(p * (1 - p) / n)
    for offsets in (rows, columns):
        frequencies = torch.bincount(offsets, minlength=choices).double() / n
        assert len(frequencies) == choices
        assert (frequencies - p).abs().max().item() < tolerance, frequencies
    assert abs(flipped.double().mean().item() - 0.5) < 4.5 * math.sqrt(0.25 / n)
    # rows, columns and flips are drawn independently: no correlation beyond chance
    for a, b in ((rows, columns), (rows, flipped), (columns, flipped)):
        correlation = torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()
        assert abs(correlation) < 4.5 / math.sqrt(n)


def test_the_same_generator_state_gives_the_same_augmentation() -> None:
    x = _coded(8)
    first = RandomCropFlip()(x, augmentation_generator(3))
    again = RandomCropFlip()(x, augmentation_generator(3))
    other = RandomCropFlip()(x, augmentation_generator(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_the_augmentation_generator_is_not_the_batch_order_generator() -> None:
    ordered = torch.rand(16, generator=torch.Generator().manual_seed(5))
    augmenting = torch.rand(16, generator=augmentation_generator(5))
    assert not torch.equal(ordered, augmenting)


def test_padding_holds_a_black_pixel_after_normalisation() -> None:
    assert black(CIFAR10_MEAN, CIFAR10_STD, normalized=False) == (0.0,)
    fill = black(CIFAR10_MEAN, CIFAR10_STD, normalized=True)
    for value, mean, std in zip(fill, CIFAR10_MEAN, CIFAR10_STD, strict=True):
        assert value == pytest.approx((0.0 - mean) / std)


def test_only_image_batches_are_cropped() -> None:
    with pytest.raises(ValueError, match=r"needs images \(B, C, H, W\), not \(4, 64\)"):
        RandomCropFlip()(torch.zeros(4, 64), torch.Generator())
