"""The midpoint noise level μ: a weighted logistic fit of accuracy against σ.

Walking Noise (Borras et al., arXiv 2212.10430, Sec. 3) summarises an accuracy-vs-σ curve by the
σ at which the scaled, shifted logistic

    F(σ; μ, s, δa, a_min) = 2·δa / (1 + exp((σ − μ)/s)) + a_min

is half way between its top ``a_min + 2·δa`` and its floor ``a_min`` (chance level 1/K, or
fitted where accuracy never falls to chance). The fit minimises Σ ((F(σ) − y)/Δy)², Δy being the
standard error of each point's mean over seeds.

Conventions of this module:

- **Space.** Over a grid spanning decades the fit is done in x = log10 σ (``space="log"``): μ is
  then 10^m with its error from the delta method, ``log10_mu ± log10_mu_err`` is the symmetric
  interval, and ``s`` is a width in decades. ``space="auto"`` chooses log when every positive σ
  spans a factor ≥ 100 (:data:`LOG_SPAN`); σ = 0 points are kept in log space as the top-accuracy
  anchor (the logistic at x → −∞ is ``a_min + 2·δa``).
- **Weights.** Δy = max(err, ``floor``, binomial SE √(p(1−p)/n_samples)) where ``err`` is the
  standard error of the mean over seeds and ``n_samples`` = test-set size × seeds when known. The
  floor keeps a zero spread (one seed, or identical seeds) from dominating; the binomial term
  shrinks with more seeds, so the errors of μ do too. Errors are absolute
  (``curve_fit(absolute_sigma=True)``). The points are taken as independent, which they are
  not quite: a seed's inference-only experiments evaluate one clean model, and the σ of one
  seed and site share their evaluation draws (``Experiment.evaluation_seed``), so the
  deviations of one seed's curve move together across σ; μ's error is that of the weighted
  fit, not of a fit with the points' covariance.
- **Failures are flags, never exceptions.** Too few points, a flat or non-monotone curve, a fit
  that does not converge, μ outside the sampled σ: each sets a flag and :attr:`MidpointFit.quality`
  says which in words.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from walkingnoise.analysis.crossing import half_accuracy_crossing

log = logging.getLogger(__name__)

Space = Literal["auto", "log", "linear"]
ArrayLike = Sequence[float] | np.ndarray

#: Smallest Δy of a point (accuracy as a fraction): half a percentage point.
DEFAULT_FLOOR = 0.005
#: ``space="auto"`` fits in log10 σ when the positive σ span at least this factor.
LOG_SPAN = 100.0
#: A curve whose drop is below this many typical Δy (and below :data:`FLAT_DROP`) is flat.
FLAT_SIGNIFICANCE = 3.0
#: A drop of accuracy (fraction) below which a curve counts as flat whatever its errors.
FLAT_DROP = 0.02
#: A rise of accuracy with σ is non-monotone when it exceeds this many combined Δy ...
RISE_SIGNIFICANCE = 3.0
#: ... and this fraction of the curve's total drop.
RISE_FRACTION = 0.15
#: χ² p-value below which the fit is flagged as poor.
POOR_FIT_P = 1e-3
#: A start whose fit reaches this χ²/dof ends the search over further starts.
GOOD_ENOUGH = 1.5


def logistic(
    sigma: ArrayLike | float, mu: float, s: float, delta_a: float, a_min: float
) -> np.ndarray:
    """F(σ) = 2·δa / (1 + exp((σ − μ)/s)) + a_min, the paper's scaled logistic (Sec. 3).

    Written with tanh, 1/(1 + eᶻ) = (1 − tanh(z/2))/2, so it never overflows; σ = −∞ (σ = 0 in
    log space) gives the top ``a_min + 2·δa``.
    """
    z = (np.asarray(sigma, dtype=float) - mu) / s
    return delta_a * (1.0 - np.tanh(z / 2.0)) + a_min


def double_logistic(
    sigma: ArrayLike | float,
    mu1: float,
    s1: float,
    delta_a1: float,
    mu2: float,
    s2: float,
    delta_a2: float,
    a_min: float,
) -> np.ndarray:
    """Two stacked logistics: a first drop at μ1 to a plateau, a second at μ2 to ``a_min``.

    Describes curves with a plateau, e.g. multiplicative noise without BatchNorm (Sec. 5).
    """
    return logistic(sigma, mu1, s1, delta_a1, 0.0) + logistic(sigma, mu2, s2, delta_a2, a_min)


@dataclass(frozen=True)
class MidpointFit:
    """Result of :func:`fit_midpoint`: μ ± error, the other parameters, and quality flags.

    Attributes:
        mu: midpoint noise level μ (a σ); NaN when no fit was possible.
        mu_err: its standard error (delta method when fitted in log space).
        log10_mu: log10 μ and ``log10_mu_err`` its error, when fitted in log space (else NaN).
        s: logistic width, in σ units (linear) or decades (log); ``s_err`` its error.
        delta_a: half the accuracy drop δa = (a_max − a_min)/2; ``delta_a_err`` its error.
        a_min: floor of the curve; fixed (``a_min_err`` = 0) or fitted.
        space: ``log`` (x = log10 σ) or ``linear``.
        chi2_red: χ² per degree of freedom of the weighted residuals.
        residual_rms: root mean square of the unweighted residuals (accuracy units).
        n_points: finite points used; ``sigma_min``/``sigma_max`` the sampled σ range (positive
            σ only in log space).
        converged: the optimiser succeeded and the covariance is finite.
        mu_in_range: ``sigma_min`` ≤ μ ≤ ``sigma_max``.
        flat: the accuracy hardly drops over the sampled σ (μ then means little).
        non_monotone: accuracy rises significantly with σ somewhere.
        too_few_points: fewer points than parameters + 1; nothing was fitted.
        at_bound: a parameter other than s ended at a bound of the search.
        steep: s ended at its smallest value: the drop is steeper than the σ grid resolves, so
            μ is only known to lie between two measured σ.
        poor_fit: χ² too large for the degrees of freedom (p < :data:`POOR_FIT_P`).
        crossing: model-free half-accuracy crossing (the initial guess of μ).
        message: why a fit failed, if it did.
    """

    mu: float
    mu_err: float
    s: float
    s_err: float
    delta_a: float
    delta_a_err: float
    a_min: float
    a_min_err: float
    a_min_free: bool
    space: Literal["log", "linear"]
    log10_mu: float = math.nan
    log10_mu_err: float = math.nan
    chi2_red: float = math.nan
    residual_rms: float = math.nan
    n_points: int = 0
    sigma_min: float = math.nan
    sigma_max: float = math.nan
    converged: bool = False
    mu_in_range: bool = False
    flat: bool = False
    non_monotone: bool = False
    too_few_points: bool = False
    at_bound: bool = False
    steep: bool = False
    poor_fit: bool = False
    crossing: float = math.nan
    message: str = ""

    @property
    def a_max(self) -> float:
        """Top of the fitted curve, a_min + 2·δa."""
        return self.a_min + 2.0 * self.delta_a

    @property
    def ok(self) -> bool:
        """Whether μ can be trusted: converged, inside the σ range, no flag raised."""
        return self.quality == "ok"

    @property
    def quality(self) -> str:
        """``ok`` or the raised flags in words, separated by ``; ``."""
        return _quality(self)

    def predict(self, sigma: ArrayLike | float) -> np.ndarray:
        """The fitted curve at ``sigma`` (NaN if nothing was fitted)."""
        return predict(
            sigma,
            space=self.space,
            mu=self.mu,
            log10_mu=self.log10_mu,
            s=self.s,
            delta_a=self.delta_a,
            a_min=self.a_min,
        )

    def as_dict(self) -> dict[str, object]:
        """Every field plus ``a_max`` and ``quality``, for a table row."""
        return asdict(self) | {"a_max": self.a_max, "quality": self.quality}


def _quality(fit: MidpointFit | DoubleLogisticFit) -> str:
    problems = []
    if fit.too_few_points:
        problems.append(f"too few points ({fit.n_points})")
    elif not fit.converged:
        problems.append("not converged" + (f" ({fit.message})" if fit.message else ""))
    if fit.flat:
        problems.append("flat curve")
    if fit.non_monotone:
        problems.append("non-monotone curve")
    midpoints = [getattr(fit, name, math.nan) for name in ("mu", "mu1", "mu2")]
    fitted = any(math.isfinite(mu) for mu in midpoints)
    if not fit.too_few_points and fitted and not fit.mu_in_range:
        problems.append("μ outside the sampled σ")
    if fit.steep:
        problems.append("drop steeper than the σ grid")
    if fit.at_bound:
        problems.append("parameter at a bound")
    if fit.poor_fit:
        problems.append(f"poor fit (χ²/dof = {fit.chi2_red:.3g})")
    return "; ".join(problems) or "ok"


def predict(
    sigma: ArrayLike | float,
    *,
    space: str,
    mu: float,
    s: float,
    delta_a: float,
    a_min: float,
    log10_mu: float = math.nan,
) -> np.ndarray:
    """Evaluate a fitted logistic (e.g. from a midpoint-table row) at ``sigma``."""
    sigma = np.asarray(sigma, dtype=float)
    if space == "log":
        center = log10_mu if math.isfinite(log10_mu) else math.log10(mu) if mu > 0 else math.nan
        with np.errstate(divide="ignore"):
            x = np.where(sigma > 0, np.log10(np.where(sigma > 0, sigma, 1.0)), -np.inf)
        return logistic(x, center, s, delta_a, a_min)
    return logistic(sigma, mu, s, delta_a, a_min)


# -- preparation ------------------------------------------------------------------------------


@dataclass
class _Points:
    """Finite points of a curve, sorted by σ, in the fit variable x."""

    sigma: np.ndarray
    x: np.ndarray
    y: np.ndarray
    dy: np.ndarray
    space: Literal["log", "linear"]
    sigma_min: float
    sigma_max: float
    x_lo: float = field(init=False)
    x_hi: float = field(init=False)
    span: float = field(init=False)

    def __post_init__(self) -> None:
        measured = self.x[np.isfinite(self.x)]
        self.x_lo = float(measured.min()) if measured.size else 0.0
        self.x_hi = float(measured.max()) if measured.size else 0.0
        self.span = max(self.x_hi - self.x_lo, 1e-12)


def choose_space(sigma: ArrayLike, space: Space = "auto") -> Literal["log", "linear"]:
    """``log`` if the positive σ span a factor ≥ :data:`LOG_SPAN` (or if asked), else linear.

    Negative σ (meaningless for noise) force a linear fit.
    """
    sigma = np.asarray(sigma, dtype=float)
    sigma = sigma[np.isfinite(sigma)]
    if space == "linear" or (sigma < 0).any():
        return "linear"
    positive = sigma[sigma > 0]
    if space == "log":
        return "log" if positive.size else "linear"
    if positive.size >= 2 and positive.max() / positive.min() >= LOG_SPAN:
        return "log"
    return "linear"


def point_errors(
    accuracy: ArrayLike,
    err: ArrayLike | None,
    *,
    floor: float = DEFAULT_FLOOR,
    n_samples: ArrayLike | float | None = None,
) -> np.ndarray:
    """Δy of each point: max(err, floor, √(p(1−p)/n_samples)), the weights of the fit.

    ``n_samples`` is the number of test samples behind a point's mean (test-set size × seeds);
    the binomial term is a lower bound on the standard error of the mean, so a few seeds that
    happen to agree do not make a point look exact.
    """
    y = np.asarray(accuracy, dtype=float)
    dy = np.zeros_like(y) if err is None else np.asarray(err, dtype=float).copy()
    dy = np.where(np.isfinite(dy), np.abs(dy), 0.0)
    dy = np.maximum(dy, floor)
    if n_samples is not None:
        n = np.broadcast_to(np.asarray(n_samples, dtype=float), y.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.clip(y, 0.5 / n, 1.0 - 0.5 / n)
            binomial = np.sqrt(p * (1.0 - p) / n)
        dy = np.maximum(dy, np.where(np.isfinite(binomial), binomial, 0.0))
    return dy


def _points(
    sigma: ArrayLike,
    accuracy: ArrayLike,
    err: ArrayLike | None,
    space: Space,
    floor: float,
    n_samples: ArrayLike | float | None,
) -> _Points:
    s = np.asarray(sigma, dtype=float).ravel()
    y = np.asarray(accuracy, dtype=float).ravel()
    if s.shape != y.shape:
        raise ValueError(f"sigma has {s.size} values but accuracy {y.size}")
    n = None if n_samples is None else np.broadcast_to(np.asarray(n_samples, float), y.shape)
    dy = point_errors(
        y, None if err is None else np.asarray(err, float).ravel(), floor=floor, n_samples=n
    )
    keep = np.isfinite(s) & np.isfinite(y)
    s, y, dy = s[keep], y[keep], dy[keep]
    order = np.argsort(s, kind="stable")
    s, y, dy = s[order], y[order], dy[order]
    chosen = choose_space(s, space)
    if chosen == "log":
        keep = s >= 0
        s, y, dy = s[keep], y[keep], dy[keep]
        positive = s[s > 0]
        with np.errstate(divide="ignore"):
            x = np.where(s > 0, np.log10(np.where(s > 0, s, 1.0)), -np.inf)
        lo, hi = (float(positive.min()), float(positive.max())) if positive.size else (0.0, 0.0)
    else:
        x = s.copy()
        lo, hi = (float(s.min()), float(s.max())) if s.size else (math.nan, math.nan)
    return _Points(s, x, y, dy, chosen, lo, hi)


def _anchor(points: _Points) -> np.ndarray:
    """x with σ = 0 (−∞ in log space) moved far below the data: F there is the top."""
    return np.where(np.isfinite(points.x), points.x, points.x_lo - 1e3 * points.span)


def _is_flat(points: _Points) -> bool:
    """Whether the accuracy drop over σ is within the noise (or tiny)."""
    if points.y.size < 2:
        return True
    drop = float(points.y.max() - points.y.min())
    return drop < max(FLAT_DROP, FLAT_SIGNIFICANCE * float(np.median(points.dy)))


def _is_non_monotone(points: _Points) -> bool:
    """Whether accuracy rises significantly somewhere as σ grows."""
    y, dy = points.y, points.dy
    if y.size < 3:
        return False
    drop = float(y.max() - y.min())
    for j in range(1, y.size):
        i = int(np.argmin(y[:j]))
        rise = y[j] - y[i]
        if rise > RISE_SIGNIFICANCE * math.hypot(dy[i], dy[j]) and rise > RISE_FRACTION * drop:
            return True
    return False


def _lowest_floor(y: np.ndarray) -> float:
    """The lowest a fitted floor may go: 0 for accuracies (a floor below 0 is no accuracy,
    and only lets a curve that has not dropped yet be explained by a far-off one), the lowest
    point for data that go below 0."""
    return min(0.0, float(np.min(y)))


def _most_drop(y: np.ndarray, a_min: float | None) -> float:
    """Upper bound of δa: the fitted top a_min + 2·δa may not pass 1 (or the largest |y|, for
    data that are no accuracies) by more than 5 % (plus the floor, where it is fitted too: a
    box of bounds cannot tie δa to it, so a fit whose top passes it is fitted again with its
    top pinned there, see :func:`_fit_at_highest_top`). Without it, a curve whose first points have
    already dropped could be explained by a top of 2 (an accuracy of 200 %) and a μ before
    the first σ; bounded, such a fit ends at the bound, which is flagged."""
    floor = _lowest_floor(y) if a_min is None else float(a_min)
    return max((_highest_top(y) - floor) / 2, 1e-3)


def _crossing(points: _Points, a_min: float, top: float) -> float:
    """Model-free μ guess in the fit variable, from :func:`half_accuracy_crossing`."""
    finite = np.isfinite(points.x)
    if points.space == "log":
        guess = half_accuracy_crossing(points.sigma[finite], points.y[finite], a_min, top)
        return math.log10(guess) if 0 < guess < math.inf else math.nan
    # Linear grids may start at σ = 0, which the log-interpolating helper skips.
    half = (top + a_min) / 2
    below = np.nonzero(points.y < half)[0]
    if below.size == 0:
        return math.nan
    i = int(below[0])
    if i == 0:
        return float(points.x[0])
    x0, x1, y0, y1 = points.x[i - 1], points.x[i], points.y[i - 1], points.y[i]
    return float(x0 + (y0 - half) / (y0 - y1) * (x1 - x0))


def _chi2(residual: np.ndarray, dof: int) -> tuple[float, bool]:
    from scipy import stats

    chi2 = float(np.sum(residual**2))
    if dof <= 0:
        return math.nan, False
    return chi2 / dof, bool(stats.chi2.sf(chi2, dof) < POOR_FIT_P)


def _run_curve_fit(
    model, x: np.ndarray, y: np.ndarray, dy: np.ndarray, starts, lower, upper
) -> tuple[np.ndarray, np.ndarray, str]:
    """Best (lowest χ²) of ``curve_fit`` over the starts; (params, cov, '') or NaNs and why.

    Starts are tried in order until one reaches χ²/dof ≤ :data:`GOOD_ENOUGH`.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    best: tuple[float, np.ndarray, np.ndarray] | None = None
    reason = "no start converged"
    for start in starts:
        p0 = np.clip(np.asarray(start, float), lower, upper)
        # curve_fit wants strictly interior starts.
        p0 = np.where(p0 <= lower, lower + 1e-9 * (upper - lower), p0)
        p0 = np.where(p0 >= upper, upper - 1e-9 * (upper - lower), p0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, cov = curve_fit(
                    model,
                    x,
                    y,
                    p0=p0,
                    sigma=dy,
                    absolute_sigma=True,
                    bounds=(lower, upper),
                    method="trf",
                    max_nfev=2000,
                )
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as error:
            reason = str(error).split("\n")[0]
            continue
        chi2 = float(np.sum(((model(x, *params) - y) / dy) ** 2))
        if best is None or chi2 < best[0]:
            best = (chi2, params, cov)
        if chi2 <= GOOD_ENOUGH * max(x.size - len(lower), 1):
            break  # as good as noise allows: further starts cannot matter
    if best is None:
        return np.full(len(lower), np.nan), np.full((len(lower), len(lower)), np.nan), reason
    return best[1], _covariance(model, x, dy, best[1], lower, upper), ""


def _covariance(
    model, x: np.ndarray, dy: np.ndarray, params: np.ndarray, lower, upper
) -> np.ndarray:
    """(JᵀJ)⁻¹ of the weighted residuals; a direction the data do not constrain gets ∞.

    ``curve_fit``'s pseudo-inverse gives such directions a variance of 0, which would make a
    step between two σ (μ anywhere in between) look exact.
    """
    n = params.size
    jac = np.empty((x.size, n))
    for j in range(n):
        h = 1e-6 * max(abs(params[j]), 1e-3 * (upper[j] - lower[j]), 1e-8)
        up, down = params.copy(), params.copy()
        up[j], down[j] = params[j] + h, params[j] - h
        jac[:, j] = (model(x, *up) - model(x, *down)) / (2 * h) / dy
    try:
        _, singular, vt = np.linalg.svd(jac, full_matrices=False)
    except np.linalg.LinAlgError:
        return np.full((n, n), np.inf)
    if not singular.size or not np.all(np.isfinite(singular)) or singular[0] == 0:
        return np.full((n, n), np.inf)
    good = singular > 1e-9 * singular[0]
    cov = (vt[good].T / singular[good] ** 2) @ vt[good]
    loose = np.any(np.abs(vt[~good]) > 1e-6, axis=0) if (~good).any() else np.zeros(n, bool)
    cov[loose, :] = np.inf
    cov[:, loose] = np.inf
    return cov


def _min_width(points: _Points) -> float:
    """Smallest logistic width s searched: a tenth of the closest σ spacing.

    A steeper drop than that cannot be told apart from a step between two measured σ; the fit
    then ends at this bound (flagged) instead of at an arbitrary μ with a meaningless error.
    """
    steps = np.diff(points.x[np.isfinite(points.x)])
    steps = steps[steps > 0]
    return max(0.1 * float(steps.min()) if steps.size else 0.0, points.span * 1e-4, 1e-12)


def _bounds_hit(
    params: np.ndarray, lower: np.ndarray, upper: np.ndarray, widths: Sequence[int]
) -> dict[str, bool]:
    """``steep`` (a width s at its lower bound) and ``at_bound`` (any other parameter)."""
    room = 1e-6 * (upper - lower)
    hit = (params - lower < room) | (upper - params < room)
    steep = any(params[i] - lower[i] < max(room[i], 1e-3 * lower[i]) for i in widths)
    others = [i for i in range(params.size) if i not in widths]
    return {"steep": bool(steep), "at_bound": bool(hit[others].any())}


# -- single logistic --------------------------------------------------------------------------


def fit_midpoint(
    sigma: ArrayLike,
    accuracy: ArrayLike,
    err: ArrayLike | None = None,
    *,
    a_min: float | None,
    space: Space = "auto",
    floor: float = DEFAULT_FLOOR,
    n_samples: ArrayLike | float | None = None,
) -> MidpointFit:
    """Fit the paper's logistic F(σ; μ, s, δa, a_min) to one accuracy-vs-σ curve (Sec. 3).

    Args:
        sigma: noise levels (σ ≥ 0; any order; NaN points are dropped).
        accuracy: mean accuracy over seeds at each σ (fraction).
        err: standard error of each mean (std over seeds / √n); None for only the floor.
        a_min: the floor, usually chance accuracy 1/K; None fits it too (multiplicative noise
            with BatchNorm never falls to chance).
        space: ``log`` fits in log10 σ, ``linear`` in σ, ``auto`` chooses (:func:`choose_space`).
        floor: smallest Δy of a point.
        n_samples: test samples behind each mean (test-set size × seeds), for the binomial
            floor of Δy; None if unknown.

    Returns:
        A :class:`MidpointFit`; problems are flags on it, never exceptions.

    Example:
        >>> import numpy as np
        >>> x = np.logspace(-2, 2, 17)
        >>> y = logistic(np.log10(x), 0.0, 0.3, 0.4, 0.1)
        >>> fit = fit_midpoint(x, y, a_min=0.1)
        >>> round(fit.mu, 3), fit.space, fit.quality
        (1.0, 'log', 'ok')
    """
    points = _points(sigma, accuracy, err, space, floor, n_samples)
    free = a_min is None
    n_params = 4 if free else 3
    base = {
        "a_min_free": free,
        "space": points.space,
        "n_points": int(points.y.size),
        "sigma_min": points.sigma_min,
        "sigma_max": points.sigma_max,
    }
    nan = math.nan
    if points.y.size < n_params + 1:
        return MidpointFit(
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan if free else float(a_min),
            0.0 if not free else nan,
            too_few_points=True,
            flat=_is_flat(points),
            message="too few points",
            **base,
        )
    y, dy, x = points.y, points.dy, _anchor(points)
    floor_guess = float(np.min(y)) if free else float(a_min)
    top = float(np.max(y[: max(1, min(3, y.size))]))  # best of the first few σ
    crossing_x = _crossing(points, floor_guess, top)
    mid = crossing_x if math.isfinite(crossing_x) else (points.x_lo + points.x_hi) / 2
    delta0 = max((top - floor_guess) / 2, 1e-3)
    span = points.span
    lower = [points.x_lo - span, _min_width(points), 0.0]
    upper = [points.x_hi + span, span * 3.0, _most_drop(y, a_min)]
    if free:
        lower.append(_lowest_floor(y))
        upper.append(float(np.max(y)) + 1e-6)
    lower_a, upper_a = np.asarray(lower), np.asarray(upper)
    starts = [
        [mid, span * width, delta0, *([floor_guess] if free else [])] for width in (0.05, 0.2)
    ]
    if not math.isfinite(crossing_x):
        starts.append([points.x_hi, span * 0.2, delta0, *([floor_guess] if free else [])])

    if free:

        def model(xv: np.ndarray, m: float, w: float, d: float, a: float) -> np.ndarray:
            return logistic(xv, m, w, d, a)

    else:
        fixed = float(a_min)

        def model(xv: np.ndarray, m: float, w: float, d: float) -> np.ndarray:
            return logistic(xv, m, w, d, fixed)

    params, cov, reason = _run_curve_fit(model, x, y, dy, starts, lower_a, upper_a)
    pinned = False
    if free and not reason and params[3] + 2 * params[2] > _highest_top(y):
        params, cov, reason = _fit_at_highest_top(x, y, dy, starts, lower_a, upper_a)
        pinned = True
    flags = {
        "flat": _is_flat(points),
        "non_monotone": _is_non_monotone(points),
        "crossing": _to_sigma(crossing_x, points.space),
    }
    if reason:
        log.debug("midpoint fit failed: %s", reason)
        return MidpointFit(
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan if free else float(a_min),
            nan,
            message=reason,
            **flags,
            **base,
        )
    errors = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    converged = bool(np.all(np.isfinite(errors)))
    m, m_err = float(params[0]), float(errors[0])
    residual = (model(x, *params) - y) / dy
    chi2_red, poor = _chi2(residual, points.y.size - n_params)
    if points.space == "log":
        mu = 10.0**m
        mu_err = mu * math.log(10.0) * m_err
        log10 = {"log10_mu": m, "log10_mu_err": m_err}
    else:
        mu, mu_err, log10 = m, m_err, {}
    in_range = bool(points.sigma_min <= mu <= points.sigma_max)
    return MidpointFit(
        mu=mu,
        mu_err=mu_err,
        s=float(params[1]),
        s_err=float(errors[1]),
        delta_a=float(params[2]),
        delta_a_err=float(errors[2]),
        a_min=float(params[3]) if free else float(a_min),
        a_min_err=float(errors[3]) if free else 0.0,
        chi2_red=chi2_red,
        residual_rms=float(np.sqrt(np.mean((model(x, *params) - y) ** 2))),
        converged=converged,
        mu_in_range=in_range,
        poor_fit=poor,
        message="" if converged else "covariance not finite",
        **(_bounds_hit(params, lower_a, upper_a, (1,)) | ({"at_bound": True} if pinned else {})),
        **log10,
        **flags,
        **base,
    )


def _highest_top(y: np.ndarray) -> float:
    """Where the fitted top a_min + 2·δa may reach at most: 5 % above 1 (or the largest |y|)."""
    return 1.05 * max(float(np.max(np.abs(y))), 1.0)


def _fit_at_highest_top(
    x: np.ndarray,
    y: np.ndarray,
    dy: np.ndarray,
    starts: list[list[float]],
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, str]:
    """The free-floor fit again with its top pinned at :func:`_highest_top`, a_min = top − 2·δa:
    where the best fit's top passed it, the best within it lies on it (a box of bounds cannot
    tie the floor to δa). Returns the four parameters and their covariance, as the free fit."""
    top = _highest_top(y)

    def model(xv: np.ndarray, m: float, w: float, d: float) -> np.ndarray:
        return logistic(xv, m, w, d, top - 2 * d)

    # δa such that the floor a_min = top − 2·δa stays within its own bounds
    low = np.array([lower[0], lower[1], max((top - upper[3]) / 2, 0.0)])
    high = np.array([upper[0], upper[1], max((top - lower[3]) / 2, low[2] + 1e-9)])
    three = [start[:3] for start in starts]
    params, cov, reason = _run_curve_fit(model, x, y, dy, three, low, high)
    to_four = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -2]], float)  # a_min = top − 2δa
    return np.append(params, top - 2 * params[2]), to_four @ cov @ to_four.T, reason


