"""Per-site SQNR: additive noise at one site gives 10·log10(P_signal/σ²) there."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from walkingnoise.analysis.sqnr import sqnr_db, sqnr_profile
from walkingnoise.noise import instrument
from walkingnoise.noise.models import AdditiveNoise, MultiplicativeNoise
from walkingnoise.noise.placement import GlobalPlacement, WalkingPlacement

#: Standard errors allowed (as in tests/noise/stats.py).
Z = 6.0


def _model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    return net, torch.randn(3000, 5)


def _db_tolerance(values: int) -> float:
    """Z standard errors of 10·log10 of a mean of ``values`` squared N(0, σ²) draws.

    The mean square has relative standard error √(2/N); 10·log10 turns a relative error ε into
    10·ε/ln 10 dB.
    """
    return Z * 10 / math.log(10) * math.sqrt(2 / values)


@pytest.mark.parametrize("site", [0, 2, 3])
def test_additive_noise_at_one_site_matches_the_closed_form(site: int) -> None:
    net, x = _model()
    model = instrument(net, x[:2])
    sigma = 0.3
    with model.noise_disabled(), torch.no_grad():
        signal = {0: x, 2: torch.relu(net[0](x)), 3: net(x)}[site]
    profile = sqnr_profile(
        model, x, AdditiveNoise(), WalkingPlacement(site), sigma, repeats=2, batch_size=700
    )
    row = profile.set_index("site").loc[site]
    expected = 10 * math.log10(signal.square().mean().item() / sigma**2)
    assert row["injects"]
    assert row["signal_power"] == pytest.approx(signal.square().mean().item(), rel=1e-5)
    assert row["sqnr_db"] == pytest.approx(expected, abs=_db_tolerance(signal.numel() * 2))
    before = profile[profile["site"] < site]
    assert (before["sqnr_db"] == math.inf).all()
    assert not profile[profile["site"] != site]["injects"].any()


def test_noise_propagates_to_later_sites() -> None:
    net, x = _model()
    model = instrument(net, x[:2])
    profile = sqnr_profile(model, x, AdditiveNoise(), WalkingPlacement(0), 0.5)
    assert profile["sqnr_db"].map(math.isfinite).all()
    assert profile["site_name"].tolist() == [info.name for info in model.site_table]
    assert profile["values_per_input"].tolist() == [5, 16, 16, 3]


def test_multiplicative_noise_sqnr_does_not_depend_on_the_signal() -> None:
    net, x = _model()
    model = instrument(net, x[:2])
    sigma = 0.2
    profile = sqnr_profile(model, x, MultiplicativeNoise(), GlobalPlacement(), sigma)
    # at the input the noise is x·σ·z: SQNR = Σx² / (σ²·Σx²z²) → −10·log10(σ²). Given x,
    # Var(Σx²z²) = 2·Σx⁴ (Var z² = 2), so the relative standard error is √(2·Σx⁴) / Σx²
    relative = math.sqrt(2 * x.pow(4).sum().item()) / x.square().sum().item()
    tolerance = Z * 10 / math.log(10) * relative
    assert profile.loc[0, "sqnr_db"] == pytest.approx(-10 * math.log10(sigma**2), abs=tolerance)


def test_model_settings_are_restored() -> None:
    net, x = _model()
    model = instrument(net, x[:2])
    model.set_noise(AdditiveNoise(), WalkingPlacement(1), 0.1)
    generator = torch.Generator().manual_seed(0)
    model.set_generator(generator)
    model.train()
    sqnr_profile(
        model, x[:50], AdditiveNoise(), GlobalPlacement(), 1.0, generator=torch.Generator()
    )
    assert model.training
    assert model.generator is generator
    assert [site.sigma for site in model.sites] == [(), pytest.approx((0.1,)), (), ()]


def test_same_generator_gives_the_same_profile() -> None:
    net, x = _model()
    model = instrument(net, x[:2])
    runs = [
        sqnr_profile(
            model,
            x[:100],
            AdditiveNoise(),
            GlobalPlacement(),
            0.3,
            generator=torch.Generator().manual_seed(4),
        )["sqnr_db"].tolist()
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_sqnr_db_edge_cases() -> None:
    assert sqnr_db(1.0, 0.0) == math.inf
    assert math.isnan(sqnr_db(0.0, 0.0))
    assert sqnr_db(0.0, 1.0) == -math.inf
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_bad_arguments_are_named() -> None:
    net, x = _model()
    model = instrument(net, x[:2])
    with pytest.raises(ValueError, match="must act in evaluation"):
        sqnr_profile(model, x, AdditiveNoise(evaluation=False), GlobalPlacement(), 1.0)
    with pytest.raises(ValueError, match="repeats must be ≥ 1"):
        sqnr_profile(model, x, AdditiveNoise(), GlobalPlacement(), 1.0, repeats=0)
    with pytest.raises(ValueError, match="at least one input"):
        sqnr_profile(model, x[:0], AdditiveNoise(), GlobalPlacement(), 1.0)
