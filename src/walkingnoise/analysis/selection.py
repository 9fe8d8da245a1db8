"""Choosing results and trained models from a store: ``KEY=VALUE`` filters, one experiment.

The study commands (``weights``, ``binarization``) select results the same way: filters on the
columns of :func:`~walkingnoise.analysis.curves.prepare_results` (config fields such as
``sigma``, ``seed``, ``recipe.clamp``, plus ``site`` of a walking placement), and a trained
model is taken from the store's checkpoint of one experiment.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from walkingnoise.analysis.curves import group_columns, prepare_results
from walkingnoise.experiment import Experiment
from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.sweep.store import Store
from walkingnoise.training.checkpoint import load_checkpoint

#: Relative tolerance of a numeric filter: ``sigma=0.316`` selects σ = 0.31623.
NUMERIC_RTOL = 5e-3


def parse_filter(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value); the value is read as YAML (``null``, ``1e10``, ``true``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"a filter must look like KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw.strip()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)  # YAML 1.1 reads 1e10 as a string
    return key, value


class AnyOf(tuple):
    """The values of a key given more than once: a row passes if it has any of them."""


def parse_filters(texts: Sequence[str] | None) -> dict[str, Any]:
    """Several ``KEY=VALUE`` filters as a dict; a key given more than once keeps all its values
    as :class:`AnyOf` (``--where seed=0 --where seed=1``: seed 0 or 1)."""
    filters: dict[str, Any] = {}
    for key, value in (parse_filter(text) for text in texts or ()):
        if key in filters:
            earlier = filters[key]
            value = AnyOf((*(earlier if isinstance(earlier, AnyOf) else (earlier,)), value))
        filters[key] = value
    return filters


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def filter_mask(frame: pd.DataFrame, filters: Mapping[str, Any]) -> pd.Series:
    """Rows of ``frame`` whose columns equal every filter value (any of an :class:`AnyOf`).

    ``None`` selects missing values; numbers match within :data:`NUMERIC_RTOL`; other values
    compare as text, ``device`` by type or index too (``cuda``, ``cuda:0``). An unknown column
    is a KeyError that names the closest known one, or lists the settings columns.
    """
    mask = pd.Series(True, index=frame.index)
    for column, wanted in filters.items():
        if column not in frame:
            raise KeyError(f"no column {column!r} to filter on; {_known(frame, column)}")
        values = frame[column]
        equal = _same_device if column == "device" else _equal
        if isinstance(wanted, AnyOf):
            mask &= np.logical_or.reduce([equal(values, one) for one in wanted])
        else:
            mask &= equal(values, wanted)
    return mask


def _same_device(values: pd.Series, wanted: Any) -> pd.Series:
    """Where the stored devices are ``wanted``, or of the type or index it names: ``cuda`` and
    ``cuda:0`` select ``cuda:0 (NVIDIA H100 80GB HBM3)``, as a user names a device."""
    if _missing(wanted):
        return _equal(values, wanted)
    text, stored = str(wanted), values.astype(str)
    return (stored == text) | stored.str.startswith(f"{text}:") | stored.str.startswith(f"{text} (")


def _equal(values: pd.Series, wanted: Any) -> pd.Series:
    """Where ``values`` equal ``wanted``, as :func:`filter_mask` compares."""
    if _missing(wanted):
        return values.isna() | values.astype(str).isin(["", "None", "<NA>"])
    if isinstance(wanted, bool):
        return values.astype(str).str.lower() == str(wanted).lower()
    if isinstance(wanted, int | float):
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        close = np.isclose(numbers, float(wanted), rtol=NUMERIC_RTOL, atol=0.0)
        return pd.Series(close, index=values.index)
    return values.astype(str) == str(wanted)


#: Columns that ``prepare_results`` derives from the settings, and the experiment's block.
_DERIVED = ("block", "site", "placement_kind", "sigma_mul", "sigma_add")


def _known(frame: pd.DataFrame, column: str) -> str:
    """``did you mean seed?``, or the settings columns of ``frame`` (not metrics or timings)."""
    close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=1)
    if close:
        return f"did you mean {close[0]}?"
    fields = {*Experiment.model_fields, *_DERIVED}
    settings = [str(c) for c in frame.columns if c in fields or "." in str(c)]
    return f"settings: {', '.join(settings)}"


def select_results(results: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``results`` (from ``load_results``, left as they are) of finished
    experiments that pass ``filters``, which may also name the columns ``prepare_results``
    adds (``site``, ``sigma_mul``, ...)."""
    frame = prepare_results(results)
    chosen = frame[filter_mask(frame, filters)]
    if "hash" not in results:
        return chosen.reset_index(drop=True)
    return results[results["hash"].isin(set(chosen["hash"]))].reset_index(drop=True)


