"""The sweep's look at its models: site tables, networks, and which cohorts train alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch.nn.functional as F
from torch import nn

from walkingnoise.experiment import Experiment
from walkingnoise.models import register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.sweep import SweepError, run_sweep
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.training.memory import default_device

from .helpers import spec


class _Dropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.drop, self.out = nn.Linear(64, 16), nn.Dropout(0.2), nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.drop(F.relu(self.fc(x.flatten(1)))))


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv2d(1, 2, 3), nn.Linear(72, 10)

    def forward(self, x):
        return self.out(F.relu(self.conv(x)).flatten(1))


@pytest.fixture
def user_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("with-dropout")(lambda shape, classes, *, batchnorm: _Dropout())
    register_model("with-conv")(lambda shape, classes, *, batchnorm: _Conv())


def _noisy(model: str) -> Experiment:
    return Experiment(
        dataset="digits", model=model, batchnorm=model == "mlp", noise="additive", sigma=0.3,
        placement="walking:1", train_noise=True,
    )  # fmt: skip


@pytest.mark.usefixtures("user_models")
def test_which_cohorts_train_one_model_at_a_time() -> None:
    counter = SiteCounter()
    assert not counter.trains_alone(_noisy("mlp"))
    assert counter.trains_alone(_noisy("with-dropout"))  # a stack would share its draws
    assert counter.trains_alone(_noisy("with-conv")) == (default_device().type == "cpu")


@pytest.mark.usefixtures("user_models")
def test_the_planner_says_once_why_a_cohort_trains_one_model_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In the process the user watches (a pool's workers log nowhere they see), naming the
    model, the dataset and the reason, once for all its cohorts (other noise kinds, other
    repeats); nothing for a cohort that stacks."""
    counter = SiteCounter()
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        counter.trains_alone(_noisy("mlp"))
        for update in ({}, {"sigma": 1.0}, {"noise": "multiplicative"}, {"eval_repeats": 2}):
            counter.trains_alone(_noisy("with-dropout").model_copy(update=update))
    lines = [r.getMessage() for r in caplog.records if "one model at a time" in r.getMessage()]
    assert lines == [
        "noisy trainings of with-dropout on digits run one model at a time: the model draws "
        "random numbers in training ('drop' (Dropout)), which the models of a stack would share"
    ]


@pytest.mark.usefixtures("user_models")
def test_the_units_device_decides_which_cohorts_train_alone() -> None:
    """A Ray executor whose tasks take GPUs plans for them, whatever device the driver has
    (and one whose tasks take none, for CPUs); a model a stack cannot run trains alone on both."""
    on_gpus, on_cpus = SiteCounter(device="cuda"), SiteCounter(device="cpu")
    assert not on_gpus.trains_alone(_noisy("with-conv"))
    assert on_cpus.trains_alone(_noisy("with-conv"))
    assert on_gpus.trains_alone(_noisy("with-dropout"))


@pytest.mark.usefixtures("user_models")
def test_the_device_variable_names_the_units_device_even_where_the_planner_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WALKINGNOISE_DEVICE", "cuda")
    assert not SiteCounter().trains_alone(_noisy("with-conv"))
    monkeypatch.setenv("WALKINGNOISE_DEVICE", "cpu")
    assert SiteCounter().trains_alone(_noisy("with-conv"))


SWEEP = """
fixed: {dataset: digits, model: with-dropout, batchnorm: false, noise: additive,
        train_noise: true, eval_repeats: 1, recipe: {epochs: 1}}
grid:
  sigma: {type: choice, options: [0.1, 0.2, 0.3]}
"""


@pytest.mark.usefixtures("user_models")
def test_trainings_one_at_a_time_are_stored_as_each_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three trainings of a model with dropout: three units, each recorded when it ends, so
    a run stopped after the first keeps it."""
    with caplog.at_level(logging.INFO, logger="walkingnoise.sweep.runner"):
        summary = run_sweep(spec(SWEEP), tmp_path / "s.sqlite", progress=False)
    assert summary.ran == 3
    assert "3 units of work" in caplog.text
    for done in (1, 2, 3):
        assert f"{done} of 3 experiments run (0 failed)" in caplog.text


def test_a_model_with_nothing_to_train_stops_the_sweep_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep trains every model it evaluates: one without a parameter to train (none at all,
    or all frozen) is an error naming the key and the model, not a failure of every experiment
    at run time."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("all-frozen")(
        lambda shape, classes, *, batchnorm: nn.Sequential(
            nn.Flatten(), nn.Linear(64, classes)
        ).requires_grad_(False)
    )
    frozen = SWEEP.replace("with-dropout", "all-frozen")
    with pytest.raises(SweepError, match=r"^fixed\.model: model 'all-frozen' has no parameter"):
        run_sweep(spec(frozen), tmp_path / "s.sqlite", progress=False)
    assert list(tmp_path.iterdir()) == []
