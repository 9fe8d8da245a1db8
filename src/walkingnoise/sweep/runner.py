"""Running a sweep: expand, skip what the store has, plan, execute, record."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from walkingnoise._progress import LINE_INTERVAL, ProgressLines, bar_disabled, lines_wanted
from walkingnoise._signals import interrupts_held
from walkingnoise._words import counted
from walkingnoise.analysis.tables import resolve_a_min
from walkingnoise.data.errors import one_line
from walkingnoise.experiment import Experiment
from walkingnoise.models.registry import own_model_names
from walkingnoise.sweep.adaptive import propose_sigmas
from walkingnoise.sweep.architecture import check_networks
from walkingnoise.sweep.data_fingerprints import check_datasets
from walkingnoise.sweep.executors import Executor, InProcessExecutor, ProcessExecutor, TaskError
from walkingnoise.sweep.planner import Plan, WorkUnit, plan
from walkingnoise.sweep.results import diverged_note
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import (
    DEFAULT_MAX_EXPERIMENTS,
    AdaptiveAxis,
    SweepEntry,
    SweepError,
    SweepSpec,
    expand_counted,
)
from walkingnoise.sweep.store import Finished, Store, StoreError, error_line
from walkingnoise.sweep.teacher_files import check_teacher_files, teacher_fingerprints
from walkingnoise.sweep.work import (
    Outcome,
    UnitOutcome,
    oversubscription,
    run_unit,
    unit_threads,
    unknown_models,
)
from walkingnoise.sweep.work_done import WorkDone
from walkingnoise.training.checkpoint import CheckpointError, read_checkpoint
from walkingnoise.training.memory import check_budget, default_device, device_setting
from walkingnoise.training.run import teacher_from_file

log = logging.getLogger(__name__)

#: Most rounds of an adaptive sweep (each adds σ to the curves not yet done), unless an
#: axis's budget needs more (see ``_last_round``).
MAX_ROUNDS = 20


@dataclass
class SweepSummary:
    """What a sweep run found and did."""

    experiments: int
    done_before: int
    failed_before: int
    to_run: int
    trainings: int
    shared_trainings: int
    running_elsewhere: int = 0
    repeats: int = 0
    repeat_example: str = ""
    ran: int = 0
    failed: int = 0
    diverged: int = 0  # of those ran: finished, but their training loss became non-finite
    seconds: float = 0.0
    deferred: int = 0  # distillation students run in a second pass, once their teacher is stored

    def add(self, other: SweepSummary) -> None:
        """Count another round of the same sweep in (adaptive σ)."""
        for name in (f.name for f in fields(self) if f.name != "repeat_example"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self) -> str:
        """One paragraph for the terminal."""
        running = ""
        if self.running_elsewhere:
            running = f"{self.running_elsewhere} being run by another process (left to it), "
        lines = [
            f"{counted(self.experiments, 'experiment')}: {self.done_before} already done, "
            f"{self.failed_before} failed before (use `retry`), {running}{self.to_run} to run",
            f"{self.to_run} to run {'needs' if self.to_run == 1 else 'need'} "
            f"{counted(self.trainings, 'training')} "
            f"({counted(self.shared_trainings, 'clean training')} shared: the model that "
            "inference-only experiments evaluate or distillation students learn from)",
        ]
        if self.repeats:
            lines.append(
                f"{counted(self.repeats, 'grid point')} gave an experiment that another point "
                f"already gives, counted once: e.g. {self.repeat_example} give the same experiment"
            )
        if self.ran or self.failed:
            lines.append(
                f"ran {counted(self.ran, 'experiment')} ({self.failed} failed) "
                f"in {self.seconds:.1f} s"
            )
        if self.diverged:
            lines.append(diverged_note(self.diverged))
        return "\n".join(lines)


def prepare(
    entries: list[SweepEntry],
    store: Store,
    *,
    register: bool = True,
    workers: int = 1,
    alone: Callable[[Experiment], bool] = lambda _experiment: False,
    defer_students: bool = False,
) -> tuple[Plan, SweepSummary]:
    """Plan what is left to run; with ``register``, first add the experiments to the store.

    Without ``register`` (a dry run) the store is only read: experiments it lacks count as
    pending. ``alone`` says which noisy trainings train one model at a time, and
    ``defer_students`` whether students wait for their clean teacher to be stored (see
    ``plan``).
    """
    if register:
        stale = store.requeue_stale()
        if stale:
            log.warning("%d experiments of dead processes put back to pending", stale)
        store.add((entry.experiment, entry.block) for entry in entries)
    keys = [entry.experiment.content_hash() for entry in entries]
    found = store.statuses(keys)
    if not register:  # what a run would put back to pending first
        stale = [key for key, claim in store.running_claims().items() if claim == "stale"]
        found |= {key: "pending" for key in stale if key in found}
    statuses = dict.fromkeys(keys, "pending") | found
    listed = list(zip(entries, keys, strict=True))
    todo = [e.experiment for e, key in listed if statuses[key] == "pending"]

    def trained(key: str) -> bytes | None:
        """The stored clean model's checkpoint (a dry run only needs to know it is usable).

        A checkpoint that cannot be read (truncated or damaged on disk) counts as missing, so
        the clean model is trained again and its file rewritten; a dry run counts it so.
        """
        record = store.training(key)
        if record is None:
            return None
        try:
            data = record.checkpoint.read_bytes()
            read_checkpoint(data, str(record.checkpoint))
        except (OSError, CheckpointError) as error:
            log.warning("%s; training that clean model again", one_line(error))
            return None
        return data if register else b""

    elsewhere = {  # clean models another run is training: its evaluations are running
        e.experiment.clean_training().content_hash()
        for e, key in listed
        if statuses[key] == "running" and e.experiment.shares_clean_model
    }
    work = plan(
        todo,
        trained=trained,
        workers=workers,
        alone=alone,
        defer_students=defer_students,
        training_elsewhere=elsewhere.__contains__,
    )
    done = sum(status == "done" for status in statuses.values())
    summary = SweepSummary(
        experiments=len(entries),
        done_before=done,
        failed_before=sum(status == "failed" for status in statuses.values()),
        running_elsewhere=sum(status == "running" for status in statuses.values()),
        to_run=len(todo),
        trainings=work.trainings,
        shared_trainings=work.shared_trainings,
    )
    return work, summary


def _local_processes(executor: Executor | None) -> int | None:
    """How many units ``executor`` computes side by side on this machine (None: elsewhere)."""
    if executor is None or isinstance(executor, InProcessExecutor):
        return 1
    if isinstance(executor, ProcessExecutor):
        return executor.workers
    return None


def run_sweep(
    spec: SweepSpec,
    store: Store | str | Path,
    *,
    executor: Executor | None = None,
    data_root: str | Path | None = None,
    max_experiments: int | None = DEFAULT_MAX_EXPERIMENTS,
    dry_run: bool = False,
    progress: bool | None = None,
    accept_network_change: bool = False,
    accept_data_change: bool = False,
    accept_teacher_change: bool = False,
) -> SweepSummary:
    """Run every experiment of ``spec`` that ``store`` does not have yet.

    The sweep is expanded and validated before the store is opened (or created), so a bad
    sweep file writes nothing. Results are written by this process alone, as units finish.
    Experiments another process is running are left to it. On an exception (Ctrl-C included)
    the experiments this run claimed but did not finish go back to pending, so running again
    resumes. A model whose network is not the one the store's experiments of it ran (a user's
    model edited in between, see ``sweep.architecture``), a dataset whose data is not the one
    they ran on (``sweep.data_fingerprints``), or a teacher checkpoint file that is not the one
    its students ran with (``sweep.teacher_files``), stops the run before it writes anything,
    unless ``accept_network_change`` (``accept_data_change``, ``accept_teacher_change``): then
    the store keeps the new one and its results join the old ones. A ``dry_run`` only counts
    and plans: the store is read, never created or written.
    Settings from the environment (``$WALKINGNOISE_THREADS``, ``$WALKINGNOISE_MEMORY_BUDGET``,
    ``$WALKINGNOISE_DEVICE``, ...) are checked first: a bad one stops the sweep before it
    writes anything, instead of failing every unit.
    """
    threads = unit_threads()
    local = _local_processes(executor)
    slow = None if local is None else oversubscription(threads, local)
    if slow is not None:
        log.warning(slow)
    check_budget()
    device_setting()
    local_units = executor is None or executor.device is None
    if local_units and not dry_run:  # they compute here: a dry run may plan for another machine
        default_device()
    counter = SiteCounter(data_root, device=None if executor is None else executor.device)
    entries, repeats = expand_counted(spec, site_count=counter, max_experiments=max_experiments)
    _check_teachers(entries, store)
    now = _Fingerprints(
        counter.networks(),
        teacher_fingerprints(entry.experiment for entry in entries),
        counter.datasets(entry.experiment.dataset for entry in entries),
    )
    accepted = {
        "network": accept_network_change,
        "teacher": accept_teacher_change,
        "data": accept_data_change,
    }
    if dry_run:
        with _readable(store) as readable:
            now = now.settled(entries, readable)
            now.check(readable, accepted)
            summary = prepare(entries, readable, register=False, alone=counter.trains_alone)[1]
            _stored_rounds(entries, spec.adaptive_axes(), readable, summary, counter.trains_alone)
    else:
        _check_models_in_workers(executor, entries)
        context = _RunContext(executor, data_root, progress, counter)
        with _opened(store) as opened:
            now = now.settled(entries, opened)
            now.check(opened, accepted)  # before anything is written
            now.say_unrecorded_data(opened)
            now.save(opened, accepted)
            opened.save_fingerprints("sites", counter.site_names(), replace=True)
            summary = _run_rounds(entries, spec, opened, context)
    summary.repeats, summary.repeat_example = repeats.count, repeats.example
    return summary


def _check_models_in_workers(executor: Executor | None, entries: list[SweepEntry]) -> None:
    """Raise before anything runs if the executor's workers cannot build a model of the user's
    that this process can: registered under ``if __name__ == '__main__':``, it would fail every
    experiment of it, one by one."""
    if executor is None or isinstance(executor, InProcessExecutor):
        return
    own = set(own_model_names())
    models = sorted({e.experiment.model for e in entries} & own)
    if not models:
        return
    for _models, missing in executor.run(unknown_models, [models]):
        if isinstance(missing, TaskError) or not missing:
            return  # a worker that cannot even start says why in the units, as before
        names = ", ".join(repr(name) for name in missing)
        raise SweepError(
            f"model {names}: registered in this process but unknown to the sweep's worker "
            "processes; register it at the top level of a module named with `--import "
            "MODULE` (or that your script imports), or at the top level of your script, not "
            "under `if __name__ == '__main__':`; nothing was run"
        )


@dataclass(frozen=True)
class _Fingerprints:
    """What a sweep's results rest on besides their settings: its models' networks, its
    teacher files and its datasets' data, each checked against (and kept in) the store unless
    a change is accepted."""

    networks: dict[str, list[str]]
    teachers: dict[str, list[str]]
    datasets: dict[str, list[str]]
    #: Teacher files with a finished student in the store: only those are checked; the
    #: others' fingerprints follow the file until a student of it is done.
    taught: frozenset[str] = frozenset()
    #: Datasets with a finished experiment in the store, likewise: a run stopped before any
    #: finished ties the store to no data.
    used: frozenset[str] = frozenset()

    def settled(self, entries: list[SweepEntry], store: Store) -> _Fingerprints:
        """These fingerprints, knowing which teacher files have a finished student."""
        students = {
            e.experiment.content_hash(): path
            for e in entries
            if (path := e.experiment.teacher_file()) is not None
        }
        done = store.statuses(list(students)) if students else {}
        taught = {path for key, path in students.items() if done.get(key) == "done"}
        used = store.datasets_done() & set(self.datasets)
        return _Fingerprints(
            self.networks, self.teachers, self.datasets, frozenset(taught), frozenset(used)
        )

    def _kinds(self) -> list[tuple[str, dict[str, list[str]], Callable[..., None]]]:
        taught = {path: f for path, f in self.teachers.items() if path in self.taught}
        used = {name: f for name, f in self.datasets.items() if name in self.used}
        return [
            ("network", self.networks, check_networks),
            ("teacher", taught, check_teacher_files),
            ("data", used, check_datasets),
        ]

    def check(self, store: Store, accepted: dict[str, bool]) -> None:
        """Raise if one differs from the store's, unless its change is accepted."""
        for kind, now, check in self._kinds():
            if not accepted[kind]:
                check(now, store.fingerprints(kind))

    def save(self, store: Store, accepted: dict[str, bool]) -> None:
        """Keep them in the store, replacing the stored ones of accepted changes and of teacher
        files no student has finished with; raise if a run beside this one stored others
        first."""
        for kind, now, check in self._kinds():
            stored = store.save_fingerprints(kind, now, replace=accepted[kind])
            if not accepted[kind]:
                check(now, stored)
        untaught = {p: f for p, f in self.teachers.items() if p not in self.taught}
        store.save_fingerprints("teacher", untaught, replace=True)
        unused = {name: f for name, f in self.datasets.items() if name not in self.used}
        store.save_fingerprints("data", unused, replace=True)

    def say_unrecorded_data(self, store: Store) -> None:
        """Warn of datasets whose finished results the store holds without a fingerprint (a
        store from before they were kept): this run's data are recorded as theirs."""
        recorded = store.fingerprints("data")
        unknown = sorted(name for name in self.used if name not in recorded)
        if unknown:
            log.warning(
                "%s: no fingerprint of the data of %s kept with its finished results (a store "
                "from before they were kept): the data this run reads are recorded as theirs, "
                "and later runs are checked against them",
                store.path,
                ", ".join(unknown),
            )


