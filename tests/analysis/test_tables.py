"""Curves and tables from a store: grouping, defaults, μ per site, global, preservation, weights."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from walkingnoise.analysis.curves import (
    accuracy_curves,
    describe_difference,
    describe_group,
    prepare_results,
)
from walkingnoise.analysis.synthetic import write_synthetic_store
from walkingnoise.analysis.tables import (
    amplitude_rows,
    dataset_site_names,
    format_midpoint,
    format_mu,
    global_table,
    midpoint_table,
    midpoint_text,
    partial_drops,
    pivot_mu,
    preservation_table,
    resolve_a_min,
    site_table,
    weight_comparison_table,
    weight_ratio_table,
    with_site_names,
)
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, load_results
from walkingnoise.training.recipe import Recipe

SIGMAS = tuple(np.logspace(-2, 2, 9))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = write_synthetic_store(tmp_path_factory.mktemp("store") / "synthetic.sqlite", seeds=3)
    return load_results(path)


@pytest.fixture(scope="module")
def fits(results: pd.DataFrame) -> pd.DataFrame:
    return midpoint_table(results, a_min="auto")


def _walking(table: pd.DataFrame, **values: object) -> pd.DataFrame:
    mask = table["site"].notna() & (table["noise"] != "mixed")
    for column, value in values.items():
        mask &= table[column].isna() if value is None else table[column] == value
    return table[mask].set_index("site")


def test_curves_have_one_row_per_group_and_sigma(results: pd.DataFrame) -> None:
    curves = accuracy_curves(results)
    scalar = curves[curves["noise"] != "mixed"]
    assert (scalar["n"] == 3).all()
    assert np.allclose(scalar["sem"], scalar["std"] / math.sqrt(3))
    assert not curves.duplicated(
        [
            "placement",
            "noise",
            "batchnorm",
            "train_noise",
            "recipe.clamp",
            "order",
            "ratio",
            "sigma",
        ]
    ).any()
    one = scalar[(scalar["placement"] == "walking:0") & scalar["recipe.clamp"].isna()]
    one = one[one["batchnorm"] & ~one["train_noise"] & (one["noise"] == "additive")]
    assert sorted(one["sigma"]) == pytest.approx(SIGMAS)
    raw = results[(results["placement"] == "walking:0") & results["recipe.clamp"].isna()]
    raw = raw[raw["batchnorm"] & ~raw["train_noise"].astype(bool) & (raw["noise"] == "additive")]
    first = raw[np.isclose(raw["sigma"].astype(float), SIGMAS[3])]["noisy_test_accuracy"]
    row = one[np.isclose(one["sigma"], SIGMAS[3])].iloc[0]
    assert row["mean"] == pytest.approx(first.mean())
    assert row["std"] == pytest.approx(first.std(ddof=1))
    assert row["chance"] == pytest.approx(0.1)


def test_mixed_amplitude_and_ratio_become_sigma_pairs(results: pd.DataFrame) -> None:
    mixed = accuracy_curves(results)
    mixed = mixed[mixed["noise"] == "mixed"]
    assert set(mixed["order"]) == {"mul_first", "add_first"}
    assert np.allclose(mixed["sigma_add"], mixed["sigma"] * mixed["ratio"])
    assert np.allclose(mixed["sigma_mul"], mixed["sigma"] * (1 - mixed["ratio"]))


def test_the_mu_of_mixed_noise_with_a_ratio_is_an_amplitude(fits: pd.DataFrame) -> None:
    amplitude = amplitude_rows(fits)
    assert amplitude.tolist() == (fits["noise"] == "mixed").tolist()
    assert amplitude.sum() == 6  # two orders × three ratios
    assert not amplitude_rows(fits[fits["noise"] != "mixed"].drop(columns="ratio")).any()


def test_missing_config_columns_get_defaults() -> None:
    """The store leaves out order/ratio (non-mixed) and fields at their defaults."""
    frame = pd.DataFrame(
        {
            "status": ["done", "done", "failed"],
            "dataset": ["digits"] * 3,
            "model": ["mlp"] * 3,
            "noise": ["additive", "mixed", "additive"],
            "placement": ["walking:2", "walking:2", "global"],
            "sigma": [0.5, [0.1, 0.2], 1.0],
            "seed": [0, 0, 0],
            "noisy_test_accuracy": [0.8, 0.7, 0.5],
        }
    )
    prepared = prepare_results(frame)
    assert len(prepared) == 2  # only finished experiments
    assert list(prepared["order"]) == ["", "mul_first"]
    assert prepared["ratio"].isna().all()
    assert prepared["recipe.clamp"].isna().all()
    assert list(prepared["batchnorm"]) == [True, True]
    assert list(prepared["site"]) == [2, 2]
    assert prepared.loc[1, "sigma_mul"] == 0.1
    assert prepared.loc[1, "sigma_add"] == 0.2
    assert math.isnan(prepared.loc[1, "sigma"])
    curves = accuracy_curves(frame)
    assert len(curves) == 2
    assert (curves["diverged"] == 0).all()


def _stored_accuracies(
    path: Path, experiments: list[Experiment], accuracy: dict[str, float], diverged: set[str]
) -> pd.DataFrame:
    """``load_results`` of a store whose experiments finished with these accuracies (by hash)
    and, those in ``diverged``, a non-finite training loss."""
    with Store(path) as store:
        store.add((e, "b") for e in experiments)
        store.claim([e.content_hash() for e in experiments])
        for e in experiments:
            key = e.content_hash()
            store.finish(
                key,
                metrics={"noisy_test_accuracy": accuracy[key], "chance_accuracy": 0.1},
                history=[],
                weights={},
                timings={},
                diverged=key in diverged,
                checkpoint=None,
            )
    return load_results(path)


def test_diverged_experiments_count_and_are_marked(tmp_path: Path) -> None:
    experiments = [
        Experiment(placement="walking:1", sigma=s, seed=seed, recipe=Recipe(epochs=1))
        for s in (0.01, 0.1, 1.0, 10.0, 100.0)
        for seed in (0, 1)
    ]
    accuracy = {e.content_hash(): 0.9 if e.sigma < 1 else 0.1 for e in experiments}
    diverged = {experiments[9].content_hash()}
    results = _stored_accuracies(tmp_path / "s.sqlite", experiments, accuracy, diverged)
    curves = accuracy_curves(results)
    assert curves["diverged"].sum() == 1
    table = midpoint_table(results)
    assert table["diverged"].tolist() == [1]
    assert table["seeds"].tolist() == [2]


def test_training_augmentation_splits_curves(tmp_path: Path) -> None:
    """Models trained with and without augmentation are two curves, not one of twice the seeds."""
    experiments = [
        Experiment(
            placement="walking:1", sigma=s, seed=seed, recipe=Recipe(epochs=1, augment=augment)
        )
        for s in (0.01, 0.1, 1.0, 10.0, 100.0)
        for seed in (0, 1)
        for augment in (False, True)
    ]
    accuracy = {
        e.content_hash(): (0.9 if e.recipe.augment else 0.7) if e.sigma < 1 else 0.1
        for e in experiments
    }
    results = _stored_accuracies(tmp_path / "s.sqlite", experiments, accuracy, set())
    curves = accuracy_curves(results)
    assert sorted(curves["recipe.augment"].unique()) == [False, True]
    assert (curves["n"] == 2).all()
    table = midpoint_table(results)
    assert table["seeds"].tolist() == [2, 2]
    assert "augment=True" in describe_group(table.iloc[1][curves.attrs["group_columns"]])


def test_a_min_choices() -> None:
    mul_bn = {"noise": "multiplicative", "batchnorm": True}
    assert resolve_a_min("chance", mul_bn, 0.1) == 0.1
    assert resolve_a_min("auto", mul_bn, 0.1) is None
    assert resolve_a_min("auto", {"noise": "additive", "batchnorm": True}, 0.1) == 0.1
    # multiplicative-first mixed noise keeps self-binarization's plateau; additive-first does not
    mixed = {"noise": "mixed", "batchnorm": True}
    assert resolve_a_min("auto", mixed | {"order": "mul_first"}, 0.1) is None
    assert resolve_a_min("auto", mixed | {"order": "add_first"}, 0.1) == 0.1
    assert resolve_a_min("auto", mixed | {"order": "mul_first", "batchnorm": False}, 0.1) == 0.1
    assert resolve_a_min("free", {}, 0.1) is None
    assert resolve_a_min(0.25, {}, 0.1) == 0.25
    assert resolve_a_min("chance", {}, math.nan) is None
    with pytest.raises(ValueError, match="a_min must be"):
        resolve_a_min("sometimes", {}, 0.1)  # type: ignore[arg-type]


def test_midpoints_recover_the_synthetic_truth(fits: pd.DataFrame) -> None:
    """The synthetic store's μ: gain × (0.3 + 2·|site − S/2| / S), gain 1 / 10 / 3 (clamped)."""
    for train, clamp, gain in ((False, None, 1.0), (True, None, 10.0), (True, 1.0, 3.0)):
        part = _walking(fits, noise="additive", batchnorm=True, train_noise=train)
        part = (
            part[part["recipe.clamp"].isna()]
            if clamp is None
            else part[part["recipe.clamp"] == clamp]
        )
        assert len(part) == 11
        truth = gain * (0.3 + 2.0 * np.abs(part.index.to_numpy(dtype=float) - 5.5) / 11)
        assert (part["quality"] == "ok").all()
        assert np.allclose(part["mu"], truth, rtol=0.15)
    base = _walking(fits, noise="additive", batchnorm=True, train_noise=False)
    noisy = _walking(fits, noise="additive", batchnorm=True, train_noise=True)
    assert (noisy.loc[noisy["recipe.clamp"].isna(), "mu"] > base["mu"]).all()