def _to_sigma(x: float, space: str) -> float:
    if not math.isfinite(x):
        return math.nan
    return 10.0**x if space == "log" else x


# -- two stacked logistics --------------------------------------------------------------------


@dataclass(frozen=True)
class DoubleLogisticFit:
    """Result of :func:`fit_double_logistic`: two midpoints μ1 < μ2 with errors, and flags.

    Parameters are as in :class:`MidpointFit`, per component (1: the first drop, to the plateau
    at ``a_min + 2·delta_a2``; 2: the drop from the plateau to ``a_min``).
    """

    mu1: float
    mu1_err: float
    s1: float
    s1_err: float
    delta_a1: float
    delta_a1_err: float
    mu2: float
    mu2_err: float
    s2: float
    s2_err: float
    delta_a2: float
    delta_a2_err: float
    a_min: float
    a_min_err: float
    a_min_free: bool
    space: Literal["log", "linear"]
    log10_mu1: float = math.nan
    log10_mu1_err: float = math.nan
    log10_mu2: float = math.nan
    log10_mu2_err: float = math.nan
    chi2_red: float = math.nan
    residual_rms: float = math.nan
    n_points: int = 0
    sigma_min: float = math.nan
    sigma_max: float = math.nan
    converged: bool = False
    mu_in_range: bool = False
    flat: bool = False
    non_monotone: bool = False
    too_few_points: bool = False
    at_bound: bool = False
    steep: bool = False
    poor_fit: bool = False
    no_plateau: bool = False
    message: str = ""

    @property
    def plateau(self) -> float:
        """Accuracy of the plateau between the two drops."""
        return self.a_min + 2.0 * self.delta_a2

    @property
    def quality(self) -> str:
        """``ok`` or the raised flags in words."""
        text = _quality(self)
        if self.no_plateau:
            text = "no distinct plateau" if text == "ok" else f"{text}; no distinct plateau"
        return text

    def predict(self, sigma: ArrayLike | float) -> np.ndarray:
        """The fitted curve at ``sigma``."""
        sigma = np.asarray(sigma, dtype=float)
        if self.space == "log":
            with np.errstate(divide="ignore"):
                x = np.where(sigma > 0, np.log10(np.where(sigma > 0, sigma, 1.0)), -np.inf)
            m1, m2 = self.log10_mu1, self.log10_mu2
        else:
            x, m1, m2 = sigma, self.mu1, self.mu2
        return double_logistic(
            x, m1, self.s1, self.delta_a1, m2, self.s2, self.delta_a2, self.a_min
        )

    def as_dict(self) -> dict[str, object]:
        """Every field plus ``plateau`` and ``quality``."""
        return asdict(self) | {"plateau": self.plateau, "quality": self.quality}


