"""The SQLite store of a study: one row per experiment and per shared clean training.

The database runs in WAL mode with a busy timeout, so readers (``status``, ``report``) work
while a sweep writes, and two sweeps can share one store: rows are claimed atomically
(``pending`` → ``running``), and a ``running`` row whose process on this host has died (or whose
process id now belongs to a later process) is put back to ``pending``. Checkpoints are files in
``<store>.checkpoints/``, written atomically. Every SQLite failure (disk full, a read-only file,
a lock held too long) is a one-line :class:`StoreError` naming the file; a failed write leaves
the database as it was before it.

Each row says where it computed: ``device`` (``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``) and
``node`` (the host name of the worker's machine), beside ``host``, the machine of the process
that claimed and recorded it. Schema 2 added those two columns; opening a store made before
(schema 1) for writing adds them, empty for its rows. A store of a newer schema than this
version knows is read, but not written: its writes could leave out what it records.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from walkingnoise import __version__
from walkingnoise._files import write_atomic
from walkingnoise.data.errors import one_line
from walkingnoise.experiment import STORED, Experiment

#: The layout of the tables: "2" added ``device`` and ``node`` (see ``_ADDED_COLUMNS``).
SCHEMA_VERSION = "2"
STATUSES = ("pending", "running", "done", "failed")
#: Seconds a lock may be waited for before a write gives up ("database is locked").
BUSY_TIMEOUT = 60.0
#: A claim made this long (s) before its process started is not that process's (pid reused).
PID_REUSE_SLACK = 60.0
#: An unfinished checkpoint file this old (s) no running experiment writes any more.
ORPHAN_TEMP_AGE = 60.0

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
    attempts INTEGER NOT NULL DEFAULT 0,
    device TEXT,
    node TEXT
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
    finished REAL NOT NULL,
    device TEXT,
    node TEXT
);
"""
#: Columns added since schema 1, by table (nullable, last): added to older stores on open.
_ADDED_COLUMNS = {"experiments": ("device", "node"), "trainings": ("device", "node")}


class StoreError(OSError):
    """A store that cannot be opened or written; the message names the file."""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


#: Between a sweep's name and its file's path in the key a sweep file is kept under.
_SOURCE_MARK = "\x1f"


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one that has ended, but that its
    parent has not waited for yet, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists, and may have ended all the same
    return not _ended(pid)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended and waits for its parent to reap it (Linux's state
    ``Z`` or ``X`` in ``/proc``); False where that cannot be read."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


@cache
def _boot_time() -> float | None:
    """When this host booted (seconds since the epoch), from ``/proc/stat``; None elsewhere."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch) on Linux; None if unknown."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _claimer_alive(pid: int | None, claimed: float | None) -> bool:
    """Whether the process that claimed a row at ``claimed`` still runs as ``pid``.

    A process id is reused once its process is gone; a live process that started well after
    the claim is a later one, not the claimer.
    """
    if pid is None or not _alive(pid):
        return False
    started = _process_start(pid)
    return started is None or claimed is None or started <= claimed + PID_REUSE_SLACK


def error_line(text: str) -> str:
    """The line that says what went wrong: the last one of a traceback."""
    return (text.strip().splitlines() or [""])[-1].strip()


def distinct_errors(errors: Iterable[str]) -> list[tuple[str, int]]:
    """Each different error (its :func:`error_line`) with how many times it occurs, the most
    frequent first (ties in order of appearance)."""
    return Counter(error_line(text) for text in errors).most_common()


def _refuse_other_databases(db: sqlite3.Connection) -> None:
    """Raise if ``db`` holds tables but not a store's: another program's database, which
    creating a store's tables in it (and switching it to WAL) would change."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return
    schema = None
    if "meta" in tables:
        schema = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if schema is None or "experiments" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise sqlite3.DatabaseError(f"an SQLite database of something else (tables {shown})")


class _NewerSchemaError(sqlite3.DatabaseError):
    """A store of a schema newer than this version writes."""


def _refuse_newer_schema(db: sqlite3.Connection) -> None:
    """Raise if a newer walkingnoise made the store: writing it, this one could leave out (or
    misplace) what the newer one records."""
    if not _columns(db, "meta"):
        return
    found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    version = None if found is None else str(found[0])
    if version is not None and not (version.isdigit() and int(version) <= int(SCHEMA_VERSION)):
        raise _NewerSchemaError(
            f"made by a newer walkingnoise (schema {version}; this one writes schema "
            f"{SCHEMA_VERSION}); upgrade walkingnoise to write to it, or only read it"
        )


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The column names of ``table``; empty where there is no such table."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Add the columns a store made by an older schema lacks; its rows read NULL there."""
    for table, columns in _ADDED_COLUMNS.items():
        present = _columns(db, table)
        for column in columns:
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


