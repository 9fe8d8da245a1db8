"""The Noisy Machines table: accuracy vs η per training, mean ± std over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from walkingnoise.analysis.noisy_machines import (
    accuracy_vs_eta,
    distillation_settings,
    weight_noise_accuracy,
)
from walkingnoise.experiment import Experiment
from walkingnoise.training.distillation import Distillation
from walkingnoise.training.recipe import Recipe

ETAS = (0.0, 0.04, 0.1)
SEEDS = (0, 1, 2)


def _accuracy(eta: float, training: str, seed: int) -> float:
    """A made-up accuracy: falls with η, less for the noise-aware trainings; seeds spread it."""
    slope = {"inference-only": 3.0, "noise injection": 1.0, "distillation": 0.5}[training]
    return 0.98 - slope * eta + 0.01 * (seed - 1)


def _experiments() -> list[tuple[Experiment, str]]:
    rows = []
    for eta in ETAS:
        for seed in SEEDS:
            base = {"noise": "none", "weight_noise": eta, "seed": seed}
            rows.append((Experiment(**base, train_noise=False), "inference-only"))
            rows.append((Experiment(**base, train_noise=True), "noise injection"))
            distilled = Experiment(**base, train_noise=True, distillation=Distillation())
            rows.append((distilled, "distillation"))
    return rows


def _results() -> pd.DataFrame:
    """What ``load_results`` gives: one row per distinct experiment, config from the identity."""
    unique: dict[str, tuple[Experiment, str]] = {}
    for experiment, training in _experiments():
        unique.setdefault(experiment.content_hash(), (experiment, training))
    config = pd.json_normalize([e.identity() for e, _ in unique.values()])
    metrics = pd.DataFrame(
        [
            {
                "noisy_test_accuracy": _accuracy(e.weight_noise, training, e.seed),
                "clean_test_accuracy": 0.98 + 0.01 * (e.seed - 1),
            }
            for e, training in unique.values()
        ]
    )
    status = pd.DataFrame({"hash": list(unique), "status": "done"})
    return pd.concat([status, config, metrics], axis=1)


def test_the_store_leaves_out_train_noise_of_the_clean_model() -> None:
    results = _results()
    # η = 0 without distillation is one experiment, the clean training; its config has no η.
    assert len(results) == len(ETAS) * len(SEEDS) * 3 - len(SEEDS)
    assert results["weight_noise"].isna().sum() == 2 * len(SEEDS)


def test_mean_std_and_seeds_per_training_and_eta() -> None:
    table = weight_noise_accuracy(_results())
    assert list(table["training"].unique()) == [
        "inference-only",
        "noise injection",
        "distillation + noise injection",
    ]
    assert len(table) == len(ETAS) * 3
    for _, row in table.iterrows():
        label = "distillation" if row["training"].startswith("distillation") else row["training"]
        values = [_accuracy(row["weight_noise"], label, seed) for seed in SEEDS]
        if row["weight_noise"] == 0 and label != "distillation":
            values = [_accuracy(0.0, "inference-only", seed) for seed in SEEDS]
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["seeds"] == len(SEEDS)
        assert row["clean_mean"] == pytest.approx(0.98)
    distilled = table[table["training"].str.startswith("distillation")]
    assert set(distilled["temperature"]) == {6.0}
    assert set(distilled["alpha"]) == {0.9}


def test_the_clean_model_fills_both_undistilled_columns_at_eta_zero() -> None:
    table = weight_noise_accuracy(_results())
    at_zero = table[table["weight_noise"] == 0].set_index("training")["mean"]
    assert at_zero["inference-only"] == at_zero["noise injection"]


def test_the_wide_table_puts_trainings_side_by_side_in_percent() -> None:
    wide = accuracy_vs_eta(_results())
    assert list(wide.columns) == [
        "inference-only",
        "noise injection",
        "distillation + noise injection",
    ]
    assert list(wide.index.get_level_values("η")) == list(ETAS)
    values = [_accuracy(0.1, "distillation", seed) for seed in SEEDS]
    expected = f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"
    assert wide.iloc[-1]["distillation + noise injection"] == expected


def test_several_distillation_settings_get_their_own_columns() -> None:
    results = _results()
    other = Experiment(
        noise="none",
        weight_noise=0.1,
        seed=0,
        train_noise=True,
        distillation=Distillation(temperature=2.0, alpha=0.5),
    )
    row = pd.json_normalize([other.identity()]).assign(
        status="done", noisy_test_accuracy=0.5, clean_test_accuracy=0.9
    )
    wide = accuracy_vs_eta(pd.concat([results, row], ignore_index=True))
    assert "distillation + noise injection (T=2, α=0.5)" in wide.columns
    assert "distillation + noise injection (T=6, α=0.9)" in wide.columns
    assert wide.loc[wide.index[-1], "distillation + noise injection (T=2, α=0.5)"] == "50.00"


def test_one_distillation_setting_is_said_in_words() -> None:
    """The wide table names a distillation's T and α only where several occur; with one, the
    caption says them."""
    said = distillation_settings(weight_noise_accuracy(_results()))
    assert said == "distillation: T=6, α=0.9, teacher: the clean model of each seed (same recipe)"
    table = weight_noise_accuracy(_results())
    several = pd.concat([table, table.assign(temperature=2.0)], ignore_index=True)
    assert distillation_settings(several) == ""
    assert distillation_settings(table[~table["training"].str.startswith("distil")]) == ""


def test_unfinished_rows_are_left_out_and_a_missing_metric_is_an_error() -> None:
    results = _results()
    results.loc[0, "status"] = "failed"
    results.loc[0, "noisy_test_accuracy"] = math.nan
    table = weight_noise_accuracy(results)
    assert table["seeds"].min() == len(SEEDS) - 1
    with pytest.raises(ValueError, match="no metric 'noisy_validation_accuracy'"):
        weight_noise_accuracy(results, "noisy_validation_accuracy")
    with pytest.raises(ValueError, match="'noisy_test_loss': tabulated in % over η, it must"):
        weight_noise_accuracy(results, "noisy_test_loss")
    with pytest.raises(ValueError, match="no finished experiments to tabulate"):
        weight_noise_accuracy(results.assign(status="failed"))


def _with_a_walking_study(results: pd.DataFrame) -> pd.DataFrame:
    """The Noisy Machines results and, in the same store, walking-noise experiments."""
    walking = [
        Experiment(noise="additive", placement=f"walking:{site}", sigma=sigma, seed=seed)
        for site in (0, 1)
        for sigma in (0.1, 1.0)
        for seed in SEEDS
    ]
    config = pd.json_normalize([e.identity() for e in walking])
    other = pd.concat(
        [
            pd.DataFrame({"hash": [e.content_hash() for e in walking], "status": "done"}),
            config,
            pd.DataFrame(
                {"noisy_test_accuracy": 0.5, "clean_test_accuracy": 0.98}, index=config.index
            ),
        ],
        axis=1,
    )
    return pd.concat([results, other], ignore_index=True)


def test_another_study_in_the_store_neither_hides_nor_joins_the_table() -> None:
    alone = weight_noise_accuracy(_results())
    mixed = weight_noise_accuracy(_with_a_walking_study(_results()))
    pd.testing.assert_frame_equal(mixed, alone)
    wide = accuracy_vs_eta(_with_a_walking_study(_results()))
    pd.testing.assert_frame_equal(wide, accuracy_vs_eta(_results()))
    assert len(wide) == len(ETAS)


def test_clamped_and_unclamped_models_get_rows_of_their_own() -> None:
    """``recipe.clamp`` missing is no clamping, a setting of its own, not "not applicable"."""
    rows = []
    for clamp, accuracy in ((None, 0.9), (1.0, 0.5)):
        for eta in (0.0, 0.1):
            for seed in SEEDS:
                experiment = Experiment(
                    noise="none",
                    weight_noise=eta,
                    train_noise=True,
                    seed=seed,
                    recipe=Recipe(clamp=clamp),
                )
                row = pd.json_normalize([experiment.identity()])
                rows.append(row.assign(status="done", noisy_test_accuracy=accuracy))
    table = weight_noise_accuracy(pd.concat(rows, ignore_index=True))
    assert table["seeds"].tolist() == [len(SEEDS)] * 4
    unclamped = table[table["recipe.clamp"].isna()]
    assert set(unclamped["mean"]) == {0.9}
    assert set(table.loc[table["recipe.clamp"] == 1.0, "mean"]) == {0.5}
    wide = accuracy_vs_eta(table)
    assert list(wide.index.get_level_values("recipe.clamp")) == [1.0, 1.0, "-", "-"]
    assert wide["noise injection"].tolist() == ["50.00 ± 0.00"] * 2 + ["90.00 ± 0.00"] * 2


@pytest.mark.parametrize(
    ("setting", "other"),
    [
        ("recipe.augment", {"augment": True}),
        ("recipe.schedule", {"schedule": "constant"}),
        ("recipe.weight_decay", {"weight_decay": 1e-4}),
    ],
)
def test_models_of_another_training_recipe_get_rows_of_their_own(
    setting: str, other: dict[str, object]
) -> None:
    """Augmentation, a schedule or weight decay change the trained model: another group."""
    rows = []
    for recipe, accuracy in ((Recipe(), 0.9), (Recipe(**other), 0.5)):
        for eta in (0.0, 0.1):
            for seed in SEEDS:
                experiment = Experiment(
                    noise="none", weight_noise=eta, train_noise=True, seed=seed, recipe=recipe
                )
                row = pd.json_normalize([experiment.identity()])
                rows.append(row.assign(status="done", noisy_test_accuracy=accuracy))
    table = weight_noise_accuracy(pd.concat(rows, ignore_index=True))
    assert table["seeds"].tolist() == [len(SEEDS)] * 4
    assert sorted(table["mean"].unique()) == [0.5, 0.9]
    wide = accuracy_vs_eta(table)
    assert setting in wide.index.names


def test_a_diverged_training_counts_at_chance_level() -> None:
    """NaN weights predict nothing: a diverged model's measured accuracy (the share of the class
    argmax picks for NaN logits) counts as chance, as in the curves and fits."""
    rows = []
    for seed in SEEDS:
        experiment = Experiment(noise="none", weight_noise=0.1, train_noise=True, seed=seed)
        row = pd.json_normalize([experiment.identity()])
        diverged = seed == 0
        rows.append(
            row.assign(
                status="done",
                noisy_test_accuracy=0.35 if diverged else 0.9,
                clean_test_accuracy=0.35 if diverged else 0.95,
                chance_accuracy=0.1,
                diverged=diverged,
            )
        )
    table = weight_noise_accuracy(pd.concat(rows, ignore_index=True))
    assert table["mean"].tolist() == [pytest.approx((0.1 + 0.9 + 0.9) / 3)]
    assert table["clean_mean"].tolist() == [pytest.approx((0.1 + 0.95 + 0.95) / 3)]
