"""What a worker does with one unit of work; runs in-process, in a pool process or on Ray."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from walkingnoise._cores import usable_cores
from walkingnoise.analysis.weights import weight_statistics
from walkingnoise.data import InMemoryDataset, load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models.imports import import_user_modules
from walkingnoise.models.registry import model_names
from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.weight import remove_weight_noise
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.training.checkpoint import checkpoint_bytes, read_checkpoint
from walkingnoise.training.cohort import evaluate_shared, train_alone, train_cohort
from walkingnoise.training.memory import default_device, device_label
from walkingnoise.training.run import (
    ExperimentResult,
    evaluate_experiment,
    history_records,
    load_teacher,
)

log = logging.getLogger(__name__)

THREADS_ENV = "WALKINGNOISE_THREADS"


@dataclass
class Outcome:
    """The result of one experiment (or of a shared clean training), or its error."""

    experiment: Experiment
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    diverged: bool = False
    checkpoint: bytes | None = None
    error: str | None = None
    #: Where it computed: ``cpu`` or ``cuda:<index> (<GPU name>)`` (see :func:`device_label`).
    device: str | None = None
    #: The host name of the machine it computed on (a Ray node's, not the driver's).
    node: str | None = None


@dataclass
class UnitOutcome:
    """Outcomes of a unit's members, and of its shared clean training if it ran one."""

    members: list[Outcome]
    training: Outcome | None = None

    def computed_on(self, device: str, node: str) -> UnitOutcome:
        """These outcomes, each marked with the device and node the unit computed on."""
        for outcome in [*self.members, *([] if self.training is None else [self.training])]:
            outcome.device, outcome.node = device, node
        return self


@lru_cache(maxsize=4)
def _dataset(name: str, root: str | None, device: str) -> InMemoryDataset:
    """A dataset loaded once per process and moved to ``device`` once."""
    return load_dataset(name, root=root).to(device)


@lru_cache(maxsize=1)
def _optimizers_imported() -> None:
    """Import what PyTorch's optimizers import when the first one is made (``torch._dynamo``,
    about a second), once per process before any timing starts, so the first cohort a worker
    trains is not charged for it in its training seconds."""
    import torch._dynamo  # noqa: F401


#: Most threads a unit may ask for: more than any machine's cores, and far fewer than
#: make OpenMP run out of memory allocating its thread pool (99,999 did).
MAX_THREADS = 1024


def unit_threads() -> int:
    """Threads a unit of work computes with: ``$WALKINGNOISE_THREADS``, else 1.

    Float results depend on the number of threads (reductions split differently), so every
    executor runs units with the same number: an in-process run, a pool process and a Ray task
    give the same numbers. With one thread they also do not depend on how a cohort is cut into
    stacks; with more, BLAS may split one model's matmul differently from a batch of them.
    Parallelism comes from running units side by side.
    """
    text = os.environ.get(THREADS_ENV, "1")
    if not text.isdigit() or not 1 <= int(text) <= MAX_THREADS:
        raise ValueError(f"{THREADS_ENV} must be an integer from 1 to {MAX_THREADS}, got {text!r}")
    return int(text)


def oversubscription(threads: int, processes: int, cores: int | None = None) -> str | None:
    """Why ``processes`` units side by side at ``threads`` > 1 threads each would be slow here
    (more threads than ``cores``, default :func:`usable_cores`), or None.

    Threads beyond the cores take turns: a sweep of 2 workers at 2 threads each on 2 cores ran
    6.5× slower than at the default of 1 thread. Single-thread workers beyond the cores only
    take turns as whole units, which costs little.
    """
    cores = usable_cores() if cores is None else cores
    if threads == 1 or threads * processes <= cores:
        return None
    return (
        f"{THREADS_ENV}={threads} × {processes} worker process(es) = {threads * processes} "
        f"threads on {cores} core(s): the threads take turns and the sweep runs slower; 1 "
        f"thread per worker (the default) uses the cores by running units side by side"
    )


def unknown_models(names: Sequence[str]) -> list[str]:
    """Which of ``names`` this process cannot build, once the user's modules are imported: run
    in a worker, it finds models registered only in the parent (under ``__main__``'s guard)."""
    import_user_modules()
    known = set(model_names())
    return [name for name in names if name not in known]


def run_unit(
    unit: WorkUnit, data_root: str | Path | None = None, save_checkpoints: bool = True
) -> UnitOutcome:
    """Run every member of ``unit``; a failing member is reported, the others still run."""
    import_user_modules()  # a worker process: the user's models, as its parent imported them
    previous = torch.get_num_threads()
    torch.set_num_threads(unit_threads())
    try:
        return _run_unit(unit, data_root, save_checkpoints)
    finally:
        torch.set_num_threads(previous)


def _run_unit(unit: WorkUnit, data_root: str | Path | None, save_checkpoints: bool) -> UnitOutcome:
    """The unit's outcomes, each saying on which device and node it computed."""
    device = default_device()
    root = None if data_root is None else str(data_root)
    dataset = _dataset(unit.members[0].dataset, root, device.type)
    _optimizers_imported()
    result = _run_on(unit, dataset, save_checkpoints)
    return result.computed_on(device_label(dataset.test.x.device), socket.gethostname())


