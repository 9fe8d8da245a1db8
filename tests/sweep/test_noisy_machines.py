"""Noisy Machines in sweeps: planning, the shared clean teacher, results, commands, the example."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from walkingnoise.cli import main
from walkingnoise.data import InMemoryDataset, load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, SweepSummary, expand, load_results, run_sweep
from walkingnoise.sweep.planner import plan
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import load_sweep
from walkingnoise.training import Recipe
from walkingnoise.training.checkpoint import load_checkpoint, read_checkpoint
from walkingnoise.training.distillation import Distillation
from walkingnoise.training.run import evaluate_experiment, run_experiment, train_experiment

from .helpers import spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SWEEP = """
name: noisy-machines-test
fixed:
  dataset: digits
  model: mlp
  noise: none
  eval_repeats: 2
  seed: 0
  recipe: {epochs: 3}
grid:
  weight_noise: {type: choice, options: %s}
inference_only:
  fixed: {train_noise: false}
noise_injection:
  fixed: {train_noise: true}
distillation:
  fixed:
    train_noise: true
    distillation: {temperature: 4, alpha: 0.7}
"""


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread, as sweep workers use, so results match the sweep's to the last bit."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits() -> InMemoryDataset:
    return load_dataset("digits")


def _experiment(**fields: object) -> Experiment:
    return Experiment(**{"noise": "none", "recipe": Recipe(epochs=3), **fields})


# --- planning --------------------------------------------------------------------------------


def test_weight_noise_trainings_of_every_eta_form_one_cohort() -> None:
    noisy = [_experiment(weight_noise=eta, train_noise=True) for eta in (0.02, 0.04, 0.06)]
    (unit,) = plan(noisy, workers=1).units
    assert unit.members == tuple(noisy)
    assert unit.shared_training is None
    assert unit.trainings == 3


def test_inference_only_weight_noise_shares_the_clean_training() -> None:
    evaluated = [_experiment(weight_noise=eta) for eta in (0.0, 0.02, 0.06)]
    evaluated.append(_experiment(noise="additive", sigma=0.5, train_noise=False))
    (unit,) = plan(evaluated).units
    assert unit.shared_training == evaluated[0].clean_training()
    assert unit.members == tuple(evaluated)
    assert unit.trainings == 1


def test_students_of_the_clean_teacher_join_its_unit() -> None:
    evaluated = [_experiment(weight_noise=eta) for eta in (0.0, 0.04)]
    students = [
        _experiment(weight_noise=eta, train_noise=True, distillation=Distillation())
        for eta in (0.0, 0.04)
    ]
    (unit,) = plan([*evaluated, *students]).units
    assert unit.shared_training == students[0].teacher_training()
    assert unit.checkpoint is None
    assert unit.trainings == 3  # the teacher once, then each student

    stored = plan([*evaluated, *students], trained=lambda _key: b"teacher", workers=2)
    # the students train, the evaluations do not: longest units first
    assert [unit.members for unit in stored.units] == [*[(s,) for s in students], tuple(evaluated)]
    assert all(unit.checkpoint == b"teacher" for unit in stored.units)
    assert (stored.trainings, stored.shared_trainings) == (2, 0)


def test_students_of_an_untrained_teacher_may_wait_for_it() -> None:
    """Deferred, the teacher's unit only evaluates (it trains and stores the teacher), and the
    students are left for a plan that finds the teacher stored; a teacher with no evaluations
    keeps its students in its unit (it would train in no unit of its own)."""
    evaluated = [_experiment(weight_noise=eta) for eta in (0.0, 0.04)]
    students = [
        _experiment(weight_noise=eta, train_noise=True, distillation=Distillation())
        for eta in (0.0, 0.04)
    ]
    work = plan([*evaluated, *students], defer_students=True, workers=2)
    (unit,) = work.units
    assert unit.members == tuple(evaluated)
    assert (unit.shared_training, unit.checkpoint) == (students[0].teacher_training(), None)
    assert work.deferred == tuple(students)
    assert (work.experiments, work.trainings, work.shared_trainings) == (4, 3, 1)
    (alone,) = plan(students, defer_students=True).units
    assert alone.members == tuple(students)
    assert plan(students, defer_students=True).deferred == ()
    stored = plan([*evaluated, *students], trained=lambda _key: b"t", defer_students=True)
    assert stored.deferred == ()


def test_students_of_a_stored_teacher_are_cut_into_units_as_a_cohort() -> None:
    """Six students of one stored teacher, two workers: two units of three, each of one
    cohort (students of another temperature apart), so each trains as a stack."""
    students = [
        _experiment(weight_noise=eta, train_noise=True, distillation=Distillation())
        for eta in (0.0, 0.02, 0.04, 0.06, 0.1, 0.15)
    ]
    other = _experiment(train_noise=True, distillation=Distillation(temperature=2))
    work = plan([*students, other], trained=lambda _key: b"teacher", workers=2)
    units = sorted(work.units, key=lambda unit: len(unit.members), reverse=True)
    assert [len(unit.members) for unit in units] == [3, 3, 1]
    assert sorted(m.weight_noise for unit in units[:2] for m in unit.members) == [
        e.weight_noise for e in students
    ]
    assert units[2].members == (other,)
    assert all(unit.checkpoint == b"teacher" for unit in units)
    assert all(unit.shared_training == students[0].teacher_training() for unit in units)
    assert work.trainings == 7


def test_students_of_a_checkpoint_file_form_a_cohort() -> None:
    """Students of one teacher file, of every η, train together; another file's apart."""
    students = [
        _experiment(weight_noise=eta, train_noise=True, distillation=Distillation(teacher="t.pt"))
        for eta in (0.0, 0.05, 0.1)
    ]
    other = _experiment(train_noise=True, distillation=Distillation(teacher="other.pt"))
    units = sorted(plan([*students, other]).units, key=lambda unit: len(unit.members))
    assert [unit.members for unit in units] == [(other,), tuple(students)]
    assert all(unit.shared_training is None for unit in units)


