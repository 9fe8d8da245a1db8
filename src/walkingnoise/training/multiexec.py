"""Evaluate execution plans: accuracy with noise at every site and site i executed n_i times.

This is the measurement of Walking Noise's guided multi-execution (Table 3): one trained model,
one noise setting (global noise at σ, inference-only), and several plans that spend a budget
of executions differently. Each plan is evaluated R times with fresh noise; its generator is
seeded alone, so a plan's numbers do not depend on which plans are evaluated beside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from walkingnoise.analysis.multiexec import describe_power, execution_plan, uniform_plan
from walkingnoise.data.dataset import Split
from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.models import NoiseLevel, NoiseModel
from walkingnoise.noise.placement import Placement
from walkingnoise.training.evaluate import evaluate
from walkingnoise.training.run import seeded_generator

if TYPE_CHECKING:
    from walkingnoise.sweep.store import Store, TrainingRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionPlan:
    """A named assignment of executions to sites.

    Attributes:
        name: ``single`` (every site once), ``uniform`` or ``guided``.
        counts: site index → executions n_i (sites not listed execute once).
        power: p of a guided plan n_i ∝ μ_i^(−p); None for the others.
    """

    name: str
    counts: Mapping[int, int]
    power: float | None = None

    @property
    def budget(self) -> int:
        """Total executions Σ n_i."""
        return sum(self.counts.values())

    @property
    def label(self) -> str:
        """``uniform``, ``guided 1/μ``, …"""
        return self.name if self.power is None else f"{self.name} {describe_power(self.power)}"


def standard_plans(
    mu: Mapping[int, float], budget: int, powers: Iterable[float] = (1.0,)
) -> list[ExecutionPlan]:
    """Every site once (the baseline), uniform within ``budget``, and one guided plan per power."""
    sites = list(mu)
    plans = [
        ExecutionPlan("single", dict.fromkeys(sites, 1)),
        ExecutionPlan("uniform", uniform_plan(sites, budget)),
    ]
    for power in dict.fromkeys(float(p) for p in powers):
        plans.append(ExecutionPlan("guided", execution_plan(mu, budget, power), power))
    return plans


def compare_plans(
    model: NoisyModel,
    split: Split,
    noise: NoiseModel,
    placement: Placement,
    sigma: NoiseLevel,
    plans: Sequence[ExecutionPlan],
    *,
    repeats: int = 10,
    seed: int = 0,
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Accuracy mean ± std over ``repeats`` noisy evaluations of ``split`` for every plan.

    The noise must be on in evaluation (``noise.evaluation``); the model's own noise and
    execution settings are restored afterwards.

    Returns:
        One row per plan: ``plan`` (label), ``name``, ``power`` (NaN unless guided), ``budget``,
        ``executions`` (``site:n`` list), ``sigma``, ``repeats``, ``accuracy``, ``accuracy_std``
        (sample std over the repeats) and ``accuracy_sem`` (std/√R).
    """
    if not noise.evaluation:
        raise ValueError("the noise model of a multi-execution comparison must act in evaluation")
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    saved_executions = {site.info.index: site.executions for site in model.sites}
    rows = []
    device = split.x.device
    try:
        with model.noise_preserved():
            model.set_noise(noise, placement, sigma)
            for plan in plans:
                model.set_executions(plan.counts)
                model.set_generator(seeded_generator(seed, device))
                result = evaluate(model, split, repeats=repeats, batch_size=batch_size)
                log.info(
                    "%s (budget %d): accuracy %.4f ± %.4f",
                    plan.label,
                    plan.budget,
                    result.accuracy,
                    result.accuracy_std,
                )
                rows.append(
                    {
                        "plan": plan.label,
                        "name": plan.name,
                        "power": math.nan if plan.power is None else plan.power,
                        "budget": plan.budget,
                        "executions": " ".join(f"{s}:{n}" for s, n in sorted(plan.counts.items())),
                        "sigma": sigma,
                        "repeats": repeats,
                        "accuracy": result.accuracy,
                        "accuracy_std": result.accuracy_std,
                        "accuracy_sem": result.accuracy_std / math.sqrt(repeats),
                    }
                )
    finally:
        model.set_executions(saved_executions)
    return pd.DataFrame(rows)


def clean_trainings(store: Store, hashes: Iterable[str]) -> dict[int, TrainingRecord]:
    """Seed → the stored clean training of the experiments ``hashes`` (where it has a checkpoint).

    Inference-only experiments share one clean training per seed; for noisy trainings this is
    the clean training of the same dataset, model, BatchNorm, recipe and seed, if the store has
    one (an inference-only experiment of that model trained it).
    """
    wanted = set(hashes)
    found: dict[int, TrainingRecord] = {}
    for experiment in store.experiments():
        if experiment.seed in found or experiment.content_hash() not in wanted:
            continue
        record = store.training(experiment.clean_training().content_hash())
        if record is not None:
            found[experiment.seed] = record
    return dict(sorted(found.items()))
