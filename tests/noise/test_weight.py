"""Weight noise (Noisy Machines): σ = η · range per layer, stored weights untouched, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model
from walkingnoise.noise import instrument
from walkingnoise.noise.weight import (
    attach_weight_noise,
    noisy_weight_layers,
    remove_weight_noise,
    set_weight_noise,
    weight_noise_active,
    weight_noise_disabled,
    weight_noise_of,
    weight_noise_preserved,
)
from walkingnoise.training.checkpoint import checkpoint_bytes, read_checkpoint

from .stats import assert_mean, assert_variance


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seen_weight(layer: nn.Linear) -> torch.Tensor:
    """The weight a forward pass of a bias-free Linear uses: its output on the identity."""
    return layer(torch.eye(layer.in_features)).T


def _layer(n_in: int, n_out: int, scale: float, seed: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out, bias=False)
    with torch.no_grad():
        layer.weight.copy_(scale * torch.rand(n_out, n_in, generator=_generator(seed)) - scale / 3)
    return layer


@pytest.mark.parametrize("eta", [0.02, 0.06, 0.5])
def test_noise_std_is_eta_times_the_weight_range(eta: float) -> None:
    layer = _layer(200, 150, scale=3.0, seed=1)
    clean = layer.weight.detach().clone()
    attach_weight_noise(layer, eta, generator=_generator())
    noise = _seen_weight(layer) - clean
    std = eta * (clean.max() - clean.min()).item()
    assert_mean(noise, 0.0)
    assert_variance(noise, std**2)


def test_each_layer_uses_its_own_range() -> None:
    model = nn.Sequential(_layer(100, 100, 1.0, seed=2), _layer(100, 100, 10.0, seed=3))
    clean = [m.weight.detach().clone() for m in model]
    attach_weight_noise(model, 0.04, generator=_generator())
    for layer, weight in zip(model, clean, strict=True):
        noise = _seen_weight(layer) - weight
        assert_variance(noise, (0.04 * (weight.max() - weight.min()).item()) ** 2)


def test_stored_weights_are_unchanged_and_gradients_reach_them() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    x = torch.randn(8, 6)
    before = layer.weight.detach().clone()
    parameter = layer.weight
    (reference,) = torch.autograd.grad(layer(x).sum(), layer.weight)

    attach_weight_noise(layer, 0.1, generator=_generator())
    out = layer(x)
    out.sum().backward()
    assert layer.weight is parameter
    assert isinstance(layer.weight, nn.Parameter)
    assert torch.equal(layer.weight, before)
    # d/dW of sum(x (W + N)^T + b) does not depend on N: the clean weight gets the clean gradient.
    torch.testing.assert_close(layer.weight.grad, reference)
    # The output did see noisy weights.
    assert not torch.allclose(out, nn.functional.linear(x, before, layer.bias))


def test_noise_is_fresh_on_every_pass_and_reproducible_with_a_generator() -> None:
    layer = _layer(10, 10, 1.0, seed=4)
    attach_weight_noise(layer, 0.05, generator=_generator(7))
    first, second = _seen_weight(layer), _seen_weight(layer)
    assert not torch.equal(first, second)
    again = _layer(10, 10, 1.0, seed=4)
    attach_weight_noise(again, 0.05, generator=_generator(7))
    assert torch.equal(_seen_weight(again), first)


def test_training_and_evaluation_flags_decide_when_noise_is_drawn() -> None:
    layer = _layer(5, 5, 1.0, seed=5)
    clean = layer.weight.detach().clone()
    attach_weight_noise(layer, 0.1, training=False, evaluation=True, generator=_generator())
    layer.train()
    assert not weight_noise_active(layer)
    torch.testing.assert_close(_seen_weight(layer), clean)
    layer.eval()
    assert weight_noise_active(layer)
    assert not torch.allclose(_seen_weight(layer), clean)
    with weight_noise_disabled(layer):
        torch.testing.assert_close(_seen_weight(layer), clean)
    assert not torch.allclose(_seen_weight(layer), clean)


@pytest.mark.parametrize(("name", "shape"), [("lenet5", (1, 28, 28)), ("cnn_s", (1, 10, 49))])
def test_evaluation_only_noise_spares_a_fresh_convnet_in_training_mode(
    name: str, shape: tuple[int, ...]
) -> None:
    """A built-in conv net, fresh and in training mode, draws no evaluation-only weight noise."""
    model = build_model(name, shape, 10, batchnorm=False)
    attach_weight_noise(model, 0.5, training=False, evaluation=True, generator=_generator())
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_eta_zero_and_removal_leave_the_model_clean() -> None:
    layer = _layer(5, 5, 1.0, seed=6)
    clean = layer.weight.detach().clone()
    assert set_weight_noise(layer, 0.0) is None
    torch.testing.assert_close(_seen_weight(layer), clean)
    noise = set_weight_noise(layer, 0.2, generator=_generator())
    assert weight_noise_of(layer) is noise
    remove_weight_noise(layer)
    assert weight_noise_of(layer) is None
    torch.testing.assert_close(_seen_weight(layer), clean)


@pytest.mark.parametrize("remove", ["function", "handle"])
def test_a_deep_copy_has_weight_noise_of_its_own_that_can_be_removed(remove: str) -> None:
    model = nn.Sequential(_layer(6, 5, 1.0, seed=3), nn.ReLU(), _layer(5, 4, 2.0, seed=4))
    clean = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    original = attach_weight_noise(model, 0.3, evaluation=False, generator=_generator(5))
    twin = copy.deepcopy(model)
    noise = weight_noise_of(twin)
    assert noise is not None
    assert noise is not original
    assert (noise.eta, noise.training, noise.evaluation, noise.layers) == (
        0.3, True, False, original.layers,
    )  # fmt: skip
    # the copy's generator continues from the same state as the original's
    torch.testing.assert_close(_seen_weight(twin[0]), _seen_weight(model[0]))
    assert not torch.allclose(_seen_weight(twin[2]), clean[1])
    if remove == "function":
        remove_weight_noise(twin)
    else:
        noise.remove()
    assert weight_noise_of(twin) is None
    for layer, weight in zip((twin[0], twin[2]), clean, strict=True):
        assert not layer._forward_pre_hooks
        assert not layer._forward_hooks
        torch.testing.assert_close(_seen_weight(layer), weight)
    assert weight_noise_of(model) is original
    assert not torch.allclose(_seen_weight(model[2]), clean[1])


def test_attaching_again_replaces_the_noise_level() -> None:
    layer = _layer(100, 100, 1.0, seed=8)
    clean = layer.weight.detach().clone()
    attach_weight_noise(layer, 0.5, generator=_generator())
    second = attach_weight_noise(layer, 0.01, generator=_generator())
    assert weight_noise_of(layer) is second
    assert_variance(_seen_weight(layer) - clean, (0.01 * (clean.max() - clean.min()).item()) ** 2)


def test_conv_and_linear_layers_get_noise_but_not_normalisation() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3), nn.LayerNorm(3)
    )
    assert [name for name, _ in noisy_weight_layers(model)] == ["0", "3"]


def test_a_failing_forward_pass_leaves_the_stored_weight_in_place() -> None:
    layer = nn.Linear(3, 2)
    parameter = layer.weight
    attach_weight_noise(layer, 0.1, generator=_generator())
    with pytest.raises(RuntimeError):
        layer(torch.zeros(1, 4))  # wrong input size
    assert layer.weight is parameter


def test_an_instrumented_model_keeps_its_state_dict_and_checkpoint_clean() -> None:
    digits = load_dataset("digits")
    experiment = Experiment(noise="none", weight_noise=0.06, train_noise=True)
    clean = build_model("mlp", digits.input_shape, digits.num_classes)
    keys = list(clean.state_dict())
    noisy = instrument(clean, digits.train.x[:2])
    attach_weight_noise(noisy, 0.06, generator=_generator())
    noisy.eval()
    x = digits.test.x[:16]
    with torch.no_grad():
        assert not torch.equal(noisy(x), noisy(x))
        assert list(noisy.source.state_dict()) == keys
        _, restored = read_checkpoint(checkpoint_bytes(noisy, experiment, digits))
        # the stored weights are clean; the experiment's weight noise is set up again on load
        assert weight_noise_of(restored).eta == 0.06
        assert list(restored.source.state_dict()) == keys
        restored.eval()
        with weight_noise_disabled(noisy), weight_noise_disabled(restored):
            torch.testing.assert_close(restored(x), noisy(x))


def test_multihead_attention_is_left_clean_not_silently_listed() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.MultiheadAttention(8, 2))
    assert [name for name, _ in noisy_weight_layers(model)] == ["0"]


def test_noise_disabled_also_reads_weights_clean() -> None:
    torch.manual_seed(0)
    noisy = instrument(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.zeros(2, 4)).eval()
    attach_weight_noise(noisy, 0.3, generator=_generator())
    x = torch.randn(8, 4)
    with torch.no_grad():
        with noisy.noise_disabled():
            torch.testing.assert_close(noisy(x), noisy.source(x))
        assert not torch.equal(noisy(x), noisy(x))  # on again after the block


def test_weight_noise_set_inside_a_preserved_block_is_undone() -> None:
    """Every layer gets back the noise object it carried, with its settings, so a handle held
    outside the block still works; a layer without noise stays without."""
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.Linear(3, 2))
    generator = torch.Generator().manual_seed(0)
    handle = attach_weight_noise(model[0], 0.1, training=False, generator=generator)
    with weight_noise_preserved(model):
        set_weight_noise(model, 0.5)
        handle.eta = 0.7
        assert weight_noise_of(model[1]).eta == 0.5
    assert weight_noise_of(model) is handle
    assert (handle.eta, handle.training, handle.evaluation) == (0.1, False, True)
    assert handle.generator is generator
    assert weight_noise_of(model[1]) is None
    model.eval()  # the noise is on in evaluation only
    with handle.disabled():
        assert torch.equal(model(torch.ones(1, 4)), model(torch.ones(1, 4)))
    assert not torch.equal(model(torch.ones(1, 4)), model(torch.ones(1, 4)))
    handle.remove()
    assert weight_noise_of(model) is None


def test_a_model_without_weight_noise_has_none_after_a_preserved_block() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with weight_noise_preserved(model):
        set_weight_noise(model, 0.5)
    assert weight_noise_of(model) is None


class _OwnLayer(nn.Module):
    """A layer of the user's own that torch.fx traces through: it reads ``self.weight``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


