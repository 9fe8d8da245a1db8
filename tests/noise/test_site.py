"""NoiseSite: train/eval flags, σ at run time, state_dict, tuple outputs."""

from __future__ import annotations

import pytest
import torch

from walkingnoise.noise.models import AdditiveNoise, MultiplicativeNoise
from walkingnoise.noise.site import NoiseSite, SiteInfo

from .stats import assert_variance


def _site() -> NoiseSite:
    return NoiseSite(SiteInfo(index=0, name="input", kind="input", shape=(1, 4)))


@pytest.mark.parametrize(
    ("training", "evaluation"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_train_and_eval_flags(training: bool, evaluation: bool) -> None:
    site = _site()
    site.set_noise(AdditiveNoise(training=training, evaluation=evaluation), 1.0)
    x = torch.zeros(1000)
    site.train()
    assert site.is_active() is training
    assert torch.equal(site(x), x) is not training
    site.eval()
    assert site.is_active() is evaluation
    assert torch.equal(site(x), x) is not evaluation


def test_sigma_changes_at_run_time_without_rebuilding() -> None:
    torch.manual_seed(0)
    site = _site()
    x = torch.zeros(200_000)
    for sigma in (0.1, 10.0, 0.5):
        site.set_noise(AdditiveNoise(), sigma)
        assert site.sigma == pytest.approx((sigma,))
        assert_variance(site(x), sigma**2)


def test_zero_sigma_and_off_return_the_input_itself() -> None:
    site = _site()
    x = torch.randn(10)
    site.set_noise(AdditiveNoise(), 0.0)
    assert site(x) is x
    site.set_noise(None)
    assert site(x) is x
    assert site.sigma == ()


def test_disabled_site_injects_nothing() -> None:
    site = _site()
    site.set_noise(AdditiveNoise(), 1.0)
    site.enabled = False
    x = torch.randn(10)
    assert site(x) is x


def test_levels_are_not_part_of_the_state_dict() -> None:
    site = _site()
    site.set_noise(MultiplicativeNoise(), 0.3)
    assert site.state_dict() == {}


def test_tuple_output_gets_noise_on_its_first_element() -> None:
    site = _site()
    site.set_noise(AdditiveNoise(), 1.0)
    first, second = torch.zeros(100), torch.zeros(100)
    out = site((first, second))
    assert isinstance(out, tuple)
    assert not torch.equal(out[0], first)
    assert out[1] is second


def test_levels_follow_the_module_dtype_and_device() -> None:
    site = _site().to(torch.float64)
    site.set_noise(AdditiveNoise(), 0.5)
    y = site(torch.zeros(10, dtype=torch.float64))
    assert y.dtype == torch.float64
