"""Twenty SIGKILLs at random moments, then a run to the end: every experiment done exactly once.

``walking-noise run`` is started in a new process and killed (SIGKILL: no clean-up runs) at a
random moment, twenty times in a row, then run once more to completion; with the in-process
executor, a process pool and a Ray cluster. A moment is either a random delay after the start
(start-up, registering, claiming, workers starting) or a random short while after a random
number of further results have been written (results arriving, being written, the next unit
starting), so the kills hit every phase however fast the machine is. The generator is seeded;
``WALKINGNOISE_KILL_SEED`` replays a failing sequence.

After every kill the store must be sound: ``PRAGMA integrity_check`` ok, all or none of the
experiments registered, nothing failed, ``running`` rows only of killed processes, and no
process of the killed command still alive. At the end: exactly the sweep's experiments, each
done once, with the numbers of an uninterrupted run, one checkpoint each and no stray files.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from walkingnoise.sweep import load_results
from walkingnoise.training.checkpoint import load_checkpoint

from ..sweep.helpers import write_sweep
from .helpers import (
    ACCURACIES,
    RAY_ENV,
    TAG,
    integrity,
    reference_accuracies,
    store_rows,
    tagged_processes,
    training_rows,
    wait_until_gone,
)
from .launch import start_command

pytestmark = pytest.mark.slow

KILLS = 20
#: 36 noisy trainings in 6 cohorts, and 36 inference-only experiments on 18 clean models.
SWEEP = """
name: kill
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:4"
  eval_repeats: 1
  recipe: {epochs: 1}
grid:
  recipe.lr: {type: linspace, min: 0.001, max: 0.01, num: 6}
  sigma: {type: choice, options: [0.1, 1.0]}
  train_noise: {type: choice, options: [true, false]}
  seed: {type: choice, options: [0, 1, 2]}