# --- one experiment with weight noise ----------------------------------------------------------


def test_evaluation_with_weight_noise_repeats_and_keeps_clean_metrics_clean(
    digits: InMemoryDataset,
) -> None:
    clean = _experiment()
    model, _ = train_experiment(clean, digits, progress=False)
    weights = {k: v.clone() for k, v in model.source.state_dict().items()}
    without = evaluate_experiment(clean, model, digits)
    noisy = _experiment(weight_noise=0.2, eval_repeats=4)
    metrics = evaluate_experiment(noisy, model, digits)
    assert metrics["clean_test_accuracy"] == without["clean_test_accuracy"]
    assert metrics["noisy_test_accuracy_std"] > 0
    assert metrics["noisy_test_accuracy"] < metrics["clean_test_accuracy"]
    assert all(torch.equal(weights[k], v) for k, v in model.source.state_dict().items())
    # The numbers depend on the experiment alone, not on what the model evaluated before.
    assert evaluate_experiment(noisy, model, digits) == metrics


def test_training_with_weight_noise_changes_the_trained_weights(digits: InMemoryDataset) -> None:
    plain, _ = train_experiment(_experiment(weight_noise=0.1), digits, progress=False)
    noisy, _ = train_experiment(
        _experiment(weight_noise=0.1, train_noise=True), digits, progress=False
    )
    first, second = plain.source.state_dict(), noisy.source.state_dict()
    assert not all(torch.equal(first[k], second[k]) for k in first)


# --- a sweep end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepSummary]:
    path = tmp_path_factory.mktemp("noisy-machines") / "store.sqlite"
    return path, run_sweep(spec(SWEEP % [0.0, 0.1]), path, progress=False)


def test_the_sweep_trains_the_teacher_once_and_stores_it(
    swept: tuple[Path, SweepSummary],
) -> None:
    path, summary = swept
    # 2 inference-only (η = 0 is the clean model) + 1 noise injection + 2 distillations.
    assert (summary.experiments, summary.failed) == (5, 0)
    assert (summary.trainings, summary.shared_trainings) == (4, 1)
    # the students waited for the teacher's unit to store it, then ran: every one counted once
    assert (summary.deferred, summary.ran, summary.to_run) == (2, 5, 5)
    with Store(path, create=False) as store:
        assert store.training_count() == 1
        assert store.training(_experiment().clean_training().content_hash()) is not None


def test_sweep_results_equal_the_experiments_run_alone(
    swept: tuple[Path, SweepSummary], digits: InMemoryDataset
) -> None:
    path, _ = swept
    results = load_results(path).set_index("hash")
    assert set(results["status"]) == {"done"}
    with Store(path, create=False) as store:
        record = store.training(_experiment().clean_training().content_hash())
    assert record is not None
    _, teacher = read_checkpoint(record.checkpoint.read_bytes())
    entries = expand(spec(SWEEP % [0.0, 0.1]))
    assert sorted(results.index) == sorted(e.experiment.content_hash() for e in entries)
    for entry in entries:
        experiment = entry.experiment
        row = results.loc[experiment.content_hash()]
        checkpoint = (path.parent / row["checkpoint"]).resolve()
        if experiment.shares_clean_model:
            assert checkpoint == record.checkpoint.resolve()
        else:  # a model of its own, stored with its own experiment
            assert checkpoint != record.checkpoint.resolve()
            assert load_checkpoint(checkpoint)[0] == experiment
        alone = run_experiment(experiment, dataset=digits, progress=False, teacher=teacher)
        # noise-injection and distillation trainings ran in stacks: float rounding may flip a
        # prediction or two; the inference-only experiments evaluate the clean model to the
        # last bit
        stacked = not experiment.shares_clean_model
        for metric in ("noisy_test_accuracy", "noisy_test_accuracy_std", "clean_test_accuracy"):
            expected = (
                pytest.approx(row[metric], abs=3 / len(digits.test)) if stacked else row[metric]
            )
            assert alone.metrics[metric] == expected, (entry.block, metric)


