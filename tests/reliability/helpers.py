"""Looking into a store without changing it, and finding the processes a command left behind."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from walkingnoise.sweep import load_results, load_sweep, run_sweep

from ..sweep.helpers import read_only, write_sweep

#: The result columns a run under trouble must reproduce exactly.
ACCURACIES = ["clean_test_accuracy", "noisy_test_accuracy", "noisy_validation_accuracy"]

#: Environment variables of a local Ray that stays quiet and local.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}
#: The environment variable that marks a command's processes (inherited by its children).
TAG = "WALKINGNOISE_TEST_TAG"


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` through a read-only connection ("ok" when sound)."""
    db = read_only(path)
    try:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def store_rows(path: Path) -> list[dict[str, Any]]:
    """Every experiment row (raw columns), read-only; none before the tables exist."""
    if not path.exists():
        return []
    db = read_only(path)
    try:
        cursor = db.execute("SELECT * FROM experiments ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return []
    finally:
        db.close()


def training_rows(path: Path) -> dict[str, str]:
    """Hash → checkpoint path (relative to the store's folder) of every clean training."""
    db = read_only(path)
    try:
        return dict(db.execute("SELECT hash, checkpoint FROM trainings").fetchall())
    finally:
        db.close()


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment holds ``WALKINGNOISE_TEST_TAG=tag``."""
    marker = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def wait_until_gone(tag: str, timeout: float) -> list[int]:
    """Wait for every process tagged ``tag`` to end; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while (alive := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def reference_accuracies(folder: Path, sweep: str, n: int) -> dict[str, dict[str, float]]:
    """Hash → accuracies of ``sweep`` run in this process without trouble (``n`` experiments)."""
    path = folder / "reference.sqlite"
    summary = run_sweep(load_sweep(write_sweep(folder, sweep)), path, progress=False)
    assert (summary.ran, summary.failed) == (n, 0)
    return load_results(path).set_index("hash")[ACCURACIES].to_dict("index")