def test_auto_frees_a_min_for_multiplicative_noise_with_batchnorm(fits: pd.DataFrame) -> None:
    part = _walking(fits, noise="multiplicative", batchnorm=True)
    assert part["a_min_free"].all()
    assert np.allclose(part.loc[0:7, "a_min"], 0.35, atol=0.03)
    assert np.allclose(part.loc[8:10, "a_min"], 0.1, atol=0.03)
    additive = _walking(fits, noise="additive")
    assert not additive["a_min_free"].any()


def test_error_bars_take_the_test_set_size_from_the_results(results: pd.DataFrame) -> None:
    """By default each point's error is at least its binomial error on the recorded test-set
    size, not the spread of three seeds alone (which can be tiny by chance)."""
    assert set(results["test_size"]) == {360}
    default = midpoint_table(results)
    given = midpoint_table(results, n_test=360)
    seeds_only = midpoint_table(results, n_test=None)
    pd.testing.assert_series_equal(default["mu_err"], given["mu_err"])
    assert (default["mu_err"] >= seeds_only["mu_err"] - 1e-12).all()
    assert (default["mu_err"] > 1.2 * seeds_only["mu_err"]).any()


def test_site_table_orders_sites_and_names_them(fits: pd.DataFrame) -> None:
    sites = site_table(fits, site_names=dataset_site_names())
    part = sites[(sites["noise"] == "additive") & ~sites["batchnorm"]]
    assert list(part["site"]) == list(range(8))
    assert part["site_name"].iloc[0] == "input"
    assert part["site_name"].iloc[1] == "layers.1:Linear"
    unnamed = site_table(fits)
    assert (unnamed["site_name"] == "").all()