def fit_double_logistic(
    sigma: ArrayLike,
    accuracy: ArrayLike,
    err: ArrayLike | None = None,
    *,
    a_min: float | None,
    space: Space = "auto",
    floor: float = DEFAULT_FLOOR,
    n_samples: ArrayLike | float | None = None,
) -> DoubleLogisticFit:
    """Fit two stacked logistics (a drop, a plateau, a second drop) to one curve.

    Arguments are those of :func:`fit_midpoint`. Several starts are tried (plateaus at a few
    levels between top and floor); the one with the lowest χ² is kept and the components are
    ordered so that μ1 ≤ μ2.
    """
    points = _points(sigma, accuracy, err, space, floor, n_samples)
    free = a_min is None
    n_params = 7 if free else 6
    base = {
        "a_min_free": free,
        "space": points.space,
        "n_points": int(points.y.size),
        "sigma_min": points.sigma_min,
        "sigma_max": points.sigma_max,
        "flat": _is_flat(points),
    }
    nan = math.nan
    empty = [nan] * 12
    if points.y.size < n_params + 1:
        return DoubleLogisticFit(
            *empty,
            nan if free else float(a_min),
            nan,
            too_few_points=True,
            message="too few points",
            **base,
        )
    y, dy, x = points.y, points.dy, _anchor(points)
    floor_guess = float(np.min(y)) if free else float(a_min)
    top = float(np.max(y[: max(1, min(3, y.size))]))
    span = points.span
    lower = [points.x_lo - span, _min_width(points), 0.0] * 2
    upper = [points.x_hi + span, span * 3.0, _most_drop(y, a_min)] * 2
    if free:
        lower.append(_lowest_floor(y))
        upper.append(float(np.max(y)) + 1e-6)
    lower_a, upper_a = np.asarray(lower), np.asarray(upper)
    starts = []
    for fraction in (0.25, 0.5, 0.75):
        plateau = floor_guess + fraction * (top - floor_guess)
        m1 = _crossing(points, plateau, top)
        m2 = _crossing(points, floor_guess, plateau)
        m1 = m1 if math.isfinite(m1) else points.x_lo + span / 3
        m2 = m2 if math.isfinite(m2) else points.x_lo + 2 * span / 3
        if m2 <= m1:
            m2 = m1 + span / 4
        for width in (0.03, 0.1):
            starts.append(
                [m1, span * width, max((top - plateau) / 2, 1e-3)]
                + [m2, span * width, max((plateau - floor_guess) / 2, 1e-3)]
                + ([floor_guess] if free else [])
            )

    if free:

        def model(xv, m1, w1, d1, m2, w2, d2, a):
            return double_logistic(xv, m1, w1, d1, m2, w2, d2, a)

    else:
        fixed = float(a_min)

        def model(xv, m1, w1, d1, m2, w2, d2):
            return double_logistic(xv, m1, w1, d1, m2, w2, d2, fixed)

    params, cov, reason = _run_curve_fit(model, x, y, dy, starts, lower_a, upper_a)
    base["non_monotone"] = _is_non_monotone(points)
    if reason:
        return DoubleLogisticFit(*empty, nan if free else float(a_min), nan, message=reason, **base)
    errors = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    first, second = (0, 3) if params[0] <= params[3] else (3, 0)
    converged = bool(np.all(np.isfinite(errors)))
    residual = (model(x, *params) - y) / dy
    chi2_red, poor = _chi2(residual, points.y.size - n_params)
    values: dict[str, float] = {}
    for label, i in (("1", first), ("2", second)):
        m, m_err = float(params[i]), float(errors[i])
        if points.space == "log":
            mu = 10.0**m
            values |= {f"mu{label}": mu, f"mu{label}_err": mu * math.log(10.0) * m_err}
            values |= {f"log10_mu{label}": m, f"log10_mu{label}_err": m_err}
        else:
            values |= {f"mu{label}": m, f"mu{label}_err": m_err}
        values |= {f"s{label}": float(params[i + 1]), f"s{label}_err": float(errors[i + 1])}
        values |= {
            f"delta_a{label}": float(params[i + 2]),
            f"delta_a{label}_err": float(errors[i + 2]),
        }
    significant = [
        values[f"delta_a{k}"] > 2 * values[f"delta_a{k}_err"]
        and values[f"delta_a{k}"] > FLAT_DROP / 2
        for k in ("1", "2")
    ]
    in_range = all(points.sigma_min <= values[f"mu{k}"] <= points.sigma_max for k in ("1", "2"))
    return DoubleLogisticFit(
        **values,
        a_min=float(params[6]) if free else float(a_min),
        a_min_err=float(errors[6]) if free else 0.0,
        chi2_red=chi2_red,
        residual_rms=float(np.sqrt(np.mean((model(x, *params) - y) ** 2))),
        converged=converged,
        mu_in_range=in_range,
        poor_fit=poor,
        **_bounds_hit(params, lower_a, upper_a, (1, 4)),
        no_plateau=not all(significant),
        message="" if converged else "covariance not finite",
        **base,
    )
