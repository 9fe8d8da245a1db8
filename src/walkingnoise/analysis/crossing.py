"""Where an accuracy-vs-σ curve crosses half way between its top and chance level.

A model-free estimate of the midpoint noise level μ: no fit, just log-linear interpolation
between the two measured σ around the crossing. It serves as a quick summary and as the
starting guess of the logistic fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def half_accuracy_crossing(
    sigmas: Sequence[float], accuracies: Sequence[float], chance: float, top: float | None = None
) -> float:
    """σ at which accuracy first falls below (top + chance) / 2, interpolated in log σ.

    Args:
        sigmas: increasing, positive noise levels.
        accuracies: accuracy at each σ (fractions).
        chance: the accuracy of guessing, 1/K.
        top: the noise-free accuracy; defaults to the accuracy at the smallest σ.

    Returns:
        The crossing σ; ``inf`` if accuracy never falls that low, the smallest σ if it starts
        below, NaN for no data.
    """
    s = np.asarray(sigmas, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    keep = np.isfinite(s) & np.isfinite(a) & (s > 0)
    s, a = s[keep], a[keep]
    if s.size == 0:
        return math.nan
    order = np.argsort(s)
    s, a = s[order], a[order]
    half = ((a[0] if top is None else top) + chance) / 2
    below = np.nonzero(a < half)[0]
    if below.size == 0:
        return math.inf
    i = int(below[0])
    if i == 0:
        return float(s[0])
    x0, x1 = math.log10(s[i - 1]), math.log10(s[i])
    y0, y1 = a[i - 1], a[i]
    t = (y0 - half) / (y0 - y1)
    return float(10 ** (x0 + t * (x1 - x0)))