"""
N = 72
CLEAN_TRAININGS = 18
NOISY = 36
#: Share of the kills that wait for results (the others come at a delay after the start).
AFTER_RESULTS = {"inprocess": 0.6, "process": 0.25, "ray": 0.25}
#: Delays after the start (s), log-uniform from this to the executor's latest.
EARLIEST = 0.01
#: Latest delay after the start (s): past the claims, before much work is done.
LATEST = {"inprocess": 0.4, "process": 1.5, "ray": 1.5}
#: Longest extra wait after the results waited for (s).
JITTER = 0.2
#: A run that writes no result for this long (s) is stuck.
STALLED = 240.0
SEEDS = {"inprocess": 1, "process": 2, "ray": 3}


@dataclass(frozen=True)
class Moment:
    """When to kill: ``delay`` s after the start, or ``jitter`` s after ``results`` more."""

    delay: float = 0.0
    results: int = 0
    jitter: float = 0.0

    def __str__(self) -> str:
        if self.results:
            return f"{self.jitter:.3f} s after {self.results} more results"
        return f"{self.delay:.3f} s after the start"


@dataclass(frozen=True)
class Kill:
    """One kill: when, and what the store held afterwards."""

    moment: Moment
    exitcode: int | None
    done: int
    seconds: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """Hash → accuracies of the sweep run in this process without interruption."""
    return reference_accuracies(tmp_path_factory.mktemp("reference"), SWEEP, N)


def _moment(rng: random.Random, executor: str, remaining: int) -> Moment:
    """A random moment to kill a run that has ``remaining`` experiments left to do.

    Three draws each time, whatever the progress, so a seed gives the same draws in any run.
    """
    kind, first, second = rng.random(), rng.random(), rng.random()
    if remaining and kind < AFTER_RESULTS[executor]:
        results = 1 + int(first * max(1, remaining // 20))
        return Moment(results=results, jitter=second * JITTER)
    low, high = math.log(EARLIEST), math.log(LATEST[executor])
    return Moment(delay=math.exp(low + first * (high - low)))


def _done(store: Path) -> int:
    return sum(row["status"] == "done" for row in store_rows(store))


def _wait_for(process: BaseProcess, moment: Moment, store: Path, done: int) -> None:
    """Return at ``moment`` (or when the process has ended)."""
    if not moment.results:
        process.join(moment.delay)
        return
    last, since = done, time.monotonic()
    while process.is_alive():
        now = _done(store)
        if now >= done + moment.results:
            process.join(moment.jitter)
            return
        if now > last:
            last, since = now, time.monotonic()
        assert time.monotonic() - since < STALLED, f"no result for {STALLED} s"
        process.join(0.01)


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no output)"


def _check_after_kill(store: Path, killed: set[int], context: str) -> int:
    """The store after a kill: sound, all or nothing registered, claims only of the dead."""
    rows = store_rows(store)
    if store.exists():
        assert integrity(store) == "ok", context
    assert len(rows) in (0, N), f"{context}: {len(rows)} rows, a half registration"
    statuses = [row["status"] for row in rows]
    assert "failed" not in statuses, context
    holders = {row["pid"] for row in rows if row["status"] == "running"}
    assert holders <= killed, f"{context}: running rows of {holders - killed}, not killed"
    for row in rows:
        if row["status"] == "done":
            assert row["metrics"] is not None, context
            assert row["finished"] is not None, context
        if row["status"] == "pending":
            assert row["pid"] is None, context
    return statuses.count("done")


def _check_final(store: Path, reference: dict[str, dict[str, float]], context: str) -> None:
    assert integrity(store) == "ok", context
    rows = store_rows(store)
    assert len(rows) == N, context
    assert {row["hash"] for row in rows} == set(reference), context
    assert {row["status"] for row in rows} == {"done"}, context
    assert all(row["attempts"] >= 1 for row in rows), context

    frame = load_results(store).set_index("hash")
    for key, expected in reference.items():
        assert frame.loc[key, ACCURACIES].to_dict() == expected, f"{context}: {key}"

    trainings = training_rows(store)
    assert len(trainings) == CLEAN_TRAININGS, context
    noisy = [row for row in rows if row["training"] == row["hash"]]
    assert len(noisy) == NOISY, context
    expected_files = {row["checkpoint"] for row in noisy} | set(trainings.values())
    assert None not in expected_files, context
    folder = store.with_name(store.stem + ".checkpoints")
    files = {str(p.relative_to(store.parent)) for p in folder.rglob("*") if p.is_file()}
    assert files == expected_files, f"{context}: stray files {files ^ expected_files}"
    for name in sorted(expected_files):
        load_checkpoint(store.parent / name)


def _kill_and_resume(
    executor: str,
    options: list[str],
    tmp_path: Path,
    reference: dict[str, dict[str, float]],
    env: dict[str, str] | None = None,
) -> list[Kill]:
    seed = int(os.environ.get("WALKINGNOISE_KILL_SEED", SEEDS[executor]))
    rng = random.Random(seed)
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "kill.sqlite"
    log = tmp_path / "run.log"
    command = ["run", str(sweep), "--store", str(store), "--no-progress", *options]
    killed: set[int] = set()
    kills: list[Kill] = []
    done = 0
    for index in range(KILLS):
        moment = _moment(rng, executor, N - done)
        tag = uuid.uuid4().hex
        started = time.monotonic()
        process = start_command(command, tmp_path, log, {**(env or {}), TAG: tag})
        context = f"WALKINGNOISE_KILL_SEED={seed}, kill {index + 1} {moment} ({executor})"
        try:
            _wait_for(process, moment, store, done)
        finally:
            # The run may end on its own just before the kill: kill() then does nothing.
            process.kill()
            process.join(60)
        assert process.pid is not None
        killed.add(process.pid)
        context += f"; log:\n{_log_tail(log)}"
        assert process.exitcode in (-signal.SIGKILL, 0), context
        left = wait_until_gone(tag, timeout=20.0)
        assert not left, f"{context}\nprocesses of the killed command still alive: {left}"
        now = _check_after_kill(store, killed, context)
        assert now >= done, f"{context}: done went from {done} to {now}"
        done = now
        kills.append(Kill(moment, process.exitcode, done, time.monotonic() - started))

    tag = uuid.uuid4().hex
    final = start_command(command, tmp_path, log, {**(env or {}), TAG: tag})
    final.join(300)
    context = f"WALKINGNOISE_KILL_SEED={seed}, final run ({executor}); log:\n{_log_tail(log)}"
    assert final.exitcode == 0, context
    assert not wait_until_gone(tag, timeout=20.0), context
    _check_final(store, reference, context)
    return kills


def _report(executor: str, kills: list[Kill]) -> None:
    interrupted = sum(kill.exitcode == -signal.SIGKILL for kill in kills)
    during_results = sum(0 < kill.done < N for kill in kills)
    print(
        f"\n{executor}: {interrupted} of {len(kills)} runs killed, {during_results} with the "
        f"sweep partly done; done after each kill: {[kill.done for kill in kills]}; seconds "
        f"per kill: {[round(kill.seconds, 1) for kill in kills]}"
    )


def test_kill_in_process_twenty_times_then_resume(
    tmp_path: Path, reference: dict[str, dict[str, float]]
) -> None:
    kills = _kill_and_resume("inprocess", [], tmp_path, reference)
    _report("inprocess", kills)


def test_kill_with_a_process_pool_twenty_times_then_resume(
    tmp_path: Path, reference: dict[str, dict[str, float]]
) -> None:
    options = ["--executor", "process", "--workers", "2"]
    kills = _kill_and_resume("process", options, tmp_path, reference)
    _report("process", kills)


def test_kill_a_ray_driver_twenty_times_then_resume(
    tmp_path: Path, reference: dict[str, dict[str, float]], ray_address: str
) -> None:
    options = ["--executor", "ray", "--ray-address", ray_address]
    kills = _kill_and_resume("ray", options, tmp_path, reference, RAY_ENV)
    _report("ray", kills)


def test_the_orphan_check_sees_a_tagged_process_and_its_end() -> None:
    """The check above can fail: it finds a live process by its tag, and sees it end."""
    tag = uuid.uuid4().hex
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, TAG: tag}
    )
    try:
        deadline = time.monotonic() + 30
        while not tagged_processes(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tagged_processes(tag) == [child.pid]
        assert wait_until_gone(tag, timeout=0.2) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert wait_until_gone(tag, timeout=10.0) == []
