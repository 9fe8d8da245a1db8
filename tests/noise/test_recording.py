"""Recording site outputs: clean outputs match the layers', noisy ones carry the noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walkingnoise.noise import AdditiveNoise, WalkingPlacement, instrument
from walkingnoise.noise.recording import recording, site_outputs


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_clean_outputs_are_the_layer_outputs() -> None:
    clean = _model()
    x = torch.randn(50, 4)
    noisy = instrument(clean, x[:2])
    outputs = site_outputs(noisy, x, [0, 1, 2], batch_size=16)
    assert torch.equal(outputs[0], x)
    assert torch.allclose(outputs[1], clean[0](x))
    assert torch.allclose(outputs[2], torch.relu(clean[0](x)))


def test_noisy_output_differs_from_the_clean_one_by_the_noise() -> None:
    x = torch.randn(4000, 4)
    noisy = instrument(_model(), x[:2])
    noisy.set_noise(AdditiveNoise(evaluation=True), WalkingPlacement(1), 0.5)
    with noisy.noise_disabled():
        clean = site_outputs(noisy, x, [1])[1]
    noisy_out = site_outputs(noisy, x, [1])[1]
    difference = noisy_out - clean
    n = difference.numel()
    # the sample std of n normal draws has a standard error of σ/√(2n)
    assert abs(difference.std().item() - 0.5) < 5 * 0.5 / (2 * n) ** 0.5


def test_hooks_are_removed_after_the_block() -> None:
    x = torch.randn(8, 4)
    noisy = instrument(_model(), x[:2])
    with recording(noisy, [2]) as records:
        noisy(x)
    noisy(x)
    assert len(records[2]) == 1


def test_unknown_site_is_named() -> None:
    noisy = instrument(_model(), torch.randn(2, 4))
    with pytest.raises(ValueError, match="site 9 does not exist"), recording(noisy, [9]):
        pass