def test_a_new_eta_reuses_the_stored_teacher(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    run_sweep(spec(SWEEP % [0.0, 0.1]), path, progress=False)
    summary = run_sweep(spec(SWEEP % [0.0, 0.1, 0.2]), path, progress=False)
    assert (summary.done_before, summary.to_run, summary.failed) == (5, 3, 0)
    assert (summary.trainings, summary.shared_trainings) == (2, 0)
    with Store(path, create=False) as store:
        assert store.training_count() == 1


def test_the_noisy_machines_command_prints_the_table(
    swept: tuple[Path, SweepSummary], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = swept
    csv = tmp_path / "new folder" / "table.csv"  # created, as fit --csv does
    assert main(["noisy-machines", str(path), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    for column in ("inference-only", "noise injection", "distillation + noise injection"):
        assert column in out
    table = pd.read_csv(csv)
    assert sorted(set(table["weight_noise"])) == [0.0, 0.1]
    assert set(table["seeds"]) == {1}


def test_fit_of_a_weight_noise_study_points_to_the_noisy_machines_table(
    swept: tuple[Path, SweepSummary], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = swept
    assert main(["fit", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"walking-noise: error: {path}: no finished experiments with a scalar σ to fit; its "
        f"weight noise is tabulated by `walking-noise noisy-machines {path}`\n"
    )


def test_the_noisy_machines_command_on_a_missing_store_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["noisy-machines", str(tmp_path / "absent.sqlite")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert "absent.sqlite" in err[0]


def test_the_noisy_machines_command_on_a_store_without_weight_noise_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.sqlite"
    text = "fixed: {noise: additive, sigma: 0.5, placement: global, recipe: {epochs: 1}}"
    run_sweep(spec(text), path, progress=False)
    assert main(["noisy-machines", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert "no experiment has weight noise" in err[0]


# --- `walking-noise train` -----------------------------------------------------------------------


def test_train_accepts_weight_noise_and_distillation(
    capsys: pytest.CaptureFixture[str], digits: InMemoryDataset
) -> None:
    args = ["train", "--weight-noise", "0.1", "--train-noise", "--epochs", "2"]
    assert main([*args, "--distill", "--alpha", "0.6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "noise: none (no activation noise)" in out
    assert "weight noise: eta=0.1" in out
    assert "distillation: T=6, alpha=0.6, teacher=clean" in out
    experiment = Experiment(
        noise="none",
        weight_noise=0.1,
        train_noise=True,
        recipe=Recipe(epochs=2),
        distillation=Distillation(alpha=0.6),
    )
    assert experiment.content_hash()[:12] in out
    result = run_experiment(experiment, dataset=digits, progress=False)
    assert f"{100 * result.metrics['noisy_test_accuracy']:.2f} ±" in out


def test_train_with_a_missing_teacher_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "absent.pt"
    assert main(["train", "--weight-noise", "0.1", "--teacher", str(teacher), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert "no such checkpoint file" in err[0]


@pytest.mark.parametrize("content", [None, b"not a checkpoint"], ids=["missing", "unreadable"])
def test_a_sweeps_bad_teacher_file_stops_it_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    """Every student of a teacher file that is missing or unreadable would fail: the sweep
    stops with one line naming the file, and the store is not created."""
    teacher = tmp_path / "teacher.pt"
    if content is not None:
        teacher.write_bytes(content)
    sweep = tmp_path / "students.yaml"
    sweep.write_text(
        "name: students\n"
        "fixed: {dataset: digits, noise: none, train_noise: true, recipe: {epochs: 1},\n"
        f"  distillation: {{teacher: {teacher}}}}}\n"
        "grid: {weight_noise: {type: choice, options: [0.05, 0.1]}}\n"
    )
    store = tmp_path / "students.sqlite"
    for dry_run in (["--dry-run"], []):  # "count, check, plan": the dry run checks it too
        assert main(["run", str(sweep), "--store", str(store), "--no-progress", *dry_run]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1
        assert f"distillation.teacher {teacher}" in err[0]
        assert not store.exists()


def test_a_relative_teacher_path_that_is_not_found_says_where_it_was_looked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--weight-noise", "0.1", "--teacher", "t.pt", "--epochs", "1"]) == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert err.endswith(
        f"distillation.teacher t.pt: no such checkpoint file (looked for {tmp_path / 't.pt'}: "
        "a relative path is read from the current directory)"
    )


def _students_of_a_file(folder: Path, epochs: int, etas: list[float]) -> tuple[Path, Path]:
    """A teacher checkpoint file trained by ``walking-noise train``, and a sweep file of its
    students at weight noise ``etas``: (teacher, sweep)."""
    teacher = folder / "teacher.pt"
    assert main(["train", "--noise", "none", "--epochs", str(epochs), "--save", str(teacher)]) == 0
    sweep = folder / "students.yaml"
    sweep.write_text(
        "name: students\n"
        f"fixed: {{dataset: digits, noise: none, train_noise: true, recipe: {{epochs: {epochs}}},\n"
        f"  distillation: {{teacher: {teacher}}}}}\n"
        f"grid: {{weight_noise: {{type: choice, options: {etas}}}}}\n"
    )
    return teacher, sweep


def test_a_finished_distillation_sweep_runs_again_without_its_teacher_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only students still to run need their teacher: a finished sweep reruns (and is counted
    by a dry run) after the teacher file has gone; a sweep whose students are still to run
    is stopped by its dry run too."""
    teacher, sweep = _students_of_a_file(tmp_path, epochs=1, etas=[0.05])
    store = tmp_path / "students.sqlite"
    command = ["run", str(sweep), "--store", str(store), "--no-progress"]
    assert main(command) == 0
    assert load_results(store)["status"].tolist() == ["done"]
    teacher.unlink()
    capsys.readouterr()
    assert main(command) == 0
    assert "1 already done" in capsys.readouterr().out
    assert main([*command, "--dry-run"]) == 0
    # a new store still has its students to run: the dry run checks their teacher
    assert main([*command[:2], "--store", str(tmp_path / "new.sqlite"), "--dry-run"]) == 2
    assert f"distillation.teacher {teacher}: no such checkpoint file" in capsys.readouterr().err


def test_students_of_a_checkpoint_file_train_in_one_unit_as_alone(
    tmp_path: Path, digits: InMemoryDataset
) -> None:
    """A sweep's students of one teacher file (three η) train together, the file read once per
    unit, with the numbers each gets alone."""
    _, sweep = _students_of_a_file(tmp_path, epochs=2, etas=[0.0, 0.05, 0.1])
    store = tmp_path / "students.sqlite"
    summary = run_sweep(load_sweep(sweep), store, progress=False)
    assert (summary.experiments, summary.failed, summary.trainings) == (3, 0, 3)
    results = load_results(store).set_index("hash")
    for entry in expand(load_sweep(sweep)):
        alone = run_experiment(entry.experiment, dataset=digits, progress=False)
        row = results.loc[entry.experiment.content_hash()]
        # a stack of students: float rounding may flip a prediction or two
        for metric in ("clean_test_accuracy", "noisy_test_accuracy"):
            assert alone.metrics[metric] == pytest.approx(row[metric], abs=3 / len(digits.test))


# --- the example sweep -------------------------------------------------------------------------


def test_the_small_example_covers_the_papers_grid_and_a_student_runs() -> None:
    path = EXAMPLES / "06_noisy_machines.small.yaml"
    entries = expand(load_sweep(path), site_count=SiteCounter(), max_experiments=None)
    experiments = [entry.experiment for entry in entries]
    assert {0.0, 0.02, 0.04, 0.06} <= {e.weight_noise for e in experiments}
    students = [e for e in experiments if e.distillation is not None]
    assert {e.distillation.temperature for e in students} == {6.0}
    assert all(e.train_noise for e in students)
    assert {e.dataset for e in experiments} == {"digits"}
    first = next(e for e in students if e.weight_noise > 0)
    result = run_experiment(first, progress=False)
    assert 0.5 <= result.metrics["clean_test_accuracy"] <= 1.0
    assert result.metrics["noisy_test_accuracy_std"] > 0


def test_students_of_a_teacher_another_run_trains_wait_for_it() -> None:
    """A run beside one that is training the clean teacher (its evaluations are running
    there) leaves the students pending instead of training a second teacher for them."""
    students = [
        _experiment(weight_noise=eta, train_noise=True, distillation=Distillation())
        for eta in (0.0, 0.04)
    ]
    key = students[0].teacher_training().content_hash()
    for defer in (True, False):
        work = plan(students, defer_students=defer, training_elsewhere={key}.__contains__)
        assert (work.units, work.deferred) == ((), tuple(students))
