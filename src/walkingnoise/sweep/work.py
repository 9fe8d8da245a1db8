"""What a worker does with one unit of work; runs in-process, in a pool process or on Ray."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from walkingnoise.analysis.weights import weight_statistics
from walkingnoise.data import InMemoryDataset, load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.training.checkpoint import checkpoint_bytes, read_checkpoint
from walkingnoise.training.run import evaluate_experiment, history_records, train_experiment


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


@dataclass
class UnitOutcome:
    """Outcomes of a unit's members, and of its shared clean training if it ran one."""

    members: list[Outcome]
    training: Outcome | None = None


@lru_cache(maxsize=4)
def _dataset(name: str, root: str | None) -> InMemoryDataset:
    return load_dataset(name, root=root)


def run_unit(
    unit: WorkUnit, data_root: str | Path | None = None, save_checkpoints: bool = True
) -> UnitOutcome:
    """Run every member of ``unit``; a failing member is reported, the others still run."""
    first = unit.members[0]
    dataset = _dataset(first.dataset, None if data_root is None else str(data_root))
    if unit.shared_training is None:
        return UnitOutcome(
            [_train_and_evaluate(e, dataset, save_checkpoints) for e in unit.members]
        )
    return _evaluate_shared(unit, dataset)


def _train_and_evaluate(
    experiment: Experiment, dataset: InMemoryDataset, save_checkpoint: bool
) -> Outcome:
    started = time.perf_counter()
    try:
        model, history = train_experiment(experiment, dataset, progress=False)
        trained = time.perf_counter()
        metrics = evaluate_experiment(experiment, model, dataset)
        finished = time.perf_counter()
        return Outcome(
            experiment,
            metrics=metrics,
            history=history_records(history),
            weights=weight_statistics(model.source),
            timings={"train": trained - started, "evaluate": finished - trained},
            diverged=history.diverged,
            checkpoint=checkpoint_bytes(model, experiment, dataset) if save_checkpoint else None,
        )
    except Exception:
        return Outcome(experiment, error=traceback.format_exc())


def _evaluate_shared(unit: WorkUnit, dataset: InMemoryDataset) -> UnitOutcome:
    training = unit.shared_training
    assert training is not None
    started = time.perf_counter()
    outcome = None
    try:
        if unit.checkpoint is not None:
            _, model = read_checkpoint(unit.checkpoint, f"clean model {training.content_hash()}")
            history: list[dict[str, Any]] = []
            diverged = False
        else:
            model, trained_history = train_experiment(training, dataset, progress=False)
            history, diverged = history_records(trained_history), trained_history.diverged
            outcome = Outcome(
                training,
                metrics=evaluate_experiment(training, model, dataset),
                history=history,
                weights=weight_statistics(model.source),
                timings={"train": time.perf_counter() - started},
                diverged=diverged,
                checkpoint=checkpoint_bytes(model, training, dataset),
            )
    except Exception:
        error = traceback.format_exc()
        return UnitOutcome([Outcome(e, error=error) for e in unit.members])
    weights = weight_statistics(model.source)
    members = []
    for experiment in unit.members:
        begin = time.perf_counter()
        try:
            metrics = evaluate_experiment(experiment, model, dataset)
            members.append(
                Outcome(
                    experiment,
                    metrics=metrics,
                    history=history,
                    weights=weights,
                    timings={"evaluate": time.perf_counter() - begin},
                    diverged=diverged,
                )
            )
        except Exception:
            members.append(Outcome(experiment, error=traceback.format_exc()))
    return UnitOutcome(members, outcome)