@dataclass(frozen=True)
class _RunContext:
    """What every round of a run needs besides its experiments: where units run, the data,
    whether to show progress, and the sweep's models (which train one at a time)."""

    executor: Executor | None
    data_root: str | Path | None
    progress: bool | None
    models: SiteCounter


@contextmanager
def _opened(store: Store | str | Path) -> Iterator[Store]:
    """``store`` itself if it is open, else the store at that path, opened (created) here."""
    if isinstance(store, Store):
        yield store
        return
    with Store(store) as opened:
        yield opened


@contextmanager
def _readable(store: Store | str | Path) -> Iterator[Store]:
    """``store`` to read without writing: itself if it is open, the file read-only, or an
    empty store in memory where there is no file yet (a dry run creates nothing)."""
    if isinstance(store, Store):
        yield store
        return
    exists = Path(store).is_file()
    with Store(store if exists else ":memory:", read_only=exists) as opened:
        yield opened


def _unfinished(entries: list[SweepEntry], store: Store | str | Path) -> list[SweepEntry]:
    """The entries the store does not hold as done, read without writing (all of them where
    there is no store yet)."""
    keys = [entry.experiment.content_hash() for entry in entries]
    if isinstance(store, Store):
        found = store.statuses(keys)
    elif Path(store).is_file():
        with Store(store, read_only=True) as readable:
            found = readable.statuses(keys)
    else:
        found = {}
    return [entry for entry, key in zip(entries, keys, strict=True) if found.get(key) != "done"]


