"""Per-layer weight statistics of known tensors, and the two-group comparison (Table 2)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from walkingnoise.analysis.tables import format_mu, two_values, weight_comparison_table
from walkingnoise.analysis.weights import weight_statistics


def test_statistics_of_known_weights() -> None:
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
    model = nn.Sequential(linear, nn.ReLU(), nn.Sequential(nn.BatchNorm1d(3), nn.Linear(2, 1)))
    with torch.no_grad():
        model[2][1].weight.copy_(torch.tensor([[-0.5, 0.5]]))
    stats = weight_statistics(model)
    assert list(stats) == ["0", "2.0", "2.1"]  # modules without a weight are left out
    # mean |w| = 10/4; max |w| = 4; sample std: mean −0.5, squares 2.25+2.25+12.25+12.25 = 29.
    assert stats["0"] == pytest.approx({"mean_abs": 2.5, "max_abs": 4.0, "std": math.sqrt(29 / 3)})
    assert stats["2.0"] == pytest.approx({"mean_abs": 1.0, "max_abs": 1.0, "std": 0.0})
    assert stats["2.1"] == pytest.approx({"mean_abs": 0.5, "max_abs": 0.5, "std": math.sqrt(0.5)})


def test_a_single_weight_has_zero_std() -> None:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(-3.0)
    assert weight_statistics(layer) == {"": {"mean_abs": 3.0, "max_abs": 3.0, "std": 0.0}}


def test_statistics_do_not_run_a_weights_parametrization() -> None:
    """Spectral norm's power iteration would move its buffers (training mode) if the statistics
    read its computed weight; they leave the layer as it was and keep the plain weights."""
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 2)).train()
    before = {name: b.clone() for name, b in model.named_buffers()}
    assert list(weight_statistics(model)) == ["2"]
    assert all(torch.equal(b, before[name]) for name, b in model.named_buffers())


def _results() -> pd.DataFrame:
    """Made-up results: per batchnorm, 3 unclamped seeds and 3 clamped seeds, known |w|."""
    rows = []
    for batchnorm in (True, False):
        for clamp, scale in ((None, 4.0 if batchnorm else 1.2), (1.0, 1.0)):
            for seed in range(3):
                layer = scale * (1.0 + 0.1 * seed)
                rows.append(
                    {
                        "hash": f"{batchnorm}-{clamp}-{seed}",
                        "training": f"{batchnorm}-{clamp}-{seed}",
                        "status": "done",
                        "dataset": "digits",
                        "model": "mlp",
                        "noise": "additive",
                        "train_noise": True,
                        "batchnorm": batchnorm,
                        "placement": "walking:1",
                        "sigma": 0.5,
                        "seed": seed,
                        "recipe.clamp": clamp,
                        "noisy_test_accuracy": 0.9,
                        "weights": {
                            "layers.1": {"mean_abs": layer, "max_abs": 2 * layer, "std": layer},
                            "layers.10": {"mean_abs": 0.5, "max_abs": 1.0, "std": 0.4},
                        },
                    }
                )
    return pd.DataFrame(rows)


def test_comparison_of_two_groups_per_layer() -> None:
    table = weight_comparison_table(_results(), "recipe.clamp")
    assert table.attrs["values"] == (None, 1.0)
    assert table.attrs["by"] == ["batchnorm"]  # the only split setting that varies
    row = table[table["batchnorm"] & (table["layer"] == "layers.1")].iloc[0]
    unclamped = 4.0 * np.array([1.0, 1.1, 1.2])
    clamped = np.array([1.0, 1.1, 1.2])
    assert row["mean_abs_a"] == pytest.approx(unclamped.mean())
    assert row["mean_abs_a_sem"] == pytest.approx(unclamped.std(ddof=1) / math.sqrt(3))
    assert row["mean_abs_b"] == pytest.approx(clamped.mean())
    assert row["ratio"] == pytest.approx(4.0)
    relative = math.hypot(row["mean_abs_a_sem"] / row["mean_abs_a"], row["mean_abs_b_sem"] / 1.1)
    assert row["ratio_err"] == pytest.approx(4.0 * relative)
    assert (row["models_a"], row["models_b"]) == (3, 3)
    no_bn = table[~table["batchnorm"].astype(bool)].set_index("layer")
    assert no_bn.loc["layers.1", "ratio"] == pytest.approx(1.2)
    assert no_bn.loc["layers.10", "ratio"] == pytest.approx(1.0)
    assert no_bn.loc["layers.10", "ratio_err"] == 0.0
    assert list(no_bn.index) == ["layers.1", "layers.10"]


def test_one_model_a_group_has_no_standard_error() -> None:
    """One model gives no spread to estimate: its error is unknown (``± ?``), not 0."""
    results = _results()
    table = weight_comparison_table(results[results["seed"] == 0], "recipe.clamp")
    row = table[table["batchnorm"] & (table["layer"] == "layers.1")].iloc[0]
    assert row["ratio"] == pytest.approx(4.0)
    assert math.isnan(row["mean_abs_a_sem"])
    assert math.isnan(row["mean_abs_b_sem"])
    assert math.isnan(row["ratio_err"])
    assert format_mu(row["ratio"], row["ratio_err"]) == "4 ± ?"


def test_comparison_by_another_statistic_and_without_split() -> None:
    results = _results()
    table = weight_comparison_table(results[results["batchnorm"]], "recipe.clamp", stat="max_abs")
    assert table.attrs["by"] == []
    assert table.set_index("layer").loc["layers.1", "max_abs_a"] == pytest.approx(8.8)


def test_the_compared_column_needs_exactly_two_values() -> None:
    results = _results()
    assert two_values(results, "batchnorm") == (False, True)
    with pytest.raises(ValueError, match="seed takes 3 value"):
        weight_comparison_table(results, "seed")
    with pytest.raises(ValueError, match="noise takes 1 value"):
        weight_comparison_table(results, "noise")
    with pytest.raises(KeyError, match="no column 'nothing'"):
        weight_comparison_table(results, "nothing")


def test_groups_without_both_values_are_left_out() -> None:
    results = _results()
    clamped = results["recipe.clamp"].notna()
    partial = results[results["batchnorm"] | ~clamped]  # no clamped models without BN
    table = weight_comparison_table(partial, "recipe.clamp")
    assert set(table["batchnorm"]) == {True}
    disjoint = results[results["batchnorm"] == clamped]  # clamped with BN, unclamped without
    with pytest.raises(ValueError, match="no layer has models with both values"):
        weight_comparison_table(disjoint, "recipe.clamp")
    with pytest.raises(ValueError, match="same configuration"):  # BN differs: not like for like
        weight_comparison_table(disjoint, "recipe.clamp", by=[])
    pooled = weight_comparison_table(disjoint, "recipe.clamp", by=[], matched=False)
    assert len(pooled) == 2
