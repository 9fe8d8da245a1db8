"""Mixed-noise maps from made-up results: points, pivot tables and one figure per order."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from walkingnoise.report.maps import iter_maps, mixed_map_pivot, mixed_map_points, write_mixed_maps

MUL = (0.01, 0.1, 1.0)
ADD = (0.01, 0.1, 1.0, 10.0)


def _accuracy(order: str, mul: float, add: float, seed: int) -> float:
    drop = add if order == "add_first" else add / 10
    return 0.1 + 0.8 / (1 + (mul + drop) ** 2) + 0.01 * seed


def _results() -> pd.DataFrame:
    """σ_mul × σ_add pairs, both orders, 2 seeds; plus one additive row that is not mapped."""
    rows = []
    grid = itertools.product(("mul_first", "add_first"), MUL, ADD, (0, 1))
    for i, (order, mul, add, seed) in enumerate(grid):
        rows.append(
            {
                "hash": f"h{i}",
                "status": "done",
                "dataset": "digits",
                "model": "mlp",
                "batchnorm": True,
                "noise": "mixed",
                "order": order,
                "placement": "walking:4",
                "train_noise": True,
                "sigma": [mul, add],
                "seed": seed,
                "noisy_test_accuracy": _accuracy(order, mul, add, seed),
                "clean_test_accuracy": 0.95,
                "chance_accuracy": 0.1,
            }
        )
    rows.append(rows[0] | {"hash": "additive", "noise": "additive", "sigma": 0.5})
    return pd.DataFrame(rows)


def test_points_average_the_seeds() -> None:
    points = mixed_map_points(_results())
    assert len(points) == 2 * len(MUL) * len(ADD)
    assert (points["n"] == 2).all()
    row = points[(points["order"] == "add_first") & np.isclose(points["sigma_mul"], 0.1)]
    row = row[np.isclose(row["sigma_add"], 10.0)].iloc[0]
    values = [_accuracy("add_first", 0.1, 10.0, seed) for seed in (0, 1)]
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["sem"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2))
    assert row["placement"] == "walking:4"


def test_pivot_has_sigma_add_rows_and_sigma_mul_columns() -> None:
    maps = list(iter_maps(mixed_map_points(_results())))
    assert [order for _, order, _ in maps] == ["add_first", "mul_first"]
    configuration, _order, part = maps[1]
    assert configuration["batchnorm"]
    assert configuration["train_noise"]
    pivot = mixed_map_pivot(part)
    assert pivot.shape == (len(ADD), len(MUL))
    assert list(pivot.index) == sorted(ADD, reverse=True)
    assert list(pivot.columns) == list(MUL)
    expected = np.mean([_accuracy("mul_first", 1.0, 0.01, s) for s in (0, 1)])
    assert pivot.loc[0.01, 1.0] == pytest.approx(expected)


def test_one_figure_per_order_and_the_points_as_csv(tmp_path: Path) -> None:
    written = write_mixed_maps(mixed_map_points(_results()), tmp_path)
    assert set(written) == {"mixed-map-add-first", "mixed-map-mul-first", "points"}
    for name in ("mixed-map-add-first", "mixed-map-mul-first"):
        assert [p.name for p in written[name]] == [f"{name}.png", f"{name}.svg"]
        assert all(p.stat().st_size > 0 for p in written[name])
    csv = pd.read_csv(written["points"][0])
    assert len(csv) == 24
    assert {"order", "sigma_mul", "sigma_add", "mean", "sem", "n"} <= set(csv.columns)


def test_maps_of_several_configurations_are_named_apart(tmp_path: Path) -> None:
    results = _results()
    other = results.assign(batchnorm=False, hash=results["hash"] + "-nobn")
    written = write_mixed_maps(mixed_map_points(pd.concat([results, other])), tmp_path)
    assert {"mixed-map-bn-mul-first", "mixed-map-no-bn-add-first"} <= set(written)
    assert len(written) == 5


def test_no_mixed_results_is_an_error(tmp_path: Path) -> None:
    results = _results()
    points = mixed_map_points(results[results["noise"] != "mixed"])
    assert points.empty
    with pytest.raises(ValueError, match="no finished mixed-noise"):
        write_mixed_maps(points, tmp_path)


def _amplitude_results() -> pd.DataFrame:
    """Mixed noise as amplitude A × ratio r, one seed: A in {0.01, 1, 100}, r in {0.1, 0.5, 0.9}."""
    rows = []
    for i, (ratio, amplitude) in enumerate(itertools.product((0.1, 0.5, 0.9), (0.01, 1.0, 100.0))):
        rows.append(
            _results().iloc[0].to_dict()
            | {
                "hash": f"a{i}",
                "ratio": ratio,
                "sigma": amplitude,
                "noisy_test_accuracy": 0.5 + ratio / 10 - amplitude / 1000,
            }
        )
    return pd.DataFrame(rows)


def test_an_amplitude_sweep_is_tabled_by_ratio_and_amplitude() -> None:
    """Mixed noise as amplitude A × ratio r: pairs (A·(1 − r), A·r) fill no σ grid."""
    points = mixed_map_points(_amplitude_results())
    assert points["amplitude"].to_numpy() == pytest.approx(
        points["sigma_mul"] + points["sigma_add"]
    )
    pivot = mixed_map_pivot(points)
    assert pivot.index.name == "ratio"
    assert list(pivot.index) == [0.9, 0.5, 0.1]
    assert list(pivot.columns) == [0.01, 1.0, 100.0]
    assert pivot.loc[0.5, 100.0] == pytest.approx(0.5 + 0.05 - 0.1)
    assert mixed_map_pivot(points, layout="sigma").shape == (9, 9)
    grid = mixed_map_pivot(mixed_map_points(_results()))
    assert grid.index.name == "sigma_add"
    with pytest.raises(ValueError, match="layout"):
        mixed_map_pivot(points, layout="polar")  # type: ignore[arg-type]


def test_sigmas_computed_from_amplitude_and_ratio_are_written_rounded(tmp_path: Path) -> None:
    """A·(1 − r) of A = 0.01, r = 0.9 is 0.0009999999999999998 in floats; the CSV says 0.001."""
    written = write_mixed_maps(mixed_map_points(_amplitude_results()), tmp_path)
    columns = ["sigma_mul", "sigma_add", "amplitude", "ratio"]
    written_text = pd.read_csv(written["points"][0], usecols=columns, dtype=str)
    assert written_text.map(len).max().max() <= 6  # 0.0001, 0.009, 100.0, …
    csv = pd.read_csv(written["points"][0])
    point = csv[(csv["amplitude"] == 0.01) & (csv["ratio"] == 0.9)].iloc[0]
    assert (point["sigma_mul"], point["sigma_add"]) == (0.001, 0.009)