def _check_teachers(entries: list[SweepEntry], store: Store | str | Path) -> None:
    """Read every checkpoint file a distillation still to run takes its teacher from, once: a
    missing or unreadable one (or one of another dataset) stops the sweep before it writes
    anything, instead of failing each of its students. Sweeps without such students read
    nothing."""
    students = [entry for entry in entries if entry.experiment.teacher_file() is not None]
    checked: set[tuple[str | None, str]] = set()
    for entry in _unfinished(students, store) if students else []:
        experiment = entry.experiment
        key = (experiment.teacher_file(), experiment.dataset)
        if key not in checked:
            checked.add(key)
            teacher_from_file(experiment)


def _run_rounds(
    entries: list[SweepEntry], spec: SweepSpec, store: Store, context: _RunContext
) -> SweepSummary:
    """Run the sweep; with adaptive σ axes, keep adding rounds until every curve is done.

    Distillation students of a clean teacher not trained yet wait for the next pass, which
    finds the teacher stored (``plan``'s ``defer_students``)."""
    summary = _run(entries, spec, store, context, defer_students=True)
    if summary.deferred:
        log.info("%d distillation students, now that their teachers are stored", summary.deferred)
        later = _run(entries, spec, store, context, stage="distillation students: ")
        summary.ran += later.ran
        summary.failed += later.failed
        summary.diverged += later.diverged
        summary.seconds += later.seconds
        if later.deferred:
            log.warning(
                "%d distillation students wait for a teacher another run is training; they "
                "stay pending: run again when it is done",
                later.deferred,
            )
    axes = spec.adaptive_axes()
    last = _last_round(axes)
    for round_number in range(2, last + 1):
        if not axes:
            break
        new = refine(entries, axes, store)
        if not new:
            break
        log.info("adaptive σ, round %d: %d more experiments", round_number, len(new))
        entries = entries + new
        summary.add(_run(new, spec, store, context, stage=f"adaptive σ, round {round_number}: "))
    else:
        if refine(entries, axes, store):
            log.warning("adaptive σ: stopped after %d rounds with curves still unsettled", last)
    return summary


