"""``KEY=VALUE`` filters: parsing, any-of for a repeated key, numeric tolerance, unknown keys."""

from __future__ import annotations

import pandas as pd
import pytest

from walkingnoise.analysis.curves import accuracy_curves
from walkingnoise.analysis.selection import AnyOf, filter_mask, parse_filters, select_results
from walkingnoise.experiment import Experiment

FRAME = pd.DataFrame(
    {
        "seed": [0, 1, 2, 0],
        "sigma": [0.31623, 1.0, 10.0, None],
        "recipe.clamp": [None, 1.0, None, 1.0],
        "noisy_test_accuracy": [0.9, 0.8, 0.5, 0.7],
    }
)


def test_a_key_given_again_keeps_every_value_and_selects_any() -> None:
    filters = parse_filters(["seed=0", "seed=2", "recipe.clamp=null"])
    assert filters == {"seed": AnyOf((0, 2)), "recipe.clamp": None}
    assert filter_mask(FRAME, filters).tolist() == [True, False, True, False]


def test_numbers_match_to_three_digits_and_yaml_scalars_are_read() -> None:
    assert filter_mask(FRAME, parse_filters(["sigma=0.316"])).tolist() == [1, 0, 0, 0]
    assert filter_mask(FRAME, parse_filters(["sigma=1e1"])).tolist() == [0, 0, 1, 0]


def test_an_unknown_key_names_the_closest_or_lists_settings_only() -> None:
    with pytest.raises(KeyError, match="no column 'sed' to filter on; did you mean seed"):
        filter_mask(FRAME, {"sed": 0})
    with pytest.raises(KeyError) as caught:
        filter_mask(FRAME, {"colour": "red"})
    assert str(caught.value.args[0]).endswith("settings: seed, sigma, recipe.clamp")


def test_a_device_is_selected_by_its_type_or_index_too() -> None:
    """``device=cuda`` and ``device=cuda:0`` select the GPU rows, as a user names a device;
    the stored name selects itself, ``cpu`` no GPU row, and ``null`` the rows without one."""
    frame = pd.DataFrame(
        {"device": ["cpu", "cuda:0 (NVIDIA H100 80GB HBM3)", "cuda:1 (NVIDIA H100)", None]}
    )

    def chosen(*texts: str) -> list[bool]:
        return filter_mask(frame, parse_filters([f"device={t}" for t in texts])).tolist()

    assert chosen("cuda") == [False, True, True, False]
    assert chosen("cuda:0") == [False, True, False, False]
    assert chosen("cuda:0 (NVIDIA H100 80GB HBM3)") == [False, True, False, False]
    assert chosen("cpu") == [True, False, False, False]
    assert chosen("cud") == [False, False, False, False]
    assert chosen("null") == [False, False, False, True]
    assert chosen("cpu", "cuda:1") == [True, False, True, False]


def _weight_noise_results() -> pd.DataFrame:
    """What ``load_results`` gives for η 0 and 0.1 at two σ: the store leaves η = 0 out."""
    experiments = [
        Experiment(noise="additive", placement="global", sigma=sigma, weight_noise=eta)
        for eta in (0.0, 0.1)
        for sigma in (0.1, 1.0)
    ]
    config = pd.json_normalize([e.identity() for e in experiments])
    return config.assign(
        hash=[e.content_hash() for e in experiments], status="done", noisy_test_accuracy=0.5
    )


def test_weight_noise_zero_is_a_value_to_select_and_to_group_on() -> None:
    results = _weight_noise_results()
    assert results["weight_noise"].isna().sum() == 2
    chosen = select_results(results, parse_filters(["weight_noise=0"]))
    assert sorted(chosen["hash"]) == sorted(results["hash"][:2])
    curves = accuracy_curves(results)
    assert sorted(curves["weight_noise"]) == [0.0, 0.0, 0.1, 0.1]
