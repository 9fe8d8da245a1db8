"""Running sweeps in-process: summaries, no duplicates, eval-only reuse, failures, dry runs."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import torch

from walkingnoise.cli import main
from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.sweep import Store, SweepError, SweepSummary, expand, load_results, run_sweep
from walkingnoise.sweep.executors import ProcessExecutor
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.sweep.runner import WorkDone
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.work import Outcome, UnitOutcome, oversubscription
from walkingnoise.training import evaluate_clean
from walkingnoise.training.checkpoint import load_checkpoint
from walkingnoise.training.memory import DEVICE_ENV

from .helpers import (
    MIXED_SWEEP,
    back_to_schema_1,
    columns,
    eval_only_spec,
    pragma,
    read_only,
    set_columns,
    spec,
)

METRICS = [
    "clean_validation_accuracy",
    "clean_test_accuracy",
    "clean_test_loss",
    "noisy_test_accuracy",
    "noisy_test_accuracy_std",
    "noisy_test_loss",
]

#: Training with batches of one sample cannot work with BatchNorm: PyTorch raises
#: "Expected more than 1 value per channel when training" on the first step. A genuine
#: failure inside the worker that the sweep's validation cannot see.
FAILING_SWEEP = """
name: failing
fixed:
  dataset: digits
  model: mlp
  noise: additive
  eval_repeats: 2
  recipe: {epochs: 1}
fine:
  grid:
    sigma: {type: choice, options: [0.1, 0.3]}
    train_noise: {type: choice, options: [true, false]}
broken:
  fixed:
    batchnorm: true
    recipe: {epochs: 1, batch_size: 1}
  grid:
    sigma: {type: choice, options: [0.2, 0.4]}
    train_noise: {type: choice, options: [true, false]}
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepSummary]:
    """A store with the mixed sweep run once, and that run's summary."""
    path = tmp_path_factory.mktemp("mixed") / "mixed.sqlite"
    summary = run_sweep(spec(MIXED_SWEEP), path, progress=False)
    return path, summary


def test_a_small_sweep_runs_every_experiment(mixed: tuple[Path, SweepSummary]) -> None:
    path, summary = mixed
    assert summary.experiments == 8
    assert (summary.done_before, summary.failed_before, summary.to_run) == (0, 0, 8)
    assert summary.trainings == 4 + 1  # four noisy trainings and one shared clean training
    assert summary.shared_trainings == 1
    assert (summary.ran, summary.failed) == (8, 0)
    assert summary.seconds > 0
    assert "8 experiments: 0 already done" in summary.describe()
    assert "ran 8 experiments (0 failed)" in summary.describe()

    frame = load_results(path)
    assert len(frame) == 8
    assert set(frame["status"]) == {"done"}
    assert frame["hash"].is_unique
    assert frame["error"].isna().all()
    for column in METRICS:
        assert frame[column].notna().all(), column
    assert frame["noisy_test_accuracy"].between(0, 1).all()
    assert (frame["clean_test_accuracy"] > 0.3).all()  # 2 epochs learn something on digits
    assert all(len(history) == 2 for history in frame["history"])
    assert (frame["seconds_evaluate"] > 0).all()
    with Store(path, create=False) as store:
        assert store.training_count() == 1
        assert store.sweeps() == {"mixed": MIXED_SWEEP}  # the sweep file is kept with its results
    assert pragma(path, "integrity_check") == "ok"


def test_a_run_whose_stderr_is_a_log_writes_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("walkingnoise.sweep.runner.LINE_INTERVAL", 0.0)  # a line per unit
    run_sweep(spec(MIXED_SWEEP), tmp_path / "log.sqlite")  # progress left to the terminal
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"mixed: running 8 experiments in \d+ units? of work \(.*\)", lines[0])
    counts = [
        re.match(r"mixed: (\d+) of 8 experiments run \(0 failed\)", line) for line in lines[1:]
    ]
    assert all(counts), lines
    done = [int(match.group(1)) for match in counts if match]
    assert done == sorted(done)
    assert done[-1] == 8

    run_sweep(spec(MIXED_SWEEP), tmp_path / "quiet.sqlite", progress=False)
    assert capsys.readouterr().err == ""


