"""run_experiment end to end: determinism, accuracy on digits, train/eval noise flags."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from walkingnoise.data import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.training import Recipe
from walkingnoise.training.run import build_noisy_model, build_noisy_models, run_experiment

NOISY = Experiment(
    noise="additive",
    placement="global",
    sigma=0.3,
    train_noise=True,
    recipe=Recipe(epochs=3),
    eval_repeats=3,
    seed=7,
)


def _state(result) -> dict[str, torch.Tensor]:
    return result.model.source.state_dict()


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_identical_results(digits: InMemoryDataset) -> None:
    first = run_experiment(NOISY, dataset=digits, progress=False)
    second = run_experiment(NOISY, dataset=digits, progress=False)
    assert _equal_states(_state(first), _state(second))
    assert first.metrics == second.metrics
    assert first.history == second.history
    # The noisy metrics come from R repeats with fresh noise each.
    assert first.metrics["noisy_test_accuracy_std"] > 0


def test_different_seed_gives_different_weights(digits: InMemoryDataset) -> None:
    first = run_experiment(NOISY, dataset=digits, progress=False)
    other = run_experiment(NOISY.model_copy(update={"seed": 8}), dataset=digits, progress=False)
    assert not _equal_states(_state(first), _state(other))


def test_training_noise_changes_the_trained_weights(digits: InMemoryDataset) -> None:
    noisy = run_experiment(NOISY, dataset=digits, progress=False)
    clean = Experiment(**{**NOISY.model_dump(), "train_noise": False})
    inference_only = run_experiment(clean, dataset=digits, progress=False)
    assert not _equal_states(_state(noisy), _state(inference_only))


def test_mlp_with_batchnorm_learns_digits(digits: InMemoryDataset) -> None:
    experiment = Experiment(noise="none", recipe=Recipe(epochs=25), seed=0)
    result = run_experiment(experiment, dataset=digits, progress=False)
    assert result.metrics["clean_test_accuracy"] >= 0.9
    assert result.metrics["clean_validation_accuracy"] >= 0.85
    assert not result.history.diverged
    assert len(result.history.epochs) == 25


def test_metrics_cover_both_splits_and_inference_only_noise_hurts(
    digits: InMemoryDataset,
) -> None:
    experiment = Experiment(sigma=1.0, recipe=Recipe(epochs=10), eval_repeats=2)
    result = run_experiment(experiment, dataset=digits, progress=False)
    m = result.metrics
    for clean_noisy in ("clean", "noisy"):
        for split in ("validation", "test"):
            for stat in ("accuracy", "accuracy_std", "loss", "loss_std"):
                assert f"{clean_noisy}_{split}_{stat}" in m
            assert 0.0 <= m[f"{clean_noisy}_{split}_accuracy"] <= 1.0
    assert m["clean_test_accuracy_std"] == 0.0
    assert m["noisy_test_accuracy"] < m["clean_test_accuracy"] - 0.1
    assert set(result.seconds) == {"load", "train", "evaluate"}


def _active(model, training: bool) -> list[bool]:
    model.train(training)
    return [site.is_active() for site in model.sites]


def test_inference_only_noise_is_off_in_training_mode(digits: InMemoryDataset) -> None:
    model = build_noisy_model(Experiment(sigma=0.5, train_noise=False), digits)
    assert not any(_active(model, training=True))
    assert all(_active(model, training=False))
    x = digits.test.x[:32]
    model.train()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_noisy_training_has_noise_in_both_modes(digits: InMemoryDataset) -> None:
    model = build_noisy_model(Experiment(sigma=0.5, train_noise=True), digits)
    assert all(_active(model, training=True))
    assert all(_active(model, training=False))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(digits.test.x[:32]), model(digits.test.x[:32]))


def test_walking_placement_activates_exactly_one_site(digits: InMemoryDataset) -> None:
    model = build_noisy_model(Experiment(placement="walking:4", sigma=0.5), digits)
    assert _active(model, training=False) == [i == 4 for i in range(11)]


def test_initial_weights_depend_on_the_seed_only(digits: InMemoryDataset) -> None:
    a = build_noisy_model(Experiment(sigma=0.1, seed=3), digits).source.state_dict()
    torch.manual_seed(12345)  # the global generator state before does not matter
    b = build_noisy_model(Experiment(sigma=5.0, seed=3), digits).source.state_dict()
    c = build_noisy_model(Experiment(sigma=0.1, seed=4), digits).source.state_dict()
    assert _equal_states(a, b)
    assert not _equal_states(a, c)


COHORT = [
    Experiment(placement=f"walking:{site}", sigma=sigma, train_noise=True, seed=seed, **more)
    for seed, site, sigma, more in [
        (0, 0, 0.5, {"weight_noise": 0.05}),
        (0, 4, 2.0, {}),
        (1, 4, 0.1, {"weight_noise": 0.02}),
        (0, 3, 0.5, {"batchnorm": False}),
        (2, 7, 1.0, {"noise": "multiplicative"}),
        (1, 1, 0.3, {"batchnorm": False}),
    ]
]


def test_models_built_together_are_those_built_alone(digits: InMemoryDataset) -> None:
    """A cohort's models, built together (instrumented like the first of their architecture),
    are the models built alone: weights, sites, noise settings and the noise they draw, and
    the global generator ends where building them alone leaves it."""
    alone = [build_noisy_model(e, digits) for e in COHORT]
    after_alone = torch.random.get_rng_state()
    together = build_noisy_models(COHORT, digits)
    assert torch.equal(torch.random.get_rng_state(), after_alone)
    x = digits.test.x[:16]
    for a, b in zip(alone, together, strict=True):
        assert _equal_states(a.source.state_dict(), b.source.state_dict())
        assert a.site_table == b.site_table
        assert a.net.code == b.net.code
        a.train(), b.train()
        with torch.no_grad():
            assert torch.equal(torch.stack([a(x), a(x)]), torch.stack([b(x), b(x)]))


def test_models_built_together_trace_each_architecture_once(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a cohort traces the first model of each architecture (with and without
    BatchNorm here) and copies its graph for the others."""
    instrument_module = importlib.import_module("walkingnoise.noise.instrument")
    traced = []
    trace = instrument_module._trace
    monkeypatch.setattr(instrument_module, "_trace", lambda m: traced.append(m) or trace(m))
    build_noisy_models(COHORT, digits)
    assert len(traced) == 2


