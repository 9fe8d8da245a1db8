"""The paper's tables as pandas DataFrames: μ per group and per site, preservation, weights.

- :func:`midpoint_table`: one logistic fit per curve (Walking Noise, Sec. 3), μ ± error and
  flags; :func:`double_midpoint_table` the two-logistic variant.
- :func:`site_table`: walking-noise groups, one row per site with its name (Sec. 5, Fig. 2).
- :func:`global_table`: global noise, dataset × model × BatchNorm × noise (Tables 1 and 4).
- :func:`preservation_table`: accuracy at the largest σ over accuracy without noise (Fig. 5).
- :func:`weight_ratio_table`: mean |w| per layer of two groups and their ratio (Table 2);
  :func:`weight_comparison_table` the same for the two values of one column.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from walkingnoise.analysis.curves import (
    GROUP_COLUMNS,
    OPTIONAL_GROUP_COLUMNS,
    accuracy_curves,
    curve_group_columns,
    iter_curves,
    prepare_results,
    row_keys,
    shared_sigmas,
)
from walkingnoise.analysis.midpoint import (
    DEFAULT_FLOOR,
    Space,
    fit_double_logistic,
    fit_midpoint,
)

log = logging.getLogger(__name__)

AMin = Literal["chance", "free", "auto"] | float
#: ``(dataset, model, batchnorm) -> {site index: name}``.
SiteNames = Callable[[str, str, bool], Mapping[int, str]]


def resolve_a_min(a_min: AMin, group: Mapping[str, Any], chance: float) -> float | None:
    """The a_min of a group's fit: chance (1/K), None (free), or free only where it must be.

    ``auto`` frees a_min for multiplicative noise with BatchNorm, alone or first in mixed
    noise, where accuracy does not fall to chance (Walking Noise, Sec. 5 and 6); a float is
    used as is. Unknown chance means free.
    """
    if isinstance(a_min, int | float) and not isinstance(a_min, bool):
        return float(a_min)
    if a_min == "free":
        return None
    if a_min == "auto" and group.get("batchnorm") and _keeps_a_plateau(group):
        return None
    if a_min not in ("chance", "auto"):
        raise ValueError(f"a_min must be chance, free, auto or a number, not {a_min!r}")
    return chance if math.isfinite(chance) else None


def _keeps_a_plateau(group: Mapping[str, Any]) -> bool:
    """Noise under which a network with BatchNorm self-binarizes and keeps accuracy above
    chance: multiplicative noise, alone or applied first in mixed noise (Walking Noise,
    Sec. 5 and 6; additive-first mixed noise collapses to chance)."""
    noise = group.get("noise")
    return noise == "multiplicative" or (noise == "mixed" and group.get("order") == "mul_first")


def _curves(data: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``data`` itself if it is already made by ``accuracy_curves``, else its curves."""
    if "mean" in data.columns and "sem" in data.columns and "status" not in data.columns:
        return data
    return accuracy_curves(data, metric)


