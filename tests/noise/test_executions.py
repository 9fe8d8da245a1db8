"""Multi-execution at a site: the mean of n noisy executions, its std falling as 1/√n."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walkingnoise.noise import instrument
from walkingnoise.noise.models import AdditiveNoise, MixedNoise, MultiplicativeNoise, NoiseModel
from walkingnoise.noise.placement import GlobalPlacement, WalkingPlacement
from walkingnoise.noise.site import NoiseSite, SiteInfo

from .stats import Z, assert_mean, assert_variance

X_VALUE = 2.0
SIGMA_MUL, SIGMA_ADD = 0.3, 0.5


def _site(noise: NoiseModel, sigma: float | tuple[float, float], executions: int) -> NoiseSite:
    site = NoiseSite(SiteInfo(index=0, name="input", kind="input", shape=(1, 4)))
    site.set_noise(noise, sigma)
    site.set_executions(executions)
    site.eval()
    return site


def _single_variance(name: str) -> float:
    """Variance of one noisy execution of x = X_VALUE (closed forms of the noise models)."""
    x, m2, a2 = X_VALUE, SIGMA_MUL**2, SIGMA_ADD**2
    return {
        "additive": a2,
        "multiplicative": x**2 * m2,
        "mul_first": x**2 * m2 + a2,
        # (x + n)·m − x = x(m − 1) + n·m: variance x²σ_m² + σ_a²(1 + σ_m²)
        "add_first": x**2 * m2 + a2 * (1 + m2),
    }[name]


CASES = {
    "additive": (AdditiveNoise(), SIGMA_ADD),
    "multiplicative": (MultiplicativeNoise(), SIGMA_MUL),
    "mul_first": (MixedNoise(order="mul_first"), (SIGMA_MUL, SIGMA_ADD)),
    "add_first": (MixedNoise(order="add_first"), (SIGMA_MUL, SIGMA_ADD)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("executions", [1, 4, 9])
def test_mean_of_n_executions_has_variance_over_n(case: str, executions: int) -> None:
    torch.manual_seed(executions)
    noise, sigma = CASES[case]
    site = _site(noise, sigma, executions)
    y = site(torch.full((200_000,), X_VALUE))
    assert_mean(y, X_VALUE)  # every model is unbiased, and so is the mean of its executions
    assert_variance(y, _single_variance(case) / executions)


def test_std_falls_as_one_over_root_n_through_a_model() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1))
    x = torch.randn(40_000, 6)
    noisy = instrument(net, x[:2]).eval()
    noisy.set_noise(AdditiveNoise(), WalkingPlacement(2), 1.0)  # noise after the ReLU
    with noisy.noise_disabled(), torch.no_grad():
        clean = noisy(x)
    stds = {}
    for n in (1, 16):
        noisy.set_executions({2: n})
        with torch.no_grad():
            stds[n] = (noisy(x) - clean).std().item()
    # the output noise is w·n̄, Gaussian: each sample std has a relative standard error of
    # 1/√(2N), so the ratio of two independent ones has 1/√N
    tolerance = Z / len(x) ** 0.5
    assert stds[16] / stds[1] == pytest.approx(1 / 4, rel=tolerance)


def test_executions_in_chunks_keep_the_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    x = torch.full((100_000,), X_VALUE)
    monkeypatch.setattr("walkingnoise.noise.site.EXECUTION_CHUNK_ELEMENTS", 2 * x.numel())
    site = _site(MixedNoise(order="add_first"), (SIGMA_MUL, SIGMA_ADD), 9)  # chunks 2,2,2,2,1
    y = site(x)
    assert_mean(y, X_VALUE)
    assert_variance(y, _single_variance("add_first") / 9)


def test_forward_only_gradient_stays_the_identity() -> None:
    site = _site(MultiplicativeNoise(gradient="forward_only"), 0.5, 5)
    site.train()
    x = torch.randn(100, requires_grad=True)
    site(x).sum().backward()
    assert torch.allclose(x.grad, torch.ones(100))


def test_through_noise_gradient_is_the_mean_multiplier() -> None:
    site = _site(MultiplicativeNoise(gradient="through_noise"), 0.5, 5)
    site.train()
    site.generator = torch.Generator().manual_seed(1)
    x = torch.randn(100, requires_grad=True)
    y = site(x)
    y.sum().backward()
    # y = x·m̄, so ∂y/∂x = m̄ = y/x
    assert torch.allclose(x.grad, (y / x).detach(), rtol=1e-4)


def test_one_execution_draws_exactly_what_a_plain_site_draws() -> None:
    plain, once = _site(AdditiveNoise(), 1.0, 1), _site(AdditiveNoise(), 1.0, 1)
    plain.generator = torch.Generator().manual_seed(3)
    once.generator = torch.Generator().manual_seed(3)
    x = torch.randn(32)
    expected = AdditiveNoise().apply(x, plain.levels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(once(x), expected)


def test_inactive_site_returns_its_input_whatever_the_executions() -> None:
    site = _site(AdditiveNoise(), 0.0, 8)
    x = torch.randn(10)
    assert site(x) is x


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_executions_must_be_a_positive_integer(bad: object) -> None:
    site = _site(AdditiveNoise(), 1.0, 1)
    with pytest.raises(ValueError, match="executions must be an integer ≥ 1"):
        site.set_executions(bad)  # type: ignore[arg-type]
    assert site.executions == 1


def test_model_sets_and_clears_executions_per_site() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    noisy = instrument(net, torch.zeros(2, 3))
    noisy.set_noise(AdditiveNoise(), GlobalPlacement(), 0.1)
    noisy.set_executions({0: 3, 2: 5})
    assert noisy.executions == {0: 3, 2: 5}
    assert [site.executions for site in noisy.sites] == [3, 1, 5, 1]
    assert "executions=5" in repr(noisy.sites[2])
    noisy.clear_executions()
    assert noisy.executions == {}


def test_model_rejects_unknown_sites_and_bad_counts_without_changing_anything() -> None:
    noisy = instrument(nn.Sequential(nn.Linear(3, 2)), torch.zeros(2, 3))
    noisy.set_executions({1: 2})
    with pytest.raises(ValueError, match="executions for site 7"):
        noisy.set_executions({7: 2})
    with pytest.raises(ValueError, match="site 0: executions must be"):
        noisy.set_executions({0: 0, 1: 4})
    assert noisy.executions == {1: 2}
