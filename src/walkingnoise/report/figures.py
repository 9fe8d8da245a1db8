"""The paper's figures from result tables, drawn with matplotlib's object API (no pyplot).

Each function takes DataFrames made by :mod:`walkingnoise.analysis` and returns a matplotlib
``Figure``; with ``out`` it also writes ``out/NAME.png`` and ``out/NAME.svg``. Figures are
built on the Agg canvas directly, so no GUI backend or global pyplot state is involved and
nothing is ever shown. σ axes are logarithmic when the σ span decades.

- :func:`accuracy_figure` — accuracy vs σ, error bars, fitted logistic, μ marked (Fig. 1)
- :func:`site_mu_figure` — μ per site ± error for several groups side by side (Fig. 2)
- :func:`site_accuracy_figure` — accuracy per site at one large σ (Fig. 3)
- :func:`preservation_figure` — accuracy at the largest σ / clean accuracy per site (Fig. 5)
- :func:`mixed_heatmap_figure` — accuracy over σ_mul × σ_add, one panel per order (Fig. 6)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from walkingnoise.analysis.curves import (
    curve_group_columns,
    describe_difference,
    describe_group,
    iter_curves,
    row_keys,
    shared_sigmas,
)
from walkingnoise.analysis.midpoint import choose_space, predict
from walkingnoise.analysis.tables import UNCONSTRAINED_DECADES, amplitude_rows, partial_drops

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours for series (matplotlib's tab10), cycled.
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DPI = 110


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A Figure attached to an Agg canvas (headless, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out: str | Path, name: str) -> list[Path]:
    """Write ``out/NAME.png`` and ``out/NAME.svg`` (no timestamps, so reruns give equal files)."""
    from matplotlib import rc_context

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    figure.savefig(png, format="png", metadata={"Software": None})
    with rc_context({"svg.hashsalt": "walkingnoise"}):  # element ids without a random salt
        figure.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return [png, svg]


def text(value: object) -> str:
    """A string safe for matplotlib text: ``$`` would start mathtext."""
    return str(value).replace("$", r"\$")


def _finish(figure: Figure, out: str | Path | None, name: str) -> Figure:
    if out is not None:
        save_figure(figure, out, name)
    return figure


def _log_axis(values: Sequence[float] | np.ndarray) -> bool:
    return choose_space(np.asarray(values, dtype=float)) == "log"


def _varying(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns whose value differs between ``groups`` (the ones worth a legend entry)."""
    if not groups:
        return []
    columns = list(groups[0])
    return [c for c in columns if len({_key(g.get(c)) for g in groups}) > 1]


