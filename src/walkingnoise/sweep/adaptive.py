"""Adaptive σ sampling: start coarse, then add σ around each curve's midpoint until μ is known.

For one curve (a group of experiments that differ only in σ and seed) ``propose_sigmas`` looks
at what was measured, fits the midpoint logistic, and proposes the next σ values: around the
fitted μ, up to two logistic widths either side, as far as possible from the σ already
measured. A curve is done when the fit is good, the standard error of log10 μ (inflated by
√(χ²/dof) when the fit is worse than its error bars) is below the tolerance, and μ is bracketed
by measured σ within one width; or when the budget of σ values is spent, or the curve is flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from walkingnoise.analysis.midpoint import MidpointFit, fit_midpoint
from walkingnoise.sweep.spec import AdaptiveAxis

#: Two σ closer than this (in decades) count as the same point.
MIN_GAP = 0.01


def propose_sigmas(
    axis: AdaptiveAxis,
    sigmas: Sequence[float],
    means: Sequence[float],
    errors: Sequence[float],
    chance: float | None,
    n_samples: Sequence[float] | float | None = None,
) -> list[float]:
    """The next σ values to measure for one curve; empty when it is done.

    Args:
        axis: the adaptive axis (range in log10 σ, initial points, budget, tolerance).
        sigmas: σ measured so far; ``means`` and ``errors`` the mean accuracy over seeds at each
            and its standard error.
        chance: the floor of the fit, 1/K; None fits it (noise that keeps accuracy above
            chance, as ``fit`` frees it there).
        n_samples: test samples behind each mean (test-set size × seeds), so each point's error
            is at least its binomial error: with few seeds their spread alone can be tiny (0
            for one seed), and μ would pass for located on error bars far too small.
    """
    measured = np.log10(np.asarray([s for s in sigmas if s > 0], dtype=float))
    if measured.size < axis.initial:
        grid = np.linspace(axis.min, axis.max, axis.initial)
        return [float(10**x) for x in grid if _far(x, measured)]
    if measured.size >= axis.max_points:
        return []
    fit = fit_midpoint(sigmas, means, errors, a_min=chance, space="log", n_samples=n_samples)
    if fit.flat:
        return []
    span = axis.max - axis.min
    width = fit.s if math.isfinite(fit.s) else span / 8
    width = min(max(width, 0.05), span / 4)
    center = fit.log10_mu if math.isfinite(fit.log10_mu) else math.log10(fit.crossing)
    if not math.isfinite(center):
        center = (axis.min + axis.max) / 2
    center = min(max(center, axis.min), axis.max)
    if _located(fit, measured, width, axis.tolerance):
        return []
    candidates = [
        min(max(center + k * width, axis.min), axis.max) for k in (0, -1, 1, -0.5, 0.5, -2, 2)
    ]
    budget = min(axis.per_round, axis.max_points - measured.size)
    chosen: list[float] = []
    near = (max(center - 2 * width, axis.min), min(center + 2 * width, axis.max))
    for _ in range(budget):
        taken = np.concatenate([measured, np.asarray(chosen)])
        best: float | None = max(candidates, key=lambda x: _distance(x, taken))
        if _distance(best, taken) < MIN_GAP:  # all measured: split the widest gap near μ
            best = _widest_gap(taken, *near)
        if best is None:
            break
        chosen.append(best)
    return [float(10**x) for x in chosen]


def _widest_gap(taken: np.ndarray, low: float, high: float) -> float | None:
    """The middle of the widest gap between measured points (and the ends) in [low, high];
    None when every gap there is narrower than twice ``MIN_GAP``."""
    inside = taken[(taken > low) & (taken < high)]
    points = np.sort(np.concatenate([[low, high], inside]))
    gaps = np.diff(points)
    if not gaps.size or gaps.max() < 2 * MIN_GAP:
        return None
    widest = int(np.argmax(gaps))
    middle = float(points[widest] + gaps[widest] / 2)
    return middle if _far(middle, taken) else None


def _located(fit: MidpointFit, measured: np.ndarray, width: float, tolerance: float) -> bool:
    """Whether μ is known well enough: a good fit, its error (inflated by χ²/dof when that
    exceeds 1) within the tolerance, and measured σ within one width on both sides of μ."""
    if not (fit.converged and fit.mu_in_range and math.isfinite(fit.log10_mu_err)):
        return False
    error = fit.log10_mu_err * math.sqrt(
        max(1.0, fit.chi2_red if math.isfinite(fit.chi2_red) else 1)
    )
    below = measured[(measured <= fit.log10_mu) & (measured >= fit.log10_mu - width)]
    above = measured[(measured >= fit.log10_mu) & (measured <= fit.log10_mu + width)]
    return error <= tolerance and below.size > 0 and above.size > 0


def _distance(x: float, taken: np.ndarray) -> float:
    return float(np.min(np.abs(taken - x))) if taken.size else math.inf


def _far(x: float, taken: np.ndarray) -> bool:
    return _distance(x, taken) >= MIN_GAP
