"""Noisy Machines' table: accuracy under weight noise η, by how the model was trained.

Zhou et al. (arXiv 2001.04974, Tables 1–3) compare, at each weight-noise level η, a model
trained clean and evaluated with noise ("inference-only"), one trained with weight-noise
injection ("noise injection") and one distilled from a clean teacher while noise is injected
("distillation + noise injection"). :func:`weight_noise_accuracy` gives one row per
(group, training, η) with mean and standard deviation over seeds; :func:`accuracy_vs_eta` lays
them out side by side as ``mean ± std`` in percent.

At η = 0 without activation noise, training "with noise" is training without it, so one model
serves both the inference-only and the noise-injection column (and likewise for distillation):
its row appears under each of them that the table has.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from walkingnoise.analysis.curves import diverged_at_chance

#: Training labels, in display order.
TRAININGS = (
    "inference-only",
    "noise injection",
    "distillation",
    "distillation + noise injection",
)
#: Columns that define a group whenever they vary in the results.
OPTIONAL_COLUMNS = (
    "noise",
    "sigma",
    "placement",
    "recipe.epochs",
    "recipe.lr",
    "recipe.batch_size",
    "recipe.weight_decay",
    "recipe.schedule",
    "recipe.augment",
    "recipe.clamp",
    "eval_repeats",
)
#: Optional columns whose missing value is a setting (no clamping), not "not applicable".
_MISSING_IS_A_SETTING = ("recipe.clamp",)
_GROUP = ("dataset", "model", "batchnorm")
#: What a reader of the table needs to know about its η = 0 rows.
ETA_ZERO_NOTE = (
    "At η = 0 without activation noise, noise injection is the clean training itself: its "
    "models are those of inference-only."
)
_DISTILLATION = ("distillation.temperature", "distillation.alpha", "distillation.teacher")


def _label(distilled: bool, injected: bool) -> str:
    return TRAININGS[2 * distilled + injected]


def _prepared(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finished rows with the Noisy Machines columns filled where the store left them out."""
    if not metric.endswith("accuracy"):
        raise ValueError(f"metric {metric!r}: tabulated in % over η, it must be an accuracy")
    frame = results.copy()
    if "status" in frame:
        frame = frame[frame["status"] == "done"]
    if frame.empty:
        raise ValueError("no finished experiments to tabulate")
    if metric not in frame:
        raise ValueError(f"the results have no metric {metric!r}")
    defaults: dict[str, Any] = {
        "weight_noise": 0.0,
        "train_noise": False,
        "noise": "none",
        "batchnorm": True,
        "recipe.augment": False,  # left out of the store when off
        **dict.fromkeys(_DISTILLATION, math.nan),
    }
    for column, default in defaults.items():
        if column not in frame:
            frame[column] = default
        frame[column] = frame[column].astype(object).where(frame[column].notna(), default)
    frame["weight_noise"] = frame["weight_noise"].astype(float)
    frame["train_noise"] = frame["train_noise"].astype(bool)
    frame["batchnorm"] = frame["batchnorm"].astype(bool)
    frame["distilled"] = frame["distillation.temperature"].notna()
    frame["temperature"] = pd.to_numeric(frame["distillation.temperature"], errors="coerce")
    frame["alpha"] = pd.to_numeric(frame["distillation.alpha"], errors="coerce")
    frame["teacher"] = frame["distillation.teacher"].where(frame["distilled"], "")
    return diverged_at_chance(frame).reset_index(drop=True)


