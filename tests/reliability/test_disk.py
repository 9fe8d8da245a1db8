"""Disks and permissions: read-only stores, missing folders, a disk that fills up mid-sweep.

Every failure must be one line naming the file (exit status 2 from the command), leave the
store sound (``integrity_check``, no half rows, nothing left ``running``, no stray files), and a
later run must finish the sweep with the numbers of an uninterrupted one.

A read-only store is made the way it happens: by permission bits, which the commands (run
without any capability, so that even root obeys them) cannot override. A full
disk is simulated at the lowest level: the operating system's answer to a file write (ENOSPC
after half the bytes), or SQLite's page limit (``PRAGMA max_page_count``) for the database.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from walkingnoise import _files
from walkingnoise.cli import main
from walkingnoise.sweep import Store, load_results, load_sweep, run_sweep
from walkingnoise.training.checkpoint import load_checkpoint

from ..sweep.helpers import write_sweep
from .helpers import ACCURACIES, integrity, reference_accuracies, store_rows
from .launch import start_command

#: Six noisy trainings (each writes a checkpoint) and two inference-only experiments.
SWEEP = """
name: disk
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:2"
  eval_repeats: 1
  recipe: {epochs: 1}
grid:
  recipe.lr: {type: choice, options: [0.001, 0.003, 0.01]}
  sigma: {type: choice, options: [0.1, 1.0]}
noisy:
  fixed: {train_noise: true}
clean:
  fixed: {train_noise: false, recipe: {lr: 0.001}}
"""
N = 8
NOISY = 6
STUDY_FILES = ["study.checkpoints", "study.sqlite", "sweep.yaml"]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, start: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"walking-noise: error: {start}"), err
    assert "Traceback" not in err


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """Hash → accuracies of the sweep run without trouble."""
    return reference_accuracies(tmp_path_factory.mktemp("reference"), SWEEP, N)


def _check_consistent(store: Path, done: int) -> None:
    """Sound, every row there, ``done`` of them done and the others pending; no half files."""
    assert integrity(store) == "ok"
    rows = store_rows(store)
    assert len(rows) == N
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["done"] * done + ["pending"] * (N - done)
    files = _files_under(store.parent / (store.stem + ".checkpoints"))
    assert not [name for name in files if Path(name).name.startswith(".")]  # no temporary files
    for row in rows:
        if row["status"] == "done" and row["checkpoint"] is not None:
            load_checkpoint(store.parent / row["checkpoint"])


def _check_finished(store: Path, reference: dict[str, dict[str, float]]) -> None:
    assert integrity(store) == "ok"
    frame = load_results(store).set_index("hash")
    assert set(frame["status"]) == {"done"}
    assert frame[ACCURACIES].to_dict("index") == reference


# -- a disk that fills up ---------------------------------------------------------------------


class _FillsUp:
    """A file whose disk is full: half of a write lands, then the OS says ENOSPC."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FillsUp:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._handle.close()