def _last_round(axes: dict[str, AdaptiveAxis]) -> int:
    """The last round an adaptive sweep runs: :data:`MAX_ROUNDS`, or twice the largest
    budget, enough to spend it one σ a round (a curve that adds nothing in a round, its σ
    failed, adds nothing later either)."""
    return max([MAX_ROUNDS, *(2 * axis.max_points for axis in axes.values())])


def _stored_rounds(
    entries: list[SweepEntry],
    axes: dict[str, AdaptiveAxis],
    store: Store,
    summary: SweepSummary,
    alone: Callable[[Experiment], bool],
) -> None:
    """Count into a dry run's ``summary`` the adaptive rounds after the first that the store's
    results decide: a run goes through them again, up to the first with experiments not done
    (an interrupted round, or the next one), whose results the rounds after it wait for."""
    for _ in range(2, _last_round(axes) + 1):
        if not axes or summary.to_run or summary.running_elsewhere:
            break
        new = refine(entries, axes, store)
        if not new:
            break
        summary.add(prepare(new, store, register=False, alone=alone)[1])
        entries = entries + new


def _curve_key(experiment: Experiment) -> str:
    """Experiments on one accuracy-vs-σ curve differ only in σ and seed."""
    fields = experiment.identity()
    fields.pop("sigma", None)
    fields.pop("seed", None)
    return json.dumps(fields, sort_keys=True)