def _assign_trainings(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (result, training label); η = 0 rows without noise serve both labels."""
    matters = ((frame["weight_noise"] > 0) | (frame["noise"] != "none")).tolist()
    distilled = frame["distilled"].tolist()
    injected = (frame["train_noise"] & pd.Series(matters, index=frame.index)).tolist()
    labels = [_label(d, i) for d, i in zip(distilled, injected, strict=True)]
    present = {label for label, m in zip(labels, matters, strict=True) if m}
    positions, names = [], []
    for position, (label, matter, distil) in enumerate(
        zip(labels, matters, distilled, strict=True)
    ):
        targets = [label]
        if not matter:
            both = [_label(distil, False), _label(distil, True)]
            targets = [name for name in both if name in present] or targets
        positions += [position] * len(targets)
        names += targets
    return frame.iloc[positions].assign(training=names).reset_index(drop=True)


def has_weight_noise(results: pd.DataFrame) -> bool:
    """Whether a finished experiment of ``results`` (from ``load_results``) has weight noise
    η > 0: a Noisy Machines study, which this module tabulates."""
    done = results[results["status"] == "done"] if "status" in results else results
    if "weight_noise" not in done:
        return False
    return bool((pd.to_numeric(done["weight_noise"], errors="coerce") > 0).any())


def weight_noise_accuracy(
    results: pd.DataFrame, metric: str = "noisy_test_accuracy"
) -> pd.DataFrame:
    """Accuracy vs weight noise η per group and training, over seeds (long format).

    Args:
        results: from ``sweep.load_results``.
        metric: the accuracy column to summarise (fractions in [0, 1]).

    Returns:
        Group columns (``dataset``, ``model``, ``batchnorm`` and any of ``OPTIONAL_COLUMNS`` that
        vary), ``training`` (one of ``TRAININGS``), ``temperature``, ``alpha`` and ``teacher``
        (distillation settings; NaN/"" without), ``weight_noise`` (η), ``mean``, ``std`` (sample
        standard deviation over seeds, NaN for one seed), ``seeds``, and ``clean_mean``,
        ``clean_std``: the same models' test accuracy without any noise. A diverged training
        counts at chance level, as in the curves.
    """
    frame = _with_weight_noise_or_distillation(_prepared(results, metric))
    columns = _group_columns(frame)
    keys = [*columns, "training", "temperature", "alpha", "teacher", "weight_noise"]
    out_columns = [*keys, "mean", "std", "seeds", "clean_mean", "clean_std"]
    if frame.empty:
        return pd.DataFrame(columns=out_columns)
    frame = _assign_trainings(frame)
    for column in columns:
        frame[column] = frame[column].map(_hashable)
    clean = frame.get("clean_test_accuracy", np.nan)
    frame = frame.assign(_value=pd.to_numeric(frame[metric]), _clean=pd.to_numeric(clean))
    grouped = frame.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(
        mean=("_value", "mean"),
        std=("_value", "std"),
        seeds=("_value", "count"),
        clean_mean=("_clean", "mean"),
        clean_std=("_clean", "std"),
    ).reset_index()
    order = {label: i for i, label in enumerate(TRAININGS)}
    table["_order"] = table["training"].map(order)
    table = table.sort_values(
        [*columns, "weight_noise", "_order", "temperature", "alpha"], kind="stable"
    )
    table = table.drop(columns="_order").reset_index(drop=True)
    table.attrs["group_columns"] = columns
    table.attrs["metric"] = metric
    return table[out_columns]


def accuracy_vs_eta(data: pd.DataFrame, metric: str = "noisy_test_accuracy") -> pd.DataFrame:
    """The paper's layout: rows group × η, one column per training, cells ``mean ± std`` in %.

    ``data`` is a result table (``load_results``) or :func:`weight_noise_accuracy`'s output.
    Distillation columns name their settings (``T=6, α=0.9``) when more than one occurs.
    """
    table = data if "training" in data and "mean" in data else weight_noise_accuracy(data, metric)
    if table.empty:
        return pd.DataFrame()
    columns = list(table.attrs.get("group_columns", _GROUP))
    frame = table.copy()
    distilled = frame["training"].str.startswith("distillation")
    settings = frame.loc[distilled, ["temperature", "alpha", "teacher"]].drop_duplicates()
    several = len(settings) > 1
    frame["column"] = [_column_name(row, several) for _, row in frame.iterrows()]
    frame["cell"] = [_cell(row["mean"], row["std"]) for _, row in frame.iterrows()]
    frame = frame.rename(columns={"weight_noise": "η"})
    keep = [c for c in columns if c in _GROUP or frame[c].nunique(dropna=False) > 1]
    # a key that does not apply (σ of a model without activation noise) is no reason to drop a row
    frame[keep] = frame[keep].astype(object).where(frame[keep].notna(), "-")
    wide = frame.pivot_table(index=[*keep, "η"], columns="column", values="cell", aggfunc="first")
    ordered = sorted(wide.columns, key=lambda name: (_training_order(name), name))
    wide = wide[ordered]
    wide.columns.name = None
    return wide.fillna("")


def distillation_settings(table: pd.DataFrame) -> str:
    """The one distillation setting of :func:`weight_noise_accuracy`'s ``table`` in words
    (``distillation: T=6, α=0.9, teacher: the clean model of each seed``), which its wide
    layout then leaves out of the column names; "" for none or several."""
    distilled = table["training"].astype(str).str.startswith("distillation")
    settings = table.loc[distilled, ["temperature", "alpha", "teacher"]].drop_duplicates()
    if len(settings) != 1:
        return ""
    row = settings.iloc[0]
    teacher = (
        "the clean model of each seed (same recipe)"
        if row["teacher"] == "clean"
        else str(row["teacher"])
    )
    return f"distillation: T={row['temperature']:g}, α={row['alpha']:g}, teacher: {teacher}"


def shares_clean_models(table: pd.DataFrame) -> bool:
    """Whether :func:`weight_noise_accuracy`'s ``table`` has a noise-injection row at η = 0,
    which may be the inference-only models (:data:`ETA_ZERO_NOTE`)."""
    at_zero = table["weight_noise"] == 0
    return bool((at_zero & (table["training"] == "noise injection")).any())


def _group_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that define a group: dataset, model, BatchNorm and any optional that varies."""
    return [*_GROUP, *(c for c in OPTIONAL_COLUMNS if _varies(frame, c))]


def _with_weight_noise_or_distillation(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of groups that have weight noise or distillation: other studies in the same
    store (activation noise alone, e.g. walking noise) are no part of this table."""
    if frame.empty:
        return frame
    columns = _group_columns(frame)
    group = frame[columns].map(lambda value: repr(_hashable(value))).agg("|".join, axis=1)
    relevant = (frame["weight_noise"] > 0) | frame["distilled"]
    return frame[relevant.groupby(group).transform("any")].reset_index(drop=True)


def _column_name(row: pd.Series, several: bool) -> str:
    name = str(row["training"])
    if several and name.startswith("distillation"):
        name += f" (T={row['temperature']:g}, α={row['alpha']:g}"
        name += f", teacher={row['teacher']})" if row["teacher"] != "clean" else ")"
    return name


def _training_order(name: str) -> int:
    for i, label in reversed(list(enumerate(TRAININGS))):
        if name.startswith(label):
            return i
    return len(TRAININGS)


def _cell(mean: float, std: float) -> str:
    """``97.31 ± 0.42`` (percent); without ``±`` when there is one seed."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _varies(frame: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` takes more than one value (missing: not applicable, not a value,
    except where it is a setting: unclamped against clamped models)."""
    if column not in frame:
        return False
    missing_counts = column in _MISSING_IS_A_SETTING
    return frame[column].map(_hashable).nunique(dropna=not missing_counts) > 1


def _hashable(value: Any) -> Any:
    """Lists (σ pairs of mixed noise) as tuples, so they can be grouped on."""
    return tuple(value) if isinstance(value, list | np.ndarray) else value
