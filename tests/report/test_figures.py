"""Every figure function draws a non-empty PNG and a valid SVG from a small synthetic store."""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from walkingnoise.analysis.curves import accuracy_curves
from walkingnoise.analysis.tables import fit_curves, preservation_table, site_table
from walkingnoise.report import figures
from walkingnoise.sweep import load_results


@pytest.fixture(scope="module")
def curves(synthetic_store: Path) -> pd.DataFrame:
    return accuracy_curves(load_results(synthetic_store))


@pytest.fixture(scope="module")
def fits(curves: pd.DataFrame) -> pd.DataFrame:
    return fit_curves(curves, a_min="auto")


def _walking(frame: pd.DataFrame, noise: str = "additive", batchnorm: bool = True) -> pd.DataFrame:
    part = frame[frame["site"].notna() & (frame["noise"] == noise)]
    return part[part["batchnorm"] == batchnorm]


def _check_images(out: Path, name: str) -> None:
    """The PNG decodes to a picture with content; the SVG is XML with an <svg> root."""
    from matplotlib.image import imread

    png, svg = out / f"{name}.png", out / f"{name}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(png)
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10  # not blank
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_accuracy_figure_with_fits(
    curves: pd.DataFrame, fits: pd.DataFrame, tmp_path: Path
) -> None:
    part = _walking(curves)
    part = part[~part["train_noise"] & part["recipe.clamp"].isna()]
    figure = figures.accuracy_figure(part, fits, site_names={0: "input"}, out=tmp_path, name="a")
    _check_images(tmp_path, "a")
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "0 input" in labels
    assert "chance" in labels


def test_accuracy_figure_of_one_curve_marks_mu(
    curves: pd.DataFrame, fits: pd.DataFrame, tmp_path: Path
) -> None:
    one = curves[curves["placement"] == "global"]
    one = one[one["noise"] == "additive"]
    figure = figures.accuracy_figure(one, fits, out=tmp_path, name="one")
    _check_images(tmp_path, "one")
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert any(t.startswith("μ = ") for t in texts)


def test_accuracy_figure_without_fits_on_a_linear_grid(tmp_path: Path) -> None:
    curve = pd.DataFrame(
        {
            "dataset": "digits",
            "placement": "global",
            "sigma": np.linspace(0, 2, 11),
            "mean": np.linspace(0.9, 0.1, 11),
            "sem": 0.01,
            "chance": 0.1,
            "site": pd.NA,
        }
    )
    curve.attrs["group_columns"] = ["dataset", "placement"]
    figure = figures.accuracy_figure(curve, None, out=tmp_path, name="lin")
    _check_images(tmp_path, "lin")
    assert figure.axes[0].get_xscale() == "linear"


def test_accuracy_figure_leaves_out_curves_without_a_finite_accuracy(tmp_path: Path) -> None:
    """Every run of one curve failed (NaN accuracies): the other curve is drawn, on a log axis."""
    sigma = np.logspace(-2, 2, 9)
    curve = pd.DataFrame(
        {
            "dataset": "digits",
            "placement": np.repeat(["walking:0", "walking:1"], len(sigma)),
            "sigma": np.tile(sigma, 2),
            "mean": np.concatenate([np.full(len(sigma), np.nan), np.linspace(0.9, 0.1, 9)]),
            "sem": 0.01,
            "chance": 0.1,
            "site": np.repeat([0, 1], len(sigma)),
        }
    )
    curve.attrs["group_columns"] = ["dataset", "placement"]
    figure = figures.accuracy_figure(curve, None, out=tmp_path, name="nan")
    _check_images(tmp_path, "nan")
    assert figure.axes[0].get_xscale() == "log"
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert len(labels) == 2
    assert "chance" in labels
    assert not any("walking:0" in label for label in labels)
    only_nan = curve[curve["site"] == 0]
    figures.accuracy_figure(only_nan, None, out=tmp_path, name="empty")
    assert (tmp_path / "empty.png").exists()


def test_site_mu_figure(fits: pd.DataFrame, tmp_path: Path) -> None:
    sites = site_table(_walking(fits))
    figure = figures.site_mu_figure(sites, site_names={0: "input"}, out=tmp_path, name="mu")
    _check_images(tmp_path, "mu")
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [  # the unclamped series say so beside the clamped one
        "inference-only · no clamp",
        "noisy training · no clamp",
        "noisy training · clamp 1",
    ]
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["0 input", "1"]


def test_site_mu_figure_draws_a_negative_mu_of_a_partial_store(
    fits: pd.DataFrame, tmp_path: Path
) -> None:
    # A linear fit of a store still being written can put μ below zero (a flagged fit).
    sites = site_table(_walking(fits)).copy()
    sites.loc[sites.index[0], ["mu", "mu_err", "quality"]] = [-0.2, 0.5, "μ outside the sampled σ"]
    figures.site_mu_figure(sites, out=tmp_path, name="neg")
    _check_images(tmp_path, "neg")


