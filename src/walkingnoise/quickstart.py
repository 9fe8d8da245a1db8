"""The quickstart study: MLP on the bundled digits, accuracy against σ, global and walking noise.

It shows the method's two ways of training on a scale that runs in about a minute on two
cores: inference-only noise (one clean model, evaluated at every placement and σ) and noisy
training (one model trained per placement and σ). Global noise follows the paper's convention
of no noise at BatchNorm outputs (``global-except:batchnorm``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from walkingnoise._progress import bar_disabled
from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.noise.placement import GlobalPlacement, Placement, WalkingPlacement
from walkingnoise.training.evaluate import evaluate_placements
from walkingnoise.training.recipe import Recipe
from walkingnoise.training.run import run_experiment

log = logging.getLogger(__name__)

#: Walking sites shown by default: input, first Linear, middle BatchNorm, output layer.
DEFAULT_SITES = (0, 1, 5, 10)
DEFAULT_SIGMAS = tuple(float(s) for s in np.logspace(-2, 2, 9))


def quickstart(
    *,
    epochs: int = 30,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    sites: Sequence[int] = DEFAULT_SITES,
    seed: int = 0,
    eval_repeats: int = 5,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run the quickstart study; one row per (training, placement, σ) with test accuracy."""
    dataset = load_dataset("digits")
    recipe = Recipe(epochs=epochs)
    placements: list[Placement] = [
        GlobalPlacement(exclude_kinds=("batchnorm",)),
        *(WalkingPlacement(s) for s in sites),
    ]

    base = Experiment(
        dataset="digits",
        model="mlp",
        noise="additive",
        placement=str(placements[0]),
        sigma=float(sigmas[0]),
        recipe=recipe,
        eval_repeats=eval_repeats,
        seed=seed,
    )
    log.info("training the clean model once for inference-only noise")
    clean = run_experiment(base, dataset=dataset, progress=False)
    model = clean.model
    names = {info.index: info.name for info in model.site_table}
    rows = [
        {"training": "inference-only", **row}
        for row in evaluate_placements(
            model,
            dataset.test,
            base.noise_model(),
            placements,
            sigmas,
            repeats=eval_repeats,
        )
    ]

    jobs = [(p, s) for p in placements for s in sigmas]
    for placement, sigma in tqdm(
        jobs, desc="noisy training", unit="model", disable=bar_disabled(progress)
    ):
        experiment = base.model_copy(
            update={"placement": str(placement), "sigma": float(sigma), "train_noise": True}
        )
        result = run_experiment(experiment, dataset=dataset, progress=False)
        rows.append(
            {
                "training": "noisy",
                "placement": str(placement),
                "site": getattr(placement, "site", None),
                "sigma": sigma,
                "accuracy": result.metrics["noisy_test_accuracy"],
                "accuracy_std": result.metrics["noisy_test_accuracy_std"],
                "loss": result.metrics["noisy_test_loss"],
            }
        )
    frame = pd.DataFrame(rows)
    frame["site_name"] = frame["site"].map(lambda i: "all" if pd.isna(i) else names[int(i)])
    frame.attrs["clean_accuracy"] = clean.metrics["clean_test_accuracy"]
    return frame


def accuracy_table(frame: pd.DataFrame, training: str) -> pd.DataFrame:
    """Test accuracy (%) with σ as rows and placements as columns, for one kind of training."""
    part = frame[frame["training"] == training]
    label = part["placement"] + part["site_name"].map(lambda n: "" if n == "all" else f" {n}")
    table = part.assign(column=label).pivot(index="sigma", columns="column", values="accuracy")
    table = table[list(dict.fromkeys(label))] * 100
    table.index.name, table.columns.name = "σ", None
    return table
