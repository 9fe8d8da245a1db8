"""Small sweeps on the bundled digits and read-only looks into a store's database."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

from walkingnoise.sweep.spec import SweepSpec, parse_sweep

#: Four noisy trainings and four inference-only experiments sharing one clean training.
MIXED_SWEEP = """
name: mixed
fixed:
  dataset: digits
  model: mlp
  noise: additive
  eval_repeats: 2
  recipe: {epochs: 2}
grid:
  sigma: {type: choice, options: [0.1, 1.0]}
  placement: {type: choice, options: ["walking:0", "walking:5"]}
  train_noise: {type: choice, options: [true, false]}
"""

#: Six inference-only experiments (3 σ × 2 placements) of one seed: one clean training.
EVAL_ONLY_SWEEP = """
name: eval-only
fixed:
  dataset: digits
  model: mlp
  noise: additive
  train_noise: false
  eval_repeats: 2
  seed: 0
  recipe: {epochs: 2}
grid:
  sigma: {type: choice, options: %s}
  placement: {type: choice, options: ["walking:0", "walking:7"]}
"""


#: A store's tables as walkingnoise made them before it recorded devices (schema 1).
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    hash TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    block TEXT,
    training TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    metrics TEXT,
    history TEXT,
    weights TEXT,
    timings TEXT,
    diverged INTEGER,
    error TEXT,
    checkpoint TEXT,
    host TEXT,
    pid INTEGER,
    version TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS experiments_status ON experiments (status);
CREATE INDEX IF NOT EXISTS experiments_training ON experiments (training);
CREATE TABLE IF NOT EXISTS trainings (
    hash TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    history TEXT,
    weights TEXT,
    metrics TEXT,
    timings TEXT,
    diverged INTEGER,
    host TEXT,
    version TEXT,
    finished REAL NOT NULL
);
"""


def spec(text: str, source: str = "test.yaml") -> SweepSpec:
    """Parse a sweep written inline (dedented)."""
    return parse_sweep(textwrap.dedent(text), source)


def eval_only_spec(sigmas: list[float]) -> SweepSpec:
    """``EVAL_ONLY_SWEEP`` with these σ values."""
    return spec(EVAL_ONLY_SWEEP % (sigmas,))


def write_sweep(folder: Path, text: str, name: str = "sweep.yaml") -> Path:
    """Write a sweep file and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection that cannot create or change the database."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)


def status_counts(path: Path) -> dict[str, int]:
    """Experiments per status, read without the ``Store`` class."""
    with read_only(path) as db:
        rows = db.execute("SELECT status, COUNT(*) FROM experiments GROUP BY status").fetchall()
    db.close()
    return dict(rows)


def pragma(path: Path, name: str) -> str:
    """The value of a one-row PRAGMA, e.g. ``journal_mode`` or ``integrity_check``."""
    db = sqlite3.connect(path)
    try:
        return str(db.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        db.close()


def set_columns(path: Path, key: str, **columns: object) -> None:
    """Change columns of one experiment row directly, as another process would."""
    db = sqlite3.connect(path)
    try:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        db.execute(f"UPDATE experiments SET {assignments} WHERE hash = ?", (*columns.values(), key))
        db.commit()
    finally:
        db.close()


def schema_1_store(path: Path) -> None:
    """An empty store made as a walkingnoise of schema 1 made one."""
    db = sqlite3.connect(path)
    try:
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        db.commit()
    finally:
        db.close()


def back_to_schema_1(path: Path) -> None:
    """Turn a store into one of schema 1, its rows kept: as if it had been run before devices
    were recorded."""
    db = sqlite3.connect(path)
    try:
        for table in ("experiments", "trainings"):
            for column in ("device", "node"):
                db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
        db.commit()
    finally:
        db.close()


def columns(path: Path, table: str) -> list[str]:
    """The column names of ``table``, in order."""
    with read_only(path) as db:
        names = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    db.close()
    return names


def worker_gpu(folder: str) -> tuple[int, str | None, str | None]:
    """A pool task: (the worker's process id, the GPUs it sees, its share), once as many
    workers as there are tasks hold one (each notes itself in ``folder``; 60 s at most), so
    that every worker of the pool gets one of the tasks."""
    import os
    import time

    (Path(folder) / str(os.getpid())).touch()
    expected = int((Path(folder) / "tasks").read_text())
    deadline = time.monotonic() + 60
    while len(list(Path(folder).glob("[0-9]*"))) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return os.getpid(), visible, os.environ.get("WALKINGNOISE_GPU_SHARE")
