"""Sweeps: YAML studies, experiment planning, executors and the SQLite store."""

from walkingnoise.sweep.executors import make_executor
from walkingnoise.sweep.results import load_results
from walkingnoise.sweep.runner import SweepSummary, run_sweep
from walkingnoise.sweep.spec import SweepError, expand, load_sweep, parse_sweep
from walkingnoise.sweep.store import Store, StoreError

__all__ = [
    "Store",
    "StoreError",
    "SweepError",
    "SweepSummary",
    "expand",
    "load_results",
    "load_sweep",
    "make_executor",
    "parse_sweep",
    "run_sweep",
]
