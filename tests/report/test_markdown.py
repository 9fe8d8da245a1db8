"""Tables as text: headers of several column levels, escaping."""

from __future__ import annotations

import pandas as pd

from walkingnoise.analysis.tables import pivot_mu
from walkingnoise.report.html import html_table
from walkingnoise.report.markdown import flat_columns, markdown_table, readable_midpoints


def _global_table() -> pd.DataFrame:
    """μ of global noise per (noise, BatchNorm), laid out as the paper's Table 1."""
    rows = [
        {"dataset": "digits", "model": "mlp", "train_noise": False, "recipe.clamp": None,
         "noise": noise, "batchnorm": bn, "mu": mu, "mu_err": 0.1, "quality": "ok"}
        for noise, bn, mu in [("additive", False, 1.0), ("additive", True, 0.7),
                              ("multiplicative", False, 0.6), ("multiplicative", True, 0.5)]
    ]  # fmt: skip
    return pivot_mu(pd.DataFrame(rows))


def test_a_yes_or_no_column_level_is_named() -> None:
    """``additive / no`` says nothing of what is no: the header names BatchNorm."""
    table = _global_table()
    assert flat_columns(table) == [
        "additive / batchnorm: no",
        "additive / batchnorm: yes",
        "multiplicative / batchnorm: no",
        "multiplicative / batchnorm: yes",
    ]
    assert "| additive / batchnorm: no |" in markdown_table(table, index=True)
    assert "<th>multiplicative / batchnorm: yes</th>" in html_table(table, index=True)


def test_a_level_of_other_values_is_not_named() -> None:
    columns = pd.MultiIndex.from_tuples([("additive", "walking:1")], names=["noise", "placement"])
    assert flat_columns(pd.DataFrame([[1.0]], columns=columns)) == ["additive / walking:1"]


def test_the_midpoint_table_marks_curves_that_drop_only_partly() -> None:
    """μ of a curve whose floor stays above half way to chance gets a † in every μ table."""
    rows = [
        {"placement": f"walking:{site}", "site": site, "mu": 2.0, "mu_err": 0.1, "s": 0.3,
         "delta_a": 0.4, "a_min": a_min, "a_max": 0.98, "a_min_free": True,
         "chance": 0.1, "space": "log", "chi2_red": 1.0, "seeds": 2, "quality": "ok"}
        for site, a_min in ((0, 0.1), (1, 0.9))  # site 1 keeps 90 %: a partial drop
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    shown = readable_midpoints(table)
    assert shown["μ"].str.endswith("†").tolist() == [False, True]
