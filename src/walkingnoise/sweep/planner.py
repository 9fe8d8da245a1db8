"""Planning: which trainings a set of experiments needs, grouped into units of work.

Inference-only experiments (noise off in training) never retrain: all of them with the same
dataset, model, BatchNorm flag, recipe and seed share one clean training, done once or found in
the store, and are then only evaluated. Noisy-training experiments that differ only in σ, site,
placement, seed or weight clamping form a cohort; a cohort is split into equal units of at
most ``max_unit`` members, which the engine trains together, and into at least as many units as
there are workers to share them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from walkingnoise.experiment import Experiment

#: Fields that may differ inside one cohort (the vectorizable axes), and recipe fields.
COHORT_AXES = ("sigma", "placement", "seed", "train_noise")
COHORT_RECIPE_AXES = ("clamp",)


@dataclass(frozen=True)
class WorkUnit:
    """Experiments that run together in one task.

    Attributes:
        members: the experiments whose results the unit produces.
        shared_training: for inference-only members, the clean training they all evaluate;
            None for a unit of noisy trainings (each member trains its own model).
        checkpoint: the shared clean model's checkpoint bytes when the store already has it.
    """

    members: tuple[Experiment, ...]
    shared_training: Experiment | None = None
    checkpoint: bytes | None = None

    @property
    def trainings(self) -> int:
        """How many models this unit trains."""
        if self.shared_training is None:
            return len(self.members)
        return 0 if self.checkpoint is not None else 1


@dataclass(frozen=True)
class Plan:
    """The units of work for a set of experiments."""

    units: tuple[WorkUnit, ...]

    @property
    def experiments(self) -> int:
        """Number of experiments covered."""
        return sum(len(unit.members) for unit in self.units)

    @property
    def trainings(self) -> int:
        """Number of models that will be trained."""
        return sum(unit.trainings for unit in self.units)

    @property
    def shared_trainings(self) -> int:
        """Clean trainings shared by inference-only experiments that still have to run."""
        return sum(1 for u in self.units if u.shared_training is not None and u.checkpoint is None)


def cohort_key(experiment: Experiment) -> str:
    """Everything but the vectorizable axes: experiments with equal keys can train as a stack."""
    exclude: dict[str, object] = dict.fromkeys(COHORT_AXES, True)
    exclude["recipe"] = set(COHORT_RECIPE_AXES)
    fields = experiment.model_dump(mode="json", exclude=exclude)
    return json.dumps(fields, sort_keys=True)


def plan(
    experiments: Sequence[Experiment],
    *,
    trained: Callable[[str], bytes | None] = lambda _key: None,
    max_unit: int = 64,
    workers: int = 1,
) -> Plan:
    """Group experiments into work units.

    Args:
        experiments: what has to run.
        trained: returns the checkpoint bytes of a clean training already done (by its hash).
        max_unit: most members in one unit of noisy trainings.
        workers: how many units can run at once; cohorts are cut into a multiple of it.
    """
    shared: dict[str, list[Experiment]] = {}
    cohorts: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        if experiment.trains_with_noise:
            cohorts.setdefault(cohort_key(experiment), []).append(experiment)
        else:
            shared.setdefault(experiment.clean_training().content_hash(), []).append(experiment)
    units: list[WorkUnit] = []
    for key, members in shared.items():
        training = members[0].clean_training()
        units.append(WorkUnit(tuple(members), training, trained(key)))
    for members in cohorts.values():
        parts = math.ceil(len(members) / max_unit)
        parts = min(len(members), math.ceil(parts / workers) * workers)
        size = math.ceil(len(members) / parts)
        for start in range(0, len(members), size):
            units.append(WorkUnit(tuple(members[start : start + size])))
    return Plan(tuple(units))
