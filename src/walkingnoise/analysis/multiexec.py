"""Guided multi-execution plans: how often to execute each noisy site within a budget.

Executing a noisy site n times and averaging divides its noise std by √n (Walking Noise,
Sec. "guided multi-execution"). Given a budget of n_t executions in all, a site i gets a share

    n_i ∝ μ_i^(−p)

of it, μ_i being its walking-noise midpoint (a small μ is a sensitive site) and p the power
(1: the paper's 1/μ; 0.5: 1/√μ; 2: 1/μ²; 0: even shares with the leftovers to the smallest μ,
unlike :func:`uniform_plan`). The real-valued quotas q_i = n_t · μ_i^(−p) / Σ_j μ_j^(−p) become
integers by

1. clamping: every site executes at least once, so sites whose quota is below 1 get exactly 1
   and the rest of the budget is shared out again among the others, until no quota is below 1;
2. largest-remainder rounding (Hamilton's method): each remaining site gets ⌊q_i⌋ and the
   executions left over go one each to the sites with the largest fractional parts (ties to
   the smaller μ, then the lower site index).

The result has Σ n_i = n_t exactly, every n_i ≥ 1, |n_i − q_i| < 1 for every site not clamped,
and it is monotone: a site with a smaller μ never gets fewer executions than one with a larger μ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from walkingnoise.analysis.curves import curve_group_columns, describe_group
from walkingnoise.noise.placement import GlobalPlacement
from walkingnoise.noise.site import SiteInfo

log = logging.getLogger(__name__)

#: Powers of the default plan table: 1/√μ, 1/μ, 1/μ².
DEFAULT_POWERS = (0.5, 1.0, 2.0)


def _check_budget(budget: int, n_sites: int) -> int:
    if isinstance(budget, bool) or int(budget) != budget:
        raise ValueError(f"budget must be an integer, got {budget!r}")
    if n_sites == 0:
        raise ValueError("a plan needs at least one site")
    if budget < n_sites:
        raise ValueError(
            f"budget {budget} is smaller than the number of sites ({n_sites}): "
            "every site executes at least once"
        )
    return int(budget)


def largest_remainder(
    quotas: Mapping[int, float], total: int, order: Iterable[int]
) -> dict[int, int]:
    """Round ``quotas`` (summing to ``total``) to integers with the same sum.

    Each key gets ⌊q⌋; the ``total − Σ⌊q⌋`` left over go one each to the keys with the largest
    fractional part, ties broken by their position in ``order`` (earlier first).
    """
    rank = {key: position for position, key in enumerate(order)}
    floors = {key: math.floor(q) for key, q in quotas.items()}
    left = total - sum(floors.values())
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - floors[key]), rank[key]))
    for key in by_remainder[:left]:
        floors[key] += 1
    return floors


def execution_plan(mu: Mapping[int, float], budget: int, power: float = 1.0) -> dict[int, int]:
    """Executions per site, n_i ∝ μ_i^(−power), summing to ``budget`` with every n_i ≥ 1.

    Args:
        mu: site index → walking-noise midpoint μ_i (finite, > 0).
        budget: total executions n_t, at least the number of sites.
        power: p ≥ 0 of n_i ∝ μ_i^(−p); 0 spreads the budget evenly (leftovers to small μ).

    Returns:
        Site index → n_i, in the order of ``mu``.

    Example:
        >>> execution_plan({0: 0.5, 1: 1.0, 2: 2.0}, budget=14)
        {0: 8, 1: 4, 2: 2}
        >>> execution_plan({0: 0.1, 1: 1.0, 2: 10.0}, budget=12)
        {0: 10, 1: 1, 2: 1}
    """
    power = float(power)
    if not math.isfinite(power) or power < 0:
        raise ValueError(f"power must be a finite number ≥ 0, got {power!r}")
    for site, value in mu.items():
        if not (math.isfinite(float(value)) and value > 0):
            raise ValueError(f"site {site}: μ must be finite and > 0 to plan with, got {value!r}")
    budget = _check_budget(budget, len(mu))
    order = sorted(mu, key=lambda site: (float(mu[site]), site))
    log_weight = {site: -power * math.log(float(mu[site])) for site in mu}
    top = max(log_weight.values())
    weight = {site: math.exp(w - top) for site, w in log_weight.items()}  # no overflow for tiny μ
    counts: dict[int, int] = {}
    free = list(order)
    remaining = budget
    while free:
        total = sum(weight[site] for site in free)
        quotas = {site: remaining * weight[site] / total for site in free}
        low = [site for site in free if quotas[site] < 1.0]
        if not low:
            counts |= largest_remainder(quotas, remaining, order)
            break
        for site in low:
            counts[site] = 1
        remaining -= len(low)
        free = [site for site in free if site not in counts]
    return {site: counts[site] for site in mu}


def uniform_plan(sites: Iterable[int], budget: int) -> dict[int, int]:
    """The same executions at every site; a remainder goes one each to the lowest indices."""
    chosen = list(sites)
    budget = _check_budget(budget, len(chosen))
    base, extra = divmod(budget, len(chosen))
    ranked = sorted(chosen)
    return {site: base + (1 if ranked.index(site) < extra else 0) for site in chosen}


def plan_table(
    mu: Mapping[int, float],
    budget: int,
    powers: Iterable[float] = DEFAULT_POWERS,
    *,
    names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """One row per site: μ, the uniform plan and the guided plan of every power.

    Columns: ``site``, ``site_name``, ``mu``, ``uniform``, then ``n(p=…)`` per power (in the
    order given); the frame's ``attrs`` hold ``budget`` and ``powers``.
    """
    powers = list(dict.fromkeys(float(p) for p in powers))
    sites = list(mu)
    table = pd.DataFrame(
        {
            "site": sites,
            "site_name": [(names or {}).get(site, "") for site in sites],
            "mu": [float(mu[site]) for site in sites],
            "uniform": list(uniform_plan(sites, budget).values()),
        }
    )
    for power in powers:
        table[power_label(power)] = list(execution_plan(mu, budget, power).values())
    table.attrs |= {"budget": int(budget), "powers": powers}
    return table


def power_label(power: float) -> str:
    """Column label of a guided plan: ``n(p=1)``."""
    return f"n(p={power:g})"


def describe_power(power: float) -> str:
    """``1/μ``, ``1/√μ``, ``1/μ^2``, … for a power p of n ∝ μ^(−p); p = 0 is ``1/μ^0``, not
    ``uniform``, since its leftovers go to the smallest μ, not to the lowest site index."""
    if power == 0.5:
        return "1/√μ"
    if power == 1:
        return "1/μ"
    return f"1/μ^{power:g}"


# -- choosing the walking-noise group that guides the plan ------------------------------------


def select_walking_group(
    sites: pd.DataFrame, selection: Mapping[str, Any], where: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The rows of one walking-noise group of a site table, chosen by column values.

    Args:
        sites: made by :func:`~walkingnoise.analysis.tables.site_table` (one row per group and
            site, with ``mu``).
        selection: column → wanted value (``dataset``, ``model``, ``batchnorm``, ``noise``,
            ``train_noise``, …); None values are ignored (options not given).
        where: more column → value pairs, each one required; None matches an empty value
            (e.g. ``recipe.clamp`` of unclamped training).

    Raises:
        KeyError: a column that the site table does not have.
        ValueError: no walking group matches, or several do (the message lists them).
    """
    wanted = {key: value for key, value in selection.items() if value is not None}
    wanted |= dict(where or {})
    if sites.empty:
        raise ValueError("no walking-noise results (placement walking:N) to plan with")
    mask = pd.Series(True, index=sites.index)
    for column, value in wanted.items():
        if column not in sites:
            raise KeyError(
                f"cannot select on {column!r}: the walking-noise groups are told apart by "
                f"{', '.join(_group_columns(sites))}"
            )
        mask &= sites[column].isna() if value is None else sites[column] == value
    chosen = sites[mask]
    asked = ", ".join(f"{k}={v}" for k, v in wanted.items()) or "any"
    if chosen.empty:
        raise ValueError(f"no walking-noise group matches {asked}; found: {_groups(sites)}")
    columns = _group_columns(chosen)
    groups = list(chosen.groupby(columns, dropna=False, sort=False)) if columns else [((), chosen)]
    if len(groups) > 1:
        raise ValueError(
            f"{len(groups)} walking-noise groups match {asked}; choose one with "
            f"--dataset/--model/--batchnorm/--noise/--train-noise/--where: {_groups(chosen)}"
        )
    group = groups[0][1].sort_values("site").reset_index(drop=True)
    group.attrs = dict(sites.attrs)
    return group


