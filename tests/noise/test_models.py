"""Noise models against their closed forms: mean, variance, order, gradient, overflow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from walkingnoise.noise.instrument import instrument
from walkingnoise.noise.models import (
    AdditiveNoise,
    MixedNoise,
    MultiplicativeNoise,
    NoiseModel,
    make_noise_model,
)
from walkingnoise.noise.placement import WalkingPlacement
from walkingnoise.training.stacked import StackedModel

from .stats import assert_fraction, assert_mean, assert_variance

N = 1_000_000


def _apply(model: NoiseModel, x: torch.Tensor, *levels: float) -> torch.Tensor:
    return model.apply(x, torch.tensor(levels))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def test_additive_is_x_plus_gaussian() -> None:
    x = torch.full((N,), 0.7)
    noise = _apply(AdditiveNoise(), x, 0.3) - x
    assert_mean(noise, 0.0)
    assert_variance(noise, 0.3**2)
    assert_fraction(noise.abs() < 0.3, math.erf(1 / math.sqrt(2)))


def test_multiplicative_is_x_times_gaussian_around_one() -> None:
    x = torch.full((N,), -1.5)
    y = _apply(MultiplicativeNoise(), x, 0.4)
    assert_mean(y, -1.5)
    assert_variance(y, (1.5 * 0.4) ** 2)
    assert_fraction((y / x - 1).abs() < 0.4, math.erf(1 / math.sqrt(2)))


def test_multiplicative_noise_leaves_zero_at_zero() -> None:
    x = torch.zeros(1000)
    assert torch.equal(_apply(MultiplicativeNoise(), x, 5.0), x)


@pytest.mark.parametrize(
    ("order", "variance"),
    [
        # x·m + n: x²σ_m² + σ_a²
        ("mul_first", 2.0**2 * 0.5**2 + 1.0**2),
        # (x + n)·m: E[(x+n)²]·E[m²] − x² = (x² + σ_a²)(1 + σ_m²) − x²
        ("add_first", (2.0**2 + 1.0**2) * (1 + 0.5**2) - 2.0**2),
    ],
)
def test_mixed_noise_matches_its_order(order: str, variance: float) -> None:
    x = torch.full((N,), 2.0)
    y = _apply(MixedNoise(order=order), x, 0.5, 1.0)
    assert_mean(y, 2.0)
    assert_variance(y, variance)


def test_mixed_orders_differ_measurably() -> None:
    x = torch.full((N,), 2.0)
    first = _apply(MixedNoise(order="mul_first"), x, 0.5, 1.0).var().item()
    second = _apply(MixedNoise(order="add_first"), x, 0.5, 1.0).var().item()
    assert second - first == pytest.approx(0.25, abs=0.05)


def test_mixed_amplitude_and_ratio() -> None:
    model = MixedNoise(ratio=0.25)
    assert model.levels(2.0) == pytest.approx((1.5, 0.5))
    assert model.levels((0.1, 0.2)) == pytest.approx((0.1, 0.2))
    assert model.levels([0.1, 0.2]) == pytest.approx((0.1, 0.2))  # a list is a pair too
    with pytest.raises(ValueError, match="one σ"):
        AdditiveNoise().levels([0.1, 0.2])
    with pytest.raises(ValueError, match="pair"):
        MixedNoise().levels(1.0)


def test_fresh_independent_sample_per_element_and_pass() -> None:
    x = torch.zeros(N)
    first = _apply(AdditiveNoise(), x, 1.0)
    second = _apply(AdditiveNoise(), x, 1.0)
    assert not torch.equal(first, second)
    # neighbouring elements and the two passes are uncorrelated: |r| ≲ Z/√N
    limit = 6.0 / math.sqrt(N)
    assert abs(torch.corrcoef(torch.stack([first[:-1], first[1:]]))[0, 1].item()) < limit
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item()) < limit


@pytest.mark.parametrize(
    ("model", "levels"),
    [
        (AdditiveNoise(gradient="forward_only"), (0.5,)),
        (MultiplicativeNoise(gradient="forward_only"), (0.5,)),
        (MixedNoise(order="mul_first", gradient="forward_only"), (0.5, 0.5)),
        (MixedNoise(order="add_first", gradient="forward_only"), (0.5, 0.5)),
    ],
)
def test_forward_only_gradient_is_identity(model: NoiseModel, levels: tuple[float, ...]) -> None:
    x = torch.randn(1000, requires_grad=True)
    y = model.apply(x, torch.tensor(levels))
    y.sum().backward()
    assert not torch.equal(y.detach(), x.detach())
    assert torch.equal(x.grad, torch.ones_like(x))


def test_through_noise_gradient_of_multiplicative_is_the_sample() -> None:
    x = (torch.rand(10_000) + 0.5).requires_grad_()
    y = MultiplicativeNoise(gradient="through_noise").apply(x, torch.tensor([0.5]))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y / x).detach())


def test_through_noise_gradient_of_additive_is_one() -> None:
    x = torch.randn(1000, requires_grad=True)
    AdditiveNoise(gradient="through_noise").apply(x, torch.tensor([2.0])).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("order", ["mul_first", "add_first"])
def test_through_noise_gradient_of_mixed_is_the_multiplicative_sample(order: str) -> None:
    x = torch.randn(N, requires_grad=True)
    MixedNoise(order=order, gradient="through_noise").apply(
        x, torch.tensor([0.3, 2.0])
    ).sum().backward()
    assert_mean(x.grad, 1.0)
    assert_variance(x.grad, 0.3**2)


@pytest.mark.parametrize("gradient", ["forward_only", "through_noise"])
@pytest.mark.parametrize(
    ("model", "levels"),
    [
        (AdditiveNoise, (1e13,)),
        (MultiplicativeNoise, (1e13,)),
        (lambda **kw: MixedNoise(order="mul_first", **kw), (1e13, 1e13)),
        (lambda **kw: MixedNoise(order="add_first", **kw), (1e13, 1e13)),
    ],
)
def test_huge_sigma_stays_finite(model, levels: tuple[float, ...], gradient: str) -> None:
    x = torch.randn(100_000, requires_grad=True)
    y = model(gradient=gradient).apply(x, torch.tensor(levels))
    (y * 1e-20).sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all()
    assert y.detach().abs().max().item() > 1e12  # the noise really is that large


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_invalid_sigma_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="sigma"):
        AdditiveNoise().levels(bad)
    with pytest.raises(ValueError, match="sigma_add"):
        MixedNoise().levels((0.1, bad))


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="one σ"):
        AdditiveNoise().levels((0.1, 0.2))
    with pytest.raises(ValueError, match="order"):
        MixedNoise(order="sideways")
    with pytest.raises(ValueError, match="ratio"):
        MixedNoise(ratio=1.0)
    with pytest.raises(ValueError, match="gradient"):
        AdditiveNoise(gradient="backward")
    with pytest.raises(ValueError, match="known: additive, multiplicative, mixed"):
        make_noise_model("gaussian")


def test_make_noise_model_by_name() -> None:
    model = make_noise_model("mixed", order="add_first", ratio=0.5, training=False)
    assert isinstance(model, MixedNoise)
    assert (model.order, model.ratio, model.training, model.evaluation) == (
        "add_first",
        0.5,
        False,
        True,
    )


def test_additive_noise_is_one_computation_with_either_gradient_rule() -> None:
    """∂y/∂x = 1 for additive noise under both rules, so the cheaper forward-only path serves
    both; multiplicative noise differentiates through m by default (the published code)."""
    z = (torch.randn(1000),)
    outputs = []
    for rule in ("forward_only", "through_noise"):
        x = torch.linspace(-2, 2, 1000, requires_grad=True)
        y = AdditiveNoise(gradient=rule).apply(x, torch.tensor([0.3]), z)
        (y * torch.arange(1000.0)).sum().backward()
        outputs.append((y.detach(), x.grad))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], torch.arange(1000.0))
    assert torch.equal(outputs[1][1], torch.arange(1000.0))
    assert not AdditiveNoise(gradient="through_noise").differentiates_noise
    assert MultiplicativeNoise().differentiates_noise
    assert not MultiplicativeNoise(gradient="forward_only").differentiates_noise


@pytest.mark.parametrize(
    "model",
    [
        AdditiveNoise(),
        MultiplicativeNoise(),
        MixedNoise(order="mul_first"),
        MixedNoise(order="add_first"),
    ],
    ids=["additive", "multiplicative", "mul_first", "add_first"],
)
def test_separable_noise_is_its_directions_scaled_by_its_coefficients(model: NoiseModel) -> None:
    """y − x = Σ_t c_t(levels) · d_t(x, z) for every member's levels: the directions read no
    level, so a linear layer maps them once for all σ (float32 rounding apart)."""
    x = torch.randn(1, 1000) * 3
    z = tuple(torch.randn(1, 1000) for _ in range(model.draws))
    levels = torch.tensor([[0.1, 2.0], [3.0, 0.5], [0.0, 0.0], [7.0, 1e-3]])
    if model.draws == 1:
        levels[:, 1] = 0.0
    changes = model.sample(x, levels, z) - x
    directions = model.directions(x, z)
    coefficients = model.coefficients(levels)
    assert model.separable
    assert coefficients.shape == (4, len(directions))
    expected = sum(coefficients[:, t : t + 1] * d for t, d in enumerate(directions))
    torch.testing.assert_close(expected, changes, rtol=1e-5, atol=1e-4)
    assert torch.count_nonzero(expected[2]) == 0  # σ = 0: no change


def test_a_noise_model_with_arithmetic_of_its_own_is_not_separable() -> None:
    """A user's subclass that changes ``sample`` keeps the site's own arithmetic: the
    directions it inherits need not describe it."""

    class Clipped(AdditiveNoise):
        def sample(self, x, levels, z):
            return super().sample(x, levels, z).clamp(-1, 1)

    class Scaled(MultiplicativeNoise):
        def directions(self, x, z):
            return super().directions(x, z)

    class Applied(MultiplicativeNoise):  # what a site and a stack's site both call
        def apply(self, x, levels, z=None, *, generator=None):
            return super().apply(x, levels, z, generator=generator).clamp(-1, 1)

    assert AdditiveNoise.separable
    assert not Clipped.separable
    assert not Applied.separable
    assert Scaled.separable  # it says how it separates
    assert not NoiseModel.separable
    with pytest.raises(NotImplementedError, match="not separable"):
        NoiseModel.directions(Clipped(), torch.zeros(1), (torch.zeros(1),))


class _Offset(AdditiveNoise):
    """A user's noise model that shifts the activations by one even at σ = 0."""

    def perturbation(self, x, levels, z, *, scratch=False):
        return super().perturbation(x, levels, z, scratch=scratch) + 1

    def injects(self, levels) -> bool:
        return True


def test_a_site_injects_where_some_level_is_above_zero_or_where_its_model_says() -> None:
    """The rule every site and stack follows (``NoiseModel.injects``): σ = 0 is no noise, for
    every model; a user's model that does something at σ = 0 says so, and its site stays on
    there, alone and in a stack."""
    assert not AdditiveNoise().injects((0.0,))
    assert AdditiveNoise().injects((0.5,))
    assert not MixedNoise().injects((0.0, 0.0))
    assert MixedNoise().injects((0.0, 0.1))
    x = torch.randn(40, 6)
    model = instrument(nn.Sequential(nn.Linear(6, 4)).eval(), x[:2])
    stack = StackedModel([model] * 2).eval()
    stack.set_noise([(_Offset(), {1: 0.0}), (None, {})])
    model.set_noise(_Offset(), WalkingPlacement(1), 0.0)
    with torch.no_grad():
        alone = model(x)
        model.clear_noise()
        clean = model(x)
        out = stack(x, shared=True)
    torch.testing.assert_close(alone, clean + 1)
    torch.testing.assert_close(out[0], clean + 1)
    assert torch.equal(out[1], clean)
