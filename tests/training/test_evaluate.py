"""Evaluation with noise: repeats, clean evaluation, and sweeps over placements and σ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from walkingnoise.data import InMemoryDataset
from walkingnoise.models import build_model
from walkingnoise.noise import (
    AdditiveNoise,
    GlobalPlacement,
    MultiplicativeNoise,
    NoisyModel,
    WalkingPlacement,
    instrument,
)
from walkingnoise.training import Recipe, evaluate, evaluate_clean, train_model
from walkingnoise.training.evaluate import Evaluation, accuracy_and_loss, evaluate_placements


@pytest.fixture(scope="module")
def trained(digits: InMemoryDataset) -> NoisyModel:
    """The MLP with BatchNorm trained cleanly on digits for 10 epochs (about 97 % accuracy)."""
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes, batchnorm=True)
    noisy = instrument(model, digits.train.x[:2])
    train_model(noisy, digits.train, Recipe(epochs=10), seed=0, progress=False)
    noisy.eval()
    return noisy


@pytest.fixture
def model(trained: NoisyModel) -> Iterator[NoisyModel]:
    """The trained model with its noise switched off again after each test."""
    trained.clear_noise()
    yield trained
    trained.clear_noise()


def _snapshot(model: NoisyModel) -> tuple:
    return (model.noise, [(site.noise, site.sigma, site.is_active()) for site in model.sites])


def test_noisy_evaluation_repeats_with_fresh_noise(
    model: NoisyModel, digits: InMemoryDataset
) -> None:
    model.set_noise(AdditiveNoise(), GlobalPlacement(), 1.0)
    result = evaluate(model, digits.test, repeats=5)
    assert len(result.accuracies) == 5
    assert len(result.losses) == 5
    assert len(set(result.accuracies)) > 1
    assert result.accuracy_std > 0
    assert result.accuracy == pytest.approx(sum(result.accuracies) / 5)
    assert all(0.0 <= a <= 1.0 for a in result.accuracies)


def test_without_active_noise_evaluation_runs_once(
    model: NoisyModel, digits: InMemoryDataset
) -> None:
    result = evaluate(model, digits.test, repeats=5)
    assert len(result.accuracies) == 1
    assert result.accuracy_std == 0.0
    # Noise that is on only in training mode does not make evaluation noisy either.
    model.set_noise(AdditiveNoise(training=True, evaluation=False), GlobalPlacement(), 1.0)
    again = evaluate(model, digits.test, repeats=5)
    assert again.accuracies == result.accuracies
    assert again.losses == result.losses


def test_zero_repeats_is_rejected(model: NoisyModel, digits: InMemoryDataset) -> None:
    with pytest.raises(ValueError, match="repeats"):
        evaluate(model, digits.test, repeats=0)


def test_evaluate_clean_matches_the_clean_source_model(
    model: NoisyModel, digits: InMemoryDataset
) -> None:
    model.set_noise(AdditiveNoise(), GlobalPlacement(), 1.0)
    clean = evaluate_clean(model, digits.test)
    reference = accuracy_and_loss(model.source, digits.test)
    assert clean.accuracies == (reference[0],)
    assert clean.loss == pytest.approx(reference[1], rel=1e-6)
    with model.noise_disabled():
        disabled = evaluate(model, digits.test, repeats=3)
    assert disabled.accuracies == clean.accuracies
    assert clean.accuracy > 0.9
    # The noise configuration survives clean evaluation and is noisy again afterwards.
    model.eval()
    assert all(site.is_active() for site in model.sites)
    assert evaluate(model, digits.test).accuracy < clean.accuracy - 0.1


def test_evaluate_keeps_the_training_flag_and_the_batchnorm_statistics(
    model: NoisyModel, digits: InMemoryDataset
) -> None:
    model.set_noise(AdditiveNoise(), GlobalPlacement(), 0.5)
    before = {k: v.clone() for k, v in model.source.state_dict().items()}
    for training in (True, False):
        model.train(training)
        evaluate(model, digits.test, repeats=2)
        evaluate_clean(model, digits.test)
        assert model.training is training
        assert all(site.training is training for site in model.sites)
    model.eval()
    after = model.source.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_batch_size_does_not_change_clean_results(
    model: NoisyModel, digits: InMemoryDataset
) -> None:
    whole = evaluate_clean(model, digits.test, batch_size=1024)
    chunked = evaluate_clean(model, digits.test, batch_size=50)
    assert chunked.accuracy == whole.accuracy
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-5)


def test_evaluate_placements_restores_the_noise_and_degrades_with_sigma(
    model: NoisyModel, digits: InMemoryDataset
) -> None:
    model.set_noise(MultiplicativeNoise(), WalkingPlacement(3), 0.2)
    model.eval()
    before = _snapshot(model)
    sigmas = [1e-3, 1.0, 1e3]
    rows = evaluate_placements(
        model,
        digits.test,
        AdditiveNoise(),
        [GlobalPlacement(), WalkingPlacement(0)],
        sigmas,
        repeats=2,
    )
    assert _snapshot(model) == before
    assert [(r["placement"], r["site"], r["sigma"]) for r in rows] == [
        ("global", None, s) for s in sigmas
    ] + [("walking:0", 0, s) for s in sigmas]
    clean = evaluate_clean(model, digits.test).accuracy
    for placement in ("global", "walking:0"):
        acc = [r["accuracy"] for r in rows if r["placement"] == placement]
        assert acc[0] > acc[1] > acc[2], (placement, acc)
        assert acc[0] == pytest.approx(clean, abs=0.02)
    global_huge = next(r for r in rows if r["placement"] == "global" and r["sigma"] == 1e3)
    assert global_huge["accuracy"] < 0.25  # chance is 0.1
    assert global_huge["accuracy_std"] >= 0.0


def test_evaluation_summary_statistics() -> None:
    result = Evaluation(accuracies=(0.5, 0.7, 0.9), losses=(1.0, 2.0, 3.0))
    assert result.accuracy == pytest.approx(0.7)
    assert result.accuracy_std == pytest.approx(0.2)  # sample std, n - 1
    assert result.loss_std == pytest.approx(1.0)
    assert result.as_dict("noisy_test") == {
        "noisy_test_accuracy": pytest.approx(0.7),
        "noisy_test_accuracy_std": pytest.approx(0.2),
        "noisy_test_loss": pytest.approx(2.0),
        "noisy_test_loss_std": pytest.approx(1.0),
    }


class _WithAuxiliary(torch.nn.Module):
    """A classifier that also returns its features, as some models do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x.flatten(1)), x


def test_a_model_that_gives_no_tensor_of_logits_is_refused_in_one_line(
    digits: InMemoryDataset,
) -> None:
    noisy = instrument(_WithAuxiliary(), digits.train.x[:2])
    for run in (
        lambda: evaluate(noisy, digits.test),
        lambda: train_model(noisy, digits.train, Recipe(epochs=1), seed=0),
    ):
        with pytest.raises(
            TypeError, match=r"^_WithAuxiliary gives tuple for a batch, not a"
        ) as err:
            run()
        assert "\n" not in str(err.value)
