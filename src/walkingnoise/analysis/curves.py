"""Accuracy-vs-σ curves from a store's results: one row per (group, σ) with mean and spread.

A *group* is everything that defines one curve: dataset, model, BatchNorm, noise model (with
order and ratio for mixed noise), noisy or inference-only training, weight clamping and the
placement (so each walking site is its own curve), plus any other setting that varies in the
results (epochs, learning rate, …). Seeds are averaged; their spread gives each point's standard
error, the weights of the midpoint fit (Walking Noise, Sec. 3).

The store's config JSON leaves out fields that cannot matter (``order``/``ratio`` unless the
noise is mixed, ``gradient`` unless noise is on in training; see ``Experiment.identity``), so
such columns may be missing or partly empty; :func:`prepare_results` fills them.

Diverged trainings (loss NaN or infinite, ``diverged`` True) are never dropped, which would
bias μ upwards: their weights are NaN, so what they "predict" is meaningless (PyTorch's argmax
of NaN logits is class 0, whose share of the test set is chance level only on balanced data).
Their accuracies count as the chance level 1/K, and every curve and fit counts them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

#: The columns that always define a curve, in display order.
GROUP_COLUMNS = (
    "dataset",
    "model",
    "batchnorm",
    "noise",
    "order",
    "ratio",
    "train_noise",
    "recipe.clamp",
    "placement",
)
#: Experiment settings that split curves only when they vary in the results.
OPTIONAL_GROUP_COLUMNS = (
    "gradient",
    "eval_repeats",
    "recipe.epochs",
    "recipe.batch_size",
    "recipe.lr",
    "recipe.weight_decay",
    "recipe.schedule",
    "recipe.eval_batch_size",
    "recipe.augment",
    "weight_noise",
    "distillation.temperature",
    "distillation.alpha",
    "distillation.teacher",
)
#: Fill values of group columns the store left out (``""``/NaN: not applicable; η = 0 and no
#: augmentation, left out of the store as defaults, are levels of their own:
#: ``--where weight_noise=0`` selects them).
_DEFAULTS: dict[str, Any] = {
    "dataset": "",
    "model": "",
    "batchnorm": True,
    "noise": "none",
    "order": "",
    "ratio": math.nan,
    "train_noise": False,
    "recipe.clamp": math.nan,
    "placement": "",
    "gradient": "",
    "weight_noise": 0.0,
    "recipe.augment": False,
}
_WALKING = re.compile(r"^walking:(\d+)$")
#: Accuracies of a diverged experiment that count as chance level (its ``chance_accuracy``).
CHANCE_WHEN_DIVERGED = (
    "clean_test_accuracy",
    "noisy_test_accuracy",
    "noisy_validation_accuracy",
    "clean_validation_accuracy",
)
_METRICS = (
    "chance_accuracy",
    "clean_test_accuracy",
    "noisy_test_accuracy",
    "noisy_test_accuracy_std",
    "noisy_validation_accuracy",
    "clean_validation_accuracy",
)


def _sigma_parts(row: pd.Series) -> tuple[float, float, float]:
    """(σ for the x axis, σ_mul, σ_add) of a result row; NaN where not applicable."""
    sigma = row.get("sigma")
    if isinstance(sigma, list | tuple | np.ndarray):
        values = [float(v) for v in sigma]
        if len(values) == 2:
            return math.nan, values[0], values[1]
        return math.nan, math.nan, math.nan
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        return math.nan, math.nan, math.nan
    if row.get("noise") != "mixed":
        return value, math.nan, math.nan
    ratio = row.get("ratio")
    if ratio is None or not math.isfinite(float(ratio)):
        return value, math.nan, math.nan
    return value, value * (1.0 - float(ratio)), value * float(ratio)


def prepare_results(results: pd.DataFrame) -> pd.DataFrame:
    """Finished experiments with every group column present and typed.

    Adds ``sigma`` as a float (NaN for σ pairs and ``map:`` placements), ``sigma_mul`` and
    ``sigma_add`` for mixed noise (from the pair, or amplitude × ratio), ``site`` (the index of a
    ``walking:N`` placement, else NaN) and ``placement_kind`` (walking, global, map).
    Diverged experiments are kept (``diverged`` True) with their accuracies at chance level
    (:data:`CHANCE_WHEN_DIVERGED`; their ``noisy_test_accuracy_std`` 0), where the chance level
    is known; ``load_results`` still has what was measured.
    """
    frame = results.copy()
    if "status" in frame:
        frame = frame[frame["status"] == "done"]
    frame = frame.reset_index(drop=True)
    for column in (*GROUP_COLUMNS, *OPTIONAL_GROUP_COLUMNS, "sigma", "seed", "diverged"):
        if column not in frame:
            frame[column] = _DEFAULTS.get(column, math.nan)
    for column, default in _DEFAULTS.items():
        frame[column] = frame[column].astype(object).where(frame[column].notna(), default)
    not_mixed = frame["noise"] != "mixed"
    frame.loc[not_mixed, "order"] = ""
    frame["order"] = frame["order"].where(~(~not_mixed & (frame["order"] == "")), "mul_first")
    frame["ratio"] = pd.to_numeric(frame["ratio"], errors="coerce").where(~not_mixed)
    frame["recipe.clamp"] = pd.to_numeric(frame["recipe.clamp"], errors="coerce")
    frame["weight_noise"] = pd.to_numeric(frame["weight_noise"], errors="coerce")
    frame["batchnorm"] = frame["batchnorm"].astype(bool)
    frame["train_noise"] = frame["train_noise"].astype(bool)
    # the gradient rule tells curves apart only where noise that scales x is on in training
    # (additive noise is stored as forward_only, one computation with either rule)
    moot = ~frame["train_noise"] | frame["noise"].isin(["none", "additive"])
    frame["gradient"] = frame["gradient"].astype(object).where(~moot, "")
    frame["diverged"] = frame["diverged"].astype(object).where(frame["diverged"].notna(), False)
    frame["diverged"] = frame["diverged"].astype(bool)
    parts = [_sigma_parts(row) for _, row in frame.iterrows()]
    frame["sigma"] = [p[0] for p in parts] if parts else pd.Series(dtype=float)
    frame["sigma_mul"] = [p[1] for p in parts] if parts else pd.Series(dtype=float)
    frame["sigma_add"] = [p[2] for p in parts] if parts else pd.Series(dtype=float)
    frame["sigma"] = frame["sigma"].astype(float)
    placement = frame["placement"].astype(str)
    frame["site"] = pd.array(
        [int(m.group(1)) if (m := _WALKING.match(p)) else None for p in placement], dtype="Int64"
    )
    frame["placement_kind"] = [p.split(":")[0] if p else "" for p in placement]
    for column in _METRICS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return diverged_at_chance(frame)


def diverged_at_chance(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with diverged experiments' accuracies (:data:`CHANCE_WHEN_DIVERGED`) at their
    chance level, where it is known, and their ``noisy_test_accuracy_std`` 0: NaN weights
    predict nothing, whatever share of the test set argmax of NaN logits happens to hit."""
    if "diverged" not in frame or "chance_accuracy" not in frame:
        return frame
    frame = frame.copy()
    diverged = frame["diverged"].astype(object).where(frame["diverged"].notna(), False)
    chance = pd.to_numeric(frame["chance_accuracy"], errors="coerce")
    broken = diverged.astype(bool) & chance.notna()
    for column in (*CHANCE_WHEN_DIVERGED, "noisy_test_accuracy_std"):
        if column in frame:
            value = chance if column != "noisy_test_accuracy_std" else 0.0
            frame[column] = pd.to_numeric(frame[column], errors="coerce").where(~broken, value)
    return frame


