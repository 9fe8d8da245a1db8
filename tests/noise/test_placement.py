"""Placements: global, walking, explicit map; parsing; their effect on an instrumented model."""

from __future__ import annotations

import pytest
import torch

from walkingnoise.models import build_model
from walkingnoise.noise import (
    AdditiveNoise,
    GlobalPlacement,
    SiteMapPlacement,
    WalkingPlacement,
    instrument,
    parse_placement,
)

from .stats import assert_variance


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, batchnorm=True)
    return instrument(model, torch.randn(4, 1, 8, 8))


def _active(noisy) -> list[int]:
    return [site.info.index for site in noisy.sites if site.is_active()]


def test_global_puts_noise_everywhere(mlp) -> None:
    levels = mlp.set_noise(AdditiveNoise(), GlobalPlacement(), 0.2)
    assert sorted(levels) == list(range(11))
    assert _active(mlp) == list(range(11))


def test_global_can_exclude_batchnorm_sites(mlp) -> None:
    mlp.set_noise(AdditiveNoise(), GlobalPlacement(exclude_kinds=("batchnorm",)), 0.2)
    assert _active(mlp) == [0, 1, 3, 4, 6, 7, 9, 10]


@pytest.mark.parametrize("site", [0, 4, 10])
def test_walking_puts_noise_at_exactly_one_site(mlp, site: int) -> None:
    assert mlp.set_noise(AdditiveNoise(), WalkingPlacement(site), 0.2) == {site: 0.2}
    assert _active(mlp) == [site]


def test_walking_noise_at_the_output_adds_exactly_gaussian_noise_to_the_logits(mlp) -> None:
    torch.manual_seed(1)
    mlp.eval()
    x = torch.randn(20_000, 1, 8, 8)
    with mlp.noise_disabled():
        clean = mlp(x)
    mlp.set_noise(AdditiveNoise(), WalkingPlacement(10), 0.7)
    with torch.no_grad():
        assert_variance(mlp(x) - clean, 0.7**2)


def test_site_map_gives_each_site_its_own_sigma(mlp) -> None:
    levels = mlp.set_noise(AdditiveNoise(), SiteMapPlacement({1: 0.1, 7: 2.0}))
    assert levels == {1: 0.1, 7: 2.0}
    assert mlp.sites[7].sigma == pytest.approx((2.0,))
    assert _active(mlp) == [1, 7]
    with pytest.raises(ValueError, match="own σ"):
        SiteMapPlacement({1: 0.1}).resolve(mlp.site_table, 0.5)


@pytest.mark.parametrize("placement", [WalkingPlacement(11), SiteMapPlacement({-1: 0.1})])
def test_out_of_range_sites_are_rejected_with_the_range(mlp, placement) -> None:
    with pytest.raises(ValueError, match=r"sites 0\.\.10"):
        mlp.set_noise(
            AdditiveNoise(), placement, None if isinstance(placement, SiteMapPlacement) else 1.0
        )


def test_missing_sigma_is_rejected(mlp) -> None:
    with pytest.raises(ValueError, match="needs a sigma"):
        mlp.set_noise(AdditiveNoise(), GlobalPlacement(), None)


def test_changing_placement_switches_the_old_sites_off(mlp) -> None:
    mlp.set_noise(AdditiveNoise(), GlobalPlacement(), 0.2)
    mlp.set_noise(AdditiveNoise(), WalkingPlacement(3), 0.2)
    assert _active(mlp) == [3]
    mlp.clear_noise()
    assert _active(mlp) == []


def test_noise_disabled_restores_the_configuration(mlp) -> None:
    mlp.set_noise(AdditiveNoise(), WalkingPlacement(2), 0.2)
    with mlp.noise_disabled():
        assert _active(mlp) == []
    assert _active(mlp) == [2]


@pytest.mark.parametrize(
    "text", ["global", "global-except:batchnorm", "walking:3", "map:0=0.1;3=0.5"]
)
def test_parse_placement_round_trips(text: str) -> None:
    assert str(parse_placement(text)) == text


@pytest.mark.parametrize("text", ["", "walk:3", "walking:", "walking:x", "map:1", "global:2"])
def test_parse_placement_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="expected global"):
        parse_placement(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("walking:-1", "bad placement 'walking:-1': site indices count from 0 (the input), got -1"),
        ("map:2=0.1;-3=0.5", "bad placement 'map:2=0.1;-3=0.5': site indices count from 0"),
        ("map:0=0.1;0=5", "bad placement 'map:0=0.1;0=5': site 0 is given twice"),
    ],
)
def test_parse_placement_names_an_index_it_cannot_have(text: str, message: str) -> None:
    """A negative index is no site (not one "beyond" the model's sites); a site given twice
    in a map would silently keep only its last σ."""
    with pytest.raises(ValueError, match=r"^bad placement") as caught:
        parse_placement(text)
    assert str(caught.value).startswith(message)


def test_global_except_names_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown site kind"):
        parse_placement("global-except:batchnrom")
