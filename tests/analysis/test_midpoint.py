"""The midpoint fit against synthetic logistic data with known parameters.

Statistical checks use fixed random seeds, so they are deterministic; their tolerances come from
the sample sizes. A correct 1-σ error bar covers the truth with probability 0.68; over N = 200
independent datasets the covered fraction has standard deviation √(0.68·0.32/N) ≈ 0.033, and
the tests accept 0.68 ± 3 of those (0.581 … 0.779).
"""

from __future__ import annotations

import doctest
import math
from dataclasses import replace

import numpy as np
import pytest

from walkingnoise.analysis import midpoint
from walkingnoise.analysis.midpoint import (
    choose_space,
    double_logistic,
    fit_double_logistic,
    fit_midpoint,
    logistic,
    point_errors,
)
from walkingnoise.analysis.synthetic import log_logistic, simulate_curve

TRIALS = 200
COVERAGE = 0.68
SLACK = 3 * math.sqrt(COVERAGE * (1 - COVERAGE) / TRIALS)

#: (σ grid, expected accuracy, true parameters in the fit variable) per spacing.
CASES = {
    "log": (
        np.logspace(-2, 2, 17),
        log_logistic(1.0, 0.3, 0.4, 0.1),
        {"mu": 1.0, "s": 0.3, "delta_a": 0.4},
    ),
    "linear": (
        np.linspace(0.0, 2.0, 17),
        lambda s: logistic(s, 0.8, 0.15, 0.4, 0.1),
        {"mu": 0.8, "s": 0.15, "delta_a": 0.4},
    ),
}


def test_logistic_limits_and_midpoint() -> None:
    values = logistic(np.array([-np.inf, 0.5, np.inf, -1e300, 1e300]), 0.5, 0.1, 0.4, 0.1)
    assert values == pytest.approx([0.9, 0.5, 0.1, 0.9, 0.1])
    assert np.isfinite(values).all()
    stacked = double_logistic(np.array([-np.inf, np.inf]), 0.0, 1.0, 0.2, 5.0, 1.0, 0.1, 0.1)
    assert stacked == pytest.approx([0.7, 0.1])


def test_space_choice() -> None:
    assert choose_space(np.logspace(-2, 2, 9)) == "log"
    assert choose_space(np.linspace(0, 2, 21)) == "linear"
    assert choose_space([0.0, *np.logspace(-2, 2, 9)]) == "log"  # σ = 0 is the anchor
    assert choose_space([1.0, 2.0, 50.0]) == "linear"  # less than a factor 100
    assert choose_space([1.0, 2.0, 50.0], "log") == "log"
    assert choose_space(np.logspace(-2, 2, 9), "linear") == "linear"


def test_point_errors_floor_and_binomial() -> None:
    dy = point_errors([0.5, 0.9, 0.5], [0.0, 0.02, np.nan], floor=0.005, n_samples=1000)
    assert dy[0] == pytest.approx(math.sqrt(0.25 / 1000))
    assert dy[1] == pytest.approx(0.02)
    assert dy[2] == pytest.approx(math.sqrt(0.25 / 1000))
    assert point_errors([0.99], [0.0], floor=0.005)[0] == pytest.approx(0.005)


@pytest.mark.parametrize("space", CASES)
def test_error_bars_cover_the_truth_at_the_nominal_rate(space: str) -> None:
    """With the true standard error of each mean as weights, 1-σ intervals cover 68 %."""
    sigma, truth, true = CASES[space]
    seeds, n_test = 3, 500
    p = truth(sigma)
    se = np.sqrt(p * (1 - p) / (n_test * seeds))
    rng = np.random.default_rng(1)
    covered = dict.fromkeys(true, 0)
    for _ in range(TRIALS):
        curve = simulate_curve(sigma, truth, seeds=seeds, n_test=n_test, rng=rng)
        fit = fit_midpoint(sigma, curve.mean, se, a_min=0.1, floor=0.0)
        assert fit.converged
        assert fit.space == space
        covered["mu"] += abs(fit.mu - true["mu"]) <= fit.mu_err
        covered["s"] += abs(fit.s - true["s"]) <= fit.s_err
        covered["delta_a"] += abs(fit.delta_a - true["delta_a"]) <= fit.delta_a_err
    for name, count in covered.items():
        assert abs(count / TRIALS - COVERAGE) <= SLACK, (name, count / TRIALS)


@pytest.mark.parametrize("space", CASES)
def test_errors_from_few_seeds_are_honest_or_conservative(space: str) -> None:
    """Weights from 4 seeds' spread, floored by the binomial error, never under-cover."""
    sigma, truth, true = CASES[space]
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(TRIALS):
        curve = simulate_curve(sigma, truth, seeds=4, n_test=1000, rng=rng)
        fit = fit_midpoint(sigma, curve.mean, curve.sem, a_min=0.1, n_samples=curve.n_samples)
        covered += abs(fit.mu - true["mu"]) <= fit.mu_err
        if space == "log":
            assert fit.mu_err == pytest.approx(fit.mu * math.log(10) * fit.log10_mu_err)
    assert COVERAGE - SLACK <= covered / TRIALS <= 0.95