def test_running_again_runs_nothing_and_duplicates_nothing(
    mixed: tuple[Path, SweepSummary],
) -> None:
    path, _ = mixed
    before = load_results(path)
    with Store(path, create=False) as store:
        finished = {row["hash"]: row["finished"] for row in store.rows()}
    again = run_sweep(spec(MIXED_SWEEP), path, progress=False)
    assert (again.experiments, again.done_before, again.to_run) == (8, 8, 0)
    assert (again.trainings, again.shared_trainings, again.ran) == (0, 0, 0)
    after = load_results(path)
    assert len(after) == 8
    pd.testing.assert_series_equal(before["hash"], after["hash"])
    with Store(path, create=False) as store:
        rows = store.rows()
        assert store.training_count() == 1
    assert [row["attempts"] for row in rows] == [1] * 8
    assert {row["hash"]: row["finished"] for row in rows} == finished  # nothing was rewritten
    pd.testing.assert_frame_equal(before, after)


def test_noisy_trainings_have_their_own_checkpoints(mixed: tuple[Path, SweepSummary]) -> None:
    path, _ = mixed
    frame = load_results(path)
    noisy = frame[frame["train_noise"]]
    shared = frame[~frame["train_noise"]]
    assert len(noisy) == len(shared) == 4
    assert noisy["checkpoint"].is_unique
    assert set(noisy["training"]) == set(noisy["hash"])
    assert shared["checkpoint"].nunique() == 1
    assert shared["training"].nunique() == 1
    assert set(shared["checkpoint"]).isdisjoint(noisy["checkpoint"])
    test = load_dataset("digits").test
    for _, row in frame.iterrows():
        experiment, model = load_checkpoint(path.parent / row["checkpoint"])
        if row["train_noise"]:
            assert experiment.content_hash() == row["hash"]
        else:
            assert experiment.noise == "none"
            assert experiment.content_hash() == row["training"]
        # The checkpoint holds the very model the row's clean metrics came from.
        accuracy = evaluate_clean(model, test).accuracy
        assert accuracy == pytest.approx(row["clean_test_accuracy"], abs=1e-12)


def test_experiments_of_a_live_process_are_left_to_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    text = MIXED_SWEEP.replace("[0.1, 1.0]", "[0.1]").replace('"walking:5"', '"walking:6"')
    with Store(path) as store:
        store.add((e.experiment, e.block) for e in expand(spec(text), site_count=SiteCounter()))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with Store(path) as store:
            keys = [row["hash"] for row in store.rows()][:2]
            host = store.host
        for key in keys:  # another sweep, in process `other`, claimed two experiments
            set_columns(path, key, status="running", host=host, pid=other.pid)
        summary = run_sweep(spec(text), path, progress=False)
        assert (summary.to_run, summary.ran) == (2, 2)
        with Store(path) as store:
            assert store.counts() == {"pending": 0, "running": 2, "done": 2, "failed": 0}
    finally:
        other.kill()
        other.wait()
    summary = run_sweep(spec(text), path, progress=False)
    assert (summary.done_before, summary.to_run, summary.ran) == (2, 2, 2)
    with Store(path) as store:
        assert store.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}


