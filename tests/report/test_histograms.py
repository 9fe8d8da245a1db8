"""Histograms of clean and noisy activations: files, axes, thresholds and the zero share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.analysis.binarization import ThresholdQuantizer
from walkingnoise.report.histograms import activation_histogram_figure


def _activations() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    clean = torch.relu(torch.randn(400, 16, generator=generator))
    noisy = clean * (1.0 + 1e6 * torch.randn(400, 16, generator=generator))
    return clean, noisy


def test_figure_is_written_as_png_and_svg(tmp_path: Path) -> None:
    clean, noisy = _activations()
    quantizer = ThresholdQuantizer(threshold=10.0, positive=8e5, negative=-8e5)
    figure = activation_histogram_figure(
        clean, noisy, quantizers=[quantizer], title="site 3", out=tmp_path, name="h"
    )
    assert (tmp_path / "h.png").stat().st_size > 0
    assert (tmp_path / "h.svg").read_text().startswith("<?xml")
    axes = figure.axes
    assert len(axes) == 4
    assert [ax.get_xscale() for ax in axes] == ["linear", "log", "linear", "log"]
    zero_share = 100 * float((clean == 0).double().mean())
    texts = [t.get_text() for ax in (axes[1], axes[3]) for t in ax.texts]
    assert texts == [f"{zero_share:.1f} % exactly 0 (not shown)"] * 2
    threshold_lines = [
        line.get_xdata()[0] for ax in axes for line in ax.lines if line.get_linestyle() == "--"
    ]
    assert sorted(threshold_lines) == [-10.0, 10.0, 10.0]  # only on the noisy panels
    assert figure._suptitle.get_text() == "site 3"


def test_log_panel_splits_signs_and_counts_every_nonzero_value() -> None:
    clean, noisy = _activations()
    figure = activation_histogram_figure(clean, noisy, bins=30)
    noisy_log = figure.axes[3]
    labels = noisy_log.get_legend_handles_labels()[1]
    positive, negative = int((noisy > 0).sum()), int((noisy < 0).sum())
    assert labels == [f"x > 0 ({positive})", f"x < 0 ({negative})"]
    counted = sum(int(np.sum(patch.get_data()[0])) for patch in noisy_log.patches)
    assert counted == positive + negative


def test_constant_and_zero_activations_still_draw() -> None:
    figure = activation_histogram_figure(torch.zeros(50), torch.full((50,), 2.0))
    assert figure.axes[1].texts[0].get_text() == "100.0 % exactly 0 (not shown)"
    with pytest.raises(ValueError, match="bins"):
        activation_histogram_figure(torch.zeros(5), torch.zeros(5), bins=0)
