"""Results of a store as a pandas DataFrame: one row per experiment, flat config columns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from walkingnoise._words import counted
from walkingnoise.sweep.store import Store


def diverged_note(count: int) -> str:
    """What ``run``, ``status`` and the report say of finished experiments whose training
    diverged."""
    return (
        f"{counted(count, 'finished experiment')} diverged in training (the loss became NaN or "
        "infinite): counted at chance level in the curves and fits"
    )


def load_results(
    store: str | Path | Store, *, history: bool = True, weights: bool = True
) -> pd.DataFrame:
    """One row per experiment: hash, status, block, flat config (``recipe.epochs``, ...),
    metrics (``clean_test_accuracy``, ...), ``diverged``, timings (``seconds_train``, ...),
    ``error``, and the per-epoch ``history`` and per-layer ``weights`` as Python objects.

    Where each finished experiment computed: ``device`` (``cpu``, or ``cuda:<index> (<GPU
    name>)`` such as ``cuda:0 (NVIDIA H100 80GB HBM3)``) and ``node`` (the host name of the
    worker's machine, a Ray node's), because a GPU draws other noise than the CPU (another
    generator for the same seed) and rounds otherwise. ``host`` is the machine of the process
    that recorded the row (the sweep's driver). Rows finished before devices were recorded
    read None. An inference-only experiment's device is where it was evaluated; its clean
    model may have been trained elsewhere (the store's ``trainings`` table says where).

    Settings that cannot matter or are at their default are not stored and read NaN
    (``Experiment.identity``), e.g. ``weight_noise`` without weight noise: group with
    ``dropna=False``, or fill them with ``analysis.prepare_results``.

    ``history=False`` leaves the ``history`` column out, unread: the analysis never needs it,
    and at 100 epochs it is most of what reading a large store costs in time and memory.
    ``weights=False`` leaves ``weights`` out too: only the weight statistics need it, and it
    is about half of what a row without history holds in memory.
    """
    own = not isinstance(store, Store)
    db = Store(store, read_only=True) if own else store
    try:
        rows = db.rows(history=history, weights=weights)
    finally:
        if own:
            db.close()
    if not rows:
        return pd.DataFrame(columns=["hash", "status", "block"])
    config = pd.json_normalize([row["config"] for row in rows])
    metrics = pd.DataFrame([row["metrics"] or {} for row in rows])
    timings = pd.DataFrame([row["timings"] or {} for row in rows]).add_prefix("seconds_")
    meta = pd.DataFrame(
        {
            "hash": [r["hash"] for r in rows],
            "status": [r["status"] for r in rows],
            "block": [r["block"] for r in rows],
            "training": [r["training"] for r in rows],
            "diverged": [None if r["diverged"] is None else bool(r["diverged"]) for r in rows],
            "error": [r["error"] for r in rows],
            "checkpoint": [r["checkpoint"] for r in rows],
            "host": [r["host"] for r in rows],
            "device": [r["device"] for r in rows],
            "node": [r["node"] for r in rows],
            "version": [r["version"] for r in rows],
        }
    )
    for column, kept in (("history", history), ("weights", weights)):
        if kept:
            meta[column] = [r[column] for r in rows]
    return pd.concat([meta, config, metrics, timings], axis=1)


def devices_text(counts: Mapping[str | None, int]) -> str:
    """``cpu 120, cuda:0 (NVIDIA H100 80GB HBM3) 40, not recorded 3``: what computed the
    finished experiments, so a mix of CPU and GPU results shows."""
    return ", ".join(f"{device or 'not recorded'} {count}" for device, count in counts.items())
