"""Self-binarization: quantize the activations after one noise site to 2 or 3 levels in flight.

Walking Noise (Borras et al., arXiv 2212.10430, Sec. 5) finds that with multiplicative noise
and BatchNorm many layers tolerate σ up to 1e10: the activations after the noise site split
into values near zero and values of order σ, so only *whether* a value is (near) zero carries
information. The test: replace every value near zero by exactly 0 and every other value by the
mean of its cluster, and see that accuracy barely drops.

How the pieces fit:

- :func:`log_magnitude_threshold` chooses the threshold t from the data: Otsu's method on
  log10|x|. The two modes are decades apart, so they are separated in log magnitude, not in x.
  Otsu's threshold maximises the between-class variance of the two classes it makes, i.e. it is
  the best two-cluster split of a 1-D distribution in the least-squares sense (Otsu 1979); it
  is computed exactly on the sorted values (no binning) and placed in the middle, in log, of the
  gap between the two classes. Exact zeros (a ReLU output times any noise stays 0) have no
  logarithm: they are placed one decade below the smallest nonzero magnitude, i.e. they join
  the lowest mode.
- :func:`fit_quantizer` makes a :class:`ThresholdQuantizer` from calibration activations:
  |x| < t → 0, x ≥ t → mean of the calibration values ≥ t, x ≤ −t → mean of those ≤ −t. That
  is 2 levels (0, c₊), or 3 (c₋, 0, c₊) when the calibration has values ≤ −t.
- :func:`quantizing` applies a quantizer in flight: a forward hook on the ``NoiseSite``
  replaces the site's (noisy) output.
- :func:`binarization_study` runs the whole test on a model whose noise is configured: records
  the site's clean and noisy activations on the calibration split, fits the quantizers there
  and measures clean, noisy and quantized accuracy on the evaluation split. Calibrating on the
  validation split and measuring on the test split keeps the thresholds and levels from being
  fitted to the data they are judged on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from walkingnoise.data.dataset import Split
from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.recording import site_outputs
from walkingnoise.training.evaluate import Evaluation, evaluate, evaluate_clean

#: Otsu's threshold is computed on at most this many values (a seeded random subset).
MAX_THRESHOLD_VALUES = 1_000_000
#: Decades below the smallest nonzero magnitude at which exact zeros enter the log histogram.
ZERO_OFFSET_DECADES = 1.0


def _flat_float64(values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).flatten().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def log_magnitudes(values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """log10|x| of every value; exact zeros one decade below the smallest nonzero magnitude.

    Raises ValueError when every value is zero or any is not finite.
    """
    x = np.abs(_flat_float64(values))
    if x.size and not np.isfinite(x).all():
        raise ValueError("the activations contain NaN or infinite values")
    nonzero = x[x > 0]
    if nonzero.size == 0:
        raise ValueError("every activation is exactly 0: there is nothing to threshold")
    floor = math.log10(float(nonzero.min())) - ZERO_OFFSET_DECADES
    logs = np.full(x.shape, floor)
    np.log10(x, out=logs, where=x > 0)
    return logs


def otsu_split(sorted_values: np.ndarray) -> float:
    """Otsu's threshold of sorted 1-D values: the middle of the gap of the best 2-class split.

    Among the splits between two different neighbouring values, the one with the largest
    between-class variance w₀·w₁·(m₀ − m₁)² wins; the threshold is the midpoint of its gap.
    """
    v = np.asarray(sorted_values, dtype=np.float64)
    n = v.size
    distinct = np.flatnonzero(v[1:] > v[:-1])
    if distinct.size == 0:
        raise ValueError("the values take one value only: no threshold separates two classes")
    cumulative = np.cumsum(v)
    k = distinct + 1  # members of the lower class
    mean_low = cumulative[distinct] / k
    mean_high = (cumulative[-1] - cumulative[distinct]) / (n - k)
    between = (k / n) * (1 - k / n) * (mean_low - mean_high) ** 2
    best = distinct[int(np.argmax(between))]
    return float((v[best] + v[best + 1]) / 2)


def log_magnitude_threshold(
    values: torch.Tensor | np.ndarray | Sequence[float], *, max_values: int = MAX_THRESHOLD_VALUES
) -> float:
    """The magnitude t separating "near zero" from the large values: Otsu's method on log10|x|.

    More than ``max_values`` values are subsampled (seeded, so the result is reproducible).

    Example:
        >>> round(log_magnitude_threshold([0.0, 0.0, 1e9, -2e9, 3e9]), -6)
        316000000.0
    """
    logs = log_magnitudes(values)
    if logs.size > max_values:
        pick = np.random.default_rng(0).choice(logs.size, size=max_values, replace=False)
        logs = logs[pick]
    try:
        return float(10.0 ** otsu_split(np.sort(logs)))
    except ValueError:
        raise ValueError(
            "the activations take one magnitude only: no threshold can be chosen from them; "
            "give one"
        ) from None


@dataclass(frozen=True)
class ThresholdQuantizer:
    """|x| < t → 0; x ≥ t → ``positive``; x ≤ −t → ``negative``.

    Attributes:
        threshold: t, a magnitude in the activation's units.
        positive: the level of values ≥ t (mean of such calibration values); None if the
            calibration had none (such values then go to 0).
        negative: the level of values ≤ −t; None if the calibration had none (2 levels).
    """

    threshold: float
    positive: float | None
    negative: float | None = None

    @property
    def levels(self) -> tuple[float, ...]:
        """The values the quantizer can output, ascending."""
        return tuple(sorted({0.0, *(v for v in (self.negative, self.positive) if v is not None)}))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize ``x`` (any shape); the output takes only values in ``levels``."""
        out = torch.zeros_like(x)
        if self.positive is not None:
            out = torch.where(x >= self.threshold, out.new_tensor(self.positive), out)
        if self.negative is not None:
            out = torch.where(x <= -self.threshold, out.new_tensor(self.negative), out)
        return out

    def describe(self) -> str:
        """``t = 3.2e+06, levels -6.3e+09 / 0 / 6.4e+09``."""
        levels = " / ".join(f"{v:.3g}" for v in self.levels)
        return f"t = {self.threshold:.3g}, levels {levels}"