def refine(
    entries: list[SweepEntry], axes: dict[str, AdaptiveAxis], store: Store
) -> list[SweepEntry]:
    """The next round of an adaptive sweep: new σ (for every seed) on each unfinished curve."""
    curves: dict[str, list[SweepEntry]] = {}
    for entry in entries:
        if entry.block in axes:
            curves.setdefault(_curve_key(entry.experiment), []).append(entry)
    new: list[SweepEntry] = []
    for members in curves.values():
        metrics = store.metrics([e.experiment.content_hash() for e in members])
        by_sigma: dict[float, list[float]] = {}
        chance = 0.1
        test_size: float | None = None
        for entry in sorted(members, key=lambda e: e.experiment.seed):  # sums in one order
            values = metrics.get(entry.experiment.content_hash())
            if values is None or not isinstance(entry.experiment.sigma, float):
                continue
            by_sigma.setdefault(entry.experiment.sigma, []).append(values["noisy_test_accuracy"])
            chance = values.get("chance_accuracy", chance)
            test_size = values.get("test_size", test_size)
        sigmas = sorted(by_sigma)
        means = [float(np.mean(by_sigma[s])) for s in sigmas]
        errors = [_sem(by_sigma[s]) for s in sigmas]
        samples = None if test_size is None else [test_size * len(by_sigma[s]) for s in sigmas]
        axis = axes[members[0].block]
        a_min = _a_min(members[0].experiment, chance)
        proposals = propose_sigmas(axis, sigmas, means, errors, a_min, n_samples=samples)
        tried = {e.experiment.sigma for e in members}
        proposals = [sigma for sigma in proposals if sigma not in tried]
        seeds = sorted({e.experiment.seed for e in members})
        template = members[0]
        for sigma in proposals:
            for seed in seeds:
                experiment = template.experiment.model_copy(update={"sigma": sigma, "seed": seed})
                new.append(SweepEntry(experiment, template.block))
    return new


def _a_min(experiment: Experiment, chance: float) -> float | None:
    """The floor of a curve's fit as ``fit`` takes it: chance, or fitted (None) where the
    noise keeps accuracy above chance (multiplicative noise with BatchNorm)."""
    group = {
        "batchnorm": experiment.batchnorm,
        "noise": experiment.noise,
        "order": experiment.order,
    }
    return resolve_a_min("auto", group, chance)