def test_a_model_that_draws_while_instrumented_is_built_alone_each_time(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fractional max pooling draws random numbers on every pass, also those instrumenting
    makes: copies would leave the global generator elsewhere, so each model is traced."""
    registry = importlib.import_module("walkingnoise.models.registry")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model("fractional")(
        lambda shape, classes, *, batchnorm: nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.FractionalMaxPool2d(2, output_size=3), nn.Flatten(),
            nn.Linear(18, classes),
        )
    )  # fmt: skip
    instrument_module = importlib.import_module("walkingnoise.noise.instrument")
    traced = []
    trace = instrument_module._trace
    monkeypatch.setattr(instrument_module, "_trace", lambda m: traced.append(m) or trace(m))
    cohort = [
        Experiment(model="fractional", batchnorm=False, sigma=0.5, train_noise=True, seed=s)
        for s in range(3)
    ]
    together = build_noisy_models(cohort, digits)
    assert len(traced) == 3
    after_together = torch.random.get_rng_state()
    alone = [build_noisy_model(e, digits) for e in cohort]
    assert torch.equal(torch.random.get_rng_state(), after_together)
    for a, b in zip(alone, together, strict=True):
        assert _equal_states(a.source.state_dict(), b.source.state_dict())


@pytest.mark.parametrize("noise", ["multiplicative", "mixed"])
def test_other_noise_kinds_run(digits: InMemoryDataset, noise: str) -> None:
    sigma = (0.2, 0.2) if noise == "mixed" else 0.2
    experiment = Experiment(
        noise=noise, sigma=sigma, train_noise=True, recipe=Recipe(epochs=2), eval_repeats=2
    )
    result = run_experiment(experiment, dataset=digits, progress=False)
    assert not result.history.diverged
    assert result.metrics["noisy_test_accuracy_std"] > 0
