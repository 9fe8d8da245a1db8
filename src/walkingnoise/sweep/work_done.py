"""How much of a run's work is done, weighed by what its finished experiments of each kind took,
for the time left in progress lines."""

from __future__ import annotations

from collections import Counter

from walkingnoise.experiment import Experiment
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.sweep.work import Outcome, UnitOutcome


class WorkDone:
    """The share of a run's work that is done, by what its finished experiments of each kind
    took: a trained model can cost a hundred inference-only experiments, so the share of
    experiments run says little about the time left."""

    def __init__(self, units: list[WorkUnit]) -> None:
        """Count what ``units`` will run: trainings of their own, inference-only experiments,
        and the clean trainings of units whose clean model is not stored."""
        self.left: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.measured: Counter[str] = Counter()
        for unit in units:
            self.left.update(_kind(member) for member in unit.members)
            self.left["clean"] += _trains_clean(unit)

    def finished(self, unit: WorkUnit, result: UnitOutcome) -> None:
        """Count a unit's outcomes as done, and what those that finished took."""
        self.left["clean"] -= _trains_clean(unit)
        if result.training is not None:
            self._took("clean", result.training)
        for outcome in result.members:
            self.left[_kind(outcome.experiment)] -= 1
            if outcome.error is None:
                self._took(_kind(outcome.experiment), outcome)

    def _took(self, kind: str, outcome: Outcome) -> None:
        self.seconds[kind] += sum(outcome.timings.values())
        self.measured[kind] += 1

    def share(self) -> float | None:
        """The share of the work done (0 to 1), or None while a kind of training is left of
        which none has been measured. A clean training stands in for a noisy one and back
        until one is measured; inference-only experiments not yet measured count as free."""
        mean: dict[str, float | None] = {
            kind: self.seconds[kind] / n for kind, n in self.measured.items() if n
        }
        mean.setdefault("trained", mean.get("clean"))
        mean.setdefault("clean", mean.get("trained"))
        mean.setdefault("evaluated", 0.0)
        left = 0.0
        for kind, count in self.left.items():
            each = mean[kind]
            if count > 0:
                if each is None:
                    return None
                left += count * each
        done = sum(self.seconds.values())
        return done / (done + left) if done > 0 else None


def _kind(experiment: Experiment) -> str:
    """``evaluated`` (inference-only: its clean model only evaluated) or ``trained``."""
    return "evaluated" if experiment.shares_clean_model else "trained"


def _trains_clean(unit: WorkUnit) -> int:
    """1 if the unit trains its shared clean model (none is stored), else 0."""
    return int(unit.shared_training is not None and unit.checkpoint is None)
