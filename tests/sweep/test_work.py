"""A worker's unit of work: its outcomes say on which device and machine they computed."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.sweep.work import device_label, run_unit
from walkingnoise.training.memory import DEVICE_ENV
from walkingnoise.training.run import evaluate_experiment, train_experiment


def test_the_cpu_is_labelled_cpu() -> None:
    assert device_label(torch.device("cpu")) == "cpu"


def test_a_gpu_is_labelled_with_its_index_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def name(index: int) -> str:
        asked.append(index)
        return "NVIDIA H100 80GB HBM3"

    monkeypatch.setattr(torch.cuda, "get_device_name", name)
    assert device_label(torch.device("cuda", 1)) == "cuda:1 (NVIDIA H100 80GB HBM3)"
    assert asked == [1]


def _experiments(train_noise: bool) -> tuple[Experiment, ...]:
    base = {"dataset": "digits", "noise": "additive", "placement": "walking:2", "seed": 0}
    return tuple(
        Experiment(**base, sigma=sigma, train_noise=train_noise, recipe={"epochs": 1})
        for sigma in (0.1, 0.5)
    )


@pytest.mark.parametrize("shared", [False, True], ids=["noisy-trainings", "shared-clean"])
def test_every_outcome_of_a_unit_on_the_cpu_says_cpu_and_this_host(
    monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    members = _experiments(train_noise=not shared)
    unit = WorkUnit(members, members[0].clean_training() if shared else None)
    result = run_unit(unit, save_checkpoints=False)
    outcomes = [*result.members, *([result.training] if shared else [])]
    assert len(outcomes) == len(members) + shared
    assert all(outcome.error is None for outcome in outcomes)
    assert [(o.device, o.node) for o in outcomes] == [("cpu", socket.gethostname())] * len(outcomes)


def _spectral(shape: tuple[int, ...], classes: int, *, batchnorm: bool) -> nn.Module:
    return nn.Sequential(nn.Flatten(), spectral_norm(nn.Linear(64, 32)), nn.ReLU(),
                         nn.Linear(32, classes))  # fmt: skip


def test_a_shared_clean_model_with_spectral_norm_gives_what_it_gives_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spectral norm's power iteration runs wherever its weight is read in training mode; the
    unit's bookkeeping (weight statistics, stacks of copies) must not run it, or every
    inference-only experiment would evaluate another model than the one trained."""
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("spectral")(_spectral)
    members = tuple(
        Experiment(dataset="digits", model="spectral", batchnorm=False, noise="additive",
                   placement="walking:3", sigma=sigma, eval_repeats=1, recipe={"epochs": 1})
        for sigma in (0.3, 1.0, 3.0)
    )  # fmt: skip
    result = run_unit(WorkUnit(members, members[0].clean_training()), save_checkpoints=False)
    digits = load_dataset("digits")
    model, _ = train_experiment(members[0].clean_training(), digits)
    for outcome in result.members:
        alone = evaluate_experiment(outcome.experiment, model, digits)
        assert outcome.metrics == pytest.approx(alone, abs=1e-6)
