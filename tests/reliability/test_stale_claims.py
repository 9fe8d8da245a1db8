"""Nothing stays ``running`` forever, and a killed write leaves no file behind for good.

A row claimed by a process that is gone goes back to ``pending`` on the next run, also when its
process id has since been given to another process (Linux reuses ids; 32768 of them by
default). Unfinished checkpoint files of killed processes are removed once no running
experiment can still be writing them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store
from walkingnoise.sweep.store import ORPHAN_TEMP_AGE, PID_REUSE_SLACK

from ..sweep.helpers import set_columns


def _experiments(n: int) -> list[Experiment]:
    return [
        Experiment(noise="additive", placement="walking:3", train_noise=True, sigma=0.1 * (i + 1))
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "study.sqlite") as opened:
        yield opened


@pytest.fixture
def later_process() -> Iterator[int]:
    """The id of a live process started just now."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times: Linux")
def test_a_claim_whose_process_id_now_belongs_to_a_later_process_is_requeued(
    store: Store, later_process: int
) -> None:
    experiments = _experiments(3)
    keys = [e.content_hash() for e in experiments]
    store.add((e, "a") for e in experiments)
    store.claim(keys)
    now = time.time()
    set_columns(store.path, keys[0], pid=later_process, started=now - 3600)  # id reused
    set_columns(store.path, keys[1], pid=later_process, started=now)  # its own claim
    # Clocks and /proc's boot time are coarse: a claim shortly before the start still counts.
    set_columns(store.path, keys[2], pid=later_process, started=now - PID_REUSE_SLACK / 2)
    assert store.requeue_stale() == 1
    assert store.statuses(keys) == {keys[0]: "pending", keys[1]: "running", keys[2]: "running"}


@pytest.fixture
def killed_unreaped() -> Iterator[int]:
    """The id of a process killed with SIGKILL that its parent has not waited for yet: a
    zombie, as a run is that a script killed (on a timeout) before it waits for it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    child.send_signal(signal.SIGKILL)
    state = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 30
    while state.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed process did not become a zombie"
        time.sleep(0.01)
    try:
        yield child.pid
    finally:
        child.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process states: Linux")
def test_a_claim_of_a_killed_process_its_parent_has_not_reaped_is_requeued(
    store: Store, killed_unreaped: int
) -> None:
    experiments = _experiments(2)
    keys = [e.content_hash() for e in experiments]
    store.add((e, "a") for e in experiments)
    store.claim(keys)
    set_columns(store.path, keys[0], pid=killed_unreaped, started=time.time())
    assert store.running_claims() == {keys[0]: "stale", keys[1]: "live"}
    assert store.requeue_stale() == 1
    assert store.statuses(keys) == {keys[0]: "pending", keys[1]: "running"}


def _temp(store: Store, key: str, age: float = 0.0) -> Path:
    path = store.checkpoint_dir / key[:2] / f".{key}.pt.x1y2z3.tmp"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a checkpoint")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_unfinished_checkpoint_files_go_when_nothing_runs(store: Store) -> None:
    experiments = _experiments(2)
    store.add((e, "a") for e in experiments)
    leftovers = [_temp(store, e.content_hash()) for e in experiments]
    finished = store.write_checkpoint(experiments[0].content_hash(), b"whole")
    store.requeue_stale()
    assert not any(path.exists() for path in leftovers)
    assert finished.read_bytes() == b"whole"


def test_unfinished_checkpoint_files_of_running_experiments_stay(store: Store) -> None:
    busy, idle, old = _experiments(3)
    store.add((e, "a") for e in (busy, idle, old))
    store.claim([busy.content_hash()])  # this live process is writing its checkpoint
    writing = _temp(store, busy.content_hash(), age=10 * ORPHAN_TEMP_AGE)
    young = _temp(store, idle.content_hash())
    orphan = _temp(store, old.content_hash(), age=2 * ORPHAN_TEMP_AGE)
    assert store.requeue_stale() == 0
    assert writing.exists()  # its experiment is running
    assert young.exists()  # too new to be sure nobody writes it
    assert not orphan.exists()