def test_error_of_mu_shrinks_with_more_seeds() -> None:
    """Quadrupling the seeds should about halve μ's error; require at least a 30 % cut."""
    sigma, truth, _ = CASES["log"]
    rng = np.random.default_rng(3)
    medians = {}
    for seeds in (3, 12):
        errors = []
        for _ in range(40):
            curve = simulate_curve(sigma, truth, seeds=seeds, n_test=500, rng=rng)
            fit = fit_midpoint(sigma, curve.mean, curve.sem, a_min=0.1, n_samples=curve.n_samples)
            errors.append(fit.mu_err)
        medians[seeds] = float(np.median(errors))
    assert medians[12] < 0.7 * medians[3]


def test_single_seed_gets_the_floor() -> None:
    sigma, truth, _ = CASES["log"]
    curve = simulate_curve(sigma, truth, seeds=1, n_test=500, rng=np.random.default_rng(4))
    assert (curve.sem == 0).all()
    fit = fit_midpoint(sigma, curve.mean, curve.sem, a_min=0.1, n_samples=curve.n_samples)
    assert fit.converged
    assert 0 < fit.mu_err < 0.5


def test_free_a_min_recovers_a_floor_above_chance() -> None:
    """Multiplicative noise with BatchNorm: accuracy falls to 45 %, not to chance."""
    sigma = np.logspace(0, 10, 41)
    truth = log_logistic(1e4, 0.5, 0.25, 0.45)
    curve = simulate_curve(sigma, truth, seeds=3, n_test=1000, rng=np.random.default_rng(5))
    free = fit_midpoint(sigma, curve.mean, curve.sem, a_min=None, n_samples=curve.n_samples)
    assert free.a_min_free
    assert free.quality == "ok"
    assert abs(free.a_min - 0.45) <= 3 * free.a_min_err
    assert abs(free.log10_mu - 4.0) <= 3 * free.log10_mu_err
    assert abs(free.delta_a - 0.25) <= 3 * free.delta_a_err
    chance = fit_midpoint(sigma, curve.mean, curve.sem, a_min=0.1, n_samples=curve.n_samples)
    assert chance.poor_fit
    assert chance.quality != "ok"


def test_double_logistic_recovers_both_drops_and_the_plateau() -> None:
    """Multiplicative noise without BatchNorm: a drop at σ = 1 to a plateau, a second at 100."""
    sigma = np.logspace(-2, 4, 31)

    def truth(s: np.ndarray) -> np.ndarray:
        return double_logistic(np.log10(s), 0.0, 0.2, 0.2, 2.0, 0.3, 0.2, 0.1)

    curve = simulate_curve(sigma, truth, seeds=3, n_test=1000, rng=np.random.default_rng(6))
    fit = fit_double_logistic(sigma, curve.mean, curve.sem, a_min=0.1, n_samples=curve.n_samples)
    assert fit.quality == "ok", fit.quality
    assert abs(fit.log10_mu1 - 0.0) <= 3 * fit.log10_mu1_err
    assert abs(fit.log10_mu2 - 2.0) <= 3 * fit.log10_mu2_err
    assert fit.plateau == pytest.approx(0.5, abs=0.03)
    assert fit.predict([1e-3])[0] == pytest.approx(0.9, abs=0.02)
    single = fit_midpoint(sigma, curve.mean, curve.sem, a_min=0.1, n_samples=curve.n_samples)
    assert single.poor_fit


def test_zero_sigma_is_kept_as_the_top_anchor_in_log_space() -> None:
    sigma = np.array([0.0, *np.logspace(-2, 2, 9)])
    with np.errstate(divide="ignore"):
        accuracy = logistic(np.log10(sigma), 0.0, 0.3, 0.4, 0.1)
    fit = fit_midpoint(sigma, accuracy, None, a_min=0.1)
    assert fit.space == "log"
    assert fit.n_points == 10
    assert fit.mu == pytest.approx(1.0, rel=1e-4)
    assert fit.sigma_min == pytest.approx(0.01)
    assert fit.predict([0.0])[0] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("name", "accuracy", "flag"),
    [
        ("flat at the top", np.full(9, 0.9), "flat"),
        ("flat at chance", np.full(9, 0.1), "flat"),
        ("rising", np.linspace(0.1, 0.9, 9), "non_monotone"),
        (
            "dip and recovery",
            np.array([0.9, 0.9, 0.5, 0.1, 0.1, 0.6, 0.9, 0.9, 0.9]),
            "non_monotone",
        ),
        ("all NaN", np.full(9, np.nan), "too_few_points"),
    ],
)
def test_degenerate_curves_are_flagged_not_raised(
    name: str, accuracy: np.ndarray, flag: str
) -> None:
    fit = fit_midpoint(np.logspace(-2, 2, 9), accuracy, None, a_min=0.1)
    assert getattr(fit, flag), (name, fit)
    assert fit.quality != "ok"
    assert not fit.ok
    double = fit_double_logistic(np.logspace(-2, 2, 9), accuracy, None, a_min=0.1)
    assert double.quality != "ok"


