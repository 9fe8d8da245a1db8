"""A worker's unit of work: its outcomes say on which device and machine they computed."""

from __future__ import annotations

import socket

import pytest
import torch

from walkingnoise.experiment import Experiment
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.sweep.work import device_label, run_unit
from walkingnoise.training.memory import DEVICE_ENV


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