def _empty_store() -> sqlite3.Connection:
    """An in-memory database with the tables of a store and nothing in them."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(_SCHEMA)
    return db


@dataclass(frozen=True)
class Finished:
    """What a finished experiment recorded, for ``Store.finish_all``."""

    key: str
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    weights: dict[str, dict[str, float]]
    timings: dict[str, float]
    diverged: bool
    checkpoint: Path | None
    device: str | None = None
    node: str | None = None


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
    timings: dict[str, float]


class Store:
    """One study's SQLite database and checkpoint folder."""

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False) -> None:
        """Open (or, with ``create``, create) the store at ``path``.

        ``read_only`` opens an existing store for reading only: what ``status``, ``fit`` and
        ``report`` need, and all a read-only file or folder allows.
        """
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory; give the store's file (.sqlite)")
        if (read_only or not create) and not self.path.is_file():
            raise StoreError(f"{self.path}: no such store")
        self.read_only = read_only
        try:
            self._db = self._open_read_only() if read_only else self._open_for_writing()
        except _NewerSchemaError as error:
            raise StoreError(f"{self.path}: cannot write to the store: {error}") from None
        except (sqlite3.Error, OSError) as error:
            hint = ""
            if self.path.suffix.lower() in {".yaml", ".yml"}:
                hint = "; a sweep file? give the store (.sqlite) that `run` wrote"
            raise StoreError(
                f"{self.path}: cannot open the store ({one_line(error)}){hint}"
            ) from None
        self.host = socket.gethostname()
        self.pid = os.getpid()
        #: Whether the rows have ``device`` and ``node`` (a store of schema 1 read-only has not).
        self._records_devices = "device" in _columns(self._db, "experiments")

    def _open_for_writing(self) -> sqlite3.Connection:
        """Connect in WAL mode, create the tables that are missing and add the columns an
        older schema lacks (then the store is of this schema)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            _refuse_other_databases(db)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                _refuse_newer_schema(db)
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                _add_missing_columns(db)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except BaseException:
            db.close()
            raise
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        """Connect without writing anything, even where the file or its folder is read-only.

        A WAL database needs its ``-shm`` file to be read; where that cannot be created and
        no ``-wal`` file holds unmerged writes, the file is read as immutable. A file without
        any table yet (a store being created this instant, or whose creator was killed before
        it wrote any) reads as an empty store.
        """
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
            return self._probe(db)
        except sqlite3.OperationalError:
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.is_file() and wal.stat().st_size > 0:
                raise
        return self._probe(sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True))

    def _probe(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """``db`` if it holds a store's tables, an empty store if it holds no table at all."""
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            if not db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                db.close()
                return _empty_store()
            db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall()
            db.execute("SELECT hash FROM experiments LIMIT 1").fetchall()
        except sqlite3.Error:
            db.close()
            raise
        return db

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
        """BEGIN IMMEDIATE … COMMIT: one writer at a time, all or nothing.

        Any SQLite failure, at COMMIT included, rolls the transaction back and is raised as a
        one-line ``StoreError``.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise self._error("write to", error) from None
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as error:
            self._rollback()
            if isinstance(error, sqlite3.Error):
                raise self._error("write to", error) from None
            raise

    def flush(self) -> None:
        """Copy the writes that the write-ahead log (the ``-wal`` file) holds into the database
        file, as far as no reader still needs them: a run killed later leaves its finished
        results in the ``.sqlite`` file, which a move or copy of the store takes along, not in
        a ``-wal`` file left behind. Best effort: what it cannot copy now stays in the log."""
        with suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not done so already."""
        if self._db.in_transaction:
            with suppress(sqlite3.Error):  # SQLite may have rolled back on its own already
                self._db.execute("ROLLBACK")

    def _fetch(self, query: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        """All rows of a read query; a SQLite failure becomes a ``StoreError``."""
        try:
            return self._db.execute(query, parameters).fetchall()
        except sqlite3.Error as error:
            raise self._error("read", error) from None

    def _error(self, doing: str, error: sqlite3.Error) -> StoreError:
        return StoreError(f"{self.path}: cannot {doing} the store ({one_line(error)})")

    # -- experiments ------------------------------------------------------------------------

    def add(self, entries: Iterable[tuple[Experiment, str]]) -> int:
        """Insert experiments not yet in the store as ``pending``; returns how many were new."""
        now = time.time()
        rows = [
            (
                e.content_hash(),
                e.canonical_json(),
                block,
                (e.clean_training() if e.shares_clean_model else e).content_hash(),
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
            counts |= dict(self._fetch("SELECT status, COUNT(*) FROM experiments GROUP BY status"))
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
            found |= dict(self._fetch(query, chunk))
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
            found |= {key: _load(text) for key, text in self._fetch(query, chunk)}
        return found

    def experiments(self, status: str | None = None) -> list[Experiment]:
        """The experiments of the store, optionally only those with ``status``."""
        if status is None:
            rows = self._fetch("SELECT config FROM experiments ORDER BY rowid")
        else:
            rows = self._fetch(
                "SELECT config FROM experiments WHERE status = ? ORDER BY rowid", (status,)
            )
        return [Experiment.model_validate_json(config, context=STORED) for (config,) in rows]

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

    def running_claims(self) -> dict[str, str]:
        """Each running experiment's claim: ``live`` (its process still runs on this host),
        ``stale`` (its process is gone: the next run puts it back to pending) or
        ``elsewhere`` (claimed on another host, whose processes cannot be checked from here)."""
        claims = {}
        query = "SELECT hash, host, pid, started FROM experiments WHERE status = 'running'"
        for key, host, pid, started in self._fetch(query):
            if host != self.host:
                claims[key] = "elsewhere"
            else:
                claims[key] = "live" if _claimer_alive(pid, started) else "stale"
        return claims

    def requeue_stale(self, *, other_hosts: bool = False) -> int:
        """Put ``running`` rows of dead processes on this host back to ``pending``.

        Rows of other hosts are left alone, their processes cannot be checked from here,
        unless ``other_hosts`` (the user knows their runs have ended). Also removes unfinished
        checkpoint files that no running experiment is still writing.
        """
        with self._transaction() as db:
            rows = db.execute(
                "SELECT hash, host, pid, started FROM experiments WHERE status = 'running'"
            ).fetchall()
            stale = [
                key
                for key, host, pid, started in rows
                if (other_hosts and host != self.host)
                or (host == self.host and not _claimer_alive(pid, started))
            ]
            db.executemany(
                "UPDATE experiments SET status = 'pending', pid = NULL"
                " WHERE hash = ? AND status = 'running'",
                [(key,) for key in stale],
            )
        self._remove_orphan_temp_files()
        return len(stale)

    def _remove_orphan_temp_files(self) -> None:
        """Delete ``.<key>.pt.*.tmp`` files left by processes killed while writing them.

        A checkpoint is written only while its experiment (or one evaluating its clean model)
        is running; with nothing running every such file is an orphan, otherwise only the old
        ones of keys no running row refers to.
        """
        if not self.checkpoint_dir.is_dir():
            return
        running = self._fetch("SELECT hash, training FROM experiments WHERE status = 'running'")
        busy = {key for row in running for key in row}
        now = time.time()
        for temp in self.checkpoint_dir.glob("*/.*.pt.*.tmp"):
            key = temp.name[1:].split(".pt.", 1)[0]
            try:
                if not busy or (key not in busy and now - temp.stat().st_mtime > ORPHAN_TEMP_AGE):
                    temp.unlink()
            except OSError:
                continue  # renamed into place meanwhile, or not ours to remove: best effort

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
        device: str | None = None,
        node: str | None = None,
    ) -> None:
        """Record a finished experiment as ``done``, with the ``device`` and ``node`` it
        computed on (None: not known)."""
        self.finish_all(
            [Finished(key, metrics, history, weights, timings, diverged, checkpoint, device, node)]
        )

    def finish_all(self, finished: Sequence[Finished]) -> None:
        """Record finished experiments as ``done`` in one transaction (a unit's, all or none);
        a value they share (the history of one clean model) is encoded once."""
        if not finished:
            return
        encoded: dict[int, str | None] = {}  # by id: the values live as long as ``finished``

        def text(value: Any) -> str | None:
            if id(value) not in encoded:
                encoded[id(value)] = _json(value)
            return encoded[id(value)]

        now = time.time()
        rows = [
            (
                text(one.metrics),
                text(one.history),
                text(one.weights),
                text(one.timings),
                int(one.diverged),
                None if one.checkpoint is None else self._relative(one.checkpoint),
                __version__,
                self.host,
                now,
                one.device,
                one.node,
                one.key,
            )
            for one in finished
        ]
        with self._transaction() as db:
            db.executemany(
                "UPDATE experiments SET status = 'done', metrics = ?, history = ?, weights = ?,"
                " timings = ?, diverged = ?, checkpoint = ?, error = NULL, version = ?,"
                " host = ?, pid = NULL, finished = ?, device = ?, node = ? WHERE hash = ?",
                rows,
            )

    def devices(self, hashes: Sequence[str] | None = None) -> dict[str | None, int]:
        """How many finished experiments (all, or of ``hashes``) computed on each device, the
        most first (then by name); None counts those that do not say (finished before devices
        were recorded), last of its count."""
        column = "device" if self._records_devices else "NULL"
        found = self._fetch(f"SELECT hash, {column} FROM experiments WHERE status = 'done'")
        wanted = None if hashes is None else set(hashes)
        counts = Counter(device for key, device in found if wanted is None or key in wanted)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0] is None, item[0])))

    def datasets_done(self) -> set[str]:
        """The datasets of which the store holds a finished experiment."""
        rows = self._fetch(
            "SELECT DISTINCT json_extract(config, '$.dataset') FROM experiments"
            " WHERE status = 'done'"
        )
        return {name for (name,) in rows if name is not None}

    def diverged(self, hashes: Sequence[str] | None = None) -> int:
        """How many finished experiments (all, or of ``hashes``) diverged in training."""
        found = self._fetch("SELECT hash FROM experiments WHERE status = 'done' AND diverged = 1")
        wanted = None if hashes is None else set(hashes)
        return sum(1 for (key,) in found if wanted is None or key in wanted)

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

    def errors(self) -> list[tuple[str, str, str]]:
        """``(hash, block, error)`` of every failed experiment, in the order they were added."""
        query = "SELECT hash, block, error FROM experiments WHERE status = 'failed' ORDER BY rowid"
        return [(key, block or "", error or "") for key, block, error in self._fetch(query)]

    def rows(self, *, history: bool = True, weights: bool = True) -> list[dict[str, Any]]:
        """Every experiment row with its JSON columns decoded (for ``load_results``); without
        ``history`` (``weights``) the per-epoch history (the per-layer weight statistics) is
        neither read nor decoded: the row has none."""
        left_out = {name for name, kept in (("history", history), ("weights", weights)) if not kept}
        names = [row[1] for row in self._fetch("PRAGMA table_info(experiments)")]
        wanted = ", ".join(name for name in names if name not in left_out)
        try:
            cursor = self._db.execute(f"SELECT {wanted} FROM experiments ORDER BY rowid")
            names = [d[0] for d in cursor.description]
            found = cursor.fetchall()
        except sqlite3.Error as error:
            raise self._error("read", error) from None
        missing = dict.fromkeys(_ADDED_COLUMNS["experiments"])  # a schema 1 store, read-only
        rows = []
        for values in found:
            row = missing | dict(zip(names, values, strict=True))
            for column in ("config", "metrics", "history", "weights", "timings"):
                if column not in row:
                    continue
                try:
                    row[column] = _load(row[column])
                except ValueError as error:  # a row edited or damaged outside walkingnoise
                    raise StoreError(
                        f"{self.path}: experiment {str(row['hash'])[:12]}'s {column} is not "
                        f"valid JSON ({one_line(error)}); the store was changed outside "
                        "walkingnoise"
                    ) from None
            rows.append(row)
        return rows

    # -- sweep files ------------------------------------------------------------------------

    def save_sweep(self, name: str, text: str, source: str = "") -> None:
        """Keep the text of a sweep file run on this store: the latest one per name and file
        (``source``, its path), so that two files of one name both stay."""
        key = f"sweep:{name}" + (f"{_SOURCE_MARK}{source}" if source else "")
        with self._transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (f"sweep:{name}",))  # no file known
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, text))

    def sweeps(self) -> dict[str, str]:
        """Name → YAML text of every sweep file run on this store; a name that two files share
        is told apart by each file's path: ``study (/runs/a.yaml)``."""
        rows = self._fetch("SELECT key, value FROM meta WHERE key LIKE 'sweep:%'")
        kept = []  # (name, file, text)
        for key, text in rows:
            name, _, source = key.removeprefix("sweep:").partition(_SOURCE_MARK)
            kept.append((name, source, text))
        files = Counter(name for name, _, _ in kept)
        return {
            f"{name} ({source})" if files[name] > 1 and source else name: text
            for name, source, text in kept
        }

    # -- what results rest on: networks and teacher files ------------------------------------

    def fingerprints(self, kind: str) -> dict[str, list[str]]:
        """What the store's experiments ran with, by key: ``network`` descriptions (see
        ``sweep.architecture``) or ``teacher`` files (see ``sweep.teacher_files``)."""
        rows = self._fetch("SELECT key, value FROM meta WHERE key LIKE ?", (f"{kind}:%",))
        return {key.removeprefix(f"{kind}:"): json.loads(value) for key, value in rows}

    def save_fingerprints(
        self, kind: str, fingerprints: dict[str, list[str]], *, replace: bool = False
    ) -> dict[str, list[str]]:
        """Keep the ``kind`` fingerprints the store has none of yet (``replace``: all of them),
        and return those stored after, read in the same transaction: a fingerprint another run
        stored first stays, and the caller sees it."""
        verb = "REPLACE" if replace else "IGNORE"
        with self._transaction() as db:
            db.executemany(
                f"INSERT OR {verb} INTO meta VALUES (?, ?)",
                [(f"{kind}:{key}", json.dumps(value)) for key, value in fingerprints.items()],
            )
            rows = db.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (f"{kind}:%",)
            ).fetchall()
        return {key.removeprefix(f"{kind}:"): json.loads(value) for key, value in rows}

    # -- clean trainings --------------------------------------------------------------------

    def training(self, key: str) -> TrainingRecord | None:
        """The finished clean training ``key`` whose checkpoint exists, or None."""
        found = self._fetch(
            "SELECT config, checkpoint, history, weights, metrics, diverged, timings"
            " FROM trainings WHERE hash = ?",
            (key,),
        )
        if not found:
            return None
        row = found[0]
        path = self._located(row[1])
        if not path.is_file():
            return None
        return TrainingRecord(
            hash=key,
            experiment=Experiment.model_validate_json(row[0], context=STORED),
            checkpoint=path,
            history=_load(row[2]) or [],
            weights=_load(row[3]) or {},
            metrics=_load(row[4]) or {},
            diverged=bool(row[5]),
            timings=_load(row[6]) or {},
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
        device: str | None = None,
        node: str | None = None,
    ) -> TrainingRecord:
        """Write a clean training's checkpoint, then its row, with the ``device`` and ``node``
        it trained on."""
        key = experiment.content_hash()
        path = self.write_checkpoint(key, checkpoint)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO trainings (hash, config, checkpoint, history, weights,"
                " metrics, timings, diverged, host, version, finished, device, node)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    device,
                    node,
                ),
            )
        return TrainingRecord(key, experiment, path, history, weights, metrics, diverged, timings)

    def training_count(self) -> int:
        """Number of finished clean trainings."""
        return self._fetch("SELECT COUNT(*) FROM trainings")[0][0]

    # -- checkpoints ------------------------------------------------------------------------

    def write_checkpoint(self, key: str, data: bytes) -> Path:
        """Write checkpoint bytes for ``key`` atomically; returns the path."""
        path = self.checkpoint_dir / key[:2] / f"{key}.pt"
        try:
            write_atomic(path, data)
        except OSError as error:
            reason = error.strerror or one_line(error)
            raise StoreError(f"{path}: cannot write checkpoint ({reason})") from None
        return path

    def checkpoint_path(self, key: str) -> Path | None:
        """The checkpoint file of experiment ``key``, if it has one."""
        found = self._fetch("SELECT checkpoint FROM experiments WHERE hash = ?", (key,))
        if not found or found[0][0] is None:
            return None
        return self._located(found[0][0])

    def _located(self, stored: str) -> Path:
        """A checkpoint path as stored (relative to the store's folder, under the checkpoint
        folder the store had when it was written), in this store's own checkpoint folder where
        the file is there or nowhere else: a store renamed or copied together with its folder
        keeps finding its files, and its own rather than the original's."""
        recorded = self.path.parent / stored
        parts = Path(stored).parts
        if len(parts) > 1 and parts[0].endswith(".checkpoints"):
            own = self.checkpoint_dir.joinpath(*parts[1:])
            if own.is_file() or not recorded.is_file():
                return own
        return recorded

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.path.parent))