def _common(groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    varying = set(_varying(groups))
    return {k: v for k, v in groups[0].items() if k not in varying} if groups else {}


def _key(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)


def _site_label(site: int, names: Mapping[int, str] | None) -> str:
    name = (names or {}).get(int(site), "")
    return f"{site} {name}".strip()


def _fit_for(fits: pd.DataFrame | None, group: Mapping[str, Any]) -> pd.Series | None:
    """The row of ``fits`` whose group columns equal ``group``."""
    if fits is None or fits.empty:
        return None
    mask = pd.Series(True, index=fits.index)
    for column, value in group.items():
        if column not in fits:
            continue
        if isinstance(value, float) and math.isnan(value):
            mask &= fits[column].isna()
        else:
            mask &= fits[column] == value
    found = fits[mask]
    return None if found.empty else found.iloc[0]


# -- Fig. 1 -----------------------------------------------------------------------------------


def accuracy_figure(
    curves: pd.DataFrame,
    fits: pd.DataFrame | None = None,
    *,
    title: str = "",
    site_names: Mapping[int, str] | None = None,
    out: str | Path | None = None,
    name: str = "accuracy",
) -> Figure:
    """Accuracy vs σ: mean ± standard error per σ, the fitted logistic and μ (Fig. 1).

    ``curves`` may hold several groups (e.g. every site of a walking-noise study), each drawn
    in its own colour; ``fits`` is a midpoint table supplying the fitted curve and μ of each.
    On a log σ axis, σ = 0 points are left out, and so are points without a finite accuracy
    (curves with none are not drawn).
    """
    figure = new_figure(7.5, 4.8)
    ax = figure.add_subplot()
    curves = curves[curves["sigma"].notna() & np.isfinite(curves["mean"].astype(float))]
    groups = list(iter_curves(curves))
    all_sigma = curves["sigma"].to_numpy(dtype=float)
    log_x = _log_axis(all_sigma)
    varying = _varying([g for g, _ in groups])
    cmap = _palette(len(groups))
    chance = float(np.nanmean(curves["chance"])) if curves["chance"].notna().any() else math.nan
    for i, (group, curve) in enumerate(groups):
        color = cmap[i]
        sigma = curve["sigma"].to_numpy(dtype=float)
        keep = sigma > 0 if log_x else np.isfinite(sigma)
        if varying == ["placement"] and pd.notna(curve["site"].iloc[0]):
            label = _site_label(int(curve["site"].iloc[0]), site_names)
        else:
            label = describe_group({k: group[k] for k in varying}) or describe_group(group)
        ax.errorbar(
            sigma[keep],
            curve["mean"].to_numpy(float)[keep],
            yerr=curve["sem"].to_numpy(float)[keep],
            fmt="o",
            ms=3.5,
            color=color,
            capsize=2,
            lw=1,
            label=text(label),
        )
        fit = _fit_for(fits, group)
        if fit is None or not keep.any() or not math.isfinite(float(fit.get("mu", math.nan))):
            continue
        lo, hi = np.nanmin(sigma[keep]), np.nanmax(sigma[keep])
        dense = np.logspace(np.log10(lo), np.log10(hi), 200) if log_x else np.linspace(lo, hi, 200)
        values = predict(
            dense,
            space=fit["space"],
            mu=float(fit["mu"]),
            s=float(fit["s"]),
            delta_a=float(fit["delta_a"]),
            a_min=float(fit["a_min"]),
            log10_mu=float(fit.get("log10_mu", math.nan)),
        )
        style = "-" if fit.get("quality", "ok") == "ok" else ":"
        ax.plot(dense, values, style, color=color, lw=1.2)
        mu = float(fit["mu"])
        if lo <= mu <= hi:
            level = float(fit["a_min"]) + float(fit["delta_a"])  # F(μ): half way down
            flagged = fit.get("quality", "ok") != "ok"  # hollow, as its line is dotted
            face = "white" if flagged else color
            ax.plot([mu], [level], marker="D", color=color, mfc=face, ms=6, mec="black", mew=0.6)
            if len(groups) == 1:
                ax.axvline(mu, color=color, lw=0.8, ls="--")
                ax.annotate(
                    text(f"μ = {_mu_text(fit)}"),
                    (mu, level),
                    xytext=(8, 8),
                    textcoords="offset points",
                    fontsize=9,
                )
    if math.isfinite(chance):
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(_sigma_axis_label(curves))
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="major", alpha=0.3)
    common = _common([g for g, _ in groups])
    ax.set_title(text(title or describe_group(common)), fontsize=10)
    if groups:
        columns = 2 if len(groups) > 8 else 1
        ax.legend(fontsize=7, ncols=columns, loc="best", framealpha=0.8)
    return _finish(figure, out, name)


#: What the x axis of mixed noise over an amplitude A with a ratio r holds.
AMPLITUDE_AXIS = "amplitude A (σ_add = A·r, σ_mul = A·(1−r))"


def _sigma_axis_label(curves: pd.DataFrame) -> str:
    """``noise level σ``, or the amplitude A where the curves are mixed noise with a ratio."""
    amplitude = amplitude_rows(curves)
    if not amplitude.any():
        return "noise level σ"
    if amplitude.all():
        return f"noise {AMPLITUDE_AXIS}"
    return f"noise level σ; for mixed noise with a ratio r, {AMPLITUDE_AXIS}"


def _mu_text(fit: Mapping[str, Any]) -> str:
    from walkingnoise.analysis.tables import midpoint_text

    return midpoint_text(fit)


def _palette(n: int) -> list[str]:
    if n <= len(_COLORS):
        return list(_COLORS[: max(n, 1)])
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["viridis"]
    return [to_hex(cmap(i / max(n - 1, 1))) for i in range(n)]