class _WithOwnLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.own, self.out = _OwnLayer(), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.own(x)))


def test_a_layer_fx_traced_through_is_refused_not_left_clean() -> None:
    """fx reads such a layer's weight without calling the layer, so its hooks would never add
    the noise: attaching says so, naming the layer; a model instrumented with hooks calls it,
    and gets the noise."""
    torch.manual_seed(0)
    traced = instrument(_WithOwnLayer(), torch.randn(2, 8), method="fx")
    with pytest.raises(ValueError, match=r"weight noise on net\.own: torch\.fx traced through"):
        attach_weight_noise(traced, 0.1)
    assert weight_noise_of(traced) is None
    hooked = instrument(_WithOwnLayer(), torch.randn(2, 8), method="hooks")
    attach_weight_noise(hooked, 0.5, generator=_generator())
    x = torch.randn(3, 8)
    with torch.no_grad():
        noisy = hooked.eval()(x)
        with hooked.noise_disabled():
            clean = hooked(x)
        remove_weight_noise(hooked.net.out)  # the own layer alone still makes it noisy
        assert not torch.allclose(hooked(x), clean)
    assert not torch.allclose(noisy, clean)


def test_layers_inside_a_module_fx_calls_whole_are_called_by_it() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=8, batch_first=True))
    model = instrument(net, torch.randn(2, 3, 8), method="fx")
    noise = attach_weight_noise(model, 0.1)
    assert "net.0.linear1" in noise.layers