def test_experiments_another_run_claims_after_the_plan_are_counted_as_its(
    tmp_path: Path,
) -> None:
    """Two runs started at one moment: the second plans every experiment as to run, then the
    first claims two before it does. A trigger on the store, fired when the second run keeps
    its sweep file (between its plan and its claims), makes that claim in SQLite itself."""
    path = tmp_path / "race.sqlite"
    text = MIXED_SWEEP.replace("[0.1, 1.0]", "[0.1]").replace('"walking:5"', '"walking:6"')
    with Store(path) as store:
        store.add((e.experiment, e.block) for e in expand(spec(text), site_count=SiteCounter()))
        keys = [row["hash"] for row in store.rows()][:2]
        host = store.host
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        claim = (
            f"UPDATE experiments SET status = 'running', host = '{host}', pid = {other.pid},"
            f" started = {time.time()} WHERE hash IN ('{keys[0]}', '{keys[1]}')"
        )
        with closing(sqlite3.connect(path)) as db, db:
            db.execute(
                "CREATE TRIGGER other_run AFTER INSERT ON meta"
                f" WHEN NEW.key LIKE 'sweep:%' BEGIN {claim}; END"
            )
        summary = run_sweep(spec(text), path, progress=False)
    finally:
        other.kill()
        other.wait()
    assert (summary.running_elsewhere, summary.to_run, summary.ran) == (2, 2, 2)
    assert "2 being run by another process (left to it), 2 to run" in summary.describe()
    with Store(path) as store:
        assert store.counts() == {"pending": 0, "running": 2, "done": 2, "failed": 0}


# -- inference-only experiments reuse one clean model -----------------------------------------


def test_eval_only_sweep_trains_one_clean_model_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "eval.sqlite"
    first = run_sweep(eval_only_spec([0.1, 0.5, 2.0]), path, progress=False)
    assert (first.experiments, first.ran, first.failed) == (6, 6, 0)
    assert (first.trainings, first.shared_trainings) == (1, 1)
    with Store(path, create=False) as store:
        assert store.training_count() == 1
        (training,) = {row["training"] for row in store.rows()}
        record = store.training(training)
    assert record is not None
    assert len(record.history) == 2
    # training and its clean/noisy evaluation are timed apart, as for noisy trainings
    assert set(record.timings) == {"train", "evaluate"}
    assert min(record.timings.values()) > 0
    frame = load_results(path)
    assert set(frame["training"]) == {record.hash}
    assert all(history == record.history for history in frame["history"])
    assert set(frame["checkpoint"]) == {str(record.checkpoint.relative_to(tmp_path))}
    # One clean model: its clean metrics are the same for every σ and placement.
    assert frame["clean_test_accuracy"].nunique() == 1
    assert frame["clean_test_accuracy"].iloc[0] == record.metrics["clean_test_accuracy"]
    # ... but the noise differs.
    assert frame["noisy_test_accuracy"].nunique() > 1

    # A new σ later: the clean model is found in the store, nothing is trained.
    bigger = eval_only_spec([0.1, 0.5, 2.0, 8.0])
    plan = run_sweep(bigger, path, dry_run=True)
    assert (plan.experiments, plan.done_before, plan.to_run) == (8, 6, 2)
    assert (plan.trainings, plan.shared_trainings) == (0, 0)
    assert "need 0 trainings" in plan.describe()
    assert len(load_results(path)) == 6  # a dry run registers nothing
    later = run_sweep(bigger, path, progress=False)
    assert (later.ran, later.failed, later.trainings) == (2, 0, 0)
    with Store(path, create=False) as store:
        assert store.training_count() == 1
    frame = load_results(path)
    assert len(frame) == 8
    assert set(frame["training"]) == {record.hash}
    assert all(history == record.history for history in frame["history"])

    # The model read back from the store is the model a fresh training gives.
    fresh_path = tmp_path / "fresh.sqlite"
    fresh = run_sweep(bigger, fresh_path, progress=False)
    assert fresh.trainings == 1
    reused = frame.set_index("hash").sort_index()
    trained = load_results(fresh_path).set_index("hash").sort_index()
    clean = [c for c in METRICS if c.startswith("clean_")]
    pd.testing.assert_frame_equal(reused[clean], trained[clean], check_exact=True)


