"""Weight clamping: non-norm weights end in [-c, c]; BatchNorm parameters and biases stay."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from walkingnoise.data import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model
from walkingnoise.noise import instrument
from walkingnoise.training import Recipe, clamp_weights
from walkingnoise.training.clamp import clampable_weights
from walkingnoise.training.run import run_experiment

LIMIT = 0.0625  # 1/16: exact in float32, and below the initial 1/8 bound of 64-input layers


def _layers(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_training_with_clamp_keeps_weights_within_the_limit(digits: InMemoryDataset) -> None:
    recipe = Recipe(epochs=2, lr=1e-2, clamp=LIMIT)
    result = run_experiment(Experiment(noise="none", recipe=recipe), dataset=digits)
    model = result.model.source
    linears = _layers(model, nn.Linear)
    assert len(linears) == 4
    weights = torch.cat([m.weight.detach().flatten() for m in linears])
    assert weights.abs().max().item() <= LIMIT
    # The limit bound: some weights sit exactly at ±c (initial weights of the 64-wide layers
    # reach 1/8, and lr 1e-2 pushes further).
    assert (weights.abs() == LIMIT).sum().item() > 0
    # Biases are not clamped: the initial biases of a 64-input layer reach 1/8 > c.
    biases = torch.cat([m.bias.detach().flatten() for m in linears])
    assert biases.abs().max().item() > LIMIT
    # BatchNorm scales start at 1 and are not clamped.
    bns = _layers(model, nn.BatchNorm1d)
    assert all(bn.weight.detach().abs().min().item() > LIMIT for bn in bns)


def test_training_without_clamp_lets_weights_exceed_the_limit(digits: InMemoryDataset) -> None:
    recipe = Recipe(epochs=2, lr=1e-2)
    result = run_experiment(Experiment(noise="none", recipe=recipe), dataset=digits)
    weights = torch.cat([m.weight.detach().flatten() for m in _layers(result.model, nn.Linear)])
    assert weights.abs().max().item() > LIMIT


def test_clamp_weights_clamps_conv_and_linear_weights_only() -> None:
    model = build_model("lenet5", (1, 28, 28), 10, batchnorm=True)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(5.0)
        for bn in _layers(model, nn.modules.batchnorm._BatchNorm):
            bn.running_mean.fill_(3.0)
            bn.running_var.fill_(7.0)
    clamp_weights(model, 0.5)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert torch.all(module.weight == 0.5)
            assert torch.all(module.bias == 5.0)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert torch.all(module.weight == 5.0)
            assert torch.all(module.bias == 5.0)
            assert torch.all(module.running_mean == 3.0)
            assert torch.all(module.running_var == 7.0)


def test_clamp_weights_is_symmetric_and_leaves_small_weights() -> None:
    layer = nn.Linear(3, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-2.0, 0.1, 2.0]]))
    clamp_weights(layer, 1.0)
    assert layer.weight.tolist() == [[-1.0, pytest.approx(0.1), 1.0]]


def test_clamp_weights_through_an_instrumented_model_reaches_the_source() -> None:
    model = build_model("mlp", (1, 8, 8), 10, batchnorm=True)
    noisy = instrument(model, torch.zeros(2, 1, 8, 8))
    with torch.no_grad():
        model.layers[1].weight.fill_(3.0)
        model.layers[2].weight.fill_(5.0)
    clamp_weights(noisy, 1.0)
    assert torch.all(model.layers[1].weight == 1.0)
    assert torch.all(model.layers[2].weight == 5.0)


def test_clampable_weights_skips_norm_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    chosen = {id(w) for w in clampable_weights(model)}
    assert chosen == {id(model[0].weight), id(model[3].weight)}


def test_clampable_weights_does_not_run_a_weights_parametrization() -> None:
    """Reading a parametrized weight computes it: spectral norm's power iteration would move
    its buffers in training mode, so listing the weights must leave such a layer alone."""
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 2)).train()
    before = {name: b.clone() for name, b in model.named_buffers()}
    assert {id(w) for w in clampable_weights(model)} == {id(model[2].weight)}
    assert all(torch.equal(b, before[name]) for name, b in model.named_buffers())
