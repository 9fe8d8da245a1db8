"""Per-site profiles of one trained model: the SQNR of its activations under a noise setting.

Drawn like :mod:`walkingnoise.report.figures` (object API on the Agg canvas, PNG and SVG).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib import rcParams

from walkingnoise.report.figures import new_figure, save_figure, text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The columns that tell one profile (noise setting) from another.
SETTING_COLUMNS = ("noise", "placement", "sigma")


def setting_label(row: Mapping[str, object]) -> str:
    """``additive walking:3 σ=0.5`` for a profile row."""
    sigma = row.get("sigma")
    if isinstance(sigma, tuple | list):
        level = "σ=(" + ", ".join(f"{float(v):g}" for v in sigma) + ")"
    else:
        level = f"σ={float(sigma):g}" if sigma is not None else ""
    return " ".join(str(part) for part in (row.get("noise"), row.get("placement"), level) if part)


def sqnr_figure(
    profile: pd.DataFrame,
    *,
    title: str = "",
    out: str | Path | None = None,
    name: str = "sqnr",
) -> Figure:
    """SQNR in dB per site, one line per noise setting (see ``analysis.sqnr.sqnr_profile``).

    Filled markers are sites that inject noise themselves, hollow ones carry noise from earlier
    sites. Noise-free sites (+∞ dB) are left out and named in a note under the axis.
    """
    figure = new_figure(8.0, 4.5)
    ax = figure.add_subplot()
    cycle = itertools.cycle(rcParams["axes.prop_cycle"].by_key()["color"])
    keys = profile[list(SETTING_COLUMNS)].astype(str).agg("|".join, axis=1)
    sites = sorted(int(s) for s in profile["site"].unique())
    names = dict(zip(profile["site"].astype(int), profile["site_name"].astype(str), strict=False))
    noise_free: set[int] = set()
    for _, part in profile.assign(_key=keys).groupby("_key", sort=False):
        part = part.sort_values("site")
        value = part["sqnr_db"].to_numpy(dtype=float)
        site = part["site"].to_numpy(dtype=float)
        finite = np.isfinite(value)
        noise_free.update(int(s) for s in site[np.isposinf(value)])
        color = next(cycle)
        label = text(setting_label(part.iloc[0].to_dict()))
        ax.plot(site[finite], value[finite], "-", color=color, lw=1, label=label)
        injects = part["injects"].to_numpy(dtype=bool)
        ax.plot(site[finite & injects], value[finite & injects], "o", color=color, ms=5)
        ax.plot(
            site[finite & ~injects], value[finite & ~injects], "o", mfc="white", color=color, ms=5
        )
    ax.set_xticks(sites)
    ax.set_xticklabels(
        [text(f"{s} {names.get(s, '')}".strip()) for s in sites],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax.set_xlabel("noise site")
    ax.set_ylabel("SQNR (dB)")
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(text(title or "signal-to-noise ratio per site"), fontsize=10)
    if len(keys.unique()):
        ax.legend(fontsize=7, loc="best", title="filled: site injects noise", title_fontsize=7)
    if noise_free:
        listed = ", ".join(str(s) for s in sorted(noise_free))
        ax.text(
            0.01,
            0.02,
            f"noise-free (+∞ dB), not drawn: site {listed}",
            transform=ax.transAxes,
            fontsize=7,
            color="grey",
        )
    if out is not None:
        save_figure(figure, out, name)
    return figure