def test_site_mu_figure_draws_a_log_fit_s_interval_in_log_space(tmp_path: Path) -> None:
    """A fit in log σ gives log10 μ ± e: its bar runs from 10^(log10 μ − e) to 10^(log10 μ + e);
    an infinite error, or one of a thousandfold and more, draws no bar."""
    from matplotlib.collections import LineCollection

    log_mu = np.array([0.0, 0.0, 2.0, 1.0, 1.5])
    log_err = np.array([0.05, 1.0, 0.05, np.inf, 1366.0])
    sites = pd.DataFrame(
        {
            "placement": [f"walking:{i}" for i in range(5)],
            "site": pd.array(range(5), dtype="Int64"),
            "site_name": "",
            "mu": 10**log_mu,
            "mu_err": 10**log_mu * np.log(10) * log_err,
            "log10_mu": log_mu,
            "log10_mu_err": log_err,
            "quality": "ok",
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one unnamed series: no empty legend, no warning
        figure = figures.site_mu_figure(sites, out=tmp_path, name="logbars")
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["flagged fit or no error bar"]  # the two without a bar are hollow
    bars = [
        (segment[0][1], segment[1][1])
        for collection in figure.axes[0].collections
        if isinstance(collection, LineCollection)
        for segment in collection.get_segments()
        if len(segment) == 2 and np.isfinite(segment).all()
    ]
    expected = [
        (10 ** (m - e), 10 ** (m + e)) for m, e in zip(log_mu[:3], log_err[:3], strict=True)
    ]
    assert len(bars) == 3
    for (low, high), (want_low, want_high) in zip(sorted(bars), sorted(expected), strict=True):
        assert low == pytest.approx(want_low, rel=1e-9)
        assert high == pytest.approx(want_high, rel=1e-9)
    low, high = figure.axes[0].get_ylim()  # the unconstrained fit leaves the axis alone
    assert 1e-3 < low < high < 1e4


def test_site_mu_figure_marks_curves_that_drop_only_partly(tmp_path: Path) -> None:
    sites = pd.DataFrame(
        {
            "placement": ["walking:0", "walking:1"],
            "site": pd.array([0, 1], dtype="Int64"),
            "site_name": "",
            "mu": [2.0, 3.0],
            "mu_err": [0.1, 0.1],
            "a_max": [0.98, 0.98],
            "a_min": [0.1, 0.9],  # site 1 keeps 90 % of its accuracy
            "chance": [0.1, 0.1],
            "quality": "ok",
        }
    )
    figure = figures.site_mu_figure(sites, out=tmp_path, name="partial")
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["partial drop: floor above half way"]  # the one series has no name
    _check_images(tmp_path, "partial")
    # flagged, or with an error of many decades: hollow, whatever the curve's shape
    loose = sites.assign(
        quality=["ok", "poor fit (χ²/dof = 40)"], mu_err=[1e9, 0.1], log10_mu=[0.3, 0.5],
        log10_mu_err=[4.0, 0.01],
    )  # fmt: skip
    figure = figures.site_mu_figure(loose, out=tmp_path, name="loose")
    handles, labels = figure.axes[0].get_legend_handles_labels()
    assert labels == [
        "flagged fit or no error bar",
        "partial drop: floor above half way, flagged fit",
    ]
    assert [handle.lines[0].get_markerfacecolor() for handle in handles] == ["white", "white"]


def test_site_accuracy_figure(curves: pd.DataFrame, tmp_path: Path) -> None:
    part = _walking(curves)
    sigma = figures.nearest_sigma(part, 0.9)
    assert sigma == pytest.approx(1.0)
    figure = figures.site_accuracy_figure(part, sigma, out=tmp_path, name="acc")
    _check_images(tmp_path, "acc")
    assert "σ = 1" in figure.axes[0].get_title()


def test_site_accuracy_compares_every_site_at_one_sigma(curves: pd.DataFrame) -> None:
    part = _walking(curves)
    lacking = (part["site"] == int(part["site"].max())) & (part["sigma"] == 1.0)
    sigma = figures.nearest_sigma(part[~lacking], 0.9)
    assert sigma != pytest.approx(1.0)  # one site lacks σ = 1: the nearest σ all sites have
    figure = figures.site_accuracy_figure(part[~lacking], 0.9)
    assert f"σ = {sigma:.3g})" in figure.axes[0].get_title()  # one σ, not two


def test_site_accuracy_shares_sigma_within_a_series_only(curves: pd.DataFrame) -> None:
    """One series lacking σ = 1 does not move the other series' bars off σ = 1."""
    part = _walking(curves)
    assert part["train_noise"].nunique() == 2
    lacking = part["train_noise"].astype(bool) & (part["sigma"] == 1.0)
    figure = figures.site_accuracy_figure(part[~lacking], 0.9)
    title = figure.axes[0].get_title()
    assert title.endswith(", 1)")  # the complete series stays at σ = 1
    assert "σ = 0.316, 1)" in title


def test_preservation_figure(curves: pd.DataFrame, tmp_path: Path) -> None:
    table = preservation_table(_walking(curves, "multiplicative"))
    figures.preservation_figure(table, out=tmp_path, name="keep")
    _check_images(tmp_path, "keep")


def test_mixed_heatmap_has_a_panel_per_order(curves: pd.DataFrame, tmp_path: Path) -> None:
    figure = figures.mixed_heatmap_figure(
        curves[curves["noise"] == "mixed"], out=tmp_path, name="mixed"
    )
    _check_images(tmp_path, "mixed")
    titles = [ax.get_title() for ax in figure.axes]
    assert "mul-first" in titles
    assert "add-first" in titles
    colorbar = figure.axes[-1]  # in %, as the tables of `mixed-map`
    assert colorbar.get_ylabel() == "test accuracy (%)"
    assert colorbar.get_ylim() == (0.0, 100.0)


def test_mixed_heatmap_with_collinear_points_falls_back_to_points(
    curves: pd.DataFrame, tmp_path: Path
) -> None:
    """One ratio puts every point on a line in log σ: no triangulation, still a figure."""
    one = curves[(curves["noise"] == "mixed") & (curves["ratio"] == 0.5)]
    figures.mixed_heatmap_figure(one, out=tmp_path, name="line")
    _check_images(tmp_path, "line")


def test_dollar_signs_in_labels_do_not_start_mathtext(tmp_path: Path) -> None:
    curve = pd.DataFrame(
        {
            "model": ["$x^", "$y_"],
            "placement": "global",
            "sigma": [0.1, 10.0],
            "mean": 0.5,
            "sem": 0.01,
            "chance": 0.1,
            "site": pd.NA,
        }
    )
    curve.attrs["group_columns"] = ["model", "placement"]
    figures.accuracy_figure(curve, None, title="cost $5", out=tmp_path, name="dollar")
    _check_images(tmp_path, "dollar")


def test_eta_accuracy_figure_draws_a_line_per_training() -> None:
    table = pd.DataFrame(
        {
            "training": ["inference-only"] * 3 + ["noise injection"] * 3,
            "temperature": math.nan,
            "alpha": math.nan,
            "teacher": "",
            "weight_noise": [0.1, 0.0, 0.05] * 2,
            "mean": [0.5, 0.9, 0.7, 0.8, 0.9, 0.85],
            "std": [0.02, 0.01, math.nan, 0.01, 0.01, 0.01],
        }
    )
    figure = figures.eta_accuracy_figure(table, title="digits · mlp")
    ax = figure.axes[0]
    assert ax.get_legend_handles_labels()[1] == ["inference-only", "noise injection"]
    first = ax.get_lines()[0]
    assert first.get_xdata().tolist() == [0.0, 0.05, 0.1]  # in order of η
    assert first.get_ydata().tolist() == [0.9, 0.7, 0.5]


def test_one_wide_error_bar_puts_the_mu_axis_on_a_log_scale() -> None:
    """μ of 0.55 ×/÷ 540 beside μ near 1: on a linear axis its bar up to ~300 would flatten
    every other μ to zero."""
    sites = pd.DataFrame(
        {
            "placement": ["walking:1", "walking:2"],
            "site": pd.array([1, 2], dtype="Int64"),
            "site_name": "",
            "mu": [0.554, 1.2],
            "mu_err": [0.554 * math.log(10) * 2.73, 0.1],
            "log10_mu": [math.log10(0.554), math.log10(1.2)],
            "log10_mu_err": [2.73, 0.036],
            "quality": "ok",
        }
    )
    figure = figures.site_mu_figure(sites)
    assert figure.axes[0].get_yscale() == "log"


def test_accuracy_figure_of_mixed_noise_over_an_amplitude_labels_its_axis_a(
    curves: pd.DataFrame, fits: pd.DataFrame
) -> None:
    """Mixed noise with a ratio r is swept over an amplitude A (σ_add = A·r, σ_mul =
    A·(1−r)): its x axis is A, not a σ."""
    mixed = curves[(curves["noise"] == "mixed") & (curves["order"] == "mul_first")]
    label = figures.accuracy_figure(mixed, fits).axes[0].get_xlabel()
    assert label == "noise amplitude A (σ_add = A·r, σ_mul = A·(1−r))"
    additive = _walking(curves)
    assert figures.accuracy_figure(additive, fits).axes[0].get_xlabel() == "noise level σ"
    both = pd.concat([mixed, additive])
    assert figures.accuracy_figure(both, fits).axes[0].get_xlabel() == (
        "noise level σ; for mixed noise with a ratio r, amplitude A (σ_add = A·r, σ_mul = A·(1−r))"
    )


def test_preservation_figure_marks_where_chance_accuracy_lies(curves: pd.DataFrame) -> None:
    """A site that falls to chance keeps chance / clean accuracy (about 0.1 for ten classes),
    not nothing: a line marks that level, as the accuracy figures mark chance."""
    table = preservation_table(_walking(curves, "multiplicative"))
    ax = figures.preservation_figure(table).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "chance / clean accuracy" in labels
    line = next(line for line in ax.get_lines() if line.get_label() == "chance / clean accuracy")
    expected = float((table["chance"] / table["clean_accuracy"]).mean())
    assert line.get_ydata()[0] == pytest.approx(expected)
