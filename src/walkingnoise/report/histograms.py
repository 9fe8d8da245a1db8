"""Histograms of the activations after a noise site, clean and noisy (self-binarization).

:func:`activation_histogram_figure` draws a 2 × 2 grid: rows clean and noisy, columns a linear
x axis (the values themselves, counts on a log scale so the tails show) and a logarithmic one
(|x| on log-spaced bins, positive and negative values drawn separately). Exact zeros cannot sit
on a log axis; their share is written in the panel. Quantizer thresholds are drawn as dashed
lines on the noisy panels. Like :mod:`walkingnoise.report.figures`, no pyplot state is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from walkingnoise.analysis.binarization import ThresholdQuantizer
from walkingnoise.report.figures import new_figure, save_figure, text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_POSITIVE, _NEGATIVE, _THRESHOLD = "#1f77b4", "#d62728", "#333333"


def _values(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).flatten().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def _linear_panel(ax: Axes, values: np.ndarray, bins: int, thresholds: Sequence[float]) -> None:
    values = values[np.isfinite(values)]
    if values.size:
        low, high = float(values.min()), float(values.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(values, bins=bins, range=(low, high))
        ax.stairs(counts, edges, fill=True, color=_POSITIVE, alpha=0.6)
        ax.set_yscale("log")
    for t in thresholds:
        for x in (-t, t):
            ax.axvline(x, color=_THRESHOLD, ls="--", lw=0.8)
    ax.set_xlabel("activation x")
    ax.set_ylabel("count")
    ax.grid(True, alpha=0.3)


def _log_panel(ax: Axes, values: np.ndarray, bins: int, thresholds: Sequence[float]) -> None:
    values = values[np.isfinite(values)]
    magnitude = np.abs(values)
    nonzero = magnitude[magnitude > 0]
    zero_share = 1.0 - nonzero.size / values.size if values.size else 0.0
    if nonzero.size:
        low, high = np.log10(nonzero.min()), np.log10(nonzero.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = np.logspace(low, high, bins + 1)
        for sign, color, label in ((1, _POSITIVE, "x > 0"), (-1, _NEGATIVE, "x < 0")):
            part = magnitude[(np.sign(values) == sign)]
            if part.size:
                counts, _ = np.histogram(part, bins=edges)
                ax.stairs(counts, edges, color=color, lw=1.2, label=f"{label} ({part.size})")
        ax.set_xscale("log")
    for t in thresholds:
        ax.axvline(t, color=_THRESHOLD, ls="--", lw=0.8, label=f"threshold {t:.3g}")
    ax.text(
        0.02,
        0.95,
        f"{100 * zero_share:.1f} % exactly 0 (not shown)",
        transform=ax.transAxes,
        fontsize=7,
        va="top",
    )
    ax.set_xlabel("|x| (log scale)")
    ax.set_ylabel("count")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")


def activation_histogram_figure(
    clean: torch.Tensor | np.ndarray,
    noisy: torch.Tensor | np.ndarray,
    *,
    quantizers: Sequence[ThresholdQuantizer] = (),
    title: str = "",
    bins: int = 80,
    out: str | Path | None = None,
    name: str = "activations",
) -> Figure:
    """Histograms of one site's activations without and with noise, on linear and log axes.

    With ``out`` the figure is also written to ``out/NAME.png`` and ``out/NAME.svg``.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    figure = new_figure(10.0, 6.8)
    axes = figure.subplots(2, 2)
    thresholds = [q.threshold for q in quantizers]
    for row, (label, data, marks) in enumerate(
        (("without noise", clean, ()), ("with noise", noisy, thresholds))
    ):
        values = _values(data)
        _linear_panel(axes[row][0], values, bins, marks)
        _log_panel(axes[row][1], values, bins, marks)
        axes[row][0].set_title(text(f"{label}: x"), fontsize=9)
        axes[row][1].set_title(text(f"{label}: |x| on a log axis"), fontsize=9)
    figure.suptitle(text(title or "activations after the noise site"), fontsize=10)
    if out is not None:
        save_figure(figure, out, name)
    return figure