def _sem(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def _run(
    entries: list[SweepEntry],
    spec: SweepSpec,
    store: Store,
    context: _RunContext,
    *,
    defer_students: bool = False,
    stage: str = "",
) -> SweepSummary:
    executor = context.executor or InProcessExecutor()
    data_root, progress = context.data_root, context.progress
    work, summary = prepare(
        entries,
        store,
        workers=executor.workers,
        alone=context.models.trains_alone,
        defer_students=defer_students,
    )
    summary.deferred = len(work.deferred)
    if spec.text:
        source = Path(spec.source)
        store.save_sweep(spec.name, spec.text, str(source.resolve()) if source.is_file() else "")
    units = counted(len(work.units), "unit")
    log.info("%s; %s of work", summary.describe().replace("\n", "; "), units)
    if not work.units:
        return summary
    started = time.perf_counter()
    claimed_units = []
    open_keys: set[str] = set()
    bar = lines = None
    try:
        for unit in work.units:
            with interrupts_held():  # a claim made is a claim recorded, to be put back
                claimed = set(store.claim([e.content_hash() for e in unit.members]))
                open_keys |= claimed
            members = tuple(e for e in unit.members if e.content_hash() in claimed)
            if members:
                claimed_units.append(WorkUnit(members, unit.shared_training, unit.checkpoint))
        taken = sum(len(unit.members) for unit in work.units) - len(open_keys)
        if taken:  # another run, started with this one, claimed them since the plan
            log.warning(
                "%s claimed by another run since the plan: left to it", counted(taken, "experiment")
            )
            summary.running_elsewhere += taken
            summary.to_run -= taken
        work_done = WorkDone(claimed_units)
        bar = tqdm(total=len(open_keys), desc=spec.name, unit="exp", disable=bar_disabled(progress))
        if lines_wanted(progress):
            lines = ProgressLines(spec.name, len(open_keys), every=LINE_INTERVAL)
            lines.say(
                f"{stage}running {counted(len(open_keys), 'experiment')} in {units} of work "
                f"(progress every {LINE_INTERVAL:.0f} s)"
            )
        root = None if data_root is None else str(data_root)
        for unit, result in executor.run(run_unit, claimed_units, root):
            if isinstance(result, TaskError):
                result = UnitOutcome([Outcome(e, error=result.traceback) for e in unit.members])
            _record(store, unit, result)
            store.flush()
            work_done.finished(unit, result)
            for outcome in result.members:
                open_keys.discard(outcome.experiment.content_hash())
                summary.ran += 1
                summary.failed += outcome.error is not None
                summary.diverged += outcome.error is None and outcome.diverged
            bar.update(len(result.members))
            bar.set_postfix(failed=summary.failed)
            if lines is not None:
                lines.update(summary.ran, summary.failed, work_done.share())
            log.info("%d of %d experiments run (%d failed)", summary.ran, bar.total, summary.failed)
    finally:
        if bar is not None:
            bar.close()
        if lines is not None:
            lines.close()
        if open_keys:
            with interrupts_held():  # a second Ctrl-C must not leave the claims behind
                _release(store, sorted(open_keys))
        summary.seconds = time.perf_counter() - started
    return summary


def _release(store: Store, keys: list[str]) -> None:
    """Put claimed, unfinished experiments back to pending; if the store cannot be written
    (disk full), leave them to the next run, which finds their process gone."""
    try:
        store.release(keys)
    except StoreError as error:
        log.warning("%s; the next run puts %d experiments back to pending", error, len(keys))


def _record(store: Store, unit: WorkUnit, result: UnitOutcome) -> None:
    """Write a unit's outcomes: the shared clean training first, then its failures, then its
    finished members in one transaction."""
    training = result.training
    shared = None
    if training is not None and training.error is None and training.checkpoint is not None:
        shared = store.save_training(
            training.experiment,
            training.checkpoint,
            history=training.history,
            weights=training.weights,
            metrics=training.metrics,
            timings=training.timings,
            diverged=training.diverged,
            device=training.device,
            node=training.node,
        )
    if unit.shared_training is not None and training is None:
        shared = store.training(unit.shared_training.content_hash())
    finished = []
    for outcome in result.members:
        key = outcome.experiment.content_hash()
        if outcome.error is not None:
            log.warning("experiment %s failed: %s", key[:12], error_line(outcome.error))
            store.fail(key, outcome.error)
            continue
        checkpoint = None
        if outcome.checkpoint is not None:
            checkpoint = store.write_checkpoint(key, outcome.checkpoint)
        elif unit.shared_training is not None and outcome.experiment.shares_clean_model:
            checkpoint = None if shared is None else shared.checkpoint
            if shared is not None and not outcome.history:
                outcome.history, outcome.diverged = shared.history, shared.diverged
        finished.append(
            Finished(
                key,
                metrics=outcome.metrics,
                history=outcome.history,
                weights=outcome.weights,
                timings=outcome.timings,
                diverged=outcome.diverged,
                checkpoint=checkpoint,
                device=outcome.device,
                node=outcome.node,
            )
        )
    store.finish_all(finished)
