"""Evaluation with noise: repeats and clean evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from walkingnoise.data import InMemoryDataset
from walkingnoise.models import build_model
from walkingnoise.noise import (
    AdditiveNoise,
    GlobalPlacement,
    NoisyModel,
    instrument,
)
from walkingnoise.training import Recipe, evaluate, evaluate_clean, train_model
from walkingnoise.training.evaluate import Evaluation, accuracy_and_loss


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