def choose_experiment(
    results: pd.DataFrame,
    *,
    prefix: str | None = None,
    site: int | None = None,
    filters: Mapping[str, Any] | None = None,
) -> pd.Series:
    """The one finished experiment a study looks at.

    With ``prefix``, the experiment whose hash starts with it. Otherwise the experiments that
    pass ``filters`` (restricted to the walking ones at ``site`` when there are any) must share
    one configuration; of those, the one with the largest σ, then the smallest seed, is taken.
    Only experiments with a stored checkpoint count. Errors are one-line ValueErrors.
    """
    frame = prepare_results(results)
    if "checkpoint" in frame:
        frame = frame[frame["checkpoint"].notna()]
    if frame.empty:
        raise ValueError("no finished experiment with a checkpoint")
    if prefix:
        found = frame[frame["hash"].astype(str).str.startswith(prefix)]
        if found.empty:
            raise ValueError(
                f"no finished experiment with a checkpoint has a hash starting {prefix!r}"
            )
        if len(found) > 1:
            raise ValueError(f"hash prefix {prefix!r} is ambiguous: {len(found)} experiments")
        return found.iloc[0]
    found = frame[filter_mask(frame, filters or {})]
    if found.empty:
        shown = " ".join(f"--where {k}={v}" for k, v in (filters or {}).items()) or "the filters"
        raise ValueError(f"no finished experiment with a checkpoint passes {shown}")
    if site is not None:
        walking = found["site"].notna()
        if walking.any() and not (found["site"] == site).any():
            known = sorted(int(s) for s in found.loc[walking, "site"].unique())
            raise ValueError(f"--site {site} does not exist among the walking sites {known}")
        if (found["site"] == site).any():
            found = found[found["site"] == site]
    columns = [c for c in group_columns(found) if c in found]
    differing = [c for c in columns if found[c].astype(str).nunique(dropna=False) > 1]
    if differing:
        example = found.iloc[0]
        hint = " ".join(f"--where {c}={example[c]}" for c in differing[:3])
        raise ValueError(
            f"{len(found)} experiments match and differ in {', '.join(differing)}; narrow "
            f"the choice (e.g. {hint}) or name one with --experiment HASH"
        )
    ordered = found.assign(_sigma=found["sigma"].fillna(-np.inf)).sort_values(
        ["_sigma", "sigma_mul", "sigma_add", "seed"],
        ascending=[False, False, False, True],
        kind="stable",
        na_position="last",
    )
    return ordered.iloc[0].drop(labels="_sigma")


def load_stored_model(store: str | Path | Store, key: str) -> tuple[Experiment, NoisyModel]:
    """The experiment ``key`` of ``store`` and its trained model, with the experiment's noise.

    Inference-only experiments share the checkpoint of their clean training; the noise set on
    the model is the experiment's own (placement, σ), on in evaluation.
    """
    own = not isinstance(store, Store)
    db = Store(store, read_only=True) if own else store
    try:
        experiment = next((e for e in db.experiments("done") if e.content_hash() == key), None)
        path = db.checkpoint_path(key)
    finally:
        if own:
            db.close()
    if experiment is None:
        raise ValueError(f"experiment {key[:12]} is not a finished experiment of the store")
    if path is None or not path.is_file():
        raise ValueError(f"experiment {key[:12]} has no checkpoint file in the store")
    _, model = load_checkpoint(path)
    model.set_noise(experiment.noise_model(), experiment.placement_spec(), experiment.sigma)
    return experiment, model
