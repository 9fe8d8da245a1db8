"""The SQLite store of a study: one row per experiment and per shared clean training.

The database runs in WAL mode with a busy timeout, so readers (``status``, ``report``) work
while a sweep writes, and two sweeps can share one store: rows are claimed atomically
(``pending`` → ``running``), and a ``running`` row whose process on this host has died is put
back to ``pending``. Checkpoints are files in ``<store>.checkpoints/``, written atomically.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walkingnoise import __version__
from walkingnoise._files import write_atomic
from walkingnoise.experiment import Experiment

SCHEMA_VERSION = "1"
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
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


class StoreError(OSError):
    """A store that cannot be opened or written; the message names the file."""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class TrainingRecord:
    """A finished clean training: its checkpoint path and what training recorded."""

    hash: str
    experiment: Experiment
    checkpoint: Path
    history: list[dict[str, Any]]
    weights: dict[str, dict[str, float]]
    metrics: dict[str, float]
    diverged: bool


class Store:
    """One study's SQLite database and checkpoint folder."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no such store")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"{self.path}: cannot open the store ({error})") from None
        self.host = socket.gethostname()
        self.pid = os.getpid()

    @property
    def checkpoint_dir(self) -> Path:
        """Folder of the checkpoints, beside the database."""
        return self.path.with_name(self.path.stem + ".checkpoints")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: one writer at a time, rolled back on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- experiments ------------------------------------------------------------------------

    def add(self, entries: Iterable[tuple[Experiment, str]]) -> int:
        """Insert experiments not yet in the store as ``pending``; returns how many were new."""
        now = time.time()
        rows = [
            (
                e.content_hash(),
                e.canonical_json(),
                block,
                (e if e.trains_with_noise else e.clean_training()).content_hash(),
                now,
            )
            for e, block in entries
        ]
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO experiments (hash, config, block, training, status, created)"
                " VALUES (?, ?, ?, ?, 'pending', ?)",
                rows,
            )
            return db.total_changes - before

    def counts(self, hashes: Sequence[str] | None = None) -> dict[str, int]:
        """Number of experiments per status (all, or only those of ``hashes``)."""
        counts = dict.fromkeys(STATUSES, 0)
        if hashes is None:
            query = self._db.execute("SELECT status, COUNT(*) FROM experiments GROUP BY status")
            counts |= dict(query.fetchall())
            return counts
        for status in self.statuses(hashes).values():
            counts[status] += 1
        return counts

    def statuses(self, hashes: Sequence[str]) -> dict[str, str]:
        """Status of each of ``hashes`` that is in the store."""
        found: dict[str, str] = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT hash, status FROM experiments WHERE hash IN ({marks})"
            found |= dict(self._db.execute(query, chunk).fetchall())
        return found

    def metrics(self, hashes: Sequence[str]) -> dict[str, dict[str, float]]:
        """Metrics of those of ``hashes`` that are done."""
        found: dict[str, dict[str, float]] = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT hash, metrics FROM experiments WHERE status = 'done' AND hash IN ({marks})"
            )
            found |= {key: _load(text) for key, text in self._db.execute(query, chunk)}
        return found

    def experiments(self, status: str | None = None) -> list[Experiment]:
        """The experiments of the store, optionally only those with ``status``."""
        if status is None:
            rows = self._db.execute("SELECT config FROM experiments ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT config FROM experiments WHERE status = ? ORDER BY rowid", (status,)
            )
        return [Experiment.model_validate_json(config) for (config,) in rows]

    def claim(self, hashes: Sequence[str]) -> list[str]:
        """Mark those of ``hashes`` that are pending as running by this process; returns them."""
        claimed = []
        now = time.time()
        with self._transaction() as db:
            for key in hashes:
                cursor = db.execute(
                    "UPDATE experiments SET status = 'running', host = ?, pid = ?, started = ?,"
                    " attempts = attempts + 1 WHERE hash = ? AND status = 'pending'",
                    (self.host, self.pid, now, key),
                )
                if cursor.rowcount:
                    claimed.append(key)
        return claimed

    def release(self, hashes: Sequence[str]) -> None:
        """Put experiments this process claimed but did not finish back to pending."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE experiments SET status = 'pending', pid = NULL WHERE hash = ?"
                " AND status = 'running' AND host = ? AND pid = ?",
                [(key, self.host, self.pid) for key in hashes],
            )

    def requeue_stale(self) -> int:
        """Put ``running`` rows of dead processes on this host back to ``pending``."""
        rows = self._db.execute(
            "SELECT hash, pid FROM experiments WHERE status = 'running' AND host = ?",
            (self.host,),
        ).fetchall()
        stale = [key for key, pid in rows if pid is None or not _alive(pid)]
        with self._transaction() as db:
            db.executemany(
                "UPDATE experiments SET status = 'pending', pid = NULL"
                " WHERE hash = ? AND status = 'running'",
                [(key,) for key in stale],
            )
        return len(stale)

    def finish(
        self,
        key: str,
        *,
        metrics: dict[str, float],
        history: list[dict[str, Any]],
        weights: dict[str, dict[str, float]],
        timings: dict[str, float],
        diverged: bool,
        checkpoint: Path | None,
    ) -> None:
        """Record a finished experiment as ``done``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE experiments SET status = 'done', metrics = ?, history = ?, weights = ?,"
                " timings = ?, diverged = ?, checkpoint = ?, error = NULL, version = ?,"
                " host = ?, pid = NULL, finished = ? WHERE hash = ?",
                (
                    _json(metrics),
                    _json(history),
                    _json(weights),
                    _json(timings),
                    int(diverged),
                    None if checkpoint is None else self._relative(checkpoint),
                    __version__,
                    self.host,
                    time.time(),
                    key,
                ),
            )

    def fail(self, key: str, error: str) -> None:
        """Record a failed experiment with its traceback."""
        with self._transaction() as db:
            db.execute(
                "UPDATE experiments SET status = 'failed', error = ?, version = ?, pid = NULL,"
                " finished = ? WHERE hash = ?",
                (error, __version__, time.time(), key),
            )

    def retry_failed(self) -> int:
        """Put every failed experiment back to pending; returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE experiments SET status = 'pending', error = NULL WHERE status = 'failed'"
            )
            return cursor.rowcount

    def rows(self) -> list[dict[str, Any]]:
        """Every experiment row with its JSON columns decoded (for ``load_results``)."""
        cursor = self._db.execute("SELECT * FROM experiments ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            for column in ("config", "metrics", "history", "weights", "timings"):
                row[column] = _load(row[column])
            rows.append(row)
        return rows

    # -- sweep files ------------------------------------------------------------------------

    def save_sweep(self, name: str, text: str) -> None:
        """Keep the text of a sweep file run on this store (the latest one per name)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"sweep:{name}", text))

    def sweeps(self) -> dict[str, str]:
        """Name → YAML text of every sweep file run on this store."""
        rows = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'sweep:%'")
        return {key.removeprefix("sweep:"): value for key, value in rows}

    # -- clean trainings --------------------------------------------------------------------

    def training(self, key: str) -> TrainingRecord | None:
        """The finished clean training ``key`` whose checkpoint exists, or None."""
        row = self._db.execute(
            "SELECT config, checkpoint, history, weights, metrics, diverged FROM trainings"
            " WHERE hash = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        path = self.path.parent / row[1]
        if not path.is_file():
            return None
        return TrainingRecord(
            hash=key,
            experiment=Experiment.model_validate_json(row[0]),
            checkpoint=path,
            history=_load(row[2]) or [],
            weights=_load(row[3]) or {},
            metrics=_load(row[4]) or {},
            diverged=bool(row[5]),
        )

    def save_training(
        self,
        experiment: Experiment,
        checkpoint: bytes,
        *,
        history: list[dict[str, Any]],
        weights: dict[str, dict[str, float]],
        metrics: dict[str, float],
        timings: dict[str, float],
        diverged: bool,
    ) -> TrainingRecord:
        """Write a clean training's checkpoint, then its row."""
        key = experiment.content_hash()
        path = self.write_checkpoint(key, checkpoint)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO trainings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    experiment.canonical_json(),
                    self._relative(path),
                    _json(history),
                    _json(weights),
                    _json(metrics),
                    _json(timings),
                    int(diverged),
                    self.host,
                    __version__,
                    time.time(),
                ),
            )
        return TrainingRecord(key, experiment, path, history, weights, metrics, diverged)

    def training_count(self) -> int:
        """Number of finished clean trainings."""
        return self._db.execute("SELECT COUNT(*) FROM trainings").fetchone()[0]

    # -- checkpoints ------------------------------------------------------------------------

    def write_checkpoint(self, key: str, data: bytes) -> Path:
        """Write checkpoint bytes for ``key`` atomically; returns the path."""
        path = self.checkpoint_dir / key[:2] / f"{key}.pt"
        try:
            write_atomic(path, data)
        except OSError as error:
            raise StoreError(f"{path}: cannot write checkpoint ({error.strerror})") from None
        return path

    def checkpoint_path(self, key: str) -> Path | None:
        """The checkpoint file of experiment ``key``, if it has one."""
        row = self._db.execute(
            "SELECT checkpoint FROM experiments WHERE hash = ?", (key,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return self.path.parent / row[0]

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.path.parent))
