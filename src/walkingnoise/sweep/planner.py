"""Planning: which trainings a set of experiments needs, grouped into units of work.

Inference-only experiments (noise off in training) never retrain: all of them with the same
dataset, model, BatchNorm flag, recipe and seed share one clean training, done once or found in
the store, and are then only evaluated. Noisy-training experiments that differ only in σ, site,
placement, seed, weight-noise η or weight clamping form a cohort; a cohort is split into equal
units of at most ``max_unit`` members, which the engine trains together, and into at least as
many units as there are workers to share them. Members are ordered by seed and placement, and
a cut near a change of seed moves onto it, so a unit's models mostly share their batches and
the layers before their first noisy site.

Weight noise (Noisy Machines) trains and evaluates in stacks like activation noise. A
distillation whose teacher is ``clean`` joins the unit of that clean training (the shared model
is its teacher, and its students train as stacks): if the store has the teacher, its students
are cut into units of their own beside the evaluations, as a cohort is; if not, one unit trains
the teacher once and then its students. A run may instead ``defer_students``: the teacher's
unit then only evaluates, and its students wait for a later plan that finds the teacher stored
(so a stopped run keeps the teacher, and the students share the workers). The students of a
checkpoint file form cohorts like other noisy trainings (the file is part of their key): a
unit loads the teacher once.

Units come longest first (most models to train), so the short ones fill the workers' gaps at the
end of a run instead of leaving one worker alone with a long unit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from walkingnoise.experiment import Experiment

#: Fields that may differ inside one cohort (the vectorizable axes), and recipe fields.
COHORT_AXES = ("sigma", "placement", "seed", "train_noise", "weight_noise")
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
        """How many models this unit trains (its own, plus the shared one if not stored)."""
        if self.shared_training is None:
            return len(self.members)
        students = sum(1 for member in self.members if not member.shares_clean_model)
        return students + (0 if self.checkpoint is not None else 1)


@dataclass(frozen=True)
class Plan:
    """The units of work for a set of experiments."""

    units: tuple[WorkUnit, ...]
    deferred: tuple[Experiment, ...] = ()

    @property
    def experiments(self) -> int:
        """Number of experiments covered, the deferred students included."""
        return sum(len(unit.members) for unit in self.units) + len(self.deferred)

    @property
    def trainings(self) -> int:
        """Number of models that will be trained, the deferred students included."""
        return sum(unit.trainings for unit in self.units) + len(self.deferred)

    @property
    def shared_trainings(self) -> int:
        """Clean trainings still to run that inference-only experiments or distillation
        students share (their evaluated model, their teacher)."""
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
    alone: Callable[[Experiment], bool] = lambda _experiment: False,
    defer_students: bool = False,
    training_elsewhere: Callable[[str], bool] = lambda _key: False,
) -> Plan:
    """Group experiments into work units.

    Args:
        experiments: what has to run.
        trained: returns the checkpoint bytes of a clean training already done (by its hash).
        max_unit: most members in one unit of noisy trainings.
        workers: how many units can run at once; cohorts are cut into a multiple of it.
        alone: whether the cohort of a noisy training trains one model at a time: it is cut
            into units of one, so each training is stored as it finishes and a stopped run
            loses at most the ones under way.
        defer_students: students of a clean teacher not trained yet, whose training unit has
            evaluations to run, are left out (``Plan.deferred``): that unit trains and stores
            the teacher, and a later plan cuts the students into units as a cohort.
        training_elsewhere: whether another run is training a clean model (by its hash): its
            students are left out too, pending, rather than trained with a second teacher.
    """
    shared: dict[str, list[Experiment]] = {}
    cohorts: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        if experiment.shares_clean_model or experiment.teacher_training() is not None:
            shared.setdefault(experiment.clean_training().content_hash(), []).append(experiment)
        else:
            cohorts.setdefault(cohort_key(experiment), []).append(experiment)
    units: list[WorkUnit] = []
    deferred: list[Experiment] = []
    for key, members in shared.items():
        checkpoint = trained(key)
        evaluated = [m for m in members if m.shares_clean_model]
        waits = (defer_students and bool(evaluated)) or training_elsewhere(key)
        if checkpoint is None and waits:
            deferred += [m for m in members if not m.shares_clean_model]
            members = evaluated
            if not members:
                continue
        units += _shared_units(members, checkpoint, max_unit, workers, alone)
    for members in cohorts.values():
        size = 1 if alone(members[0]) else max_unit
        units += [WorkUnit(chunk) for chunk in _cohort_chunks(members, size, workers)]
    # longest first (most models to train), so short units fill the gaps at the end
    units.sort(key=lambda unit: unit.trainings, reverse=True)
    return Plan(tuple(units), tuple(deferred))


def _cohort_chunks(
    members: list[Experiment], max_unit: int, workers: int
) -> list[tuple[Experiment, ...]]:
    """A cohort cut into equal chunks of at most ``max_unit``, as many as a multiple of
    ``workers`` (but no more than there are members)."""
    # the models of one seed share their batches, and those of one placement everything
    # before their first noisy site: keep each together
    members = sorted(members, key=lambda e: (e.seed, e.placement))
    parts = math.ceil(len(members) / max_unit)
    parts = min(len(members), math.ceil(parts / workers) * workers)
    size = math.ceil(len(members) / parts)
    return [tuple(chunk) for chunk in _cut(members, size, max_unit)]


def _cut(members: list[Experiment], size: int, max_unit: int) -> list[list[Experiment]]:
    """Consecutive chunks of ``size`` members; a cut within a quarter of ``size`` of a change of
    seed moves onto it, so a unit does not end with a few models of the next seed, unless that
    makes a chunk longer than ``max_unit``."""
    seeds = [i for i in range(1, len(members)) if members[i].seed != members[i - 1].seed]
    edges = [0]
    for cut in range(size, len(members), size):
        near = min(seeds, key=lambda i: abs(i - cut), default=cut)
        following = min(cut + size, len(members))
        fits = near - edges[-1] <= max_unit and following - near <= max_unit
        edges.append(near if abs(near - cut) <= size / 4 and fits else cut)
    edges.append(len(members))
    return [members[a:b] for a, b in pairwise(edges) if b > a]


def _shared_units(
    members: list[Experiment],
    checkpoint: bytes | None,
    max_unit: int,
    workers: int,
    alone: Callable[[Experiment], bool],
) -> list[WorkUnit]:
    """The units of one clean training: its evaluations, and the students it teaches.

    Without a stored checkpoint everything is one unit, so the clean model is trained once.
    With one, the students of each cohort are cut into units as a cohort is.
    """
    training = members[0].clean_training()
    if checkpoint is None:
        return [WorkUnit(tuple(members), training, None)]
    evaluated = tuple(m for m in members if m.shares_clean_model)
    cohorts: dict[str, list[Experiment]] = {}
    for student in members:
        if not student.shares_clean_model:
            cohorts.setdefault(cohort_key(student), []).append(student)
    units = [WorkUnit(evaluated, training, checkpoint)] if evaluated else []
    for students in cohorts.values():
        chunks = _cohort_chunks(students, 1 if alone(students[0]) else max_unit, workers)
        units += [WorkUnit(chunk, training, checkpoint) for chunk in chunks]
    return units
