"""Results of a store as a pandas DataFrame: one row per experiment, flat config columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from walkingnoise.sweep.store import Store


def load_results(store: str | Path | Store) -> pd.DataFrame:
    """One row per experiment: hash, status, block, flat config (``recipe.epochs``, ...),
    metrics (``clean_test_accuracy``, ...), ``diverged``, timings (``seconds_train``, ...),
    ``error``, and the per-epoch ``history`` and per-layer ``weights`` as Python objects.

    Settings that cannot matter or are at their default are not stored and read NaN
    (``Experiment.identity``), e.g. ``weight_noise`` without weight noise: group with
    ``dropna=False``, or fill them with ``analysis.prepare_results``.
    """
    own = not isinstance(store, Store)
    db = Store(store, read_only=True) if own else store
    try:
        rows = db.rows()
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
            "version": [r["version"] for r in rows],
            "history": [r["history"] for r in rows],
            "weights": [r["weights"] for r in rows],
        }
    )
    return pd.concat([meta, config, metrics, timings], axis=1)
