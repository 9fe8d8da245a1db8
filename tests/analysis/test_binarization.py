"""Self-binarization: Otsu thresholds on log|x|, the 2/3-level quantizer, and the in-flight test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from walkingnoise.analysis.binarization import (
    ThresholdQuantizer,
    binarization_study,
    fit_quantizer,
    log_magnitude_threshold,
    log_magnitudes,
    otsu_split,
    quantizing,
)
from walkingnoise.data.dataset import Split
from walkingnoise.noise.instrument import instrument
from walkingnoise.noise.models import MultiplicativeNoise
from walkingnoise.noise.placement import WalkingPlacement
from walkingnoise.noise.recording import site_outputs


def test_two_levels_without_negative_values() -> None:
    values = torch.tensor([0.0, 0.01, 0.02, 4.0, 6.0, 8.0])
    quantizer = fit_quantizer(values, threshold=1.0)
    assert quantizer.levels == (0.0, 6.0)
    assert quantizer.negative is None
    out = quantizer(torch.tensor([[0.5, -0.9, 1.0, 30.0], [0.0, -3.0, 0.99, 2.0]]))
    assert set(out.flatten().tolist()) <= {0.0, 6.0}
    assert out.tolist() == [[0.0, 0.0, 6.0, 6.0], [0.0, 0.0, 0.0, 6.0]]


def test_three_levels_with_negative_values() -> None:
    values = np.array([-9.0, -3.0, -0.5, 0.0, 0.25, 2.0, 4.0])
    quantizer = fit_quantizer(values, threshold=1.0)
    assert quantizer.levels == (-6.0, 0.0, 3.0)
    x = torch.tensor([-100.0, -1.0, -0.999, 0.0, 0.999, 1.0, 100.0])
    assert quantizer(x).tolist() == [-6.0, -6.0, 0.0, 0.0, 0.0, 3.0, 3.0]
    assert quantizer(x).dtype == x.dtype


def test_a_side_without_calibration_values_maps_to_zero() -> None:
    quantizer = ThresholdQuantizer(threshold=1.0, positive=None, negative=-2.0)
    assert quantizer.levels == (-2.0, 0.0)
    assert quantizer(torch.tensor([5.0, -5.0, 0.5])).tolist() == [0.0, -2.0, 0.0]


def test_otsu_split_finds_the_gap_of_two_clusters() -> None:
    values = np.sort(np.array([0.0, 0.1, 0.2, 0.3, 5.0, 5.1, 5.2]))
    assert otsu_split(values) == pytest.approx((0.3 + 5.0) / 2)
    with pytest.raises(ValueError, match="one value"):
        otsu_split(np.ones(4))


def test_threshold_separates_two_log_modes() -> None:
    """Two log-normal modes 6 decades apart, unequal sizes: t falls between them."""
    rng = np.random.default_rng(1)
    small = 10 ** rng.normal(-2.0, 0.4, size=3000)
    large = 10 ** rng.normal(4.0, 0.4, size=1000) * rng.choice([-1, 1], size=1000)
    t = log_magnitude_threshold(np.concatenate([small, large]))
    assert np.abs(small).max() < t < np.abs(large).min()


def test_exact_zeros_form_the_low_mode() -> None:
    rng = np.random.default_rng(2)
    large = 10 ** rng.normal(9.0, 0.5, size=500)
    values = np.concatenate([np.zeros(500), large])
    logs = log_magnitudes(values)
    assert logs[:500] == pytest.approx(np.full(500, math.log10(large.min()) - 1.0))
    t = log_magnitude_threshold(values)
    assert 0 < t < 10**8  # below the bulk of the mode: at most its far tail joins the zeros
    assert (large < t).mean() < 0.02
    quantizer = fit_quantizer(values)
    assert quantizer.levels == (0.0, pytest.approx(large[large >= t].mean()))


def test_thresholds_that_cannot_be_chosen_are_errors() -> None:
    with pytest.raises(ValueError, match="every activation is exactly 0"):
        log_magnitude_threshold(np.zeros(10))
    with pytest.raises(ValueError, match="one magnitude"):
        log_magnitude_threshold(np.full(10, 3.0))
    with pytest.raises(ValueError, match="puts every activation in the zero cluster"):
        fit_quantizer(np.array([0.1, -0.2, 0.3]), threshold=1.0)
    with pytest.raises(ValueError, match="finite number > 0"):
        fit_quantizer(np.array([0.1, 2.0]), threshold=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        log_magnitudes(np.array([1.0, math.nan]))


def _binary_site_model() -> tuple[nn.Module, Split]:
    """Inputs in {0, 1}; site 1 (after ``Linear(4, 4)`` = 3·I) outputs only 0 and 3."""
    torch.manual_seed(0)
    first = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        first.weight.copy_(3.0 * torch.eye(4))
    net = nn.Sequential(first, nn.Linear(4, 3))
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2, (300, 4), generator=generator).float()
    y = torch.randint(0, 3, (300,), generator=generator)
    return net, Split(x, y)


def test_quantization_keeps_a_binary_site_exactly() -> None:
    net, data = _binary_site_model()
    model = instrument(net, data.x[:2])
    assert model.site_table[1].name == "0:Linear"
    clean = site_outputs(model, data.x, [1])[1]
    assert set(clean.unique().tolist()) == {0.0, 3.0}
    study = binarization_study(model, 1, data, data, repeats=2)
    quantizer = study.quantizers[0][1]
    assert quantizer.levels == (0.0, 3.0)
    assert 0.0 < quantizer.threshold < 3.0
    with quantizing(model, 1, quantizer):
        assert torch.equal(site_outputs(model, data.x, [1])[1], clean)
        quantized_logits = model(data.x)
    assert torch.equal(quantized_logits, model(data.x))
    accuracy = study.table.set_index("setting")["accuracy"]
    assert accuracy["quantized"] == accuracy["noisy"] == accuracy["clean"]
    assert study.table.set_index("setting").loc["quantized", "zero_fraction"] == pytest.approx(
        float((clean == 0).double().mean())
    )


def test_study_with_multiplicative_noise_quantizes_to_three_levels() -> None:
    """After a ReLU with large multiplicative noise: zeros stay 0, the rest gets both signs."""
    net, data = _binary_site_model()
    net = nn.Sequential(net[0], nn.ReLU(), net[1])
    model = instrument(net, data.x[:2])
    assert model.site_table[2].name == "1:ReLU"
    model.set_noise(MultiplicativeNoise(training=False), WalkingPlacement(2), 1e8)
    study = binarization_study(model, 2, data, data, thresholds=[1.0, 1e3], repeats=2, seed=5)
    quantized = study.table[study.table["setting"] == "quantized"]
    assert list(quantized["threshold"]) == [1.0, 1e3]
    assert list(quantized["threshold_from"]) == ["given", "given"]
    assert (quantized["n_levels"] == 3).all()
    negative, zero, positive = study.quantizers[0][1].levels
    assert negative < 0 == zero < positive
    clean_zero = float((study.clean == 0).double().mean())
    assert quantized["zero_fraction"].iloc[0] == pytest.approx(clean_zero)
    assert (study.noisy.abs() > 1.0).double().mean() == pytest.approx(1 - clean_zero, abs=0.01)
    again = binarization_study(model, 2, data, data, thresholds=[1.0, 1e3], repeats=2, seed=5)
    assert again.table["accuracy"].tolist() == study.table["accuracy"].tolist()


def test_quantizing_an_unknown_site_is_an_error() -> None:
    net, data = _binary_site_model()
    model = instrument(net, data.x[:2])
    with (
        pytest.raises(ValueError, match="site 9 does not exist"),
        quantizing(model, 9, ThresholdQuantizer(1.0, 1.0)),
    ):
        pass
