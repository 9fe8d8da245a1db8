"""The Experiment: a stable content hash and validation of every field combination."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from walkingnoise.experiment import STORED, Experiment
from walkingnoise.noise import AdditiveNoise, MixedNoise, MultiplicativeNoise, WalkingPlacement
from walkingnoise.training import Recipe
from walkingnoise.training.distillation import Distillation

BASE: dict[str, Any] = {
    "dataset": "digits",
    "model": "mlp",
    "batchnorm": True,
    "recipe": {"epochs": 4, "lr": 1e-3},
    "noise": "additive",
    "placement": "walking:3",
    "sigma": 0.5,
    "train_noise": True,
    "eval_repeats": 3,
    "seed": 2,
}


def _hash(**overrides: Any) -> str:
    return Experiment(**{**BASE, **overrides}).content_hash()


# --- content hash ---------------------------------------------------------------------------


def test_hash_is_64_hex_characters() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", _hash())


def test_hash_ignores_keyword_order() -> None:
    reversed_kwargs = dict(reversed(list(BASE.items())))
    assert Experiment(**reversed_kwargs).content_hash() == _hash()


def test_hash_survives_a_dict_round_trip() -> None:
    experiment = Experiment(**BASE)
    for mode in ("python", "json"):
        again = Experiment.model_validate(experiment.model_dump(mode=mode))
        assert again == experiment
        assert again.content_hash() == experiment.content_hash()


def test_hash_is_the_same_for_equivalent_spellings() -> None:
    assert _hash(recipe=Recipe(epochs=4)) == _hash()
    assert _hash(sigma=1) == _hash(sigma=1.0)
    assert _hash(placement="walking:03") == _hash(placement=" walking:3 ")
    assert _hash(placement="map:3=0.5;0=0.1", sigma=None) == _hash(
        placement="map:0=0.1;3=0.5", sigma=None
    )
    # A default left out and the same default written out.
    defaults = {k: v for k, v in BASE.items() if k != "seed"}
    assert Experiment(**defaults).content_hash() == Experiment(**defaults, seed=0).content_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"sigma": 0.6},
        {"seed": 3},
        {"placement": "walking:4"},
        {"placement": "global"},
        {"recipe": {"epochs": 5, "lr": 1e-3}},
        {"recipe": {"epochs": 4, "lr": 1e-3, "clamp": 1.0}},
        {"train_noise": False},
        {"batchnorm": False},
        {"noise": "multiplicative"},
        {"model": "mlp256"},
        {"dataset": "mnist"},
        {"eval_repeats": 4},
        {"recipe": {"epochs": 5, "augment": True}},
    ],
    ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()),
)
def test_changing_one_field_changes_the_hash(change: dict[str, Any]) -> None:
    assert _hash(**change) != _hash()


#: The hash of BASE, an additive noisy training, with the code before ``through_noise`` became
#: the default gradient rule.
HASH_BEFORE_THROUGH_NOISE = "371aa99dc15b812d0fe9755477b5042593d515273e18ef690503c980a1726f80"


def test_the_gradient_rule_enters_the_hash_where_it_changes_the_computation() -> None:
    """Through the noise is the default; additive noise is one computation with either rule,
    and keeps the hash it had under the old default."""
    assert Experiment(**BASE).gradient == "through_noise"
    for gradient in ("forward_only", "through_noise"):
        assert _hash(gradient=gradient) == HASH_BEFORE_THROUGH_NOISE
    for noise, sigma in (("multiplicative", 0.5), ("mixed", (0.1, 0.2))):
        rules = {
            _hash(noise=noise, sigma=sigma, gradient=g) for g in ("forward_only", "through_noise")
        }
        assert len(rules) == 2
        assert _hash(noise=noise, sigma=sigma) == _hash(
            noise=noise, sigma=sigma, gradient="through_noise"
        )
    assert _hash(train_noise=False, gradient="forward_only") == _hash(train_noise=False)


def test_experiment_is_frozen() -> None:
    experiment = Experiment(**BASE)
    with pytest.raises(pydantic.ValidationError):
        experiment.sigma = 0.9


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"colour": "red"}, "colour"),
        ({"recipe": {"epochs": 4, "momentum": 0.9}}, "momentum"),
        ({"sigma": -0.5}, "-0.5"),
        ({"sigma": math.nan}, "nan"),
        ({"sigma": math.inf}, "inf"),
        ({"placement": "walk:3"}, "walk:3"),
        ({"placement": "walking:x"}, "walking:x"),
        ({"placement": "global-except:"}, "global-except:"),
        ({"noise": "mixed", "sigma": 0.5}, "ratio"),
        ({"noise": "additive", "sigma": (0.1, 0.2)}, "one σ"),
        ({"noise": "multiplicative", "sigma": (0.1, 0.2)}, "one σ"),
        ({"noise": "mixed", "sigma": (0.1, -0.2)}, "-0.2"),
        ({"noise": "additive", "placement": "global", "sigma": None}, "needs sigma"),
        ({"noise": "additive", "sigma": None}, "needs sigma"),
        ({"noise": "gaussian"}, "noise"),
        ({"noise": "mixed", "sigma": 0.5, "ratio": 1.5}, "ratio"),
        ({"eval_repeats": 0}, "eval_repeats"),
        ({"seed": -1}, "seed"),
        ({"recipe": {"epochs": 0}}, "epochs"),
        # YAML's true/false are no numbers (pydantic alone would read true as 1)
        ({"sigma": True}, "expected a number, got true"),
        ({"noise": "mixed", "sigma": (0.1, False)}, "expected a number, got (0.1, false)"),
        ({"seed": True}, "expected a number, got true"),
        ({"eval_repeats": True}, "expected a number, got true"),
        ({"weight_noise": False}, "expected a number, got false"),
        ({"recipe": {"epochs": True}}, "expected a number, got true"),
        ({"recipe": {"lr": True}}, "expected a number, got true"),
        ({"recipe": {"clamp": True}}, "expected a number, got true"),
        ({"distillation": {"temperature": True}}, "expected a number, got true"),
        ({"distillation": {"alpha": False}}, "expected a number, got false"),
        # values the computation cannot hold: refused here, not failed in every run
        ({"seed": 2**63}, "less than or equal to 9223372036854775807"),
        ({"sigma": 1e39}, "sigma = 1e+39 is beyond the float32 noise levels"),
        ({"placement": "map:0=1e50", "sigma": None}, "beyond the float32 noise levels"),
        ({"noise": "mixed", "sigma": (0.1, 1e300)}, "sigma_add = 1e+300 is beyond"),
        ({"weight_noise": 1e300}, "1e+300 is beyond float32"),
        ({"recipe": {"lr": 1e308}}, "1e+308 is beyond float32"),
        ({"recipe": {"clamp": 1e39}}, "1e+39 is beyond float32"),
        ({"recipe": {"weight_decay": 1e39}}, "1e+39 is beyond float32"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_invalid_experiments_are_rejected(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        Experiment(**{**BASE, **overrides})
    assert fragment in str(error.value)


def test_map_placement_carries_its_own_sigma() -> None:
    experiment = Experiment(**{**BASE, "placement": "map:0=0.1;3=0.5", "sigma": None})
    assert experiment.placement == "map:0=0.1;3=0.5"
    assert experiment.placement_spec().sigmas == {0: 0.1, 3: 0.5}


def test_map_placement_with_a_negative_sigma_is_rejected() -> None:
    """Like a negative scalar σ, a negative σ inside the map must fail validation."""
    with pytest.raises(pydantic.ValidationError, match="-1"):
        Experiment(**{**BASE, "placement": "map:0=0.1;3=-1", "sigma": None})


def test_map_placement_with_a_sigma_as_well_is_rejected() -> None:
    """The map carries the levels; a σ beside it is refused at run time, so refuse it here."""
    with pytest.raises(pydantic.ValidationError, match="sigma"):
        Experiment(**{**BASE, "placement": "map:0=0.1", "sigma": 0.5})


def test_noise_none_needs_no_sigma() -> None:
    experiment = Experiment(**{**BASE, "noise": "none", "sigma": None})
    assert experiment.noise_model() is None


def test_mixed_noise_accepts_a_pair_or_an_amplitude_with_ratio() -> None:
    pair = Experiment(**{**BASE, "noise": "mixed", "sigma": [0.1, 0.2]})
    assert pair.sigma == (0.1, 0.2)
    amplitude = Experiment(**{**BASE, "noise": "mixed", "sigma": 1.0, "ratio": 0.25})
    model = amplitude.noise_model()
    assert isinstance(model, MixedNoise)
    assert model.levels(1.0) == (0.75, 0.25)


def test_a_ratio_beside_a_pair_of_sigmas_is_refused_as_it_would_be_ignored() -> None:
    # the pair decides both σ; the ratio would change the hash and the stored settings alone
    with pytest.raises(pydantic.ValidationError, match=r"ratio 0\.25 would be ignored"):
        Experiment(**{**BASE, "noise": "mixed", "ratio": 0.25, "sigma": (0.1, 0.2)})


def test_a_stored_ratio_beside_a_pair_still_reads() -> None:
    # stores written before the check keep such experiments: reading them must not fail
    text = json.dumps({**BASE, "noise": "mixed", "ratio": 0.25, "sigma": [0.1, 0.2]})
    experiment = Experiment.model_validate_json(text, context=STORED)
    assert experiment.ratio == 0.25
    assert experiment.noise_model().levels(experiment.sigma) == (0.1, 0.2)


def test_noise_model_follows_the_fields() -> None:
    additive = Experiment(**BASE).noise_model()
    assert isinstance(additive, AdditiveNoise)
    assert (additive.training, additive.evaluation) == (True, True)
    inference_only = Experiment(**{**BASE, "train_noise": False}).noise_model()
    assert (inference_only.training, inference_only.evaluation) == (False, True)
    mult = Experiment(**{**BASE, "noise": "multiplicative", "gradient": "through_noise"})
    assert isinstance(mult.noise_model(), MultiplicativeNoise)
    assert mult.noise_model().gradient == "through_noise"
    mixed = Experiment(**{**BASE, "noise": "mixed", "sigma": (0.1, 0.2), "order": "add_first"})
    assert mixed.noise_model().order == "add_first"
    assert Experiment(**BASE).placement_spec() == WalkingPlacement(3)


def test_pydantic_is_a_declared_dependency() -> None:
    """experiment.py, recipe.py and cli.py import pydantic; a clean install must bring it."""
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in dependencies}
    assert "pydantic" in names


# --- Noisy Machines fields: weight noise and distillation ------------------------------------

#: Hashes computed with the code before ``weight_noise`` and ``distillation`` existed.
HASHES_BEFORE_NOISY_MACHINES = {
    "c6b3bf34126ed8f62c158a781d7cc52b580922e12f08a223dd3c652c90dabe37": {"sigma": 0.1},
    "943189d3673c8211658b50248bf99b663457385434b416dd95c19e398502a929": {"noise": "none"},
    "00cc1187aaf8bf6cf52c56c0b89c514ff2fc2fd1c1a18ffe52b3b745bae0e5d8": {
        "noise": "mixed",
        "sigma": (0.1, 0.2),
        "train_noise": True,
        "gradient": "through_noise",
    },
    "c01597dd72e275b65609a318e55ee5a20a578930563b18023cdfa5944e978842": {
        "noise": "multiplicative",
        "sigma": 0.5,
        "placement": "walking:3",
        "seed": 2,
        "recipe": {"epochs": 3, "clamp": 1.0},
    },
}


@pytest.mark.parametrize("expected", list(HASHES_BEFORE_NOISY_MACHINES))
def test_hashes_of_experiments_without_the_new_fields_are_unchanged(expected: str) -> None:
    fields = HASHES_BEFORE_NOISY_MACHINES[expected]
    assert Experiment(**fields).content_hash() == expected
    assert Experiment(**fields, weight_noise=0.0, distillation=None).content_hash() == expected
    recipe = {**fields.get("recipe", {}), "augment": False}
    assert Experiment(**{**fields, "recipe": recipe}).content_hash() == expected


def test_weight_noise_and_distillation_enter_the_hash() -> None:
    plain = Experiment(noise="none", train_noise=True)
    noisy = Experiment(noise="none", weight_noise=0.04, train_noise=True)
    distilled = noisy.model_copy(update={"distillation": Distillation()})
    hashes = {e.content_hash() for e in (plain, noisy, distilled)}
    assert len(hashes) == 3
    assert noisy.content_hash() != noisy.model_copy(update={"weight_noise": 0.06}).content_hash()
    other = Distillation(temperature=4.0)
    assert (
        distilled.content_hash() != noisy.model_copy(update={"distillation": other}).content_hash()
    )


def test_weight_noise_keeps_train_noise_and_repeats_but_not_placement_or_gradient() -> None:
    base = {"noise": "none", "weight_noise": 0.02}
    identity = Experiment(**base, train_noise=True).identity()
    assert identity["weight_noise"] == 0.02
    assert identity["train_noise"] is True
    assert "eval_repeats" in identity
    assert not {"placement", "sigma", "gradient"} & set(identity)
    assert _weight_hash(train_noise=True) != _weight_hash(train_noise=False)
    assert _weight_hash(eval_repeats=2) != _weight_hash(eval_repeats=3)
    assert _weight_hash(placement="walking:1") == _weight_hash(placement="global")
    assert _weight_hash(gradient="through_noise") == _weight_hash()


def _weight_hash(**fields: Any) -> str:
    return Experiment(noise="none", weight_noise=0.02, **fields).content_hash()


def test_distillation_without_noise_drops_what_cannot_matter() -> None:
    distilled = Experiment(noise="none", distillation={"alpha": 0.5})
    assert "train_noise" not in distilled.identity()
    assert distilled.content_hash() != Experiment(noise="none").content_hash()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"weight_noise": -0.01}, "weight_noise"),
        ({"weight_noise": math.inf}, "weight_noise"),
        ({"weight_noise": math.nan}, "weight_noise"),
        ({"distillation": {"alpha": 2}}, "alpha"),
        ({"distillation": {"temperature": -1}}, "temperature"),
        ({"distillation": {"teacher": ""}}, "teacher"),
        ({"distillation": {"beta": 1}}, "beta"),
    ],
    ids=str,
)
def test_invalid_noisy_machines_settings_are_rejected(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        Experiment(**{**BASE, **overrides})
    assert fragment in str(error.value)


def test_training_kinds_follow_weight_noise_and_distillation() -> None:
    inference_only = Experiment(noise="none", weight_noise=0.04, train_noise=False)
    assert not inference_only.trains_with_noise
    assert inference_only.shares_clean_model
    noisy = inference_only.model_copy(update={"train_noise": True})
    assert noisy.trains_with_noise
    assert not noisy.shares_clean_model
    distilled = Experiment(noise="none", distillation=Distillation())
    assert not distilled.trains_with_noise
    assert not distilled.shares_clean_model
    assert distilled.teacher_training() == distilled.clean_training()
    assert distilled.clean_training() == Experiment(noise="none")
    from_file = Experiment(noise="none", distillation=Distillation(teacher="teacher.pt"))
    assert from_file.teacher_training() is None
    assert Experiment(**BASE).teacher_training() is None
    assert Experiment(**BASE).trains_with_noise
    assert not Experiment(**BASE).shares_clean_model


def test_a_weight_noise_experiment_survives_a_dict_round_trip() -> None:
    experiment = Experiment(noise="none", weight_noise=0.06, distillation={"alpha": 0.7})
    again = Experiment.model_validate(json.loads(json.dumps(experiment.model_dump(mode="json"))))
    assert again == experiment
    assert again.content_hash() == experiment.content_hash()
    assert isinstance(again.distillation, Distillation)


def test_experiments_that_differ_only_in_sigma_share_their_evaluation_seed() -> None:
    """Common random numbers: the same standard normal draws for every σ of one seed and site
    (and so one draw for them all in a stack); anything else gives other draws."""
    base = Experiment(noise="additive", placement="walking:3", sigma=0.1, seed=2)
    assert base.model_copy(update={"sigma": 7.0}).evaluation_seed() == base.evaluation_seed()
    for change in ({"seed": 3}, {"placement": "walking:4"}, {"noise": "multiplicative"},
                   {"eval_repeats": 2}, {"train_noise": True}):  # fmt: skip
        other = Experiment(**(base.model_dump() | change))
        assert other.evaluation_seed() != base.evaluation_seed(), change
    # training draws stay each experiment's own: models trained at other σ see other noise
    noisy = base.model_copy(update={"train_noise": True})
    again = noisy.model_copy(update={"sigma": 7.0})
    assert again.training_noise_seed() != noisy.training_noise_seed()