def _group_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in curve_group_columns(table) if c in table and c != "placement"]


def _groups(table: pd.DataFrame) -> str:
    columns = _group_columns(table)
    labels = []
    for key, _ in table.groupby(columns, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        labels.append(describe_group(dict(zip(columns, key, strict=True))))
    return "; ".join(labels)


def group_of(rows: pd.DataFrame) -> dict[str, Any]:
    """The group column values shared by the rows of one group (e.g. from select_walking_group)."""
    return {column: rows[column].iloc[0] for column in _group_columns(rows)}


def site_midpoints(group: pd.DataFrame) -> dict[int, float]:
    """Site → μ of one walking-noise group; raises if a site's fit gave no finite μ > 0.

    Logs a warning naming the sites whose fit is flagged (``quality`` other than ``ok``, e.g.
    μ outside the sampled σ): a plan built on them leans on an uncertain μ.
    """
    mu = {int(site): float(value) for site, value in zip(group["site"], group["mu"], strict=True)}
    bad = [site for site, value in mu.items() if not (np.isfinite(value) and value > 0)]
    if bad:
        listed = ", ".join(str(site) for site in bad)
        raise ValueError(
            f"no usable μ at site(s) {listed}: the fit failed (see `walking-noise fit`); "
            "measure more σ points there"
        )
    flagged = flagged_sites(group)
    if flagged:
        listed = "; ".join(f"site {site}: {quality}" for site, quality in flagged.items())
        log.warning(
            "the μ of %d site(s) comes from a flagged fit (%s); the plan leans on it "
            "(see `walking-noise fit`)",
            len(flagged),
            listed,
        )
    return mu


def flagged_sites(group: pd.DataFrame) -> dict[int, str]:
    """Site → the fit's problems, for the sites of one group whose fit is not ``ok``."""
    if "quality" not in group:
        return {}
    return {
        int(site): str(quality)
        for site, quality in zip(group["site"], group["quality"], strict=True)
        if isinstance(quality, str) and quality != "ok"
    }


def rows_of_group(frame: pd.DataFrame, group: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``frame`` (e.g. ``prepare_results``) whose columns equal ``group``'s values.

    Missing values (NaN, None, ``""``) match each other, as in the curve groups.
    """
    mask = pd.Series(True, index=frame.index)
    for column, value in group.items():
        if column not in frame:
            raise KeyError(f"no column {column!r} in the results")
        if _missing(value):
            mask &= frame[column].map(_missing)
        else:
            mask &= frame[column] == value
    return frame[mask]


def _missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value):
        return True
    return isinstance(value, float) and math.isnan(value)


def noisy_sites(placement: GlobalPlacement, sites: Sequence[SiteInfo]) -> list[int]:
    """Indices of the sites that get noise under a global ``placement`` (those a plan covers)."""
    return [info.index for info in sites if info.kind not in placement.exclude_kinds]


def planned_site_midpoints(
    group: pd.DataFrame, placement: GlobalPlacement, sites: Sequence[SiteInfo]
) -> dict[int, float]:
    """Site → μ of one walking-noise group at the sites a global ``placement`` covers; the fits
    of the sites it leaves clean are neither needed nor warned about (:func:`site_midpoints`)."""
    covered = group[group["site"].isin(noisy_sites(placement, sites))]
    return planned_midpoints(site_midpoints(covered), placement, sites)


def planned_midpoints(
    mu: Mapping[int, float], placement: GlobalPlacement, sites: Sequence[SiteInfo]
) -> dict[int, float]:
    """μ of the sites that get noise under a global ``placement`` (the sites a plan covers).

    Raises:
        ValueError: a site that gets noise has no μ in ``mu``.
    """
    noisy = noisy_sites(placement, sites)
    missing = [index for index in noisy if index not in mu]
    if missing:
        raise ValueError(
            f"site(s) {', '.join(map(str, missing))} get noise under {placement} but the "
            "walking-noise group has no μ there"
        )
    return {index: mu[index] for index in noisy}