def test_recording_a_unit_reads_its_clean_training_once_not_once_per_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # reading the training back (its row, config and history) for each of a unit's thousands
    # of inference-only experiments took a third of the driver's time at 100 epochs
    reads: list[str] = []
    read = Store.training

    def counted(store: Store, key: str) -> object:
        reads.append(key)
        return read(store, key)

    monkeypatch.setattr(Store, "training", counted)
    first = run_sweep(eval_only_spec([0.1, 0.5, 2.0, 8.0]), tmp_path / "a.sqlite", progress=False)
    assert (first.ran, first.failed, first.trainings) == (8, 0, 1)
    assert len(reads) <= 1  # the plan looks for a stored one; recording reads none
    reads.clear()
    later = run_sweep(eval_only_spec([0.1, 0.3, 3.0]), tmp_path / "a.sqlite", progress=False)
    assert (later.ran, later.failed, later.trainings) == (4, 0, 0)
    assert len(reads) <= 2  # the plan's, and once when the unit is recorded
    frame = load_results(tmp_path / "a.sqlite")
    assert frame["checkpoint"].nunique() == 1
    assert frame["history"].map(len).eq(2).all()


def test_a_units_results_are_written_in_one_transaction_its_shared_history_encoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a transaction and a JSON encoding of the clean model's history (~15 KB at 100 epochs)
    # for each inference-only experiment made the sweep's one recording process its bottleneck
    from walkingnoise.sweep import store as store_module

    histories: list[object] = []
    encode = store_module._json

    def counted(value: object) -> str | None:
        if isinstance(value, list):
            histories.append(value)
        return encode(value)

    monkeypatch.setattr(store_module, "_json", counted)
    commits = {}
    for sigmas in ([0.1, 0.5], [0.1, 0.5, 2.0, 8.0]):
        histories.clear()
        path = tmp_path / f"{len(sigmas)}.sqlite"
        with Store(path) as store:
            made: list[str] = []
            store._db.set_trace_callback(
                lambda statement, made=made: (
                    made.append(statement) if statement == "COMMIT" else None
                )
            )
            summary = run_sweep(eval_only_spec(sigmas), store, progress=False)
            store._db.set_trace_callback(None)
        assert (summary.ran, summary.failed, summary.trainings) == (2 * len(sigmas), 0, 1)
        assert len(histories) == 2  # the clean training's row, and once for all its experiments
        commits[len(sigmas)] = len(made)
        frame = load_results(path)
        assert frame["status"].eq("done").all()
        assert frame["history"].map(len).eq(2).all()
        assert frame["checkpoint"].nunique() == 1
    assert commits[4] == commits[2]  # twice the experiments in the unit, no more transactions


