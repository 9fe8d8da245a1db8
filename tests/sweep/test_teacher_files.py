"""A teacher file retrained between two runs of a sweep does not leave its students "done"."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from walkingnoise.cli import main
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, load_results, load_sweep, run_sweep
from walkingnoise.sweep.spec import expand
from walkingnoise.sweep.teacher_files import (
    TeacherChangedError,
    check_teacher_files,
    teacher_fingerprints,
)
from walkingnoise.training.distillation import Distillation


def _train_teacher(path: Path, epochs: int) -> None:
    assert main(["train", "--noise", "none", "--epochs", str(epochs), "--save", str(path)]) == 0


def _students(folder: Path, teacher: str) -> Path:
    sweep = folder / "students.yaml"
    sweep.write_text(
        "name: students\n"
        "fixed: {dataset: digits, noise: none, train_noise: true, recipe: {epochs: 1},\n"
        f"  distillation: {{teacher: {teacher}}}}}\n"
        "grid: {weight_noise: {type: choice, options: [0.05]}}\n"
    )
    return sweep


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(teacher file, sweep file, store) of a sweep whose one student is done."""
    teacher = tmp_path / "teacher.pt"
    _train_teacher(teacher, epochs=1)
    sweep = _students(tmp_path, str(teacher))
    store = tmp_path / "students.sqlite"
    assert run_sweep(load_sweep(sweep), store, progress=False).ran == 1
    return teacher, sweep, store


def test_a_retrained_teacher_stops_the_next_run_and_keeps_the_store(
    finished: tuple[Path, Path, Path],
) -> None:
    teacher, sweep, store = finished
    before = load_results(store)
    assert run_sweep(load_sweep(sweep), store, progress=False).to_run == 0  # unchanged: resumes
    teacher.write_bytes(teacher.read_bytes())  # written again, the same bytes: still the same
    assert run_sweep(load_sweep(sweep), store, progress=False).to_run == 0
    _train_teacher(teacher, epochs=2)
    for dry_run in (True, False):
        with pytest.raises(TeacherChangedError) as caught:
            run_sweep(load_sweep(sweep), store, progress=False, dry_run=dry_run)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(
            f"distillation.teacher {teacher}: not the file this store's students of it ran with"
        )
        assert "(now sha256 " in message
        assert "; was sha256 " in message
        assert message.endswith("(--accept-teacher-change: their results stay)")
    assert load_results(store).equals(before)


def test_an_accepted_change_keeps_the_results_and_becomes_the_stored_file(
    finished: tuple[Path, Path, Path],
) -> None:
    teacher, sweep, store = finished
    first = teacher.read_bytes()
    _train_teacher(teacher, epochs=2)
    summary = run_sweep(load_sweep(sweep), store, progress=False, accept_teacher_change=True)
    assert (summary.done_before, summary.to_run) == (1, 0)
    with Store(store, read_only=True) as opened:
        assert opened.fingerprints("teacher") == teacher_fingerprints(
            entry.experiment for entry in expand(load_sweep(sweep))
        )
    teacher.write_bytes(first)  # now the first file is the change
    with pytest.raises(TeacherChangedError):
        run_sweep(load_sweep(sweep), store, progress=False)


def test_a_relative_path_read_from_another_directory_is_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same path text names another teacher when the run starts elsewhere."""
    for folder, epochs in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        _train_teacher(tmp_path / folder / "teacher.pt", epochs)
    sweep = _students(tmp_path, "teacher.pt")
    store = tmp_path / "students.sqlite"
    monkeypatch.chdir(tmp_path / "a")
    run_sweep(load_sweep(sweep), store, progress=False)
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(TeacherChangedError, match=r"^distillation\.teacher teacher\.pt: not the"):
        run_sweep(load_sweep(sweep), store, progress=False)


def test_a_store_without_teacher_files_takes_the_current_one(
    finished: tuple[Path, Path, Path],
) -> None:
    """Stores written before teacher files were kept have none to compare: the next run keeps
    the current file, and later runs are checked against it."""
    teacher, sweep, store = finished
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM meta WHERE key LIKE 'teacher:%'")
    _train_teacher(teacher, epochs=2)
    assert run_sweep(load_sweep(sweep), store, progress=False).to_run == 0
    _train_teacher(teacher, epochs=3)
    with pytest.raises(TeacherChangedError):
        run_sweep(load_sweep(sweep), store, progress=False, dry_run=True)


def test_the_command_line_stops_in_one_line_and_accepts_a_change_on_request(
    finished: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    teacher, sweep, store = finished
    run = ["run", str(sweep), "--store", str(store), "--no-progress"]
    _train_teacher(teacher, epochs=2)
    capsys.readouterr()
    assert main(run) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"walking-noise: error: distillation.teacher {teacher}: not the file")
    assert main([*run, "--accept-teacher-change"]) == 0
    assert main(run) == 0


def test_fingerprints_cover_the_files_that_exist_once_each(tmp_path: Path) -> None:
    (tmp_path / "t.pt").write_bytes(b"abc")
    students = [
        Experiment(
            dataset="digits",
            noise="none",
            weight_noise=eta,
            distillation=Distillation(teacher=str(path)),
        )
        for eta in (0.1, 0.2)
        for path in (tmp_path / "t.pt", tmp_path / "gone.pt")
    ]
    clean = Experiment(dataset="digits", noise="none", distillation=Distillation())
    found = teacher_fingerprints([*students, clean])
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # SHA-256 of abc
    assert found == {str(tmp_path / "t.pt"): [f"sha256 {sha}", "3 bytes"]}
    check_teacher_files(found, {})
    check_teacher_files(found, {"other.pt": ["sha256 0", "1 bytes"]})
    with pytest.raises(TeacherChangedError, match="was sha256 0, 1 bytes"):
        check_teacher_files(found, {str(tmp_path / "t.pt"): ["sha256 0", "1 bytes"]})


def test_a_teacher_retrained_before_any_student_finished_is_taken(tmp_path: Path) -> None:
    """The stored file is the one finished students ran with: a run stopped before any did
    keeps no claim on the file, and the retrained one is used."""
    teacher = tmp_path / "teacher.pt"
    _train_teacher(teacher, epochs=1)
    sweep = _students(tmp_path, str(teacher))
    store = tmp_path / "students.sqlite"
    students = [entry.experiment for entry in expand(load_sweep(sweep))]
    with Store(store) as opened:  # a run that registered its student and the file, then stopped
        opened.add((student, "root") for student in students)
        opened.save_fingerprints("teacher", teacher_fingerprints(students))
    _train_teacher(teacher, epochs=2)
    assert run_sweep(load_sweep(sweep), store, progress=False).ran == 1
    _train_teacher(teacher, epochs=3)  # now a student is done with the second file
    with pytest.raises(TeacherChangedError):
        run_sweep(load_sweep(sweep), store, progress=False, dry_run=True)