def fit_quantizer(
    values: torch.Tensor | np.ndarray | Sequence[float], threshold: float | None = None
) -> ThresholdQuantizer:
    """A quantizer whose levels are the cluster means of ``values`` (calibration activations).

    ``threshold`` None chooses t by :func:`log_magnitude_threshold`.
    """
    x = _flat_float64(values)
    if threshold is None:
        threshold = log_magnitude_threshold(x)
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"a threshold must be a finite number > 0, got {threshold!r}")
    high, low = x[x >= threshold], x[x <= -threshold]
    if high.size == 0 and low.size == 0:
        raise ValueError(
            f"threshold {threshold:g} puts every activation in the zero cluster "
            f"(largest |x| is {np.abs(x).max():g})"
        )
    return ThresholdQuantizer(
        threshold=float(threshold),
        positive=float(high.mean()) if high.size else None,
        negative=float(low.mean()) if low.size else None,
    )


@contextmanager
def quantizing(model: NoisyModel, site: int, quantizer: ThresholdQuantizer) -> Iterator[None]:
    """Within the block, the output of site ``site`` (noisy, if noise is on) is quantized."""
    if site not in range(len(model.sites)):
        raise ValueError(
            f"site {site} does not exist; the model has sites 0..{len(model.sites) - 1}"
        )

    def replace(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (quantizer(output[0]), *output[1:])
        return quantizer(output)

    handle = model.sites[site].register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class BinarizationStudy:
    """The activations, quantizers and accuracies of one self-binarization test.

    Attributes:
        site: the site whose output was recorded and quantized.
        clean: its output on the calibration split with every site off.
        noisy: its output on the calibration split with the model's noise.
        quantizers: (where the threshold came from: ``otsu`` or ``given``, quantizer).
        table: one row per setting (``clean``, ``noisy``, ``quantized``): ``threshold``,
            ``threshold_from``, ``levels``, ``zero_fraction`` (calibration values quantized to
            0), ``accuracy``, ``accuracy_std`` (over the repeats), ``repeats`` and
            ``relative`` (accuracy / noisy accuracy; not for ``clean``).
    """

    site: int
    clean: torch.Tensor
    noisy: torch.Tensor
    quantizers: list[tuple[str, ThresholdQuantizer]]
    table: pd.DataFrame


def binarization_study(
    model: NoisyModel,
    site: int,
    calibration: Split,
    test: Split,
    *,
    thresholds: Sequence[float] | None = None,
    repeats: int = 5,
    seed: int = 0,
    batch_size: int = 1024,
) -> BinarizationStudy:
    """Record, quantize and evaluate one site of a model whose noise is already configured.

    Args:
        model: the trained model with its evaluation noise set (``set_noise``).
        site: the site to record and quantize.
        calibration: the split the activations, thresholds and cluster means come from (the
            validation split, so the test split stays unseen).
        test: the split the accuracies are measured on.
        thresholds: magnitudes to try; None: the Otsu threshold of the noisy activations only.
        repeats: noisy evaluations averaged per setting.
        seed: seeds the noise; every noisy and quantized evaluation draws the same samples, so
            they differ only by the quantization (a paired comparison).
    """
    clean_x = _outputs(model, site, calibration, batch_size, noise=False, seed=seed)
    noisy_x = _outputs(model, site, calibration, batch_size, noise=True, seed=seed)
    if thresholds is None:
        quantizers = [("otsu", fit_quantizer(noisy_x))]
    else:
        quantizers = [("given", fit_quantizer(noisy_x, float(t))) for t in thresholds]
    rows: list[dict[str, Any]] = []
    clean = evaluate_clean(model, test, batch_size=batch_size)
    rows.append(_row("clean", clean.accuracy, clean.accuracy_std, len(clean.accuracies)))

    def noisy_evaluation() -> Evaluation:
        """The model's noise with the seeded draws; the quantizer hook, if any, applies."""
        return _seeded(
            model, seed, lambda: evaluate(model, test, repeats=repeats, batch_size=batch_size)
        )

    noisy = noisy_evaluation()
    rows.append(_row("noisy", noisy.accuracy, noisy.accuracy_std, len(noisy.accuracies)))
    calibration_values = noisy_x.to(torch.float64)
    for origin, quantizer in quantizers:
        with quantizing(model, site, quantizer):
            result = noisy_evaluation()
        zero = (calibration_values.abs() < quantizer.threshold).double().mean().item()
        rows.append(
            _row("quantized", result.accuracy, result.accuracy_std, len(result.accuracies))
            | {
                "threshold": quantizer.threshold,
                "threshold_from": origin,
                "levels": " / ".join(f"{v:.4g}" for v in quantizer.levels),
                "n_levels": len(quantizer.levels),
                "zero_fraction": zero,
            }
        )
    table = pd.DataFrame(rows)
    table["relative"] = table["accuracy"] / noisy.accuracy if noisy.accuracy > 0 else math.nan
    table.loc[table["setting"] == "clean", "relative"] = math.nan
    return BinarizationStudy(site, clean_x, noisy_x, quantizers, table)


def _row(setting: str, accuracy: float, std: float, repeats: int) -> dict[str, Any]:
    return {
        "setting": setting,
        "threshold": math.nan,
        "threshold_from": "",
        "levels": "",
        "n_levels": pd.NA,
        "zero_fraction": math.nan,
        "accuracy": accuracy,
        "accuracy_std": std,
        "repeats": repeats,
    }


def _seeded(model: NoisyModel, seed: int, run: Any) -> Any:
    """``run()`` with the model's noise drawn from a generator seeded with ``seed``."""
    previous = model.generator
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.set_generator(torch.Generator(device=device).manual_seed(seed))
    try:
        return run()
    finally:
        model.set_generator(previous)


def _outputs(
    model: NoisyModel, site: int, split: Split, batch_size: int, *, noise: bool, seed: int
) -> torch.Tensor:
    def record() -> torch.Tensor:
        return site_outputs(model, split.x, [site], batch_size=batch_size)[site]

    if not noise:
        with model.noise_disabled():
            return record()
    return _seeded(model, seed, record)