def test_global_table_and_pivot(fits: pd.DataFrame) -> None:
    table = global_table(fits)
    assert len(table) == 4
    assert set(table["placement"]) == {"global", "global-except:batchnorm"}
    pivot = pivot_mu(table)
    assert pivot.shape == (1, 4)
    assert list(pivot.columns.names) == ["noise", "batchnorm"]
    value, error = pivot.loc[("digits", "mlp"), ("additive", "yes")].split(" ± ")
    assert abs(float(value) - 0.2) <= 3 * float(error)


def test_curves_that_share_a_cell_get_an_index_level_of_what_differs() -> None:
    table = pd.DataFrame(
        {
            "dataset": "digits",
            "model": "mlp",
            "noise": ["additive", "additive", "mixed", "mixed"],
            "batchnorm": True,
            "placement": ["global", "global-except:batchnorm", "global", "global"],
            "ratio": [math.nan, math.nan, 0.1, 0.5],
            "mu": [1.0, 0.1, 10.0, 3.0],
            "mu_err": 0.01,
            "quality": "ok",
        }
    )
    table.attrs["group_columns"] = ["dataset", "model", "noise", "batchnorm", "placement", "ratio"]
    pivot = pivot_mu(table)
    cells = pivot.stack(["noise", "batchnorm"], future_stack=True).dropna()
    assert sorted(cells) == sorted(format_mu(mu, 0.01) for mu in table["mu"])
    assert {"placement", "ratio"} <= set(pivot.index.names)


