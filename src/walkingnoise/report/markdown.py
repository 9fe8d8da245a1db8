"""Tables as Markdown and CSV files; readable formatting of the analysis tables.

Markdown cells are escaped (``|``, ``<``, ``>``, ``&``, backticks), so names from a sweep file
cannot break a table or inject HTML into a rendered page.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walkingnoise.analysis.curves import curve_group_columns
from walkingnoise.analysis.tables import amplitude_rows, midpoint_cells, midpoint_units


def cell_text(value: Any) -> str:
    """One value as display text: numbers to 4 significant digits, NaN as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    if value is pd.NA:
        return "-"
    return str(value)


def flat_columns(frame: pd.DataFrame) -> list[str]:
    """Headers of a frame with several column levels, one text each: ``additive / batchnorm:
    no``. A yes/no value names its level, as it says nothing alone."""
    names = frame.columns.names
    return [
        " / ".join(
            f"{name}: {text}" if name and text in ("yes", "no") else text
            for name, text in ((n, cell_text(p)) for n, p in zip(names, column, strict=True))
            if text
        )
        for column in frame.columns
    ]


def markdown_escape(text: str) -> str:
    """Escape a cell for a Markdown table: HTML characters, pipes, backticks, newlines."""
    escaped = html.escape(text, quote=False).replace("|", "\\|").replace("`", "\\`")
    return " ".join(escaped.split())


def markdown_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (every cell escaped)."""
    if index:
        frame = frame.reset_index()
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.copy()
        frame.columns = flat_columns(frame)
    header = [markdown_escape(cell_text(c)) for c in frame.columns]
    if not header:
        return "_(empty)_\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(markdown_escape(cell_text(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame, out: str | Path, name: str, display: pd.DataFrame | None = None
) -> tuple[Path, Path]:
    """Write ``out/NAME.csv`` (all columns, full precision) and ``out/NAME.md`` (``display``)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    frame.drop(columns=[c for c in ("weights", "history") if c in frame]).to_csv(csv, index=False)
    shown = frame if display is None else display
    md.write_text(markdown_table(shown, index=_has_index(shown)), encoding="utf-8")
    return csv, md


def _has_index(frame: pd.DataFrame) -> bool:
    return isinstance(frame.index, pd.MultiIndex) or frame.index.name is not None


def varying_columns(table: pd.DataFrame, *, always: tuple[str, ...] = ()) -> list[str]:
    """Group columns of ``table`` that take more than one value (plus ``always``)."""
    columns = [c for c in curve_group_columns(table) if c in table]
    return [c for c in columns if c in always or table[c].map(cell_text).nunique(dropna=False) > 1]


def readable_midpoints(table: pd.DataFrame) -> pd.DataFrame:
    """The midpoint table for people: varying group columns, μ ± err (``†`` where the curve
    drops only partly, see ``partial_drops``; and what μ is, where some rows are mixed noise
    over an amplitude), s, a_min, quality."""
    if table.empty:
        return pd.DataFrame(columns=["μ", "quality"])
    groups = varying_columns(table, always=("placement",))
    shown = table[groups].copy()
    for column in groups:
        shown[column] = table[column].map(cell_text)
    if "site_name" in table and (table["site_name"].fillna("") != "").any():
        shown.insert(len(groups), "site name", table["site_name"].fillna("").map(str))
    shown["μ"] = midpoint_cells(table)
    if amplitude_rows(table).any():
        shown["μ is"] = midpoint_units(table)
    shown["space"] = table["space"]
    shown["s"] = table["s"].map(cell_text)
    shown["δa"] = table["delta_a"].map(cell_text)
    shown["a_min"] = [
        cell_text(a) + (" (fit)" if free else "")
        for a, free in zip(table["a_min"], table["a_min_free"], strict=True)
    ]
    shown["χ²/dof"] = table["chi2_red"].map(cell_text)
    shown["seeds"] = table["seeds"]
    shown["quality"] = table["quality"]
    return shown.reset_index(drop=True)