class _OsWithFullDisk:
    """``os`` as the atomic file writer sees it: the disk is full after ``room`` files."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.opened = 0

    def fdopen(self, fd: int, mode: str) -> Any:
        handle = os.fdopen(fd, mode)
        self.opened += 1
        return handle if self.opened <= self.room else _FillsUp(handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_a_full_disk_while_writing_a_checkpoint(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    reference: dict[str, dict[str, float]],
) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "full.sqlite"
    monkeypatch.setattr(_files, "os", _OsWithFullDisk(room=3))
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    checkpoints = store.with_name("full.checkpoints")
    _one_line_error(code, err, str(checkpoints))
    assert err.rstrip().endswith(".pt: cannot write checkpoint (No space left on device)")
    done = sum(row["status"] == "done" for row in store_rows(store))
    assert 0 < done < N
    _check_consistent(store, done)
    assert not any(name.endswith(".tmp") for name in _files_under(checkpoints))

    monkeypatch.undo()
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    assert f"{done} already done" in out
    _check_finished(store, reference)


def test_a_full_disk_while_writing_the_database(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    reference: dict[str, dict[str, float]],
) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "full.sqlite"
    opened = Store._open_for_writing

    def almost_full(self: Store) -> sqlite3.Connection:
        db = opened(self)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 3}")  # full after a few results
        return db

    monkeypatch.setattr(Store, "_open_for_writing", almost_full)
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    _one_line_error(code, err, f"{store}: cannot write to the store (database or disk is full)")
    done = sum(row["status"] == "done" for row in store_rows(store))
    assert 0 < done < N
    _check_consistent(store, done)

    monkeypatch.undo()
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    _check_finished(store, reference)


# -- read-only stores ---------------------------------------------------------------------------


@pytest.fixture
def read_only_study(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(sweep file, its finished store) in a folder whose files and itself are read-only."""
    folder = tmp_path / "study"
    folder.mkdir()
    sweep = write_sweep(folder, SWEEP)
    store = folder / "study.sqlite"
    run_sweep(load_sweep(sweep), store, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == STUDY_FILES
    for path in (store, sweep, folder):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield sweep, store
    finally:
        folder.chmod(0o755)
        store.chmod(0o644)


def _unprivileged(tmp_path: Path, folder: Path, *argv: str) -> tuple[int | None, str]:
    """Run the command in a process without privileges; (exit status, its output)."""
    log = tmp_path / f"command-{len(list(tmp_path.glob('*.log')))}.log"
    process = start_command(list(argv), folder, log, unprivileged=True)
    process.join(120)
    return process.exitcode, log.read_text()


def test_a_read_only_store_is_read_but_never_written(
    read_only_study: tuple[Path, Path], tmp_path: Path
) -> None:
    sweep, store = read_only_study
    folder = store.parent
    before = store.read_bytes()

    code, out = _unprivileged(tmp_path, folder, "status", str(store))
    assert code == 0, out
    assert f"{store}: {N} experiments" in out
    code, out = _unprivileged(tmp_path, folder, "fit", str(store), "--no-site-names")
    assert code == 0, out
    dry = ["run", str(sweep), "--store", str(store), "--dry-run"]
    code, out = _unprivileged(tmp_path, folder, *dry)
    assert code == 0, out
    assert f"{N} experiments: {N} already done" in out

    for argv in (["run", str(sweep), "--store", str(store)], ["retry", str(store), "--failed"]):
        code, out = _unprivileged(tmp_path, folder, *argv)
        assert code == 2, out
        assert out.count("\n") == 1, out
        assert out.startswith(f"walking-noise: error: {store}: cannot "), out
        assert "readonly database" in out, out

    code, out = _unprivileged(tmp_path, folder, "report", str(store))  # beside the store
    assert code == 2, out
    report = store.with_name(f"{store.stem}-report")
    assert out == f"walking-noise: error: {report}: cannot be written (Permission denied)\n"

    new = folder / "new.sqlite"
    code, out = _unprivileged(tmp_path, folder, "run", str(sweep), "--store", str(new))
    assert code == 2, out
    assert out.count("\n") == 1, out
    assert out.startswith(f"walking-noise: error: {new}: cannot open the store"), out
    assert not new.exists()
    assert store.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == STUDY_FILES


# -- missing folders and files ----------------------------------------------------------------


def test_missing_folders_of_a_new_store_are_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, SWEEP.split("noisy:")[0].replace("0.003, 0.01", "0.003"))
    store = tmp_path / "a" / "b" / "c" / "study.sqlite"
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    assert {row["status"] for row in store_rows(store)} == {"done"}


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "{missing}"],
        ["retry", "{missing}", "--failed"],
        ["fit", "{missing}"],
        ["report", "{missing}"],
    ],
)
def test_commands_on_a_missing_store_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    missing = tmp_path / "nowhere" / "study.sqlite"
    code, out, err = _run(capsys, *(a.format(missing=missing) for a in argv))
    _one_line_error(code, err, f"{missing}: no such store")
    assert out == ""
    assert not (tmp_path / "nowhere").exists()


def test_a_store_below_a_file_and_a_missing_sweep_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = blocker / "study.sqlite"
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(store))
    _one_line_error(code, err, f"{store}: cannot open the store")
    missing = tmp_path / "absent.yaml"
    code, _, err = _run(capsys, "run", str(missing), "--store", str(tmp_path / "s.sqlite"))
    _one_line_error(code, err, f"{missing}: no such sweep file")
    assert not (tmp_path / "s.sqlite").exists()


def test_a_missing_data_root_says_what_is_missing_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, SWEEP.replace("digits", "mnist"))
    root = tmp_path / "no-data"
    store = tmp_path / "s.sqlite"
    args = ["run", str(sweep), "--store", str(store), "--data-root", str(root)]
    code, _, err = _run(capsys, *args)
    _one_line_error(code, err, "dataset 'mnist': missing ")
    assert str(root) in err
    assert not store.exists()


def test_a_store_file_its_creator_left_empty_reads_as_empty_and_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between creating the file and its tables (or read in that instant)."""
    store = tmp_path / "study.sqlite"
    store.touch()
    code, out, err = _run(capsys, "status", str(store))
    assert code == 0, err
    assert f"{store}: 0 experiments" in out
    sweep = write_sweep(tmp_path, SWEEP.split("noisy:")[0].replace("0.003, 0.01", "0.003"))
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    assert {row["status"] for row in store_rows(store)} == {"done"}
    code, out, err = _run(capsys, "status", str(store))
    assert "study.sqlite: 4 experiments" in out
