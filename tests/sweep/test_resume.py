"""Kill -9 a running sweep, then resume it: every experiment done exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from walkingnoise.sweep import Store, load_results, load_sweep, run_sweep

from .helpers import MIXED_SWEEP, pragma, read_only, write_sweep

pytestmark = pytest.mark.slow

#: 30 noisy trainings in 10 cohorts (one per learning rate) of 3, so results arrive in steps.
SWEEP = """
name: resume
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:4"
  train_noise: true
  eval_repeats: 2
  recipe: {epochs: 3}
grid:
  recipe.lr: {type: linspace, min: 0.001, max: 0.01, num: 10}
  sigma: {type: choice, options: [0.1, 0.3, 1.0]}
"""
N = 30


def _started(counts: dict[str, int]) -> bool:
    return counts.get("done", 0) > 0 and counts.get("running", 0) > 0


def _counts(path: Path) -> dict[str, int]:
    try:
        db = read_only(path)
        try:
            rows = db.execute("SELECT status, COUNT(*) FROM experiments GROUP BY status")
            return dict(rows.fetchall())
        finally:
            db.close()
    except sqlite3.OperationalError:  # not created yet, or its tables not yet
        return {}


#: Runs a sweep on an open store, then kills itself as ``kill -9`` would: no connection closes.
RUN_THEN_KILL = """
import os, signal, sys
from walkingnoise.sweep import Store, load_sweep, run_sweep
with Store(sys.argv[2]) as store:
    run_sweep(load_sweep(sys.argv[1]), store, progress=False)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_results_are_in_the_store_file_moved_without_its_wal(
    tmp_path: Path,
) -> None:
    """A store moved as the README says (its .sqlite file and its checkpoint folder) after
    its run was killed keeps every finished result: the -wal file the killed run leaves
    behind holds none of them."""
    sweep = write_sweep(tmp_path, MIXED_SWEEP)
    store = tmp_path / "a.sqlite"
    killed = subprocess.run(
        [sys.executable, "-c", RUN_THEN_KILL, str(sweep), str(store)], capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert store.with_name("a.sqlite-wal").stat().st_size > 0  # what a killed run leaves
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    store.rename(moved / "b.sqlite")
    store.with_suffix(".checkpoints").rename(moved / "b.checkpoints")
    with Store(moved / "b.sqlite", read_only=True) as opened:
        assert opened.counts() == {"pending": 0, "running": 0, "done": 8, "failed": 0}
        assert opened.training_count() == 1
    summary = run_sweep(load_sweep(sweep), moved / "b.sqlite", progress=False)
    assert (summary.done_before, summary.ran) == (8, 0)


def test_kill_9_then_resume_gives_exactly_n_done_rows(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "resume.sqlite"
    command = [sys.executable, "-m", "walkingnoise.cli", "run", str(sweep), "--store", str(store)]
    log = (tmp_path / "run.log").open("wb")
    child = subprocess.Popen(
        [*command, "--no-progress"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            counts = _counts(store) if store.exists() else {}
            if counts.get("done", 0) > 0:
                break
            assert child.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, f"no experiment finished in time: {counts}"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    assert child.returncode == -signal.SIGKILL

    assert pragma(store, "integrity_check") == "ok"
    killed = _counts(store)
    assert sum(killed.values()) == N
    assert 0 < killed.get("done", 0) < N, killed
    assert killed.get("running", 0) > 0, killed  # claimed by the dead process
    with Store(store, create=False) as opened:
        stuck = {row["pid"] for row in opened.rows() if row["status"] == "running"}
    assert stuck == {child.pid}

    summary = run_sweep(load_sweep(sweep), store, progress=False)
    assert summary.done_before == killed["done"]
    assert summary.to_run == N - killed["done"]
    assert (summary.ran, summary.failed) == (N - killed["done"], 0)

    frame = load_results(store)
    assert len(frame) == N
    assert frame["hash"].nunique() == N
    assert set(frame["status"]) == {"done"}
    assert frame["noisy_test_accuracy"].notna().all()
    with Store(store, create=False) as opened:
        assert opened.counts() == {"pending": 0, "running": 0, "done": N, "failed": 0}
        attempts = sorted(row["attempts"] for row in opened.rows())
    # The experiments the killed run had claimed but not finished ran a second time.
    assert attempts.count(2) == killed["running"]
    assert attempts.count(1) == N - killed["running"]
    assert pragma(store, "integrity_check") == "ok"


@pytest.mark.parametrize(
    ("executor", "signum"),
    [
        ("inprocess", signal.SIGTERM),
        ("process", signal.SIGTERM),
        ("process", signal.SIGINT),  # Ctrl-C
        ("ray", signal.SIGTERM),
        ("ray", signal.SIGHUP),
    ],
)
def test_sigterm_puts_the_unfinished_experiments_back_and_exits_143(
    tmp_path: Path, executor: str, signum: signal.Signals
) -> None:
    """A batch system's time limit: the claims are released at once, not left to the next
    run's check for dead processes, and the pool's workers end with the sweep. Ray's own
    handlers (a stack dump and an abort) do not replace the command's."""
    if executor == "ray":
        pytest.importorskip("ray")
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "resume.sqlite"
    command = [sys.executable, "-m", "walkingnoise.cli", "run", str(sweep), "--store", str(store)]
    command += ["--no-progress", "--executor", executor]
    if executor != "inprocess":
        command += ["--workers", "2"]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    child = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        # a unit done, others running: the workers are inside their work, bars and all
        while not (store.exists() and _started(_counts(store))):
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "no experiment started in time"
            time.sleep(0.02)
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 128 + signum, stderr
    said = "interrupted" if signum == signal.SIGINT else f"terminated ({signum.name})"
    assert f"walking-noise: {said}" in stderr
    stopped = _counts(store)
    kept = f"{store}: {stopped.get('done', 0)} done, {stopped.get('pending', 0)} pending, 0 failed"
    assert f"{kept}; finished results are kept: run the same command again to go on" in stderr
    assert "Traceback" not in stderr
    assert "leaked" not in stderr  # no semaphore of an ended worker left to the tracker
    stopped = _counts(store)
    assert sum(stopped.values()) == N
    assert stopped.get("running", 0) == 0, stopped
    assert stopped.get("done", 0) < N
    assert pragma(store, "integrity_check") == "ok"