def test_deciding_what_is_left_hashes_each_experiment_a_bounded_number_of_times(
    mixed: tuple[Path, SweepSummary], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a hash is a JSON dump and a SHA-256 (~12 us): taken 7 times per experiment, it was most of
    # the 17 s that `run` spent on a store of 102,600 finished experiments before doing nothing
    from walkingnoise.sweep.runner import prepare

    path, _ = mixed
    entries = expand(spec(MIXED_SWEEP))
    hashed = []
    content_hash = Experiment.content_hash

    def counted(experiment: Experiment) -> str:
        hashed.append(experiment)
        return content_hash(experiment)

    monkeypatch.setattr(Experiment, "content_hash", counted)
    with Store(path) as store:
        work, summary = prepare(entries, store)
    assert (summary.experiments, summary.done_before, summary.to_run) == (8, 8, 0)
    assert not work.units
    assert len(hashed) <= 3 * len(entries)  # adding (its own and its training's), then once


def test_the_share_of_a_runs_work_done_weighs_experiments_by_what_their_kind_took() -> None:
    # a LeNet-5 sweep on the CPU: a clean model's unit of 100 inference-only experiments first,
    # then 100 trainings of one model each; counted by experiments, the first unit looked like
    # half of the run, and `run` said "about 34 s left" of 142 s
    base = Experiment(noise="additive", placement="walking:3", sigma=1.0, recipe={"epochs": 1})
    evaluated = [base.model_copy(update={"sigma": 0.01 * (i + 1)}) for i in range(100)]
    trained = [e.model_copy(update={"train_noise": True}) for e in evaluated]
    shared = WorkUnit(tuple(evaluated), base.clean_training())
    alone = [WorkUnit((e,)) for e in trained]
    work = WorkDone([shared, *alone])
    assert work.share() is None  # nothing measured yet
    clean = Outcome(base.clean_training(), timings={"train": 1.0, "evaluate": 0.1})
    members = [Outcome(e, timings={"evaluate": 0.01}) for e in evaluated]
    work.finished(shared, UnitOutcome(members, clean))
    # 2.1 s done; 100 trainings left, at what the clean one took until one of theirs is known
    assert work.share() == pytest.approx(2.1 / (2.1 + 100 * 1.1))
    work.finished(alone[0], UnitOutcome([Outcome(trained[0], timings={"train": 2.0})]))
    assert work.share() == pytest.approx(4.1 / (4.1 + 99 * 2.0))
    failed = Outcome(trained[1], error="Traceback …\nValueError: no")
    work.finished(alone[1], UnitOutcome([failed]))  # done, at no known cost
    assert work.share() == pytest.approx(4.1 / (4.1 + 98 * 2.0))


def test_without_a_measured_training_the_share_of_work_done_is_not_known() -> None:
    base = Experiment(noise="additive", placement="walking:3", sigma=1.0, recipe={"epochs": 1})
    evaluated = base.model_copy(update={"sigma": 0.5})
    trained = evaluated.model_copy(update={"train_noise": True})
    stored = WorkUnit((evaluated,), base.clean_training(), b"checkpoint")
    work = WorkDone([stored, WorkUnit((trained,))])
    work.finished(stored, UnitOutcome([Outcome(evaluated, timings={"evaluate": 0.01})]))
    assert work.share() is None  # a training is left and none was measured


# -- where experiments computed ---------------------------------------------------------------


def test_a_sweep_on_the_cpu_records_cpu_and_the_worker_host_for_every_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    path = tmp_path / "cpu.sqlite"
    summary = run_sweep(spec(MIXED_SWEEP), path, progress=False)
    assert (summary.ran, summary.failed, summary.shared_trainings) == (8, 0, 1)
    frame = load_results(path)
    assert set(frame["status"]) == {"done"}
    assert frame["device"].tolist() == ["cpu"] * 8
    assert frame["node"].tolist() == [socket.gethostname()] * 8
    with read_only(path) as db:
        trained = db.execute("SELECT device, node FROM trainings").fetchall()
    db.close()
    assert trained == [("cpu", socket.gethostname())]


def test_a_resumed_run_on_a_schema_1_store_records_the_device_of_its_new_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    path = tmp_path / "old.sqlite"
    run_sweep(eval_only_spec([0.1]), path, progress=False)
    back_to_schema_1(path)
    before = load_results(path).set_index("hash")
    assert before["device"].isna().all()

    later = run_sweep(eval_only_spec([0.1, 0.5]), path, progress=False)
    assert (later.done_before, later.ran, later.failed, later.trainings) == (2, 2, 0, 0)
    assert (
        columns(path, "experiments")[-2:] == columns(path, "trainings")[-2:] == ["device", "node"]
    )
    frame = load_results(path).set_index("hash")
    old, new = frame.loc[before.index], frame.drop(before.index)
    assert old[["device", "node"]].isna().all().all()
    pd.testing.assert_frame_equal(old[METRICS], before[METRICS])
    assert new["device"].tolist() == ["cpu", "cpu"]
    assert new["node"].tolist() == [socket.gethostname()] * 2


def _row(path: Path, **fields: object) -> pd.Series:
    frame = load_results(path)
    for name, value in fields.items():
        frame = frame[frame[name] == value]
    assert len(frame) == 1
    return frame.iloc[0]


def test_an_inference_only_result_does_not_depend_on_the_other_experiments(
    tmp_path: Path,
) -> None:
    """Evaluation noise is seeded per experiment (``Experiment.evaluation_seed``): the numbers
    of one experiment are the same whichever experiments share its clean model."""
    alone, together = tmp_path / "alone.sqlite", tmp_path / "together.sqlite"
    run_sweep(eval_only_spec([0.5]), alone, progress=False)
    run_sweep(eval_only_spec([0.1, 0.5, 2.0]), together, progress=False)
    for placement in ("walking:0", "walking:7"):
        one = _row(alone, sigma=0.5, placement=placement)
        other = _row(together, sigma=0.5, placement=placement)
        assert one["hash"] == other["hash"]
        assert one[METRICS].to_dict() == other[METRICS].to_dict(), placement


NOISY_SWEEP = """
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:3"
  train_noise: true
  eval_repeats: 2
  recipe: {epochs: 2}
grid:
  sigma: {type: choice, options: %s}
"""


def test_a_noisy_training_result_does_not_depend_on_its_cohort(tmp_path: Path) -> None:
    """An experiment's hash names one result: trained alone or with cohort mates (as after a
    resume, or when σ values are added later), it gives the same model and numbers."""
    alone, together = tmp_path / "alone.sqlite", tmp_path / "together.sqlite"
    run_sweep(spec(NOISY_SWEEP % [0.5]), alone, progress=False)
    run_sweep(spec(NOISY_SWEEP % [0.1, 0.5, 2.0]), together, progress=False)
    one, other = _row(alone, sigma=0.5), _row(together, sigma=0.5)
    assert one["hash"] == other["hash"]
    assert one["history"] == other["history"]
    assert one[METRICS].to_dict() == other[METRICS].to_dict()


def test_a_vanished_clean_checkpoint_is_trained_again(tmp_path: Path) -> None:
    path = tmp_path / "eval.sqlite"
    run_sweep(eval_only_spec([0.1]), path, progress=False)
    shutil.rmtree(tmp_path / "eval.checkpoints")
    plan = run_sweep(eval_only_spec([0.1, 0.2]), path, dry_run=True)
    assert (plan.to_run, plan.trainings) == (2, 1)


def test_a_damaged_clean_checkpoint_is_trained_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped bit that torch.load would read as a different weight: trained again."""
    path = tmp_path / "eval.sqlite"
    run_sweep(eval_only_spec([0.1]), path, progress=False)
    (checkpoint,) = (tmp_path / "eval.checkpoints").rglob("*.pt")
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x10
    checkpoint.write_bytes(bytes(data))
    plan = run_sweep(eval_only_spec([0.1, 0.2]), path, dry_run=True)
    assert plan.trainings == 1  # the dry run counts it as the run will
    with caplog.at_level(logging.WARNING, logger="walkingnoise.sweep.runner"):
        summary = run_sweep(eval_only_spec([0.1, 0.2]), path, progress=False)
    assert (summary.to_run, summary.trainings, summary.failed) == (2, 1, 0)
    assert "damaged checkpoint" in caplog.text
    assert "training that clean model again" in caplog.text
    assert checkpoint.read_bytes() != bytes(data)  # rewritten


# -- failures ----------------------------------------------------------------------------------


def test_a_failing_experiment_is_recorded_and_the_others_finish(tmp_path: Path) -> None:
    path = tmp_path / "failing.sqlite"
    summary = run_sweep(spec(FAILING_SWEEP), path, progress=False)
    assert (summary.experiments, summary.ran, summary.failed) == (8, 8, 4)
    frame = load_results(path)
    broken = frame[frame["block"] == "broken"]
    fine = frame[frame["block"] == "fine"]
    assert set(fine["status"]) == {"done"}
    assert fine["noisy_test_accuracy"].notna().all()
    assert set(broken["status"]) == {"failed"}
    for error in broken["error"]:
        assert error.startswith("Traceback (most recent call last):")
        assert "Expected more than 1 value per channel when training" in error
        assert "walkingnoise/training/loop.py" in error
    assert broken["noisy_test_accuracy"].isna().all()
    with Store(path, create=False) as store:
        assert store.training_count() == 1  # only the fine block's clean training

    # Failed experiments are not retried by a plain second run ...
    again = run_sweep(spec(FAILING_SWEEP), path, progress=False)
    assert (again.failed_before, again.to_run, again.ran) == (4, 0, 0)
    assert "4 failed before (use `retry`)" in again.describe()

    # ... but after `retry --failed` they run again (and fail again, the input being unusable).
    assert main(["retry", str(path), "--failed"]) == 0
    with Store(path, create=False) as store:
        assert store.counts() == {"pending": 4, "running": 0, "done": 4, "failed": 0}
    retried = run_sweep(spec(FAILING_SWEEP), path, progress=False)
    assert (retried.done_before, retried.to_run, retried.ran, retried.failed) == (4, 4, 4, 4)
    with Store(path, create=False) as store:
        attempts = {row["block"]: set() for row in store.rows()}
        for row in store.rows():
            attempts[row["block"]].add(row["attempts"])
    assert attempts == {"fine": {1}, "broken": {2}}
    assert len(load_results(path)) == 8


# -- dry runs and bad sweeps -------------------------------------------------------------------


def test_a_dry_run_creates_no_store(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "dry.sqlite"
    summary = run_sweep(spec(MIXED_SWEEP), path, dry_run=True)
    assert (summary.experiments, summary.to_run, summary.trainings) == (8, 8, 5)
    assert (summary.done_before, summary.ran, summary.failed) == (0, 0, 0)
    assert not path.parent.exists()


def test_a_dry_run_changes_nothing_in_an_existing_store(mixed: tuple[Path, SweepSummary]) -> None:
    path, _ = mixed
    before = load_results(path)
    bigger = spec(MIXED_SWEEP.replace("[0.1, 1.0]", "[0.1, 1.0, 3.0]"))
    summary = run_sweep(bigger, path, dry_run=True)
    assert (summary.experiments, summary.done_before, summary.to_run) == (12, 8, 4)
    assert (summary.trainings, summary.shared_trainings) == (2, 0)
    after = load_results(path)
    pd.testing.assert_frame_equal(before, after)
    with Store(path, create=False) as store:
        assert set(store.sweeps()) == {"mixed"}


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_bad_sweep_writes_nothing(tmp_path: Path, dry_run: bool) -> None:
    path = tmp_path / "sub" / "bad.sqlite"
    bad = spec(MIXED_SWEEP.replace('"walking:5"', '"walking:11"'))
    with pytest.raises(SweepError, match=r"^grid\.placement: site 11 is beyond"):
        run_sweep(bad, path, dry_run=dry_run, progress=False)
    assert not path.parent.exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WALKINGNOISE_THREADS", "two"),
        ("WALKINGNOISE_THREADS", "99999"),  # OpenMP ran out of memory making the threads
        ("WALKINGNOISE_MEMORY_BUDGET", "lots"),
        ("WALKINGNOISE_GPU_SHARE", "2"),
        ("WALKINGNOISE_DEVICE", "tpu"),
        pytest.param(
            "WALKINGNOISE_DEVICE",
            "cuda",
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="tests a machine without CUDA"
            ),
        ),
    ],
)
def test_a_bad_setting_in_the_environment_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Checked before the store is opened: otherwise every unit would fail, one by one."""
    monkeypatch.setenv(variable, value)
    path = tmp_path / "sub" / "env.sqlite"
    with pytest.raises(ValueError, match=f"^{variable}"):
        run_sweep(spec(MIXED_SWEEP), path, progress=False)
    assert not path.parent.exists()
    assert main(["quickstart", "--store", str(path), "--no-progress"]) == 2
    assert not path.parent.exists()


def test_more_threads_than_cores_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """WALKINGNOISE_THREADS times the workers beyond this machine's cores makes the threads
    take turns: the run goes ahead, with a warning that says so; within the cores, or at the
    default of one thread a worker, none."""
    cores = len(os.sched_getaffinity(0))
    path = tmp_path / "threads.sqlite"
    with caplog.at_level(logging.WARNING, logger="walkingnoise"):
        with ProcessExecutor(cores + 2) as executor:  # single-thread workers: units take turns
            run_sweep(spec(MIXED_SWEEP), path, executor=executor, dry_run=True)
        monkeypatch.setenv("WALKINGNOISE_THREADS", str(cores))
        run_sweep(spec(MIXED_SWEEP), path, dry_run=True)
    assert "threads on" not in caplog.text
    threads = max(2, cores)
    monkeypatch.setenv("WALKINGNOISE_THREADS", str(threads))
    with (
        caplog.at_level(logging.WARNING, logger="walkingnoise"),
        ProcessExecutor(2) as executor,
    ):
        run_sweep(spec(MIXED_SWEEP), path, executor=executor, dry_run=True)
    assert (
        f"WALKINGNOISE_THREADS={threads} × 2 worker process(es) = {2 * threads} threads "
        f"on {cores} core(s)" in caplog.text
    )


def test_oversubscription_counts_threads_of_side_by_side_units() -> None:
    assert oversubscription(1, 2, cores=2) is None
    assert oversubscription(1, 8, cores=2) is None
    assert oversubscription(2, 1, cores=2) is None
    assert oversubscription(2, 2, cores=2) is not None
    assert oversubscription(1000, 1, cores=16) is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests a machine without CUDA")
def test_a_dry_run_plans_for_gpus_from_a_machine_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WALKINGNOISE_DEVICE=cuda names the workers' device: a dry run plans for it here (a run
    that would compute here still refuses, as the test above checks)."""
    monkeypatch.setenv("WALKINGNOISE_DEVICE", "cuda")
    path = tmp_path / "sub" / "plan.sqlite"
    summary = run_sweep(spec(MIXED_SWEEP), path, dry_run=True)
    assert summary.to_run == summary.experiments > 0
    assert not path.parent.exists()


class _NotANumber(torch.nn.Module):
    """A classifier of the digits whose logits are NaN: its training loss is NaN at once."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