def test_format_mu() -> None:
    assert format_mu(0.5234, 0.0312) == "0.523 ± 0.031"
    assert format_mu(12.3, 1.7) == "12.3 ± 1.7"
    assert format_mu(3.2e7, 4e6) == "3.20e+07 ± 4.0e+06"
    assert format_mu(math.nan, 1.0) == "n/a"
    assert format_mu(1.0, math.inf) == "1 ± ?"
    assert format_mu(0.0, 5772.0) == "0 ± 5800"  # two significant digits of the error
    assert format_mu(12346.0, 678.0) == "12350 ± 680"
    assert format_mu(3.0, 2e6) == "3.00e+00 ± 2.0e+06"
    assert format_mu(9.75, 1.7e-15) == "9.75 ± 0"  # equal values: their std is rounding
    assert format_mu(9.75, 0.0) == "9.75 ± 0"


def test_format_midpoint_shows_a_wide_log_error_as_a_factor() -> None:
    assert format_midpoint(1000.0, 1000.0 * math.log(10) * 1.0, 1.0) == "1e+03 ×/÷ 10"
    assert format_midpoint(3.2e7, 1e7, 0.5) == "3.20e+07 ×/÷ 3.2"
    narrow = 12.0 * math.log(10) * 0.01
    assert format_midpoint(12.0, narrow, 0.01) == format_mu(12.0, narrow)  # factor 1.02: ±
    assert format_midpoint(12.0, 1.5) == format_mu(12.0, 1.5)  # a linear fit
    row = pd.Series({"mu2": 50.0, "mu2_err": 200.0, "log10_mu2_err": 0.7})
    assert midpoint_text(row, "2") == "50 ×/÷ 5"
    assert format_midpoint(50.0, 1e3, 2.9) == "50 ×/÷ 7.9e+02"
    assert format_midpoint(50.0, math.inf, 3.0) == "50 (unconstrained)"  # ×/÷ 1000 and more
    assert format_midpoint(26.9, math.inf, 3090.4) == "26.9 (unconstrained)"  # no overflow


def test_a_curve_whose_floor_stays_above_half_way_to_chance_drops_only_partly() -> None:
    table = pd.DataFrame(
        {
            "a_max": [0.98, 0.98, 0.98, 0.98],
            "a_min": [0.1, 0.53, 0.55, math.nan],  # chance 0.1: half way is 0.54
            "chance": [0.1, 0.1, 0.1, 0.1],
        }
    )
    assert partial_drops(table).tolist() == [False, False, True, False]
    assert not partial_drops(table.drop(columns="chance")).any()  # chance unknown


def test_a_series_set_apart_by_an_unset_value_says_so() -> None:
    """Unclamped beside clamped reads ``no clamp``, not the whole group, nor nothing."""
    columns = ["recipe.clamp"]
    assert describe_difference({"recipe.clamp": math.nan, "noise": "additive"}, columns) == (
        "no clamp"
    )
    assert describe_difference({"recipe.clamp": 1.0}, columns) == "clamp 1"
    assert describe_difference({"train_noise": True, "order": ""}, ["train_noise", "order"]) == (
        "noisy training · no order"
    )


def test_inference_only_beside_noisy_training_names_no_gradient_rule() -> None:
    """Inference-only noise has no gradient rule (no noisy training): beside noisy training
    with one, the label says ``inference-only``, not ``inference-only · no gradient``."""
    columns = ["train_noise", "gradient"]
    assert describe_difference({"train_noise": False, "gradient": math.nan}, columns) == (
        "inference-only"
    )
    assert describe_difference({"train_noise": True, "gradient": "through_noise"}, columns) == (
        "noisy training · gradient=through_noise"
    )


def test_preservation_table(results: pd.DataFrame) -> None:
    table = preservation_table(results)
    part = _walking(table, noise="multiplicative", batchnorm=True)
    assert (part["sigma_max"] == 100.0).all()
    early, late = part.loc[0:6, "preservation"], part.loc[8:10, "preservation"]
    assert np.allclose(early, 0.35 / 0.95, atol=0.05)
    assert (late < 0.15).all()
    row = part.loc[0]
    assert row["preservation"] == pytest.approx(row["accuracy_max_sigma"] / row["clean_accuracy"])
    assert row["preservation_err"] > 0


def test_preservation_of_one_seed_has_no_error(results: pd.DataFrame) -> None:
    """One model a point gives no spread to estimate: the error is unknown, not 0."""
    table = preservation_table(results[results["seed"] == 0])
    row = _walking(table, noise="multiplicative", batchnorm=True).loc[0]
    assert math.isfinite(row["preservation"])
    assert math.isnan(row["accuracy_max_sigma_sem"])
    assert math.isnan(row["clean_accuracy_sem"])
    assert math.isnan(row["preservation_err"])
    assert format_mu(row["preservation"], row["preservation_err"]).endswith("± ?")


