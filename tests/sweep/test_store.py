"""The SQLite store: round trip, dedupe, claims, stale rows, failures, checkpoints, hashes."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from walkingnoise.data import load_dataset
from walkingnoise.experiment import STORED, Experiment
from walkingnoise.sweep import Store, StoreError, expand, load_results
from walkingnoise.sweep.store import distinct_errors
from walkingnoise.training.checkpoint import checkpoint_bytes, read_checkpoint
from walkingnoise.training.run import build_noisy_model

from .helpers import columns, pragma, read_only, schema_1_store, set_columns, spec


def _experiments(n: int, **fields: object) -> list[Experiment]:
    base = {"noise": "additive", "placement": "walking:3", "train_noise": True} | fields
    return [Experiment(**base, sigma=0.1 * (i + 1)) for i in range(n)]


def _hashes(experiments: list[Experiment]) -> list[str]:
    return [e.content_hash() for e in experiments]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "study.sqlite") as opened:
        yield opened


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- round trip and dedupe --------------------------------------------------------------------


def test_experiments_stored_before_a_check_was_added_still_read(store: Store) -> None:
    # a ratio beside a pair of σ is refused now; stores written before keep such experiments
    written = Experiment.model_validate(
        {"noise": "mixed", "ratio": 0.25, "sigma": [0.1, 0.2], "placement": "walking:3"},
        context=STORED,
    )
    store.add([(written, "a")])
    (read,) = store.experiments()
    assert read == written
    assert read.content_hash() == written.content_hash()


def test_round_trip_through_rows_and_load_results(store: Store) -> None:
    first, second = _experiments(2, recipe={"epochs": 3})
    assert store.add([(first, "a"), (second, "b")]) == 2
    assert store.claim([first.content_hash()]) == [first.content_hash()]
    checkpoint = store.write_checkpoint(first.content_hash(), b"weights")
    metrics = {"noisy_test_accuracy": 0.75, "clean_test_accuracy": 0.9}
    history = [{"epoch": 0, "train_loss": 1.5, "val_accuracy": 0.5}]
    weights = {"layers.1": {"mean_abs": 0.25}}
    store.finish(
        first.content_hash(),
        metrics=metrics,
        history=history,
        weights=weights,
        timings={"train": 1.25, "evaluate": 0.5},
        diverged=False,
        checkpoint=checkpoint,
    )

    rows = {row["hash"]: row for row in store.rows()}
    row = rows[first.content_hash()]
    assert row["status"] == "done"
    assert row["block"] == "a"
    assert row["metrics"] == metrics
    assert row["history"] == history
    assert row["weights"] == weights
    assert row["timings"] == {"train": 1.25, "evaluate": 0.5}
    assert row["pid"] is None
    assert row["attempts"] == 1
    # the stored config is the canonical one: additive noise keeps the gradient rule it always
    # had (either rule is one computation), the rest as given
    assert Experiment.model_validate(row["config"]) == first.model_copy(
        update={"gradient": "forward_only"}
    )
    assert store.checkpoint_path(first.content_hash()) == checkpoint
    assert rows[second.content_hash()]["status"] == "pending"
    assert rows[second.content_hash()]["metrics"] is None
    assert store.checkpoint_path(second.content_hash()) is None

    frame = load_results(store.path).set_index("hash")
    done = frame.loc[first.content_hash()]
    assert done["status"] == "done"
    assert done["recipe.epochs"] == 3
    assert done["recipe.batch_size"] == 128
    assert done["sigma"] == pytest.approx(0.1)
    assert done["placement"] == "walking:3"
    assert bool(done["train_noise"]) is True
    assert done["noisy_test_accuracy"] == 0.75
    assert done["seconds_train"] == 1.25
    assert done["seconds_evaluate"] == 0.5
    assert not done["diverged"]
    assert done["history"] == history
    assert done["weights"] == weights
    assert done["training"] == first.content_hash()
    assert frame.loc[second.content_hash(), "status"] == "pending"
    # The same frame from an open store.
    assert len(load_results(store)) == 2


def test_load_results_of_an_empty_store(store: Store) -> None:
    frame = load_results(store)
    assert frame.empty
    assert {"hash", "status", "block"} <= set(frame.columns)


def test_add_is_idempotent_and_returns_the_number_new(store: Store) -> None:
    experiments = _experiments(3)
    assert store.add((e, "a") for e in experiments[:2]) == 2
    assert store.add((e, "b") for e in experiments) == 1
    assert store.add((e, "c") for e in experiments) == 0
    rows = store.rows()
    assert len(rows) == 3
    assert [row["block"] for row in rows] == ["a", "a", "b"]  # the first block stays


def test_add_keeps_the_status_of_existing_rows(store: Store) -> None:
    (experiment,) = _experiments(1)
    store.add([(experiment, "a")])
    store.claim([experiment.content_hash()])
    store.fail(experiment.content_hash(), "Traceback: boom")
    assert store.add([(experiment, "a")]) == 0
    assert store.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 1}


def test_inference_only_rows_point_at_their_clean_training(store: Store) -> None:
    clean = Experiment(noise="additive", sigma=0.5, placement="walking:1", train_noise=False)
    noisy = Experiment(noise="additive", sigma=0.5, placement="walking:1", train_noise=True)
    store.add([(clean, "a"), (noisy, "a")])
    training = {row["hash"]: row["training"] for row in store.rows()}
    assert training[clean.content_hash()] == clean.clean_training().content_hash()
    assert training[noisy.content_hash()] == noisy.content_hash()


# -- claims --------------------------------------------------------------------------------------


def test_claim_is_exclusive_between_two_stores_on_one_file(tmp_path: Path) -> None:
    experiments = _experiments(3)
    keys = _hashes(experiments)
    with Store(tmp_path / "s.sqlite") as one, Store(tmp_path / "s.sqlite") as two:
        one.add((e, "a") for e in experiments)
        assert one.claim(keys[:2]) == keys[:2]
        assert two.claim(keys) == [keys[2]]
        assert two.claim(keys) == []
        assert one.counts() == {"pending": 0, "running": 3, "done": 0, "failed": 0}
        assert two.counts(keys[:1]) == {"pending": 0, "running": 1, "done": 0, "failed": 0}


def test_release_puts_own_claims_back_to_pending(store: Store) -> None:
    experiments = _experiments(3)
    keys = _hashes(experiments)
    store.add((e, "a") for e in experiments)
    store.claim(keys)
    set_columns(store.path, keys[2], pid=os.getpid() + 1_000_000)  # claimed by another process
    store.release(keys)
    assert store.statuses(keys) == {keys[0]: "pending", keys[1]: "pending", keys[2]: "running"}
    assert store.claim(keys) == keys[:2]
    rows = {row["hash"]: row for row in store.rows()}
    assert rows[keys[0]]["attempts"] == 2


def test_requeue_stale_resets_rows_of_dead_processes_only(store: Store) -> None:
    experiments = _experiments(4)
    keys = _hashes(experiments)
    store.add((e, "a") for e in experiments)
    store.claim(keys)
    dead = _dead_pid()
    set_columns(store.path, keys[0], pid=dead)
    set_columns(store.path, keys[1], pid=os.getpid())  # alive: this process
    set_columns(store.path, keys[2], pid=dead, host=socket.gethostname() + "-elsewhere")
    set_columns(store.path, keys[3], pid=None)
    assert store.requeue_stale() == 2
    assert store.statuses(keys) == {
        keys[0]: "pending",
        keys[1]: "running",
        keys[2]: "running",  # another host: its processes cannot be checked from here
        keys[3]: "pending",
    }
    assert store.requeue_stale() == 0


def test_running_claims_tell_live_dead_and_other_hosts_apart_without_writing(
    store: Store,
) -> None:
    experiments = _experiments(3)
    keys = _hashes(experiments)
    store.add((e, "a") for e in experiments)
    store.claim(keys)
    set_columns(store.path, keys[0], pid=_dead_pid())
    set_columns(store.path, keys[2], host=socket.gethostname() + "-elsewhere")
    claims = {keys[0]: "stale", keys[1]: "live", keys[2]: "elsewhere"}
    assert store.running_claims() == claims
    assert store.counts()["running"] == 3  # only looked at
    with Store(store.path, read_only=True) as reader:
        assert reader.running_claims() == claims


def test_requeue_stale_after_a_claim_from_a_process_that_exited(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    experiments = _experiments(2)
    keys = _hashes(experiments)
    with Store(path) as store:
        store.add((e, "a") for e in experiments)
    code = (
        "import sys; from walkingnoise.sweep import Store\n"
        "s = Store(sys.argv[1]); print(len(s.claim([sys.argv[2]]))); s.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), keys[0]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "1"
    with Store(path) as store:
        assert store.statuses(keys) == {keys[0]: "running", keys[1]: "pending"}
        assert store.claim(keys) == [keys[1]]
        assert store.requeue_stale() == 1
        assert store.statuses(keys) == {keys[0]: "pending", keys[1]: "running"}


# -- failures --------------------------------------------------------------------------------


def test_fail_stores_the_traceback_and_retry_failed_resets_it(store: Store) -> None:
    experiments = _experiments(3)
    keys = _hashes(experiments)
    store.add((e, "a") for e in experiments)
    store.claim(keys)
    text = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'
    store.fail(keys[0], text)
    store.fail(keys[1], text)
    rows = {row["hash"]: row for row in store.rows()}
    assert rows[keys[0]]["status"] == "failed"
    assert rows[keys[0]]["error"] == text
    assert rows[keys[0]]["pid"] is None
    assert load_results(store).set_index("hash").loc[keys[1], "error"] == text

    assert store.retry_failed() == 2
    assert store.statuses(keys) == {keys[0]: "pending", keys[1]: "pending", keys[2]: "running"}
    assert all(row["error"] is None for row in store.rows())
    assert store.retry_failed() == 0


def test_finish_after_a_failure_clears_the_error(store: Store) -> None:
    (experiment,) = _experiments(1)
    key = experiment.content_hash()
    store.add([(experiment, "a")])
    store.claim([key])
    store.fail(key, "boom")
    store.retry_failed()
    store.claim([key])
    store.finish(
        key, metrics={}, history=[], weights={}, timings={}, diverged=True, checkpoint=None
    )
    (row,) = store.rows()
    assert (row["status"], row["error"], row["diverged"], row["attempts"]) == ("done", None, 1, 2)


# -- the database and its files ---------------------------------------------------------------


def test_database_is_in_wal_mode_and_consistent(store: Store) -> None:
    store.add((e, "a") for e in _experiments(5))
    assert pragma(store.path, "journal_mode") == "wal"
    assert pragma(store.path, "integrity_check") == "ok"


def test_opening_a_missing_store_without_create(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "absent.sqlite"
    with pytest.raises(StoreError, match=r"absent\.sqlite: no such store") as caught:
        Store(path, create=False)
    assert str(path) in str(caught.value)
    assert not path.exists()
    with pytest.raises(StoreError, match="no such store"):
        load_results(path)


@pytest.mark.parametrize("options", [{}, {"create": False}, {"read_only": True}])
def test_a_directory_given_as_the_store_says_so(tmp_path: Path, options: dict) -> None:
    """``run`` said "unable to open database file", the readers "no such store"."""
    with pytest.raises(StoreError, match=r"is a directory; give the store's file \(\.sqlite\)"):
        Store(tmp_path, **options)


@pytest.mark.parametrize("options", [{}, {"read_only": True}])
def test_a_sweep_file_given_as_the_store_says_so_and_stays(tmp_path: Path, options: dict) -> None:
    """``fit study.yaml`` said only "file is not a database"; the file is left as it was."""
    sweep = tmp_path / "study.yaml"
    sweep.write_text("name: study\nfixed: {dataset: digits}\n")
    with pytest.raises(StoreError, match=r"study\.yaml: cannot open .* a sweep file\?") as caught:
        Store(sweep, **options)
    assert "\n" not in str(caught.value)
    assert sweep.read_text() == "name: study\nfixed: {dataset: digits}\n"


def test_a_store_that_cannot_be_created_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the store") as caught:
        Store(blocker / "study.sqlite")
    assert str(caught.value).startswith(str(blocker / "study.sqlite"))


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are notes, not SQLite " * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(path)


def test_another_programs_database_is_left_as_it_is(tmp_path: Path) -> None:
    """A store on an SQLite file of something else is refused before anything is written:
    no tables added, no WAL mode, no checkpoint folder."""
    path = tmp_path / "notes.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"database of something else \(tables notes\)") as caught:
        Store(path)
    assert str(caught.value).startswith(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]
    Store(tmp_path / "study.sqlite").close()  # a store, and an empty file, still open
    Store(tmp_path / "study.sqlite").close()
    (tmp_path / "empty.sqlite").touch()
    Store(tmp_path / "empty.sqlite").close()


@pytest.fixture(scope="module")
def checkpoint() -> tuple[Experiment, bytes]:
    dataset = load_dataset("digits")
    experiment = Experiment(noise="additive", sigma=0.2, placement="walking:2", train_noise=True)
    model = build_noisy_model(experiment, dataset)
    return experiment, checkpoint_bytes(model, experiment, dataset)


def test_checkpoints_are_written_beside_the_store_and_load_safely(
    store: Store, checkpoint: tuple[Experiment, bytes]
) -> None:
    experiment, data = checkpoint
    key = experiment.content_hash()
    path = store.write_checkpoint(key, data)
    assert path == store.path.parent / "study.checkpoints" / key[:2] / f"{key}.pt"
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    payload = torch.load(path, weights_only=True)
    assert payload["experiment"] == experiment.model_dump(mode="json")
    assert set(payload["state_dict"]) == set(
        build_noisy_model(experiment, load_dataset("digits")).source.state_dict()
    )
    loaded, _model = read_checkpoint(path.read_bytes())
    assert loaded == experiment


def test_rewriting_a_checkpoint_replaces_the_file_whole(store: Store) -> None:
    key = "ab" + "0" * 62
    path = store.write_checkpoint(key, b"old" * 1000)
    with path.open("rb") as reader:  # a reader that opened the old file ...
        store.write_checkpoint(key, b"new")
        assert reader.read() == b"old" * 1000  # ... still reads all of it: a rename, not a rewrite
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_checkpoint_that_cannot_be_written_is_a_store_error(store: Store) -> None:
    store.checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
    store.checkpoint_dir.write_text("a file where the folder should be")
    with pytest.raises(StoreError, match="cannot write checkpoint"):
        store.write_checkpoint("cd" + "1" * 62, b"data")


def test_a_clean_training_whose_checkpoint_vanished_is_not_found(store: Store) -> None:
    training = Experiment(noise="none", recipe={"epochs": 2})
    record = store.save_training(
        training,
        b"bytes",
        history=[{"epoch": 0}],
        weights={},
        metrics={},
        timings={"train": 1.5},
        diverged=False,
    )
    assert store.training_count() == 1
    found = store.training(training.content_hash())
    assert found is not None
    assert found.checkpoint == record.checkpoint
    assert found.history == [{"epoch": 0}]
    assert found.timings == record.timings == {"train": 1.5}
    assert found.experiment == training
    record.checkpoint.unlink()
    assert store.training(training.content_hash()) is None
    assert store.training("f" * 64) is None


def _stored_pair(folder: Path) -> tuple[Path, str, str]:
    """A store with a finished experiment's checkpoint and a clean training's: (path, the
    experiment's hash, the training's hash)."""
    path = folder / "study.sqlite"
    experiment, training = Experiment(sigma=0.5), Experiment(noise="none", recipe={"epochs": 2})
    key = experiment.content_hash()
    with Store(path) as store:
        store.add([(experiment, "")])
        _finish(store, key, checkpoint=store.write_checkpoint(key, b"noisy"))
        store.save_training(
            training, b"clean", history=[], weights={}, metrics={}, timings={}, diverged=False
        )
    return path, key, training.content_hash()


def test_a_store_renamed_with_its_checkpoint_folder_finds_its_checkpoints(tmp_path: Path) -> None:
    path, key, training = _stored_pair(tmp_path)
    renamed = path.with_name("study-v1.sqlite")
    path.rename(renamed)
    path.with_suffix(".checkpoints").rename(renamed.with_suffix(".checkpoints"))
    with Store(renamed, create=False) as store:
        found = store.checkpoint_path(key)
        assert found is not None
        assert found.read_bytes() == b"noisy"
        record = store.training(training)
        assert record is not None
        assert record.checkpoint.read_bytes() == b"clean"


def test_a_copied_store_reads_its_own_checkpoints_and_the_original_s_where_it_has_none(
    tmp_path: Path,
) -> None:
    path, key, training = _stored_pair(tmp_path)
    copy = path.with_name("copy.sqlite")
    copy.write_bytes(path.read_bytes())
    with Store(copy, create=False) as store:  # no folder of its own: the original's files
        assert store.training(training) is not None
        own = store.checkpoint_dir / key[:2] / f"{key}.pt"
        own.parent.mkdir(parents=True)
        own.write_bytes(b"own")
        assert store.checkpoint_path(key) == own  # its own folder first


def test_a_damaged_row_is_a_store_error_naming_the_experiment(tmp_path: Path) -> None:
    path, key, _ = _stored_pair(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET config = '{not json' WHERE hash = ?", (key,))
    db.close()
    with pytest.raises(StoreError, match=f"experiment {key[:12]}'s config is not valid JSON"):
        load_results(path)


@pytest.mark.parametrize("column", ["history", "weights"])
def test_load_results_without_a_column_neither_reads_nor_decodes_it(
    tmp_path: Path, column: str
) -> None:
    # the per-epoch history is most of a large store (100 epochs: ~13 KB a row), the weight
    # statistics half of a row without it, and only `weights` needs them: a damaged one shows
    # that a column left out is not even decoded
    path, key, _ = _stored_pair(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE experiments SET {column} = '[{{not json' WHERE hash = ?", (key,))
    db.close()
    with pytest.raises(StoreError, match=f"{column} is not valid JSON"):
        load_results(path)
    frame = load_results(path, **{column: False})
    assert column not in frame.columns
    assert frame.loc[0, "hash"] == key
    assert frame.loc[0, "status"] == "done"
    other = "weights" if column == "history" else "history"
    assert other in frame.columns
    with Store(path, read_only=True) as store:
        assert column not in store.rows(**{column: False})[0]


def test_two_sweep_files_of_one_name_are_both_kept_and_an_edited_one_replaced(
    store: Store,
) -> None:
    store.save_sweep("study", "first: 1", "/runs/a.yaml")
    store.save_sweep("study", "second: 2", "/runs/b.yaml")
    store.save_sweep("other", "other: 1", "/runs/c.yaml")
    assert store.sweeps() == {
        "study (/runs/a.yaml)": "first: 1",
        "study (/runs/b.yaml)": "second: 2",
        "other": "other: 1",  # a name of one file is shown as it is
    }
    store.save_sweep("study", "first: 3", "/runs/a.yaml")  # the file edited and run again
    assert store.sweeps()["study (/runs/a.yaml)"] == "first: 3"
    assert len(store.sweeps()) == 3


# -- where experiments computed, and stores made before that was recorded ---------------------


def _finish(store: Store, key: str, checkpoint: Path | None = None, **where: str | None) -> None:
    store.claim([key])
    store.finish(
        key,
        metrics={},
        history=[],
        weights={},
        timings={},
        diverged=False,
        checkpoint=checkpoint,
        **where,
    )


def test_finish_and_save_training_record_the_device_and_node(store: Store) -> None:
    first, second, third = _experiments(3)
    store.add((e, "a") for e in (first, second, third))
    _finish(store, first.content_hash(), device="cpu", node="worker-1")
    _finish(store, second.content_hash(), device="cuda:1 (NVIDIA H100 80GB HBM3)", node="gpu-7")
    training = Experiment(noise="none", recipe={"epochs": 2})
    store.save_training(
        training, b"bytes", history=[], weights={}, metrics={}, timings={}, diverged=False,
        device="cuda:0 (NVIDIA H100 80GB HBM3)", node="gpu-7",
    )  # fmt: skip

    frame = load_results(store).set_index("hash")
    assert frame.loc[first.content_hash(), ["device", "node"]].tolist() == ["cpu", "worker-1"]
    assert frame.loc[second.content_hash(), "device"] == "cuda:1 (NVIDIA H100 80GB HBM3)"
    assert frame.loc[second.content_hash(), "node"] == "gpu-7"
    assert frame.loc[third.content_hash(), ["device", "node"]].isna().all()  # still pending
    assert set(frame["host"].dropna()) == {store.host}  # the recording process's, apart
    with read_only(store.path) as db:
        trained = db.execute("SELECT device, node FROM trainings").fetchall()
    db.close()
    assert trained == [("cuda:0 (NVIDIA H100 80GB HBM3)", "gpu-7")]
    assert store.devices() == {"cpu": 1, "cuda:1 (NVIDIA H100 80GB HBM3)": 1}
    assert store.devices([first.content_hash(), third.content_hash()]) == {"cpu": 1}


def _schema_1_rows(path: Path) -> tuple[Experiment, Experiment, Experiment]:
    """A store of schema 1 holding a finished and a pending experiment and a clean training,
    as an older walkingnoise wrote them."""
    done, pending = _experiments(2)
    training = Experiment(noise="none", recipe={"epochs": 2})
    schema_1_store(path)
    db = sqlite3.connect(path)
    rows = [(done, "done", '{"noisy_test_accuracy": 0.5}'), (pending, "pending", None)]
    for experiment, status, metrics in rows:
        db.execute(
            "INSERT INTO experiments (hash, config, training, status, metrics, host, created)"
            " VALUES (?, ?, ?, ?, ?, 'old-host', 0)",
            (experiment.content_hash(), experiment.canonical_json(), "t", status, metrics),
        )
    db.execute(
        "INSERT INTO trainings VALUES (?, ?, 'ckpt.pt', '[]', '{}', '{}', '{}', 0, 'old-host',"
        " '0.1.0', 0)",
        (training.content_hash(), training.canonical_json()),
    )
    db.commit()
    db.close()
    return done, pending, training


def test_a_store_of_schema_1_reads_its_devices_as_missing_without_changing(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    done, _, _ = _schema_1_rows(path)
    before = path.read_bytes()
    frame = load_results(path).set_index("hash")
    assert {"device", "node"} <= set(frame.columns)
    assert frame[["device", "node"]].isna().all().all()
    assert frame.loc[done.content_hash(), "noisy_test_accuracy"] == 0.5
    with Store(path, read_only=True) as store:
        assert store.devices() == {None: 1}
    assert path.read_bytes() == before
    assert "device" not in columns(path, "experiments")


def test_a_store_of_schema_1_gets_the_device_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    done, pending, training = _schema_1_rows(path)
    with Store(path) as store:
        assert columns(path, "experiments")[-2:] == ["device", "node"]
        assert columns(path, "trainings")[-2:] == ["device", "node"]
        with read_only(path) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
        db.close()
        assert store.training_count() == 1
        assert store.devices() == {None: 1}
        _finish(store, pending.content_hash(), device="cpu", node="here")
        store.save_training(
            training, b"again", history=[], weights={}, metrics={}, timings={}, diverged=False,
            device="cpu", node="here",
        )  # fmt: skip
        assert store.devices() == {None: 1, "cpu": 1}
    frame = load_results(path).set_index("hash")
    old = frame.loc[done.content_hash()]
    assert (old["status"], old["noisy_test_accuracy"], old["host"]) == ("done", 0.5, "old-host")
    assert old[["device", "node"]].isna().all()
    assert frame.loc[pending.content_hash(), ["device", "node"]].tolist() == ["cpu", "here"]
    with Store(path) as store:  # opened again: nothing more to add
        assert store.training(training.content_hash()) is not None
    assert columns(path, "experiments").count("device") == 1


def test_a_store_of_a_newer_schema_is_read_but_not_written(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite"
    with Store(path) as store:
        store.add((e, "a") for e in _experiments(2))
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer walkingnoise") as caught:
        Store(path)
    assert str(caught.value) == (
        f"{path}: cannot write to the store: made by a newer walkingnoise (schema 3; this one "
        "writes schema 2); upgrade walkingnoise to write to it, or only read it"
    )
    assert len(load_results(path)) == 2


# -- content hashes ----------------------------------------------------------------------------


def test_hash_is_stable_across_key_order() -> None:
    fields = {
        "dataset": "digits",
        "model": "mlp",
        "batchnorm": False,
        "recipe": {"epochs": 3, "lr": 0.01, "batch_size": 64},
        "noise": "multiplicative",
        "placement": "walking:4",
        "sigma": 0.25,
        "train_noise": True,
        "seed": 2,
    }
    forward = Experiment.model_validate(fields)
    backward = Experiment.model_validate(
        {
            k: (dict(reversed(v.items())) if isinstance(v, dict) else v)
            for k, v in reversed(fields.items())
        }
    )
    assert forward.content_hash() == backward.content_hash()
    assert (
        forward.content_hash()
        == Experiment.model_validate_json(forward.canonical_json()).content_hash()
    )


def test_hash_does_not_depend_on_the_block(tmp_path: Path) -> None:
    one = expand(spec("fixed: {noise: additive, sigma: 0.3, seed: 1}"))
    two = expand(
        spec(
            """
            grid: {seed: {type: choice, options: [0, 1]}}
            deep:
              nested:
                fixed: {noise: additive}
                grid: {sigma: {type: choice, options: [0.3]}}
            """
        )
    )
    assert two[1].block == "deep.nested"
    assert one[0].experiment.content_hash() == two[1].experiment.content_hash()
    with Store(tmp_path / "s.sqlite") as store:
        assert store.add([(one[0].experiment, one[0].block)]) == 1
        assert store.add((e.experiment, e.block) for e in two) == 1


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"noise": "additive", "order": "add_first"}, {"noise": "additive"}),
        ({"noise": "additive", "ratio": 0.3}, {"noise": "additive", "ratio": 0.7}),
        ({"noise": "multiplicative", "order": "add_first"}, {"noise": "multiplicative"}),
        (
            {"noise": "additive", "gradient": "through_noise"},
            {"noise": "additive", "gradient": "forward_only"},
        ),
        (
            {"noise": "none", "sigma": 0.5, "placement": "walking:1", "eval_repeats": 3},
            {"noise": "none", "train_noise": True},
        ),
    ],
)
def test_hash_ignores_fields_that_cannot_matter(one: dict, two: dict) -> None:
    noisy = {"sigma": 0.5} if one["noise"] != "none" else {}
    first = Experiment(**(noisy | one))
    second = Experiment(**(noisy | two))
    assert first != second
    assert first.content_hash() == second.content_hash()


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"noise": "mixed", "order": "add_first"}, {"noise": "mixed", "order": "mul_first"}),
        (
            {"noise": "multiplicative", "gradient": "through_noise", "train_noise": True},
            {"noise": "multiplicative", "gradient": "forward_only", "train_noise": True},
        ),
        ({"noise": "additive", "train_noise": True}, {"noise": "additive"}),
    ],
)
def test_hash_keeps_fields_that_matter(one: dict, two: dict) -> None:
    sigma = (0.1, 0.2) if one["noise"] == "mixed" else 0.5
    first, second = Experiment(sigma=sigma, **one), Experiment(sigma=sigma, **two)
    assert first.content_hash() != second.content_hash()


def test_distinct_errors_count_each_last_line_most_frequent_first() -> None:
    tracebacks = [
        "Traceback (most recent call last):\n  File x\nValueError: one\n",
        "Traceback (most recent call last):\n  File y\nKeyError: two",
        "Traceback (most recent call last):\n  File z\nKeyError: two\n\n",
        "",
    ]
    assert distinct_errors(tracebacks) == [("KeyError: two", 2), ("ValueError: one", 1), ("", 1)]