def test_run_and_status_count_the_experiments_whose_training_diverged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("nan_net")(lambda shape, classes, *, batchnorm: _NotANumber())
    text = """
fixed: {dataset: digits, model: nan_net, batchnorm: false, noise: additive,
        placement: "walking:1", eval_repeats: 1, recipe: {epochs: 1}}
grid:
  sigma: {type: choice, options: [0.1, 1.0]}
  train_noise: {type: choice, options: [true, false]}
"""
    store = tmp_path / "nan.sqlite"
    summary = run_sweep(spec(text), store, progress=False)
    assert (summary.ran, summary.failed, summary.diverged) == (4, 0, 4)
    assert "4 finished experiments diverged in training (the loss became NaN" in summary.describe()
    assert main(["status", str(store)]) == 0
    assert "  4 finished experiments diverged in training" in capsys.readouterr().out
    sweep = tmp_path / "nan.yaml"
    sweep.write_text(text)
    assert main(["run", str(sweep), "--store", str(store), "--no-progress"]) == 0
    assert "(4 done, 4 of them diverged, 0 failed in total)" in capsys.readouterr().out


def test_run_counts_the_diverged_students_of_its_second_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distillation students of a clean teacher run in a second pass, once it is stored:
    their diverged trainings count as the first pass's do."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("nan_net")(lambda shape, classes, *, batchnorm: _NotANumber())
    text = """
fixed: {dataset: digits, model: nan_net, batchnorm: false, noise: additive, sigma: 0.1,
        placement: "walking:1", eval_repeats: 1, recipe: {epochs: 1}}
inference_only:
  fixed: {train_noise: false}
students:
  fixed: {train_noise: true, distillation: {temperature: 4}}
"""
    summary = run_sweep(spec(text), tmp_path / "nan.sqlite", progress=False)
    assert (summary.deferred, summary.ran, summary.failed, summary.diverged) == (1, 2, 0, 2)


def test_a_model_its_workers_cannot_build_stops_the_run_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered here (as under a script's ``if __name__ == '__main__':``) but not in the
    spawned workers: one error, not every experiment failing one by one."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("here_only")(lambda shape, classes, *, batchnorm: _NotANumber())
    text = """
fixed: {dataset: digits, model: here_only, batchnorm: false, noise: additive, sigma: 0.5,
        placement: "walking:1", train_noise: false, eval_repeats: 1, recipe: {epochs: 1}}
"""
    store = tmp_path / "here.sqlite"
    with (
        ProcessExecutor(1) as executor,
        pytest.raises(SweepError, match=r"^model 'here_only': registered in this process but"),
    ):
        run_sweep(spec(text), store, executor=executor, progress=False)
    assert not store.exists()