def _fit_rows(
    curves: pd.DataFrame,
    fitter: Callable[..., Any],
    *,
    a_min: AMin,
    space: Space,
    floor: float,
    n_test: int | Mapping[str, int] | None,
) -> pd.DataFrame:
    columns = curve_group_columns(curves)
    rows = []
    for group, curve in iter_curves(curves):
        curve = curve[np.isfinite(curve["sigma"].to_numpy(dtype=float))]
        if curve.empty:  # σ pairs (mixed noise as σ_mul, σ_add): a map, not a curve
            continue
        chance = float(np.nanmean(curve["chance"])) if curve["chance"].notna().any() else math.nan
        n = curve["n"].to_numpy(dtype=float)
        size = n_test.get(group.get("dataset", "")) if isinstance(n_test, Mapping) else n_test
        fit = fitter(
            curve["sigma"],
            curve["mean"],
            curve["sem"],
            a_min=resolve_a_min(a_min, group, chance),
            space=space,
            floor=floor,
            n_samples=None if size is None else size * np.maximum(n, 1),
        )
        rows.append(
            group
            | {
                "site": curve["site"].iloc[0],
                "seeds": int(curve["n"].max()),
                "diverged": int(curve["diverged"].sum()),
                "chance": chance,
            }
            | fit.as_dict()
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["site"] = table["site"].astype("Int64")
    table.attrs["group_columns"] = columns
    return table


def fit_curves(
    curves: pd.DataFrame,
    *,
    a_min: AMin = "auto",
    space: Space = "auto",
    floor: float = DEFAULT_FLOOR,
    n_test: int | Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """One :func:`~walkingnoise.analysis.midpoint.fit_midpoint` per curve of ``curves``.

    Args:
        curves: made by :func:`~walkingnoise.analysis.curves.accuracy_curves`.
        a_min: ``auto`` (default: chance level 1/K from the results, fitted for
            multiplicative noise with BatchNorm, as in the paper), ``chance`` (always 1/K),
            ``free`` (always fitted) or a number.
        space: ``auto``, ``log`` or ``linear`` (see ``choose_space``).
        floor: smallest Δy of a point.
        n_test: test-set size (or dataset → size), for the binomial floor of Δy: the standard
            error of a mean over n seeds is at least √(p(1−p)/(n_test·n)). None if unknown,
            which leaves μ's error bars too small when there are few seeds (see
            ``result_test_sizes``).

    Returns:
        Group columns, ``site``, ``seeds``, ``diverged``, ``chance`` and every field of
        ``MidpointFit`` (``mu``, ``mu_err``, …, ``quality``).
    """
    return _fit_rows(curves, fit_midpoint, a_min=a_min, space=space, floor=floor, n_test=n_test)


def midpoint_table(
    results: pd.DataFrame,
    *,
    a_min: AMin = "auto",
    space: Space = "auto",
    floor: float = DEFAULT_FLOOR,
    n_test: int | Mapping[str, int] | Literal["auto"] | None = "auto",
    metric: str = "noisy_test_accuracy",
) -> pd.DataFrame:
    """μ ± error and fit quality for every curve in ``results`` (from ``load_results``).

    See :func:`fit_curves` for the arguments and columns; ``metric`` is the accuracy fitted.
    ``n_test="auto"`` takes each dataset's test-set size from the results (their
    ``test_size``, else the dataset): without it a point's error is the spread of a few seeds
    alone, and μ's error bars come out too small.
    """
    curves = _curves(results, metric)
    n_test = result_test_sizes(results) if n_test == "auto" else n_test
    return fit_curves(curves, a_min=a_min, space=space, floor=floor, n_test=n_test)


def double_midpoint_table(
    results: pd.DataFrame,
    *,
    a_min: AMin = "auto",
    space: Space = "auto",
    floor: float = DEFAULT_FLOOR,
    n_test: int | Mapping[str, int] | Literal["auto"] | None = "auto",
    metric: str = "noisy_test_accuracy",
) -> pd.DataFrame:
    """Like :func:`midpoint_table` with two stacked logistics per curve (μ1, μ2, plateau)."""
    curves = _curves(results, metric)
    n_test = result_test_sizes(results) if n_test == "auto" else n_test
    return _fit_rows(
        curves, fit_double_logistic, a_min=a_min, space=space, floor=floor, n_test=n_test
    )


def _as_midpoints(data: pd.DataFrame, **options: Any) -> pd.DataFrame:
    if "mu" in data.columns and "quality" in data.columns:
        return data
    return midpoint_table(data, **options)


def dataset_site_names(data_root: str | None = None, store: str | Path | None = None) -> SiteNames:
    """Site names from the instrumented model; where it cannot be built (a user's model whose
    module is not imported, data that are not here), those ``store`` kept when its sweeps ran,
    else ``{}``."""
    from walkingnoise.experiment import Experiment
    from walkingnoise.models.registry import model_names, unknown_model
    from walkingnoise.sweep.architecture import architecture_key
    from walkingnoise.sweep.sites import SiteCounter

    counter = SiteCounter(data_root)
    cache: dict[tuple[str, str, bool], dict[int, str]] = {}
    kept: list[Mapping[str, list[str]]] = []  # the store's, read once, at the first failure

    def names(dataset: str, model: str, batchnorm: bool) -> Mapping[int, str]:
        key = (dataset, model, bool(batchnorm))
        if key not in cache:
            try:
                probe = Experiment(dataset=dataset, model=model, batchnorm=batchnorm, noise="none")
                cache[key] = {info.index: info.name for info in counter.table(probe)}
            except Exception as error:  # names are a nicety: any failure leaves indices only
                if not kept:
                    kept.append(_stored_site_names(store))
                stored = kept[0].get(architecture_key(*key))
                if stored is not None:
                    log.info("site names of %s from %s (the model: %s)", model, store, error)
                    cache[key] = dict(enumerate(stored))
                    return cache[key]
                if model in model_names():
                    log.info("no site names for %s/%s: %s", dataset, model, error)
                else:  # a user's model, its module not imported: say how to get them
                    log.warning("no site names for %s: %s", model, unknown_model(model))
                cache[key] = {}
        return cache[key]

    return names


def _stored_site_names(store: str | Path | None) -> Mapping[str, list[str]]:
    """The site names a store kept per network (``{}`` without a store, or one that cannot
    be read)."""
    from walkingnoise.sweep.store import Store

    if store is None:
        return {}
    try:
        with Store(store, read_only=True) as opened:
            return opened.fingerprints("sites")
    except (OSError, ValueError):  # StoreError is an OSError
        return {}


def result_test_sizes(results: pd.DataFrame, data_root: str | None = None) -> dict[str, int]:
    """Test-split size of each dataset in ``results``: from the recorded ``test_size`` metric,
    else by loading the dataset (results stored before that metric existed)."""
    if results.empty or "dataset" not in results:
        return {}
    sizes: dict[str, int] = {}
    if "test_size" in results:
        known = results.dropna(subset=["test_size"]).groupby("dataset")["test_size"].first()
        sizes = {str(name): int(size) for name, size in known.items()}
    missing = [str(d) for d in results["dataset"].dropna().unique() if str(d) not in sizes]
    return sizes | dataset_test_sizes(missing, data_root)


def dataset_test_sizes(datasets: Iterable[str], data_root: str | None = None) -> dict[str, int]:
    """Test-split size of each dataset that can be loaded (for the binomial floor of Δy)."""
    from walkingnoise.data import load_dataset

    sizes = {}
    for name in dict.fromkeys(datasets):
        try:
            sizes[name] = len(load_dataset(name, root=data_root).test)
        except Exception as error:  # sizes are optional: the fit falls back to the floor
            log.info("no test-set size for %s: %s", name, error)
    return sizes


def with_site_names(table: pd.DataFrame, site_names: SiteNames | None) -> pd.DataFrame:
    """``table`` with a ``site_name`` column after ``site`` ("" where unknown or not walking).

    Without ``site_names`` an existing ``site_name`` column is kept.
    """
    if site_names is None and "site_name" in table:
        return table.copy()
    names = [
        (site_names(r["dataset"], r["model"], r["batchnorm"]) if site_names else {}).get(
            int(r["site"]), ""
        )
        if pd.notna(r["site"])
        else ""
        for _, r in table.iterrows()
    ]
    out = table.drop(columns=["site_name"], errors="ignore")
    out.insert(out.columns.get_loc("site") + 1, "site_name", names)
    out.attrs = dict(table.attrs)
    return out


def site_table(
    data: pd.DataFrame, *, site_names: SiteNames | None = None, **options: Any
) -> pd.DataFrame:
    """Walking-noise μ per group and site, in site order, with ``site_name`` where known.

    ``data`` is a midpoint table or results (then fitted with ``options``, see
    :func:`midpoint_table`). ``site_names`` (see :func:`dataset_site_names`) defaults to the
    table's own ``site_name`` column, or to no names.
    """
    table = _as_midpoints(data, **options)
    if table.empty or "site" not in table:
        return pd.DataFrame(columns=[*GROUP_COLUMNS, "site", "site_name", "mu", "mu_err"])
    walking = with_site_names(table[table["site"].notna()], site_names)
    columns = [c for c in curve_group_columns(table) if c != "placement"]
    walking = walking.sort_values([*columns, "site"], kind="stable", na_position="first")
    walking.attrs = dict(table.attrs)
    return walking.reset_index(drop=True)


def partial_drops(table: pd.DataFrame) -> pd.Series:
    """Where a fit's floor a_min stays above half way from its top a_max to chance: the curve
    drops only partly (multiplicative noise with BatchNorm), and μ is the middle of that
    partial drop, not a σ where accuracy falls half way to chance. Such a μ is no robustness
    level to compare with sites that fall to chance: the accuracy kept at the largest σ is
    (:func:`preservation_table`). False where the floor or chance is unknown."""
    needed = {"a_min", "a_max", "chance"}
    if table.empty or not needed <= set(table.columns):
        return pd.Series(False, index=table.index, dtype=bool)
    a_min, a_max, chance = (
        pd.to_numeric(table[c], errors="coerce") for c in ("a_min", "a_max", "chance")
    )
    partial = (a_min - chance) > (a_max - chance) / 2
    return partial.fillna(False).astype(bool)


def midpoint_cells(table: pd.DataFrame, suffix: str = "", *, flagged: bool = False) -> list[str]:
    """μ with its error of each row of a fit table as text (:func:`midpoint_text`), marked as
    every table marks it: ``†`` where the curve drops only partly (:func:`partial_drops`) and,
    with ``flagged``, ``*`` first where the fit has a quality flag."""
    partial = partial_drops(table)
    return [
        midpoint_text(row, suffix)
        + ("*" if flagged and row["quality"] != "ok" else "")
        + ("†" if part else "")
        for (_, row), part in zip(table.iterrows(), partial, strict=True)
    ]


def global_table(data: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """Global-noise μ rows (placement ``global`` or ``global-except:…``), as in Tables 1 and 4.

    Long format (one row per group); :func:`pivot_mu` makes the paper's layout from it.
    """
    table = _as_midpoints(data, **options)
    if table.empty:
        return table
    mask = table["placement"].astype(str).str.startswith("global")
    columns = [c for c in curve_group_columns(table) if c in table]
    out = table[mask].sort_values(columns, kind="stable", na_position="first")
    out.attrs = dict(table.attrs)
    return out.reset_index(drop=True)


#: Under a table of μ with rows of mixed noise over an amplitude: what their μ measures.
AMPLITUDE_NOTE = (
    "μ is amplitude A: the μ of mixed noise over an amplitude A with a ratio r is a value of "
    "A, not of a σ; there σ_add = A·r and σ_mul = A·(1−r)."
)


def amplitude_rows(table: pd.DataFrame) -> pd.Series:
    """Which rows of a fit table are mixed noise over an amplitude A with a ratio r, whose μ is
    in units of A (σ_add = A·r, σ_mul = A·(1−r)) rather than a σ."""
    if "noise" not in table or "ratio" not in table:
        return pd.Series(False, index=table.index)
    return (table["noise"] == "mixed") & pd.to_numeric(table["ratio"], errors="coerce").notna()


def midpoint_units(table: pd.DataFrame) -> list[str]:
    """What the μ of each row of a fit table is: ``amplitude A`` or ``σ``."""
    return ["amplitude A" if a else "σ" for a in amplitude_rows(table)]


def format_mu(mu: float, err: float) -> str:
    """``μ ± err`` with the error to two significant digits (``0.52 ± 0.031``, ``0 ± 5800``);
    ``± 0`` where the values did not spread (an error below float rounding's, 1e-9 of μ)."""
    if not math.isfinite(mu):
        return "n/a"
    if not math.isfinite(err) or err <= 1e-9 * abs(mu):  # no spread but float rounding's
        return f"{mu:.3g} ± ?" if not math.isfinite(err) else f"{mu:.3g} ± 0"
    if _scientific(mu) or err >= 1e5:
        return f"{mu:.2e} ± {err:.1e}"
    place = math.floor(math.log10(err)) - 1  # the error's second significant digit
    if place > 0:
        step = 10**place
        return f"{round(mu / step) * step:.0f} ± {round(err / step) * step:.0f}"
    digits = -place
    return f"{mu:.{digits}f} ± {err:.{digits}f}" if digits <= 6 else f"{mu:.3g} ± {err:.2g}"


def _scientific(value: float) -> bool:
    """Whether ``value`` reads better as ``1.23e+05`` than in fixed point."""
    return abs(value) >= 1e5 or 0 < abs(value) < 1e-3


#: A log-space fit whose error is at least this factor is shown as ``μ ×/÷ factor``.
MULTIPLICATIVE_ERROR_FROM = 1.5

#: A log-space error of this many decades or more (a factor of 1000 either way) says the
#: data do not locate μ: it is shown as ``μ (unconstrained)`` and drawn without an error bar,
#: rather than as a factor such as 10^1366 that only reflects a singular covariance.
UNCONSTRAINED_DECADES = 3.0


def format_midpoint(mu: float, err: float, log10_err: float = math.nan) -> str:
    """μ with its error as it was fitted: ``μ ± err``, or ``μ ×/÷ f`` for a fit in log σ whose
    error is a factor f = 10^err(log10 μ) ≥ 1.5, where a symmetric ± would reach below zero
    or mislead (μ = 1000 with an error of one decade is 100…10,000, not 1000 ± 2300);
    ``μ (unconstrained)`` from :data:`UNCONSTRAINED_DECADES` of error on."""
    wide = math.isfinite(log10_err) and log10_err >= math.log10(MULTIPLICATIVE_ERROR_FROM)
    if not (math.isfinite(mu) and wide):
        return format_mu(mu, err)
    shown = f"{mu:.2e}" if _scientific(mu) else f"{mu:.3g}"
    if log10_err >= UNCONSTRAINED_DECADES:
        return f"{shown} (unconstrained)"
    return f"{shown} ×/÷ {10.0**log10_err:.2g}"


def midpoint_text(row: Mapping[str, Any], suffix: str = "") -> str:
    """:func:`format_midpoint` of a fit table's row (``mu``, ``mu_err``, ``log10_mu_err``;
    ``suffix`` ``"1"`` or ``"2"`` for the two midpoints of a double logistic)."""
    log10_err = row.get(f"log10_mu{suffix}_err", math.nan)
    log10_err = math.nan if log10_err is None or pd.isna(log10_err) else float(log10_err)
    return format_midpoint(float(row[f"mu{suffix}"]), float(row[f"mu{suffix}_err"]), log10_err)


def pivot_mu(
    table: pd.DataFrame,
    index: list[str] | tuple[str, ...] = ("dataset", "model", "train_noise", "recipe.clamp"),
    columns: list[str] | tuple[str, ...] = ("noise", "batchnorm"),
    *,
    keep: tuple[str, ...] = ("dataset", "model", "noise", "batchnorm"),
    flag: bool = True,
) -> pd.DataFrame:
    """μ ± err strings laid out like the paper's tables; ``*`` marks a fit with a quality flag.

    Index and column levels that take one value only are dropped, except those in ``keep``.
    Any other group column (``attrs["group_columns"]``) that differs between curves of one cell
    (placement, mixed-noise ratio, epochs, …) becomes an index level too, so every curve keeps
    its own cell.
    """
    if table.empty:
        return pd.DataFrame()
    frame = table.copy()
    frame["cell"] = [
        midpoint_text(r) + ("*" if flag and r["quality"] != "ok" else "")
        for _, r in frame.iterrows()
    ]

    def levels(names: list[str] | tuple[str, ...]) -> list[str]:
        present = [c for c in names if c in frame]
        return [c for c in present if c in keep or frame[c].map(_display).nunique() > 1]

    rows, cols = levels(index), levels(columns)
    for column in (*rows, *cols):
        frame[column] = frame[column].map(_display)
    keys = [*rows, *cols]
    cell = frame.groupby(keys, sort=False).ngroup() if keys else pd.Series(0, frame.index)
    for column in table.attrs.get("group_columns", []):
        if column in frame and column not in keys:
            shown = frame[column].map(_display)
            if shown.groupby(cell).nunique().max() > 1:
                frame[column] = shown
                rows.append(column)
    if not rows:
        frame["_all"], rows = "", ["_all"]
    cells = frame.groupby([*rows, *cols], sort=False)["cell"].first()
    return cells.unstack(cols) if cols else cells.to_frame("μ")


def _display(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def preservation_table(data: pd.DataFrame, metric: str = "noisy_test_accuracy") -> pd.DataFrame:
    """Per curve: accuracy at the largest σ over accuracy without noise (Walking Noise, Sec. 5).

    "Without noise" is the clean test accuracy of the models of the smallest σ of the curve
    (for inference-only noise every σ shares one clean model per seed; for noisy training the
    least noisy training is the baseline). The error propagates both standard errors; it is NaN
    (unknown) where a point rests on one model.
    The curves of one family (the sites of a walking-noise group) are compared at one σ: the
    largest that all of them have, so a site whose largest σ is missing (a failed experiment)
    does not look more robust than the others; a family without a common σ falls back to each
    curve's own largest.
    """
    curves = _curves(data, metric)
    columns = curve_group_columns(curves)
    finite = curves[np.isfinite(curves["sigma"].to_numpy(dtype=float))]
    family = row_keys(finite, [c for c in columns if c != "placement"])
    alone = finite["site"].isna() if "site" in finite else pd.Series(True, index=finite.index)
    # the sites of a walking group share one σ; any other curve (global noise) is its own
    placement = finite["placement"].astype(str)
    pairs = zip(family, placement, alone, strict=True)
    family = pd.Series(  # built from Python strings: pandas 3.0 cannot add object to arrow text
        [key + where if own else key for key, where, own in pairs],
        index=finite.index,
        dtype=object,
    )
    finite = finite.assign(_family=family)
    largest = _largest_common_sigma(finite)
    rows = []
    for group, curve in iter_curves(finite):
        at = largest[curve["_family"].iloc[0]]
        if math.isfinite(at):
            curve = curve[curve["sigma"] <= at]
        last, first = curve.iloc[-1], curve.iloc[0]
        clean, clean_sem = float(first["clean"]), float(first["clean_sem"])
        value = float(last["mean"])
        sem = float(last["sem"]) if last["n"] > 1 else math.nan  # one model: no spread
        ratio = value / clean if clean > 0 else math.nan
        err = (
            abs(ratio) * math.hypot(sem / value if value else 0.0, clean_sem / clean)
            if (clean > 0)
            else math.nan
        )
        rows.append(
            group
            | {
                "site": curve["site"].iloc[0],
                "sigma_max": float(last["sigma"]),
                "accuracy_max_sigma": value,
                "accuracy_max_sigma_sem": sem,
                "clean_accuracy": clean,
                "clean_accuracy_sem": clean_sem,
                "preservation": ratio,
                "preservation_err": err,
                "chance": float(last["chance"]),
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["site"] = table["site"].astype("Int64")
    table.attrs["group_columns"] = columns
    return table


def _largest_common_sigma(curves: pd.DataFrame) -> dict[str, float]:
    """Per family (the ``_family`` column), the largest σ that every curve of it has."""
    return {
        str(family): max(shared_sigmas(part), default=math.nan)
        for family, part in curves.groupby("_family", sort=False)
    }


def _matches(frame: pd.DataFrame, selection: Mapping[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, wanted in selection.items():
        values = frame[column]
        if wanted is None or (isinstance(wanted, float) and math.isnan(wanted)):
            mask &= values.isna() | values.astype(str).isin(["", "None"])
        else:
            mask &= values == wanted
    return mask


def _weight_columns(by_columns: list[str], stat: str) -> list[str]:
    """The columns of :func:`weight_ratio_table`, so an empty table has them too."""
    return [
        *by_columns,
        "layer",
        *(c for side in "ab" for c in (f"{stat}_{side}", f"{stat}_{side}_sem", f"models_{side}")),
        "configurations",
        "ratio",
        "ratio_err",
    ]


#: Settings that change the network itself, whose layer names then stop corresponding.
_NETWORK_SETTINGS = ("model", "batchnorm")
#: Settings of the evaluation alone, which do not change a trained model's weights.
_EVALUATION_ONLY = ("eval_repeats", "recipe.eval_batch_size")
#: Settings of the noise, which change the weights only of a noisy training.
_NOISE_SETTINGS = ("noise", "order", "ratio", "placement", "sigma", "sigma_mul", "sigma_add",
                   "gradient")  # fmt: skip


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values``; NaN (unknown, not 0) for fewer than two."""
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan


def weight_ratio_table(
    results: pd.DataFrame,
    group_a: Mapping[str, Any],
    group_b: Mapping[str, Any],
    *,
    stat: str = "mean_abs",
    by: str | list[str] | None = None,
    matched: bool = True,
) -> pd.DataFrame:
    """Per layer, mean of a weight statistic over the models of two groups and their ratio a/b.

    Walking Noise (Table 2) compares mean |w| of unclamped and clamped training under additive
    noise: with BatchNorm the weights grow to outgrow the noise. Groups select result rows by
    column values (``{"recipe.clamp": None}`` vs ``{"recipe.clamp": 1.0}``); models shared by
    several experiments (one clean training per seed) count once. ``by`` splits the table, e.g.
    by ``"site"`` or ``["batchnorm", "site"]``. ``matched`` keeps only the configurations
    (σ, site and every other setting but the groups' own and the seed) that both groups
    have, so that the ratio compares like with like: weights grow with σ, and a group that
    holds larger σ than the other would show growth that is not the clamp's doing. The
    number of configurations compared is the ``configurations`` column.
    """
    for column in _NETWORK_SETTINGS:
        if column in group_a and column in group_b and group_a[column] != group_b[column]:
            values = " against ".join(
                str(bool(v)).lower() if isinstance(v, bool | np.bool_) else str(v)
                for v in (group_a[column], group_b[column])
            )
            raise ValueError(
                f"weights cannot be compared across {column} ({values}) layer by layer: the "
                "networks differ, so one layer name means another layer in each (with "
                "BatchNorm, layers.5 of the MLP is a BatchNorm layer, without it a Linear "
                f"one); compare another setting within each network, split by {column} "
                f"(`--by {column}`)"
            )
    frame = prepare_results(results)
    if "weights" not in frame:
        raise ValueError("the results have no per-layer weights column")
    by_columns = [by] if isinstance(by, str) else list(by or [])
    for column in (*group_a, *group_b):
        if column not in frame:
            raise KeyError(f"no column {column!r} in the results to select on")
    for column in by_columns:
        if column not in frame:
            raise KeyError(f"no column {column!r} in the results to split by")
    settings = [
        c
        for c in (*GROUP_COLUMNS, *OPTIONAL_GROUP_COLUMNS, "sigma", "sigma_mul", "sigma_add")
        if c in frame and c not in (*group_a, *group_b, *by_columns, *_EVALUATION_ONLY)
    ]
    # an inference-only experiment's model is its clean training: its noise settings are not
    # the model's, so they do not tell its configuration apart (``frame`` is a copy already);
    # comparing noisy with clean training, the noisy group's noise is what is compared
    if "train_noise" in (*group_a, *group_b):
        settings = [c for c in settings if c not in _NOISE_SETTINGS]
    clean = ~frame["train_noise"].astype(bool)
    for column in _NOISE_SETTINGS:
        if column in settings:
            frame[column] = frame[column].astype(object).where(~clean, None)
    rows = []
    parts = frame.groupby(by_columns, dropna=False, sort=True) if by_columns else [((), frame)]
    for key, part in parts:
        key = key if isinstance(key, tuple) else (key,)
        selected = {label: part[_matches(part, s)] for label, s in (("a", group_a), ("b", group_b))}
        configurations = {label: row_keys(chosen, settings) for label, chosen in selected.items()}
        shared = set(configurations["a"]) & set(configurations["b"])
        stats = {}
        for label, chosen in selected.items():
            if matched:
                chosen = chosen[configurations[label].isin(shared)]
            if "training" in chosen:
                chosen = chosen.drop_duplicates("training")
            per_layer: dict[str, list[float]] = {}
            for weights in chosen["weights"]:
                for layer, values in (weights or {}).items():
                    if stat in values and values[stat] is not None:
                        per_layer.setdefault(layer, []).append(float(values[stat]))
            stats[label] = per_layer
        for layer in sorted(set(stats["a"]) | set(stats["b"]), key=_natural):
            a = np.asarray(stats["a"].get(layer, []), dtype=float)
            b = np.asarray(stats["b"].get(layer, []), dtype=float)
            mean_a = float(a.mean()) if a.size else math.nan
            mean_b = float(b.mean()) if b.size else math.nan
            sem_a, sem_b = _standard_error(a), _standard_error(b)
            ratio = mean_a / mean_b if mean_b else math.nan
            err = (
                abs(ratio) * math.hypot(sem_a / mean_a, sem_b / mean_b)
                if mean_a and mean_b and math.isfinite(ratio)
                else math.nan
            )
            rows.append(
                dict(zip(by_columns, key, strict=True))
                | {
                    "layer": layer,
                    f"{stat}_a": mean_a,
                    f"{stat}_a_sem": sem_a,
                    "models_a": int(a.size),
                    f"{stat}_b": mean_b,
                    f"{stat}_b_sem": sem_b,
                    "models_b": int(b.size),
                    "configurations": len(shared) if matched else math.nan,
                    "ratio": ratio,
                    "ratio_err": err,
                }
            )
    table = pd.DataFrame(rows, columns=_weight_columns(by_columns, stat))
    table.attrs["group_a"] = dict(group_a)
    table.attrs["group_b"] = dict(group_b)
    return table


#: Settings that split a weight comparison into separate tables when they vary.
WEIGHT_COMPARISON_BY = ("dataset", "model", "batchnorm", "noise", "train_noise")


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def two_values(frame: pd.DataFrame, column: str) -> tuple[Any, Any]:
    """The two values ``column`` takes in ``frame`` (a missing value first, else ascending).

    Raises ValueError unless there are exactly two (missing values count as one, ``None``).
    """
    if column not in frame:
        raise KeyError(f"no column {column!r} in the results to compare on")
    values = frame[column]
    missing = values.map(_is_missing) | values.astype(str).isin(["", "None"])
    try:
        present = list(pd.unique(values[~missing]))
    except TypeError:
        raise ValueError(f"column {column!r} holds values that cannot be compared") from None
    found = ([None] if missing.any() else []) + sorted(present, key=lambda v: (str(type(v)), v))
    if len(found) != 2:
        shown = ", ".join(_display(v) for v in found[:6]) or "none"
        raise ValueError(
            f"{column} takes {len(found)} value(s) in the selected results ({shown}); "
            "a comparison needs exactly two"
        )
    return found[0], found[1]


def weight_comparison_table(
    results: pd.DataFrame,
    column: str,
    *,
    by: str | list[str] | None = None,
    stat: str = "mean_abs",
    matched: bool = True,
) -> pd.DataFrame:
    """:func:`weight_ratio_table` of the two groups ``column`` splits ``results`` into.

    The groups are ``column``'s two values (:func:`two_values`; ratio = first / second, so
    ``recipe.clamp`` gives unclamped / clamped as in the paper's Table 2). ``by`` defaults to
    those of :data:`WEIGHT_COMPARISON_BY` that vary. Rows (group, layer) without models on
    both sides are left out; ``matched`` as in :func:`weight_ratio_table`. The values are in
    ``attrs["values"]``.
    """
    frame = prepare_results(results)
    if frame.empty:
        raise ValueError("the results hold no finished experiments")
    first, second = two_values(frame, column)
    if by is None:
        by = [
            c
            for c in WEIGHT_COMPARISON_BY
            if c != column and c in frame and frame[c].astype(str).nunique() > 1
        ]
    table = weight_ratio_table(
        frame, {column: first}, {column: second}, stat=stat, by=by, matched=matched
    )
    table = table[(table["models_a"] > 0) & (table["models_b"] > 0)].reset_index(drop=True)
    if table.empty:
        raise ValueError(
            f"no layer has models with both values of {column} in the same configuration; "
            "choose other groups (--by) or filters"
        )
    table.attrs["values"] = (first, second)
    table.attrs["column"] = column
    table.attrs["by"] = [by] if isinstance(by, str) else list(by)
    return table
