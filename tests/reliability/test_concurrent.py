"""Two sweeps on one store at once, and reads while a sweep writes.

Every experiment must run exactly once (its claim count is 1 and the runs' "ran" lines add up
to the number of distinct experiments), no run may fail with "database is locked", and
``status``, ``fit``, ``report`` and ``load_results`` must work on a store being written.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from walkingnoise.cli import main
from walkingnoise.sweep import Store, StoreError, load_results, load_sweep, run_sweep
from walkingnoise.sweep import store as store_module

from ..sweep.helpers import write_sweep
from .helpers import integrity, store_rows
from .launch import start_command

pytestmark = pytest.mark.slow

#: 36 noisy trainings (6 cohorts) and 36 inference-only experiments (18 clean models) per σ set.
SWEEP = """
name: {name}
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:4"
  eval_repeats: 1
  recipe: {{epochs: 1}}
grid:
  recipe.lr: {{type: linspace, min: 0.001, max: 0.01, num: 6}}
  sigma: {{type: choice, options: {sigmas}}}
  train_noise: {{type: choice, options: [true, false]}}
  seed: {{type: choice, options: [0, 1, 2]}}
"""


def _sweep(folder: Path, name: str, sigmas: list[float]) -> Path:
    return write_sweep(folder, SWEEP.format(name=name, sigmas=sigmas), f"{name}.yaml")


def _ran(log: Path) -> int:
    """The number of experiments a finished ``run`` says it ran (0 if it found nothing to do)."""
    text = log.read_text()
    found = re.search(r"^ran (\d+) experiments \(0 failed\)", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def _run_together(tmp_path: Path, sweeps: list[Path], store: Path) -> list[Path]:
    """Start ``walking-noise run`` on each sweep at once; wait; return their logs."""
    logs = [tmp_path / f"{sweep.stem}-{i}.log" for i, sweep in enumerate(sweeps)]
    processes = [
        start_command(["run", str(sweep), "--store", str(store), "--no-progress"], tmp_path, log)
        for sweep, log in zip(sweeps, logs, strict=True)
    ]
    for process in processes:
        process.join(300)
    for process, log in zip(processes, logs, strict=True):
        text = log.read_text()
        assert process.exitcode == 0, text
        assert "locked" not in text, text
        assert "Traceback" not in text, text
    return logs


def _check_once_each(store: Path, expected: int, logs: list[Path]) -> None:
    assert integrity(store) == "ok"
    rows = store_rows(store)
    assert len(rows) == expected
    assert {row["status"] for row in rows} == {"done"}
    assert [row["attempts"] for row in rows] == [1] * expected  # claimed, and run, once
    assert sum(_ran(log) for log in logs) == expected


def test_the_same_sweep_twice_at_once_runs_each_experiment_once(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, "same", [0.1, 1.0])
    store = tmp_path / "shared.sqlite"
    logs = _run_together(tmp_path, [sweep, sweep], store)
    _check_once_each(store, 72, logs)


def test_overlapping_sweeps_at_once_run_the_union_once(tmp_path: Path) -> None:
    first = _sweep(tmp_path, "first", [0.1, 0.3, 1.0])
    second = _sweep(tmp_path, "second", [1.0, 3.0])
    store = tmp_path / "shared.sqlite"
    logs = _run_together(tmp_path, [first, second], store)
    _check_once_each(store, 36 * 4, logs)
    with Store(store, read_only=True) as opened:
        assert set(opened.sweeps()) == {"first", "second"}


def test_status_fit_report_and_results_read_a_store_while_a_sweep_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = _sweep(tmp_path, "busy", [0.1, 0.3, 1.0, 3.0])
    store = tmp_path / "busy.sqlite"
    log = tmp_path / "busy.log"
    report = tmp_path / "report"
    command = ["run", str(sweep), "--store", str(store), "--no-progress"]
    writer = start_command(command, tmp_path, log)
    reads, reported = 0, False
    try:
        while writer.is_alive() and not store.exists():
            time.sleep(0.01)
        while writer.is_alive():
            assert main(["status", str(store)]) == 0, capsys.readouterr().err
            counts = dict(re.findall(r"^\s+(\w+)\s+(\d+)$", capsys.readouterr().out, re.M))
            assert len(load_results(store)) in (0, 144)  # registered all at once
            reads += 1
            if not reported and 0 < int(counts.get("done", 0)) < 144:  # results arriving
                args = ["report", str(store), "--out", str(report), "--no-site-names"]
                assert main(args) == 0, capsys.readouterr().err
                assert main(["fit", str(store), "--no-site-names"]) == 0
                capsys.readouterr()
                reported = True
    finally:
        writer.join(300)
    assert writer.exitcode == 0, log.read_text()
    assert reported, f"no partial store seen in {reads} reads"
    assert (report / "index.html").is_file()
    assert "locked" not in log.read_text()


def test_a_lock_held_for_seconds_is_waited_for(tmp_path: Path) -> None:
    """A writer that holds the database for 2 s only delays a sweep (busy timeout)."""
    sweep = load_sweep(_sweep(tmp_path, "wait", [0.1]))
    path = tmp_path / "wait.sqlite"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(2.0, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    try:
        summary = run_sweep(sweep, path, progress=False)
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - started >= 2.0
    assert (summary.ran, summary.failed) == (36, 0)


def test_a_lock_held_past_the_timeout_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the busy timeout the command stops with one line naming the store, exit 2."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 0.3)
    sweep = _sweep(tmp_path, "locked", [0.1])
    path = tmp_path / "locked.sqlite"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code = main(["run", str(sweep), "--store", str(path), "--no-progress"])
        err = capsys.readouterr().err
        with pytest.raises(StoreError, match="database is locked"):
            Store(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"walking-noise: error: {path}: cannot ")
    assert "database is locked" in err
    assert integrity(path) == "ok"
    assert store_rows(path) == []