@pytest.mark.parametrize("points", [0, 1, 3])
def test_too_few_points(points: int) -> None:
    sigma = np.logspace(-1, 1, points)
    fit = fit_midpoint(sigma, np.linspace(0.9, 0.1, points), None, a_min=0.1)
    assert fit.too_few_points
    assert math.isnan(fit.mu)
    assert "too few points" in fit.quality
    free = fit_midpoint(np.logspace(-1, 1, 4), [0.9, 0.7, 0.3, 0.1], None, a_min=None)
    assert free.too_few_points  # four parameters need five points


def test_nan_points_are_dropped() -> None:
    sigma = np.logspace(-2, 2, 9)
    accuracy = log_logistic(1.0, 0.3, 0.4, 0.1)(sigma)
    accuracy[[1, 4]] = np.nan
    fit = fit_midpoint(sigma, accuracy, None, a_min=0.1)
    assert fit.n_points == 7
    assert fit.quality == "ok"
    assert fit.mu == pytest.approx(1.0, rel=1e-3)


def test_a_drop_steeper_than_the_grid_is_flagged() -> None:
    sigma = np.logspace(-2, 2, 9)
    fit = fit_midpoint(sigma, np.where(sigma < 1, 0.9, 0.1), None, a_min=0.1)
    assert fit.steep
    assert "steeper" in fit.quality
    assert math.isfinite(fit.mu_err)
    assert fit.mu_err > 0
    assert 10**-0.5 <= fit.mu <= 1.0


def test_mu_outside_the_sampled_range_is_flagged() -> None:
    sigma = np.logspace(-2, 0, 9)  # the drop at σ = 10 is never reached
    fit = fit_midpoint(sigma, log_logistic(10.0, 0.5, 0.4, 0.1)(sigma), None, a_min=0.1)
    assert not fit.mu_in_range
    assert "outside" in fit.quality


@pytest.mark.parametrize("a_min", [0.1, None])
def test_a_curve_that_dropped_before_the_grid_gets_no_top_above_one(a_min: float | None) -> None:
    """Only a tail, y = 0.1 + 0.5/σ, fits a logistic along a ridge of ever higher tops and
    earlier μ: the top stops 5 % above an accuracy of 1, and the fit says it is at a bound."""
    sigma = np.logspace(0, 3, 10)
    fit = fit_midpoint(sigma, 0.1 + 0.5 / sigma, a_min=a_min, n_samples=np.full(10, 2000))
    assert fit.a_max <= 1.05 + 1e-9
    assert fit.at_bound
    double = fit_double_logistic(sigma, 0.1 + 0.5 / sigma, a_min=0.1, n_samples=np.full(10, 2000))
    assert max(double.delta_a1, double.delta_a2) <= 0.475 + 1e-9


def test_a_fitted_floor_does_not_lift_the_top_past_the_bound() -> None:
    """A curve that slid from 0.95 to a plateau of 0.9 (multiplicative noise with BatchNorm):
    the free fit would explain it by a floor of 0.9 under a top of 1.95 and a μ far before
    the grid; pinned at the bound, the top is 1.05, the floor stays near the plateau, and μ
    is flagged outside the sampled σ."""
    sigma = np.logspace(0, 10, 11)
    y = np.array([0.95, 0.925, 0.915, 0.91, 0.905, 0.9, 0.9, 0.895, 0.9, 0.895, 0.9])
    fit = fit_midpoint(sigma, y, np.full(11, 0.005), a_min=None)
    assert fit.a_max == pytest.approx(1.05)
    assert fit.a_min == pytest.approx(0.9, abs=0.01)
    assert fit.a_min_err == pytest.approx(2 * fit.delta_a_err)
    assert fit.at_bound
    assert "μ outside the sampled σ" in fit.quality


def test_a_mu_outside_the_grid_is_said_even_where_the_fit_did_not_converge() -> None:
    sigma = np.logspace(-2, 0, 9)
    fit = fit_midpoint(sigma, log_logistic(10.0, 0.5, 0.4, 0.1)(sigma), None, a_min=0.1)
    unconverged = replace(fit, converged=False, message="covariance not finite")
    assert unconverged.quality.startswith("not converged (covariance not finite); ")
    assert "μ outside the sampled σ" in unconverged.quality


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="sigma has 3 values"):
        fit_midpoint([1.0, 2.0, 3.0], [0.5, 0.4], None, a_min=0.1)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(midpoint, raise_on_error=False).failed == 0
