"""The quickstart study: walking noise on the bundled digits, written to a store.

The study (``studies/quickstart.yaml``, also ``examples/01_quickstart.yaml``) trains the
paper's MLP with and without BatchNorm under additive and multiplicative noise at every site
in turn, with noisy training and with inference-only noise, for 8 σ values and 2 seeds. It runs
in about a minute on 2 cores; a second run finds everything in the store and only reports.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from walkingnoise.analysis.crossing import half_accuracy_crossing
from walkingnoise.analysis.curves import diverged_at_chance
from walkingnoise.sweep.executors import Executor
from walkingnoise.sweep.results import load_results
from walkingnoise.sweep.runner import SweepSummary, run_sweep
from walkingnoise.sweep.spec import SweepSpec, parse_sweep

DEFAULT_STORE = Path("runs") / "quickstart.sqlite"


def quickstart_spec() -> SweepSpec:
    """The quickstart sweep shipped with the package."""
    text = resources.files("walkingnoise.studies").joinpath("quickstart.yaml").read_text()
    return parse_sweep(text, "quickstart.yaml")


def quickstart(
    store: str | Path = DEFAULT_STORE,
    *,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> tuple[SweepSummary, pd.DataFrame]:
    """Run (or resume) the quickstart study; returns the run summary and all results."""
    summary = run_sweep(quickstart_spec(), store, executor=executor, progress=progress)
    return summary, load_results(store)


def crossing_table(
    results: pd.DataFrame,
    *,
    batchnorm: bool,
    chance: float = 0.1,
    names: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Per site, the σ where mean test accuracy falls half way to chance, by noise and training.

    Rows are sites (``index name`` when ``names`` are given), columns ``noise/training``;
    accuracies are averaged over seeds first, a diverged training's at chance level (as the
    curves and fits count it). ``inf``: accuracy never fell that far.
    """
    done = diverged_at_chance(results)
    done = done[
        (done["status"] == "done")
        & (done["batchnorm"] == batchnorm)
        & done["placement"].str.startswith("walking:")
    ]
    done = done.assign(site=done["placement"].str.removeprefix("walking:").astype(int))
    mean = (
        done.groupby(["noise", "train_noise", "site", "sigma"])["noisy_test_accuracy"]
        .mean()
        .reset_index()
    )
    rows = []
    for (noise, train_noise, site), curve in mean.groupby(["noise", "train_noise", "site"]):
        training = "noisy" if train_noise else "eval-only"
        crossing = half_accuracy_crossing(curve["sigma"], curve["noisy_test_accuracy"], chance)
        label = f"{site} {names[site]}" if names else site
        rows.append({"site": label, "column": f"{noise[:3]}/{training}", "crossing": crossing})
    table = pd.DataFrame(rows).pivot(index="site", columns="column", values="crossing")
    table = table.loc[list(dict.fromkeys(row["site"] for row in rows))]
    table.columns.name = None
    table.index.name = "site"
    return table