def test_weight_ratio_between_unclamped_and_clamped(results: pd.DataFrame) -> None:
    noisy = results[results["train_noise"].astype(bool) & (results["noise"] == "additive")]
    table = weight_ratio_table(noisy, {"recipe.clamp": None}, {"recipe.clamp": 1.0})
    assert list(table["layer"]) == ["layers.1", "layers.2", "layers.4", "layers.10"]
    assert np.allclose(table["ratio"], 2.0, rtol=0.02)
    assert (table["models_a"] == table["models_b"]).all()
    by = weight_ratio_table(noisy, {"recipe.clamp": None}, {"recipe.clamp": 1.0}, by="site")
    assert set(by["site"]) == set(range(11))
    with pytest.raises(KeyError, match="no column"):
        weight_ratio_table(noisy, {"nothing": 1}, {"recipe.clamp": 1.0})


def test_preservation_compares_the_sites_of_a_family_at_one_sigma(
    results: pd.DataFrame,
) -> None:
    walking = results[results["placement"].astype(str).str.startswith("walking")]
    family = (walking["noise"] == "multiplicative") & walking["batchnorm"].astype(bool)
    top = walking.loc[family, "sigma"].astype(float).max()
    missing = family & (walking["placement"] == "walking:9") & (walking["sigma"] == top)
    table = preservation_table(walking[~missing])
    part = _walking(table, noise="multiplicative", batchnorm=True)
    below = float(walking.loc[family & (walking["sigma"] < top), "sigma"].max())
    assert set(part["sigma_max"]) == {below}  # site 9 lacks σ max: every site is read below it
    other = _walking(table, noise="additive", batchnorm=False)
    assert len(other) > 0
    assert set(other["sigma_max"]) == {100.0}  # another family keeps its own


def test_preservation_reads_walking_sites_apart_from_global_curves(
    results: pd.DataFrame,
) -> None:
    """A global curve with a shorter σ range does not pull the sites down to its σ."""
    placement = results["placement"].astype(str)
    sigma = pd.to_numeric(results["sigma"], errors="coerce")
    short = placement.str.startswith("global") & (sigma == sigma.max())
    table = preservation_table(results[~short])
    walking = table[table["site"].notna() & (table["noise"] != "mixed")]
    assert set(walking["sigma_max"]) == {100.0}
    global_rows = table[table["placement"].astype(str).str.startswith("global")]
    assert len(global_rows) > 0
    assert (global_rows["sigma_max"] < 100.0).all()


def _weight_rows(clamp: float | None, sigmas: list[float], seeds: int = 2) -> list[dict]:
    """Results whose layer weight grows with σ (10·σ unclamped, σ clamped): the clamp halves
    nothing but the growth, so only like-for-like σ show the true ratio of 10."""
    rows = []
    for sigma in sigmas:
        for seed in range(seeds):
            scale = sigma * (10.0 if clamp is None else 1.0)
            rows.append(
                {
                    "status": "done",
                    "dataset": "digits",
                    "model": "mlp",
                    "noise": "additive",
                    "train_noise": True,
                    "placement": "walking:1",
                    "recipe.clamp": clamp,
                    "sigma": sigma,
                    "seed": seed,
                    "training": f"{clamp}-{sigma}-{seed}",
                    "weights": {"layers.1": {"mean_abs": scale * (1 + 0.01 * seed)}},
                }
            )
    return rows


def test_weight_ratio_compares_only_configurations_both_groups_have() -> None:
    unclamped = _weight_rows(None, [0.1, 1.0])
    clamped = _weight_rows(1.0, [0.1, 1.0, 100.0])  # σ = 100 only clamped: no counterpart
    results = pd.DataFrame(unclamped + clamped)
    table = weight_ratio_table(results, {"recipe.clamp": None}, {"recipe.clamp": 1.0})
    assert table["ratio"].tolist() == pytest.approx([10.0])
    assert table[["models_a", "models_b", "configurations"]].values.tolist() == [[4, 4, 2]]
    pooled = weight_ratio_table(
        results, {"recipe.clamp": None}, {"recipe.clamp": 1.0}, matched=False
    )
    assert pooled["ratio"].iloc[0] < 1  # pooling over unequal σ inverts the finding
    assert pooled["models_b"].iloc[0] == 6


