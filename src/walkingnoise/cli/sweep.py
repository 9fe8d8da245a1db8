"""Commands for studies: ``run``, ``status``, ``retry``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from walkingnoise._signals import Terminated
from walkingnoise._words import counted
from walkingnoise.cli._common import add_progress_option, naming_the_sweep_file

#: ``sweep.spec.DEFAULT_MAX_EXPERIMENTS``, written out so that building the parser stays light.
MAX_EXPERIMENTS_HELP = "20000"


def default_store(sweep: Path) -> Path:
    """Where a sweep's store goes when ``--store`` is not given: ``runs/<sweep name>.sqlite``."""
    return Path("runs") / f"{sweep.stem}.sqlite"


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``run``, ``status`` and ``retry`` commands."""
    run = commands.add_parser("run", help="run (or resume) every experiment of a sweep file")
    run.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    run.add_argument("--store", type=Path, default=None, help="default: runs/<sweep>.sqlite")
    run.add_argument("--dry-run", action="store_true", help="count, plan and stop")
    run.add_argument(
        "--executor",
        default=None,
        choices=["inprocess", "process", "ray"],
        help="where units run (default: process with --workers above 1, ray with "
        "--ray-address, else inprocess)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (process executor; default 1) or most concurrent tasks (ray; "
        "default: as many as the cluster's CPUs and GPU shares allow)",
    )
    run.add_argument(
        "--ray-address", default=None, help="an existing Ray cluster to join (implies ray)"
    )
    run.add_argument(
        "--gpus-per-task",
        type=float,
        default=None,
        metavar="G",
        help="share of a GPU each Ray task takes (implies ray): 0 (CPUs only), 0.25 (four "
        "units per GPU, each sizing its stacks to a quarter of its memory) or 1 (default "
        "where the cluster has GPUs; else 0)",
    )
    run.add_argument("--data-root", default=None, help="directory holding the dataset files")
    run.add_argument(
        "--max-experiments",
        type=int,
        default=None,
        metavar="N",
        help=f"a sweep with more experiments needs --yes (default: {MAX_EXPERIMENTS_HELP}; "
        "a typo in a grid must not fill the disk)",
    )
    run.add_argument(
        "--yes", action="store_true", help="run sweeps larger than the experiment limit"
    )
    run.add_argument(
        "--accept-network-change",
        action="store_true",
        help="a model's network differs from the one the store's experiments of it ran, on "
        "purpose: keep the new one, and let its results join the old ones",
    )
    run.add_argument(
        "--accept-data-change",
        action="store_true",
        help="a dataset's data differs from the data the store's experiments of it ran on, on "
        "purpose: keep the new fingerprint, and let its results join the old ones",
    )
    run.add_argument(
        "--accept-teacher-change",
        action="store_true",
        help="a distillation's teacher file differs from the one the store's students of it "
        "ran with, on purpose: keep the new one; the finished students stay done",
    )
    add_progress_option(run)
    run.set_defaults(handler=_cmd_run)

    status = commands.add_parser("status", help="experiments per status in a store")
    status.add_argument("store", type=Path, help="the study's store (.sqlite)")
    status.add_argument(
        "--errors",
        action="store_true",
        help="also list why experiments failed: each different error once, with its count",
    )
    status.add_argument(
        "--sweep",
        type=Path,
        default=None,
        metavar="FILE",
        help="count only the experiments this sweep file defines as it is now, and say how "
        "many others the store holds (from earlier versions of it, or other sweeps)",
    )
    status.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="count only the experiments with this setting, whatever their status "
        "(repeatable; a key given again adds values), e.g. --where seed=0 --where site=3",
    )
    status.add_argument("--data-root", default=None, help="directory holding the dataset files")
    status.set_defaults(handler=_cmd_status)

    retry = commands.add_parser(
        "retry", help="put failed experiments, or those of ended runs, back to pending"
    )
    retry.add_argument("store", type=Path, help="the study's store (.sqlite)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--failed", action="store_true", help="retry failed ones")
    which.add_argument(
        "--running",
        action="store_true",
        help="retry the running ones but those of live processes on this host: claims of runs "
        "on other hosts that have ended (killed on a cluster node)",
    )
    retry.set_defaults(handler=_cmd_retry)


def _executor_name(args: argparse.Namespace) -> str:
    """``--executor``, or the one the other options ask for; options that the chosen
    executor would ignore are refused."""
    if args.executor is None:
        if args.ray_address is not None or args.gpus_per_task is not None:
            return "ray"
        return "process" if (args.workers or 1) > 1 else "inprocess"
    if args.ray_address is not None and args.executor != "ray":
        raise ValueError(f"--ray-address needs --executor ray, not {args.executor}")
    if args.gpus_per_task is not None and args.executor != "ray":
        raise ValueError(
            f"--gpus-per-task needs --executor ray, not {args.executor} (process workers "
            "share the GPU: each sizes its stacks to 1/--workers of its memory)"
        )
    if (args.workers or 1) > 1 and args.executor == "inprocess":
        raise ValueError(
            f"--workers {args.workers}: the inprocess executor runs one unit at a time; "
            "use --executor process (or leave --executor out)"
        )
    return str(args.executor)


def _cmd_run(args: argparse.Namespace) -> int:
    from walkingnoise.sweep import Store, load_sweep, make_executor, run_sweep
    from walkingnoise.sweep.executors import check_gpus_per_task, check_ray_address
    from walkingnoise.sweep.spec import DEFAULT_MAX_EXPERIMENTS

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.gpus_per_task is not None:
        check_gpus_per_task(args.gpus_per_task)
    executor_name = _executor_name(args)
    limit = DEFAULT_MAX_EXPERIMENTS if args.max_experiments is None else args.max_experiments
    if limit < 1:
        raise ValueError(f"--max-experiments must be at least 1, got {limit}")
    with naming_the_sweep_file(args.sweep):
        spec = load_sweep(args.sweep)
    path = args.store or default_store(args.sweep)
    options = {
        "data_root": args.data_root,
        "max_experiments": None if args.yes else limit,
        "accept_network_change": args.accept_network_change,
        "accept_teacher_change": args.accept_teacher_change,
        "accept_data_change": args.accept_data_change,
    }
    if args.dry_run:
        if args.ray_address is not None:
            check_ray_address(args.ray_address)
        with naming_the_sweep_file(args.sweep):
            summary = run_sweep(spec, path, dry_run=True, **options)
        print(f"store: {path}")
        print(summary.describe())
        if spec.adaptive_axes():
            print("adaptive σ: these are the rounds the store's results decide so far (the")
            print("first, on a new store); each later round adds σ to the curves whose midpoint")
            print("is not settled yet")
        return 0
    try:
        with (
            make_executor(
                executor_name,
                workers=args.workers,
                ray_address=args.ray_address,
                gpus_per_task=args.gpus_per_task,
            ) as executor,
            naming_the_sweep_file(args.sweep),
        ):
            summary = run_sweep(spec, path, executor=executor, progress=args.progress, **options)
    except (KeyboardInterrupt, Terminated):
        _say_what_is_kept(path)
        raise
    with Store(path, read_only=True) as store:
        counts = store.counts()
        diverged = store.diverged()
    print(summary.describe())
    among = f", {diverged} of them diverged" if diverged else ""
    print(f"store: {path}  ({counts['done']} done{among}, {counts['failed']} failed in total)")
    if summary.failed or summary.failed_before:
        print(
            f"see why with `walking-noise status {path} --errors`, then "
            f"`walking-noise retry {path} --failed`"
        )
        return 1  # for batch jobs: the sweep ran, but not all of its experiments succeeded
    return 0


def _say_what_is_kept(path: Path) -> None:
    """After Ctrl-C or SIGTERM: what the store holds, and how to go on (a line on stderr)."""
    from walkingnoise.sweep import Store, StoreError

    try:
        with Store(path, read_only=True) as store:
            counts = store.counts()
    except (StoreError, OSError):  # not created yet, or not readable: nothing to say
        return
    print(
        f"{path}: {counts['done']} done, {counts['pending']} pending, {counts['failed']} failed; "
        "finished results are kept: run the same command again to go on",
        file=sys.stderr,
    )


def _cmd_status(args: argparse.Namespace) -> None:
    from walkingnoise.cli._common import sweep_hashes
    from walkingnoise.sweep import Store
    from walkingnoise.sweep.results import devices_text, diverged_note

    members = None if args.sweep is None else sweep_hashes(args)
    if args.where:
        passing = _passing(args)
        members = passing if members is None else members & passing
    with Store(args.store, read_only=True) as store:
        stored = sum(store.counts().values())
        counts = store.counts(None if members is None else sorted(members))
        trainings = store.training_count()
        devices = store.devices(None if members is None else sorted(members))
        diverged = store.diverged(None if members is None else sorted(members))
        claims = store.running_claims()
        errors = store.errors() if args.errors else []
    if members is not None:
        claims = {key: claim for key, claim in claims.items() if key in members}
        errors = [error for error in errors if error[0] in members]
    total = sum(counts.values())
    chosen = " ".join(
        ([f"of {args.sweep} as it is now"] if args.sweep is not None else [])
        + [f"--where {text}" for text in args.where]
    )
    if members is None:
        print(f"{args.store}: {counted(total, 'experiment')}")
    else:
        print(f"{args.store}: {counted(total, 'experiment')} {chosen}")
        if len(members) > total:
            unstored = len(members) - total
            print(
                f"  ({unstored} more it defines are not stored yet: `walking-noise run` adds them)"
            )
    for status, count in counts.items():
        note = _claims_note(list(claims.values()), args.store) if status == "running" else ""
        print(f"  {status:8s} {count}{note}")
    if diverged:
        print(f"  {diverged_note(diverged)}")
    if devices:
        print(f"  done on: {devices_text(devices)}")
    if args.sweep is not None:
        print(
            f"  others in the store: {stored - total} (not defined by {args.sweep} now; `fit` "
            "and `report` leave them out with --sweep)"
        )
    elif members is not None:
        print(f"  others in the store: {stored - total}")
    print(f"  clean trainings stored: {trainings}{'' if members is None else ' (whole store)'}")
    if args.errors:
        _print_errors(errors)


def _passing(args: argparse.Namespace) -> set[str]:
    """The stored experiments, of any status, whose settings pass ``--where``."""
    from walkingnoise.analysis.selection import parse_filters, select_results
    from walkingnoise.sweep import load_results

    results = load_results(args.store, history=False, weights=False)
    if results.empty:
        return set()
    # filtered on their settings alone: a pending experiment passes as a finished one would
    return set(select_results(results.assign(status="done"), parse_filters(args.where))["hash"])


def _print_errors(errors: list[tuple[str, str, str]]) -> None:
    """Each different error of the failed experiments once, with its count and an example."""
    from walkingnoise.sweep.store import distinct_errors, error_line

    if not errors:
        print("no failed experiments")
        return
    examples: dict[str, tuple[str, str]] = {}
    for key, block, error in errors:
        examples.setdefault(error_line(error), (key, block))
    print("errors of the failed experiments:")
    for text, count in distinct_errors(error for _, _, error in errors):
        key, block = examples[text]
        where = f"block {block}, " if block else ""
        print(f"  {count} × {text}  (e.g. {where}experiment {key[:12]})")
    print("full tracebacks: the error column of walkingnoise.sweep.load_results(STORE)")


def _claims_note(claims: list[str], store: Path) -> str:
    """Who runs the running experiments, e.g. ``  (3 by live processes on this host; 2 on
    other hosts: …)``; empty when none runs."""
    parts = {
        "live": "by live processes on this host",
        "stale": "by processes that are gone: the next run puts them back to pending",
        "elsewhere": f"on other hosts: if their runs have ended, `walking-noise retry {store} "
        "--running` puts them back to pending",
    }
    said = [f"{claims.count(kind)} {words}" for kind, words in parts.items() if kind in claims]
    return f"  ({'; '.join(said)})" if said else ""


def _cmd_retry(args: argparse.Namespace) -> None:
    from walkingnoise.sweep import Store

    with Store(args.store, create=False) as store:
        if args.running:
            count = store.requeue_stale(other_hosts=True)
            print(
                f"{count} running experiments put back to pending (those of live processes on "
                "this host stay running); run the sweep again to run them"
            )
            return
        count = store.retry_failed()
    print(f"{count} failed experiments put back to pending; run the sweep again to retry them")
