"""Execution plans: budget kept, every site at least once, monotone in μ."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walkingnoise.analysis.multiexec import (
    describe_power,
    execution_plan,
    largest_remainder,
    plan_table,
    planned_site_midpoints,
    select_walking_group,
    site_midpoints,
    uniform_plan,
)
from walkingnoise.noise.placement import GlobalPlacement
from walkingnoise.noise.site import SiteInfo
from walkingnoise.training.multiexec import ExecutionPlan

midpoints = st.dictionaries(
    st.integers(min_value=0, max_value=40),
    st.floats(min_value=1e-6, max_value=1e10, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=16,
)
powers = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5])


@st.composite
def plans(draw: st.DrawFn) -> tuple[dict[int, float], int, float]:
    mu = draw(midpoints)
    budget = draw(st.integers(min_value=len(mu), max_value=20 * len(mu)))
    return mu, budget, draw(powers)


def _quotas(mu: dict[int, float], budget: int, power: float) -> dict[int, float]:
    total = sum(m**-power for m in mu.values())
    return {s: budget * m**-power / total for s, m in mu.items()}


@settings(max_examples=300, deadline=None)
@given(plans())
def test_plan_keeps_the_budget_and_executes_every_site(case: tuple) -> None:
    mu, budget, power = case
    plan = execution_plan(mu, budget, power)
    assert list(plan) == list(mu)
    assert sum(plan.values()) == budget
    assert min(plan.values()) >= 1
    assert all(isinstance(n, int) for n in plan.values())


@settings(max_examples=300, deadline=None)
@given(plans())
def test_a_less_robust_site_never_gets_fewer_executions(case: tuple) -> None:
    mu, budget, power = case
    plan = execution_plan(mu, budget, power)
    for a in mu:
        for b in mu:
            if mu[a] < mu[b]:
                assert plan[a] >= plan[b], (a, b, plan)


@settings(max_examples=300, deadline=None)
@given(plans())
def test_plan_follows_the_quotas(case: tuple) -> None:
    mu, budget, power = case
    plan = execution_plan(mu, budget, power)
    quotas = _quotas(mu, budget, power)
    for site, quota in quotas.items():
        if quota < 1 - 1e-9:  # clamped to the minimum, never more
            assert plan[site] == 1
    if min(quotas.values()) >= 1 + 1e-9:  # nothing clamped: Hamilton's quota property
        assert all(abs(plan[s] - quotas[s]) < 1 for s in mu)


def test_plan_is_proportional_to_inverse_mu_when_it_divides_evenly() -> None:
    mu = {0: 0.5, 1: 1.0, 2: 2.0, 3: 4.0}
    assert execution_plan(mu, 15, 1.0) == {0: 8, 1: 4, 2: 2, 3: 1}
    assert execution_plan(mu, 14, 0.5) == {0: 5, 1: 4, 2: 3, 3: 2}  # quotas 4.8, 3.4, 2.4, 1.7


def test_a_site_below_one_execution_is_clamped_and_the_rest_reshared() -> None:
    # quotas 20·(100, 10, 1, 0.01)/111.01 = 18.0, 1.80, 0.18, 0.0018: sites 2 and 3 get 1;
    # sites 0 and 1 share 18 as 16.36 and 1.64: floors 16 + 1, the leftover to site 1 (0.64)
    plan = execution_plan({0: 0.01, 1: 0.1, 2: 1.0, 3: 100.0}, 20)
    assert plan == {0: 16, 1: 2, 2: 1, 3: 1}


def test_power_zero_spreads_the_budget_evenly() -> None:
    assert execution_plan({0: 3.0, 1: 1.0, 2: 2.0}, 7, 0.0) == {0: 2, 1: 3, 2: 2}


def test_the_guided_plan_of_power_zero_is_not_labelled_uniform() -> None:
    # p = 0 gives leftovers to the smallest μ, the uniform plan to the lowest site index
    assert describe_power(0.0) == "1/μ^0"
    assert ExecutionPlan("guided", {0: 1}, 0.0).label == "guided 1/μ^0"
    assert ExecutionPlan("uniform", {0: 1}).label == "uniform"


def test_largest_remainder_breaks_ties_by_the_given_order() -> None:
    assert largest_remainder({0: 1.5, 1: 1.5}, 3, order=[1, 0]) == {0: 1, 1: 2}


@pytest.mark.parametrize(
    ("mu", "budget", "power", "message"),
    [
        ({0: 1.0, 1: 2.0}, 1, 1.0, "budget 1 is smaller than the number of sites"),
        ({0: 1.0, 1: 0.0}, 4, 1.0, "site 1: μ must be finite and > 0"),
        ({0: 1.0, 1: math.nan}, 4, 1.0, "site 1: μ must be finite"),
        ({0: 1.0}, 4, -1.0, "power must be a finite number ≥ 0"),
        ({0: 1.0}, 2.5, 1.0, "budget must be an integer"),
        ({}, 3, 1.0, "at least one site"),
    ],
)
def test_bad_plans_are_named(mu: dict, budget: int, power: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        execution_plan(mu, budget, power)


def test_uniform_plan_gives_leftovers_to_the_lowest_indices() -> None:
    assert uniform_plan([3, 1, 2], 8) == {3: 2, 1: 3, 2: 3}
    with pytest.raises(ValueError, match="smaller than the number of sites"):
        uniform_plan([0, 1, 2], 2)


def test_plan_table_has_one_column_per_power() -> None:
    table = plan_table({0: 0.5, 1: 1.0, 2: 2.0}, 14, [1.0, 2.0], names={0: "input"})
    assert list(table.columns) == ["site", "site_name", "mu", "uniform", "n(p=1)", "n(p=2)"]
    assert table["n(p=1)"].tolist() == [8, 4, 2]
    assert table["site_name"].tolist() == ["input", "", ""]
    assert table.attrs["budget"] == 14


def _site_rows(**changes: object) -> pd.DataFrame:
    rows = []
    for batchnorm in (True, False):
        for site in range(3):
            rows.append(
                {
                    "dataset": "digits",
                    "model": "mlp",
                    "batchnorm": batchnorm,
                    "noise": "additive",
                    "train_noise": False,
                    "placement": f"walking:{site}",
                    "site": site,
                    "mu": float(site + 1) if batchnorm else 10.0 * (site + 1),
                }
                | changes
            )
    table = pd.DataFrame(rows)
    table.attrs["group_columns"] = ["dataset", "model", "batchnorm", "noise", "train_noise"]
    return table


def test_select_walking_group_needs_a_unique_group() -> None:
    table = _site_rows()
    with pytest.raises(ValueError, match=r"2 walking-noise groups match any.*no BN"):
        select_walking_group(table, {})
    group = select_walking_group(table, {"batchnorm": False, "model": None})
    assert site_midpoints(group) == {0: 10.0, 1: 20.0, 2: 30.0}
    with pytest.raises(ValueError, match="no walking-noise group matches noise=multiplicative"):
        select_walking_group(table, {"noise": "multiplicative"})


def test_select_walking_group_where_none_means_an_empty_value_of_a_real_column() -> None:
    table = _site_rows()
    table["recipe.clamp"] = [None if bn else 1.0 for bn in table["batchnorm"]]
    group = select_walking_group(table, {}, {"recipe.clamp": None})
    assert set(group["batchnorm"]) == {True}
    assert set(select_walking_group(table, {}, {"recipe.clamp": 1.0})["batchnorm"]) == {False}
    with pytest.raises(KeyError, match=r"cannot select on 'recipe\.clmp'"):
        select_walking_group(table, {}, {"recipe.clmp": None})


def test_site_midpoints_names_sites_without_a_fit() -> None:
    table = _site_rows()
    table.loc[1, "mu"] = math.nan
    group = select_walking_group(table, {"batchnorm": True})
    with pytest.raises(ValueError, match=r"no usable μ at site\(s\) 1"):
        site_midpoints(group)


def test_site_midpoints_warns_of_flagged_fits(caplog: pytest.LogCaptureFixture) -> None:
    table = _site_rows(quality="ok")
    table.loc[2, "quality"] = "μ outside the sampled σ"
    group = select_walking_group(table, {"batchnorm": True})
    with caplog.at_level(logging.WARNING, logger="walkingnoise.analysis.multiexec"):
        assert site_midpoints(group) == {0: 1.0, 1: 2.0, 2: 3.0}
    assert "site 2: μ outside the sampled σ" in caplog.text
    assert "site 0" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="walkingnoise.analysis.multiexec"):
        site_midpoints(select_walking_group(table, {"batchnorm": False}))
    assert caplog.text == ""


def test_planned_site_midpoints_looks_only_at_the_sites_that_get_noise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = _site_rows(quality="ok")
    table.loc[1, "mu"] = math.nan  # the BatchNorm site's fit failed ...
    table.loc[2, "quality"] = "μ outside the sampled σ"
    group = select_walking_group(table, {"batchnorm": True})
    kinds = ("input", "batchnorm", "linear")
    sites = [SiteInfo(index, f"s{index}", kind, (1, 4)) for index, kind in enumerate(kinds)]
    with caplog.at_level(logging.WARNING, logger="walkingnoise.analysis.multiexec"):
        spared = planned_site_midpoints(group, GlobalPlacement(("batchnorm",)), sites)
    assert spared == {0: 1.0, 2: 3.0}  # ... which global-except:batchnorm does not need
    assert "site 2: μ outside the sampled σ" in caplog.text
    with pytest.raises(ValueError, match=r"no usable μ at site\(s\) 1"):
        planned_site_midpoints(group, GlobalPlacement(), sites)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="walkingnoise.analysis.multiexec"):
        planned_site_midpoints(group, GlobalPlacement(("batchnorm", "linear")), sites)
    assert caplog.text == ""  # the flagged site 2 gets no noise