@pytest.mark.parametrize(
    ("column", "a", "b"), [("batchnorm", True, False), ("model", "mlp", "lenet5")]
)
def test_weights_of_two_networks_are_not_compared_layer_by_layer(
    column: str, a: object, b: object
) -> None:
    """With and without BatchNorm, the MLP's ``layers.5`` is a BatchNorm and a Linear layer."""
    rows = _weight_rows(None, [0.1, 1.0])
    for row, value in zip(rows, [a, b] * len(rows), strict=False):
        row[column] = value
    with pytest.raises(ValueError, match=f"across {column} .*`--by {column}`"):
        weight_comparison_table(pd.DataFrame(rows), column)


def test_weight_ratio_of_clean_models_ignores_noise_and_evaluation_settings() -> None:
    """Inference-only experiments share their clean model: σ and R are not its settings."""
    rows = _weight_rows(None, [0.1, 1.0]) + _weight_rows(1.0, [3.0, 10.0])
    for row in rows:
        row["train_noise"] = False
        row["eval_repeats"] = 5 if row["recipe.clamp"] is None else 3
        row["training"] = f"{row['recipe.clamp']}-{row['seed']}"
        row["weights"] = {"layers.1": {"mean_abs": 2.0 if row["recipe.clamp"] is None else 1.0}}
    table = weight_ratio_table(pd.DataFrame(rows), {"recipe.clamp": None}, {"recipe.clamp": 1.0})
    assert table["ratio"].tolist() == [2.0]
    assert table[["models_a", "models_b", "configurations"]].values.tolist() == [[2, 2, 1]]


def test_weight_ratio_of_noisy_against_clean_training_compares_the_noisy_group_pooled() -> None:
    """Clean models have no noise settings to match: noisy training's σ are pooled against
    them (split them with ``by``)."""
    noisy = _weight_rows(None, [0.1, 1.0])
    clean = _weight_rows(None, [0.1, 1.0, 10.0])
    for row in clean:
        row["train_noise"] = False
        row["training"] = f"clean-{row['seed']}"
        row["weights"] = {"layers.1": {"mean_abs": 0.5}}
    results = pd.DataFrame(noisy + clean)
    table = weight_ratio_table(results, {"train_noise": True}, {"train_noise": False})
    mean_noisy = np.mean([r["weights"]["layers.1"]["mean_abs"] for r in noisy])
    assert table["ratio"].tolist() == pytest.approx([mean_noisy / 0.5])
    assert table[["models_a", "models_b"]].values.tolist() == [[4, 2]]
    by_sigma = weight_ratio_table(
        results, {"train_noise": True}, {"train_noise": False}, by="sigma"
    )
    assert by_sigma["ratio"].tolist() == pytest.approx([1.005 / 0.5, 10.05 / 0.5])


def test_describe_group() -> None:
    group = {
        "dataset": "digits",
        "batchnorm": False,
        "train_noise": True,
        "recipe.clamp": 1.0,
        "ratio": math.nan,
        "order": "",
        "recipe.lr": 0.01,
    }
    assert describe_group(group) == "digits · no BN · noisy training · clamp 1 · lr=0.01"


def test_default_a_min_is_chance_except_multiplicative_with_batchnorm(
    results: pd.DataFrame, fits: pd.DataFrame
) -> None:
    default = midpoint_table(results)
    assert default["a_min_free"].tolist() == fits["a_min_free"].tolist()
    chance = midpoint_table(results, a_min="chance")
    assert not chance["a_min_free"].any()
    flagged = _walking(chance, noise="multiplicative", batchnorm=True)["poor_fit"]
    assert flagged.loc[0:7].all()  # these sites level off at 35 %, far above chance


def test_with_site_names_keeps_an_existing_column(fits: pd.DataFrame) -> None:
    named = with_site_names(fits, dataset_site_names())
    assert named.columns.get_loc("site_name") == named.columns.get_loc("site") + 1
    assert (named.loc[named["site"].isna(), "site_name"] == "").all()
    assert set(named.loc[named["site"] == 0, "site_name"]) == {"input"}
    assert with_site_names(named, None)["site_name"].tolist() == named["site_name"].tolist()
    assert list(site_table(named)["site_name"][:1]) == ["input"]


def test_site_names_of_a_model_not_registered_here_warn_how_to_get_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user's model analysed without ``--import`` of its module: indices only, and a
    warning that says why, instead of empty names without a word."""
    names = dataset_site_names()
    with caplog.at_level(logging.INFO, logger="walkingnoise.analysis.tables"):
        assert names("digits", "my-own-net", False) == {}
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "no site names for my-own-net: unknown model 'my-own-net'" in record.getMessage()
    assert "--import MODULE" in record.getMessage()