def group_columns(frame: pd.DataFrame) -> list[str]:
    """:data:`GROUP_COLUMNS` plus the optional settings that take several values in ``frame``."""
    extra = [
        c
        for c in OPTIONAL_GROUP_COLUMNS
        if c in frame and frame[c].astype(str).nunique(dropna=False) > 1
    ]
    return [*GROUP_COLUMNS, *extra]


def accuracy_curves(results: pd.DataFrame, metric: str = "noisy_test_accuracy") -> pd.DataFrame:
    """Per group and σ: mean, std, n and standard error (std/√n) of ``metric`` over seeds.

    Also ``chance`` (mean chance accuracy, the default a_min), ``clean`` and ``clean_sem`` (the
    clean test accuracy of the same models; its error NaN, unknown, for one model),
    ``diverged`` (how many diverged), ``site`` and ``sigma_mul``/``sigma_add`` (mixed noise).
    Points without a scalar σ (σ pairs) are kept with ``sigma`` NaN; ``results`` may come
    straight from ``load_results``.
    """
    frame = prepare_results(results)
    columns = group_columns(frame)
    keys = [*columns, "sigma", "sigma_mul", "sigma_add"]
    out_columns = [*keys, "site", "mean", "std", "n", "sem", "chance", "clean", "clean_sem"]
    if frame.empty or metric not in frame:
        return pd.DataFrame(columns=[*out_columns, "diverged"])
    frame["_value"] = pd.to_numeric(frame[metric], errors="coerce")
    rows = []
    for key, part in frame.groupby(keys, dropna=False, sort=False):
        values = part["_value"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        clean = part["clean_test_accuracy"].to_numpy(dtype=float)
        clean = clean[np.isfinite(clean)]
        n = int(values.size)
        std = float(values.std(ddof=1)) if n > 1 else (0.0 if n else math.nan)
        clean_std = float(clean.std(ddof=1)) if clean.size > 1 else math.nan
        rows.append(
            dict(zip(keys, key, strict=True))
            | {
                "site": part["site"].iloc[0],
                "mean": float(values.mean()) if n else math.nan,
                "std": std,
                "n": n,
                "sem": std / math.sqrt(n) if n else math.nan,
                "chance": float(part["chance_accuracy"].mean()),
                "clean": float(clean.mean()) if clean.size else math.nan,
                "clean_sem": clean_std / math.sqrt(clean.size) if clean.size else math.nan,
                "diverged": int(part["diverged"].sum()),
            }
        )
    curves = pd.DataFrame(rows)
    curves["site"] = curves["site"].astype("Int64")
    order = [c for c in columns if c != "placement"]
    curves = curves.sort_values(
        [*order, "site", "placement", "sigma", "sigma_mul", "sigma_add"],
        kind="stable",
        na_position="first",
    )
    curves.attrs["group_columns"] = columns
    return curves.reset_index(drop=True)


def curve_group_columns(curves: pd.DataFrame) -> list[str]:
    """The group columns of a frame made by :func:`accuracy_curves`."""
    stored = curves.attrs.get("group_columns")
    if stored:
        return list(stored)
    return [c for c in (*GROUP_COLUMNS, *OPTIONAL_GROUP_COLUMNS) if c in curves]


def iter_curves(curves: pd.DataFrame) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """(group values, its points sorted by σ) for every group of :func:`accuracy_curves`."""
    columns = curve_group_columns(curves)
    if curves.empty:
        return
    for key, part in curves.groupby(columns, dropna=False, sort=False):
        yield dict(zip(columns, key, strict=True)), part.sort_values("sigma", kind="stable")


def shared_sigmas(curves: pd.DataFrame) -> set[float]:
    """The σ that every curve of ``curves`` has (:func:`iter_curves`): where curves, such as
    the sites of one walking group, can be compared at one σ. Empty if they share none."""
    shared: set[float] | None = None
    for _, curve in iter_curves(curves[curves["sigma"].notna()]):
        sigmas = set(curve["sigma"].astype(float))
        shared = sigmas if shared is None else shared & sigmas
    return shared or set()


def row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One hashable key per row: the values of ``columns`` (NaN equal to NaN), to group or
    match rows on several columns that may hold NaN."""
    return pd.Series(
        [repr(tuple(row)) for row in frame[columns].itertuples(index=False)],
        index=frame.index,
        dtype=object,
    )


def describe_group(group: dict[str, Any], *, skip: tuple[str, ...] = ()) -> str:
    """A short readable label: ``digits mlp BN additive noisy-train clamp=1 walking:3``."""
    parts = []
    for column, value in group.items():
        if column in skip or _missing(value):
            continue
        if column == "batchnorm":
            parts.append("BN" if value else "no BN")
        elif column == "train_noise":
            parts.append("noisy training" if value else "inference-only")
        elif column == "recipe.clamp":
            parts.append(f"clamp {value:g}")
        elif column == "ratio":
            parts.append(f"r={value:g}")
        elif column in GROUP_COLUMNS:
            parts.append(str(value))
        else:
            parts.append(f"{column.removeprefix('recipe.')}={value}")
    return " · ".join(parts)


def describe_difference(group: dict[str, Any], columns: list[str]) -> str:
    """What tells a series apart from the others on ``columns``: :func:`describe_group` of
    them, naming an unset value where it is what differs (``no clamp`` beside ``clamp 1``).
    An unset gradient rule is not named without noisy training, which alone has one: the
    series reads ``inference-only``, not ``inference-only · no gradient``."""
    shown = describe_group({c: group[c] for c in columns})
    noisy = group.get("train_noise")
    no_rule = _missing(noisy) or not bool(noisy)
    unset = [
        "no clamp" if c == "recipe.clamp" else f"no {c.removeprefix('recipe.')}"
        for c in columns
        if _missing(group.get(c)) and not (c == "gradient" and no_rule)
    ]
    return " · ".join(part for part in (shown, *unset) if part)


def _missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and not value):
        return True
    return isinstance(value, float) and math.isnan(value)