# -- Fig. 2 and 3: per-site series ------------------------------------------------------------


def _series(table: pd.DataFrame, exclude: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """Split a per-site table into series: one per combination of its varying group columns."""
    columns = [c for c in curve_group_columns(table) if c in table and c not in exclude]
    if table.empty:
        return []
    keys = table[columns].map(_key).agg("|".join, axis=1) if columns else ""
    keyed = table.assign(_key=keys)
    parts = [part for _, part in keyed.groupby("_key", sort=False)]
    groups = [{c: part[c].iloc[0] for c in columns} for part in parts]
    varying = _varying(groups)
    return [
        (describe_difference(g, varying) or describe_group(g), part.drop(columns="_key"))
        for g, part in zip(groups, parts, strict=True)
    ]


def _site_axis(ax: Axes, sites: Sequence[int], names: Mapping[int, str] | None) -> None:
    ax.set_xticks(list(sites))
    ax.set_xticklabels(
        [text(_site_label(s, names)) for s in sites], rotation=60, ha="right", fontsize=8
    )
    ax.set_xlabel("noise site")


def site_mu_figure(
    sites: pd.DataFrame,
    *,
    title: str = "",
    site_names: Mapping[int, str] | None = None,
    out: str | Path | None = None,
    name: str = "site-mu",
) -> Figure:
    """μ ± error per site for several groups side by side (Fig. 2), log μ axis.

    ``sites`` is a site table (:func:`~walkingnoise.analysis.tables.site_table`) of one model;
    each combination of its other group columns (noisy training, clamping, …) is a series.
    Hollow markers are fits with a quality flag or a μ too loose for an error bar (see
    :func:`_error_bar`), triangles curves that drop only partly
    (:func:`~walkingnoise.analysis.tables.partial_drops`), whose μ is no robustness level.
    """
    figure = new_figure(8.0, 4.8)
    ax = figure.add_subplot()
    names = site_names or _names_from(sites)
    series = _series(sites, exclude=("placement", "site", "site_name"))
    width = 0.7 / max(len(series), 1)
    all_sites: set[int] = set()
    positive = []
    for i, (label, part) in enumerate(series):
        part = part[np.isfinite(part["mu"].to_numpy(dtype=float))]
        index = part["site"].to_numpy(dtype=float)
        all_sites.update(int(s) for s in index)
        offset = (i - (len(series) - 1) / 2) * width
        mu = part["mu"].to_numpy(dtype=float)
        positive.extend(mu[mu > 0])
        lower, err = _error_bar(part, mu)
        tops = mu + err
        positive.extend(tops[np.isfinite(tops) & (tops > 0)])  # a wide bar asks for a log axis
        # a flagged fit, or one whose μ has no bar (unconstrained): hollow, never precise-looking
        loose = (part["quality"] != "ok").to_numpy() | ~np.isfinite(err)
        partial = partial_drops(part).to_numpy()
        color = _COLORS[i % len(_COLORS)]
        drop = "partial drop: floor above half way"
        kinds = [
            (~loose & ~partial, "o", color, label),
            (loose & ~partial, "o", "white", _qualified(label, "flagged fit or no error bar")),
            (~loose & partial, "^", color, _qualified(label, drop)),
            (loose & partial, "^", "white", _qualified(label, f"{drop}, flagged fit")),
        ]
        for chosen, marker, face, series_label in kinds:
            if chosen.any() or series_label == label:
                ax.errorbar(
                    index[chosen] + offset,
                    mu[chosen],
                    yerr=[lower[chosen], err[chosen]],
                    fmt=marker,
                    ms=4,
                    mfc=face,
                    color=color,
                    capsize=2,
                    lw=1 if face == color else 0.8,
                    label=text(series_label),
                )
    if _spans(positive):
        ax.set_yscale("log")
    _site_axis(ax, sorted(all_sites), names)
    ax.set_ylabel("midpoint noise level μ")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.set_title(text(title or "μ per site"), fontsize=10)
    if ax.get_legend_handles_labels()[1]:  # one unnamed series: no legend
        ax.legend(fontsize=7, loc="best")
    return _finish(figure, out, name)


def _qualified(label: str, kind: str) -> str:
    """``noisy training (flagged fit)``, or the kind alone for an unnamed series."""
    return f"{label} ({kind})" if label else kind


def _error_bar(part: pd.DataFrame, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(below, above) μ of each fit's error bar: 10^(log10 μ ± err) for a fit in log σ,
    μ ± err for a linear one; no bar (NaN) where the error is not finite, or spans
    ``UNCONSTRAINED_DECADES`` or more (it would stretch the axis over hundreds of decades and
    flatten every other point). A log axis cannot go below zero, so a linear bar stops just
    above it; a μ ≤ 0 (a flagged linear fit, e.g. of a store still being written) keeps its
    bar as it is."""
    err = part["mu_err"].to_numpy(dtype=float)
    below = np.where(mu > 0, np.minimum(err, mu * 0.999), err)
    above = err.copy()
    if "log10_mu" in part:
        logged = np.isfinite(part["log10_mu"].to_numpy(dtype=float)) & (mu > 0)
        log_err = part["log10_mu_err"].to_numpy(dtype=float)
        unconstrained = logged & ~(log_err < UNCONSTRAINED_DECADES)
        log_err = np.where(unconstrained, np.nan, log_err)
        below = np.where(logged, mu * (1 - 10.0**-log_err), below)
        above = np.where(logged, mu * (10.0**log_err - 1), above)
    missing = ~(np.isfinite(below) & np.isfinite(above))
    return np.where(missing, np.nan, below), np.where(missing, np.nan, above)


def _spans(values: Sequence[float]) -> bool:
    """Whether positive values span at least a factor 10 (worth a log axis for μ)."""
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(values) and max(values) / min(values) >= 10


def _names_from(table: pd.DataFrame) -> dict[int, str]:
    if "site_name" not in table:
        return {}
    return {int(s): str(n) for s, n in zip(table["site"], table["site_name"], strict=True) if n}


def nearest_sigma(curves: pd.DataFrame, target: float) -> float:
    """The measured σ closest to ``target`` (in log σ when all σ are positive) that every
    curve of ``curves`` has, so that curves are compared at one σ; any measured σ where
    they share none."""
    shared = shared_sigmas(curves)
    measured = curves["sigma"].dropna().to_numpy(dtype=float)
    sigma = np.array(sorted(shared)) if shared else np.unique(measured)
    if not sigma.size:
        return math.nan
    if (sigma > 0).all() and target > 0:
        return float(sigma[np.argmin(np.abs(np.log(sigma) - math.log(target)))])
    return float(sigma[np.argmin(np.abs(sigma - target))])


def site_accuracy_figure(
    curves: pd.DataFrame,
    sigma: float,
    *,
    title: str = "",
    site_names: Mapping[int, str] | None = None,
    out: str | Path | None = None,
    name: str = "site-accuracy",
) -> Figure:
    """Accuracy ± standard error per site at the measured σ nearest ``sigma`` (Fig. 3), the
    same for every site where they share one (:func:`nearest_sigma`).

    ``curves`` are walking-noise curves of one model (``accuracy_curves``); each combination of
    the other group columns is a series.
    """
    figure = new_figure(8.0, 4.5)
    ax = figure.add_subplot()
    walking = curves[curves["site"].notna() & curves["sigma"].notna()]
    series_columns = [c for c in curve_group_columns(curves) if c != "placement"]
    shared: dict[str, float] = {}  # per series (the sites of one group): the σ they share
    if not walking.empty:
        walking = walking.assign(_series=row_keys(walking, series_columns))
        for key, part in walking.groupby("_series", sort=False):
            shared[str(key)] = nearest_sigma(part, sigma)
    rows = []
    for group, curve in iter_curves(walking):
        at = shared[curve["_series"].iloc[0]]
        if not (curve["sigma"] == at).any():
            at = nearest_sigma(curve, sigma)
        point = curve[curve["sigma"] == at]
        if not point.empty:
            rows.append(group | point.iloc[0][["site", "sigma", "mean", "sem", "chance"]].to_dict())
    table = pd.DataFrame(rows)
    if not table.empty:
        table.attrs["group_columns"] = curve_group_columns(curves)
    series = _series(table, exclude=("placement", "site", "site_name"))
    width = 0.8 / max(len(series), 1)
    all_sites: set[int] = set()
    for i, (label, part) in enumerate(series):
        index = part["site"].to_numpy(dtype=float)
        all_sites.update(int(s) for s in index)
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(
            index + offset,
            part["mean"].to_numpy(float),
            width=width,
            yerr=part["sem"].to_numpy(float),
            color=_COLORS[i % len(_COLORS)],
            capsize=2,
            label=text(label),
            alpha=0.85,
        )
    if not table.empty and table["chance"].notna().any():
        ax.axhline(float(table["chance"].mean()), color="grey", ls="--", lw=0.8, label="chance")
    _site_axis(ax, sorted(all_sites), site_names)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(True, axis="y", alpha=0.3)
    shown = sorted(table["sigma"].unique()) if not table.empty else [sigma]
    at_text = ", ".join(f"{s:.3g}" for s in shown)
    ax.set_title(text(title or "accuracy per site") + f"  (σ = {at_text})", fontsize=10)
    if series:
        ax.legend(fontsize=7, loc="best")
    return _finish(figure, out, name)


# -- Fig. 5 -----------------------------------------------------------------------------------


def _series_line(ax: Axes, x: Any, y: Any, err: Any, index: int, label: str) -> None:
    """One series as points joined by a line, with error bars (none where NaN), in the
    ``index``-th of the fixed colours."""
    ax.errorbar(
        np.asarray(x, dtype=float),
        np.asarray(y, dtype=float),
        yerr=np.nan_to_num(np.asarray(err, dtype=float)),
        fmt="o-",
        ms=4,
        lw=1,
        capsize=2,
        color=_COLORS[index % len(_COLORS)],
        label=text(label),
    )


def preservation_figure(
    preservation: pd.DataFrame,
    *,
    title: str = "",
    site_names: Mapping[int, str] | None = None,
    out: str | Path | None = None,
    name: str = "preservation",
) -> Figure:
    """Accuracy at the largest σ / clean accuracy per site, one series per dataset (Fig. 5).

    ``preservation`` is a :func:`~walkingnoise.analysis.tables.preservation_table` restricted
    to walking-noise rows of one model; other varying group columns split series too. A dashed
    line marks chance / clean accuracy, where a site that falls to chance ends.
    """
    figure = new_figure(8.0, 4.5)
    ax = figure.add_subplot()
    table = preservation[preservation["site"].notna()]
    series = _series(table, exclude=("placement", "site", "site_name"))
    all_sites: set[int] = set()
    for i, (label, part) in enumerate(series):
        part = part.sort_values("site")
        index = part["site"].to_numpy(dtype=float)
        all_sites.update(int(s) for s in index)
        _series_line(ax, index, part["preservation"], part["preservation_err"], i, label)
    _site_axis(ax, sorted(all_sites), site_names)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    if {"chance", "clean_accuracy"} <= set(table.columns):
        ratios = table["chance"].to_numpy(float) / table["clean_accuracy"].to_numpy(float)
        ratios = ratios[np.isfinite(ratios)]
        if ratios.size:  # where a site that falls to chance ends
            level = float(ratios.mean())
            ax.axhline(level, color="grey", lw=0.8, ls="--", label="chance / clean accuracy")
    ax.set_ylabel("accuracy at the largest σ / clean accuracy")
    ax.set_ylim(0, max(1.1, float(np.nanmax(table["preservation"])) + 0.05) if len(table) else 1.1)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(text(title or "accuracy preserved at the largest σ"), fontsize=10)
    if series:
        ax.legend(fontsize=7, loc="best")
    return _finish(figure, out, name)


# -- Noisy Machines --------------------------------------------------------------------------


def eta_accuracy_figure(
    table: pd.DataFrame,
    *,
    title: str = "",
    out: str | Path | None = None,
    name: str = "eta-accuracy",
) -> Figure:
    """Noisy test accuracy against weight noise η, one line per training (Zhou et al.).

    ``table`` is :func:`~walkingnoise.analysis.noisy_machines.weight_noise_accuracy`'s output
    for one group; error bars are the std over seeds; a distillation's T and α name its line
    where several settings occur.
    """
    figure = new_figure(6.5, 4.2)
    ax = figure.add_subplot()
    several = table.loc[
        table["training"].astype(str).str.startswith("distillation"),
        ["temperature", "alpha", "teacher"],
    ].drop_duplicates()
    keys = ["training", "temperature", "alpha", "teacher"]
    lines = table.groupby(keys, dropna=False, sort=False)
    for i, (_key_values, part) in enumerate(lines):
        part = part.sort_values("weight_noise")
        row = part.iloc[0]
        label = str(row["training"])
        if len(several) > 1 and label.startswith("distillation"):
            label += f" (T={row['temperature']:g}, α={row['alpha']:g})"
        _series_line(ax, part["weight_noise"], part["mean"], part["std"], i, label)
    ax.set_xlabel("weight noise η (std relative to each layer's max W − min W)")
    ax.set_ylabel("noisy test accuracy")
    ax.grid(True, alpha=0.3)
    ax.set_title(text(title or "accuracy vs weight noise η"), fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _finish(figure, out, name)


# -- Fig. 6 -----------------------------------------------------------------------------------


def mixed_heatmap_figure(
    curves: pd.DataFrame,
    *,
    title: str = "",
    out: str | Path | None = None,
    name: str = "mixed",
) -> Figure:
    """Accuracy over σ_mul × σ_add for mixed noise, one panel per order (Fig. 6).

    ``curves`` are ``accuracy_curves`` rows of mixed noise (σ pairs or amplitude × ratio) of one
    configuration. Colours (test accuracy in %, as the tables of ``mixed-map``) are interpolated
    between the measured points on log10 axes (``tricontourf``); the measured points are marked.
    Points with σ = 0 cannot sit on a log axis and are left out.
    """
    from matplotlib.ticker import FuncFormatter

    mixed = curves[(curves["noise"] == "mixed") if "noise" in curves else slice(None)]
    mixed = mixed[(mixed["sigma_mul"] > 0) & (mixed["sigma_add"] > 0) & mixed["mean"].notna()]
    orders = sorted(o for o in mixed["order"].dropna().unique()) if "order" in mixed else []
    orders = orders or [""]
    figure = new_figure(5.2 * len(orders) + 0.8, 4.6)
    axes = figure.subplots(1, len(orders), squeeze=False)[0]
    levels = np.linspace(0.0, 100.0, 21)  # in %, as the tables of `mixed-map`
    mappable = None
    power = FuncFormatter(lambda v, _pos: f"$10^{{{v:g}}}$")
    for ax, order in zip(axes, orders, strict=True):
        part = mixed[mixed["order"] == order] if order else mixed
        part = (
            part.groupby(["sigma_mul", "sigma_add"], as_index=False)["mean"].mean()
            if not part.empty
            else part
        )
        x = np.log10(part["sigma_mul"].to_numpy(dtype=float))
        y = np.log10(part["sigma_add"].to_numpy(dtype=float))
        z = 100 * part["mean"].to_numpy(dtype=float)
        if x.size >= 3:
            try:
                mappable = ax.tricontourf(x, y, z, levels=levels, cmap="viridis", extend="neither")
            except (ValueError, RuntimeError):  # collinear points: no triangulation
                mappable = None
        points = ax.scatter(
            x, y, c=z, cmap="viridis", vmin=0, vmax=100, s=14, edgecolors="white", linewidths=0.5
        )
        mappable = mappable or points
        ax.xaxis.set_major_formatter(power)
        ax.yaxis.set_major_formatter(power)
        ax.set_xlabel("σ_mul (multiplicative)")
        ax.set_ylabel("σ_add (additive)")
        ax.set_title(text(order.replace("_", "-") if order else "mixed"), fontsize=10)
        ax.set_aspect("auto")
    if mappable is not None:
        figure.colorbar(mappable, ax=list(axes), label="test accuracy (%)")
    figure.suptitle(text(title or "mixed noise"), fontsize=10)
    return _finish(figure, out, name)
