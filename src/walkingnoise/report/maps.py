"""Mixed-noise maps: accuracy over (σ_mul, σ_add) at one site, one map per order (Fig. 6).

Walking Noise (Sec. 5) finds four regimes when multiplicative and additive noise act together;
multiplicative-first keeps self-binarization even when σ_add is up to about 10× σ_mul, while
additive-first collapses to chance. A map is made from the mixed-noise results of a store,
whether σ was swept as a pair grid (``sigma_mul`` × ``sigma_add`` axes) or as amplitude × ratio.

- :func:`mixed_map_points`: the measured points, mean ± standard error over seeds, per
  configuration and order.
- :func:`mixed_map_pivot`: one configuration and order as a σ_add × σ_mul table.
- :func:`write_mixed_maps`: from those points, one heatmap per configuration and order
  (contours interpolated in log σ between the measured points, which are marked; drawn by
  :func:`walkingnoise.report.figures.mixed_heatmap_figure`) plus the points as CSV.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from walkingnoise.analysis.curves import accuracy_curves, curve_group_columns, describe_group
from walkingnoise.report.figures import mixed_heatmap_figure, save_figure

#: Columns that vary inside one map, not between maps.
_INSIDE = ("order", "ratio")
POINT_COLUMNS = ("order", "sigma_mul", "sigma_add", "amplitude", "ratio", "mean", "sem", "n")
#: Table layouts: σ_add × σ_mul (a pair grid) or ratio × amplitude (an amplitude sweep).
Layout = Literal["auto", "sigma", "ratio"]


def mixed_map_points(data: pd.DataFrame, metric: str = "noisy_test_accuracy") -> pd.DataFrame:
    """Every measured (σ_mul, σ_add) of mixed noise: mean, standard error and seeds of ``metric``.

    ``data`` is a store's results (``load_results``) or their ``accuracy_curves``. The columns
    are the configuration (group columns other than order and ratio), then
    :data:`POINT_COLUMNS`, with ``amplitude`` = σ_mul + σ_add and ``ratio`` = σ_add / amplitude
    (the paper's A and r) for every point, all four to 10 significant digits. Points with σ_mul
    or σ_add equal to 0 are kept (they have no place on the log axes of the figure, but are
    measured).
    """
    curves = data if "mean" in data.columns and "status" not in data.columns else None
    curves = accuracy_curves(data, metric) if curves is None else curves
    family = [c for c in curve_group_columns(curves) if c not in _INSIDE]
    if curves.empty or "sigma_mul" not in curves:
        return pd.DataFrame(columns=[*family, *POINT_COLUMNS])
    mixed = curves[(curves["noise"] == "mixed") & curves["sigma_mul"].notna()]
    mixed = mixed[mixed["sigma_add"].notna()]
    if mixed.empty:
        return pd.DataFrame(columns=[*family, *POINT_COLUMNS])
    keys = [*family, "order", "sigma_mul", "sigma_add"]
    rows = []
    for key, part in mixed.groupby(keys, dropna=False, sort=True):
        # Several ratios can give the same pair; average their points weighted by seeds.
        n = part["n"].to_numpy(dtype=float)
        mean = float(np.average(part["mean"], weights=n)) if n.sum() else float("nan")
        sem = float(np.sqrt(np.sum((n * part["sem"].to_numpy(dtype=float)) ** 2)) / n.sum())
        rows.append(
            dict(zip(keys, key, strict=True)) | {"mean": mean, "sem": sem, "n": int(n.sum())}
        )
    points = pd.DataFrame(rows)
    points["amplitude"] = points["sigma_mul"] + points["sigma_add"]
    points["ratio"] = points["sigma_add"] / points["amplitude"].where(points["amplitude"] > 0)
    for column in ("sigma_mul", "sigma_add", "amplitude", "ratio"):
        points[column] = _rounded(points[column])
    points = points[[*family, *POINT_COLUMNS]]
    points.attrs["family_columns"] = family
    return points


def _rounded(values: pd.Series) -> pd.Series:
    """Values to 10 significant digits, so A·(1 − r) + A·r lands on A again and a σ computed
    from A and r reads 0.001, not 0.0009999999999999998."""
    return values.map(lambda v: float(f"{v:.10g}"))


def _family_columns(points: pd.DataFrame) -> list[str]:
    stored = points.attrs.get("family_columns")
    if stored is not None:
        return list(stored)
    return [c for c in points.columns if c not in POINT_COLUMNS]


def iter_maps(points: pd.DataFrame) -> Iterator[tuple[dict[str, Any], str, pd.DataFrame]]:
    """(configuration, order, its points) for every map in ``points``."""
    family = _family_columns(points)
    if points.empty:
        return
    for key, part in points.groupby([*family, "order"], dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        values = dict(zip([*family, "order"], key, strict=True))
        order = str(values.pop("order"))
        yield values, order, part


def _table(points: pd.DataFrame, index: str, columns: str, value: str) -> pd.DataFrame:
    frame = points.assign(**{index: _rounded(points[index]), columns: _rounded(points[columns])})
    table = frame.pivot_table(index=index, columns=columns, values=value, aggfunc="mean")
    return table.sort_index(ascending=False).sort_index(axis=1)


def mixed_map_pivot(
    points: pd.DataFrame, value: str = "mean", *, layout: Layout = "auto"
) -> pd.DataFrame:
    """One map's points as a table (cells without a measurement are NaN).

    ``sigma``: rows σ_add (largest first, as on the figure), columns σ_mul; ``ratio``: rows the
    ratio r = σ_add / A (largest first), columns the amplitude A. ``auto`` takes the layout
    whose table the points fill best: ``sigma`` for a σ_mul × σ_add grid, ``ratio`` for an
    amplitude × ratio sweep.
    """
    if layout not in ("auto", "sigma", "ratio"):
        raise ValueError(f"layout must be auto, sigma or ratio, not {layout!r}")
    tables = {
        "sigma": _table(points, "sigma_add", "sigma_mul", value),
        "ratio": _table(points.dropna(subset=["ratio"]), "ratio", "amplitude", value),
    }
    if layout != "auto":
        return tables[layout]
    return max(tables.values(), key=lambda t: float(t.notna().to_numpy().mean()) if t.size else 0)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9.]+", "-", text.lower()).replace(".", "").strip("-")
    return slug[:60].strip("-")


def map_name(configuration: dict[str, Any], order: str, varying: list[str]) -> str:
    """File name of one map: ``mixed-map[-<varying settings>]-<order>``."""
    label = describe_group({k: v for k, v in configuration.items() if k in varying})
    parts = ["mixed-map", _slug(label), _slug(order.replace("_", "-"))]
    return "-".join(p for p in parts if p)


def write_mixed_maps(points: pd.DataFrame, out: str | Path) -> dict[str, list[Path]]:
    """Write one heatmap (PNG and SVG) per configuration and order, and ``mixed-map.csv``.

    ``points`` come from :func:`mixed_map_points`. Returns map name → the files written (the
    CSV under ``"points"``). Raises ValueError when there are no points.
    """
    if points.empty:
        raise ValueError("the results hold no finished mixed-noise experiments to map")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    family = _family_columns(points)
    varying = [c for c in family if points[c].astype(str).nunique(dropna=False) > 1]
    written: dict[str, list[Path]] = {}
    for configuration, order, part in iter_maps(points):
        name = map_name(configuration, order, varying)
        title = describe_group(configuration)
        curves = part.assign(noise="mixed")
        figure = mixed_heatmap_figure(curves, title=title)
        written[name] = save_figure(figure, folder, name)
    csv = folder / "mixed-map.csv"
    points.to_csv(csv, index=False)
    written["points"] = [csv]
    return written