def _run_on(unit: WorkUnit, dataset: InMemoryDataset, save_checkpoints: bool) -> UnitOutcome:
    """The unit's outcomes, computed where ``dataset`` is."""
    first = unit.members[0]
    if unit.shared_training is None:
        teacher = None
        if first.distillation is not None:  # students of a checkpoint file: read it once
            try:
                teacher = load_teacher(first, dataset)
            except Exception:
                error = traceback.format_exc()
                return UnitOutcome([Outcome(e, error=error) for e in unit.members])
        return UnitOutcome(_train_members(unit.members, dataset, save_checkpoints, teacher))
    return _evaluate_shared(unit, dataset, save_checkpoints)


def _outcome(trained: ExperimentResult, dataset: InMemoryDataset, save_checkpoint: bool) -> Outcome:
    return Outcome(
        trained.experiment,
        metrics=trained.metrics,
        history=history_records(trained.history),
        weights=trained.weights,
        timings=trained.seconds,
        diverged=trained.history.diverged,
        checkpoint=(
            checkpoint_bytes(trained.model, trained.experiment, dataset)
            if save_checkpoint
            else None
        ),
    )


def _train_members(
    members: Sequence[Experiment],
    dataset: InMemoryDataset,
    save_checkpoints: bool,
    teacher: NoisyModel | None = None,
) -> list[Outcome]:
    """Train a cohort (students of ``teacher``, if given) as stacks; if that fails, each member
    alone with its own error."""
    try:
        trained = train_cohort(members, dataset, teacher=teacher)
        return [_outcome(t, dataset, save_checkpoints) for t in trained]
    except Exception:  # then each member alone, so one bad member fails only itself
        log.warning("stacked training failed; training one model at a time:\n%s", _last_line())
    return [_train_alone(e, dataset, save_checkpoints, teacher) for e in members]


def _last_line() -> str:
    return traceback.format_exc().strip().splitlines()[-1]


def _train_alone(
    experiment: Experiment,
    dataset: InMemoryDataset,
    save_checkpoint: bool,
    teacher: NoisyModel | None = None,
) -> Outcome:
    try:
        trained = train_alone(experiment, dataset, teacher=teacher)
        return _outcome(trained, dataset, save_checkpoint)
    except Exception:
        return Outcome(experiment, error=traceback.format_exc())


def _evaluate_shared(
    unit: WorkUnit, dataset: InMemoryDataset, save_checkpoints: bool = True
) -> UnitOutcome:
    """The shared clean model (loaded or trained once), evaluated for the inference-only
    members and used as the teacher of the distillation members."""
    training = unit.shared_training
    assert training is not None
    outcome = None
    try:
        if unit.checkpoint is not None:
            _, model = read_checkpoint(unit.checkpoint, f"clean model {training.content_hash()}")
            model.to(dataset.test.x.device)
            history: list[dict[str, Any]] = []
            diverged = False
        else:
            trained = train_alone(training, dataset)
            outcome = _outcome(trained, dataset, save_checkpoint=True)  # the members' model
            model, history, diverged = trained.model, outcome.history, outcome.diverged
    except Exception:
        error = traceback.format_exc()
        return UnitOutcome([Outcome(e, error=error) for e in unit.members])
    evaluated = [e for e in unit.members if e.shares_clean_model]
    students = [e for e in unit.members if not e.shares_clean_model]
    members = _evaluate_members(model, evaluated, dataset, history, diverged)
    remove_weight_noise(model)  # the teacher's weights must be read clean
    if students:
        members += _train_members(students, dataset, save_checkpoints, teacher=model)
    order = {id(experiment): i for i, experiment in enumerate(unit.members)}
    members.sort(key=lambda outcome: order[id(outcome.experiment)])
    return UnitOutcome(members, outcome)


def _evaluate_members(
    model: NoisyModel,
    experiments: list[Experiment],
    dataset: InMemoryDataset,
    history: list[dict[str, Any]],
    diverged: bool,
) -> list[Outcome]:
    """Inference-only experiments of one model, evaluated in stacks where they can be."""
    if not experiments:
        return []
    weights = weight_statistics(model.source)
    begin = time.perf_counter()
    try:
        stacked_metrics = evaluate_shared(model, experiments, dataset)
    except Exception:  # then each member alone, so one bad member fails only itself
        log.warning("stacked evaluation failed; evaluating one at a time:\n%s", _last_line())
        stacked_metrics = [None] * len(experiments)
    found = {id(e): m for e, m in zip(experiments, stacked_metrics, strict=True)}
    each = (time.perf_counter() - begin) / len(experiments)
    members = []
    for experiment in experiments:
        metrics = found.get(id(experiment))
        try:
            seconds = each
            if metrics is None:
                begin = time.perf_counter()
                metrics = evaluate_experiment(experiment, model, dataset)
                seconds = time.perf_counter() - begin
            members.append(
                Outcome(
                    experiment,
                    metrics=metrics,
                    history=history,
                    weights=weights,
                    timings={"evaluate": seconds},
                    diverged=diverged,
                )
            )
        except Exception:
            members.append(Outcome(experiment, error=traceback.format_exc()))
    return members
