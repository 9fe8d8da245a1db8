"""Commands of guided multi-execution: ``multiexec plan`` and ``multiexec evaluate``."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from walkingnoise.cli._common import (
    WHERE_HELP,
    add_site_options,
    parse_sigma,
    say_other_data,
    where_hashes,
    write_csv,
)

if TYPE_CHECKING:
    import pandas as pd

    from walkingnoise.noise.placement import GlobalPlacement

DEFAULT_POWERS = (0.5, 1.0, 2.0)


def _add_group_options(parser: argparse.ArgumentParser) -> None:
    """Options that choose the walking-noise group whose μ per site guides the plan."""
    parser.add_argument("store", type=Path, help="the study's store (.sqlite)")
    group = parser.add_argument_group(
        "walking-noise group", "narrow the store's walking-noise results down to one group"
    )
    group.add_argument("--dataset", default=None, help="dataset of the group")
    group.add_argument("--model", default=None, help="model of the group")
    group.add_argument(
        "--batchnorm", action=argparse.BooleanOptionalAction, default=None, help="BatchNorm"
    )
    group.add_argument(
        "--noise", default=None, choices=["additive", "multiplicative", "mixed"], help="noise"
    )
    training = group.add_mutually_exclusive_group()
    training.add_argument(
        "--train-noise",
        dest="train_noise",
        action="store_const",
        const=True,
        default=None,
        help="the group trained with noise",
    )
    training.add_argument(
        "--inference-only",
        dest="train_noise",
        action="store_const",
        const=False,
        help="the group trained clean, noise only in evaluation",
    )
    group.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=WHERE_HELP + "; a key given again adds values (seed=0 --where seed=1: either); "
        "μ is fitted from the experiments kept",
    )
    parser.add_argument(
        "--a-min",
        default="auto",
        choices=["auto", "chance", "free"],
        help="floor of the logistic fits that give μ (as in `walking-noise fit`)",
    )
    parser.add_argument(
        "--placement",
        default="global",
        help="sites that get noise and a share of the budget: global (default, every site) or "
        "global-except:KIND (e.g. global-except:batchnorm, as in the paper's global noise)",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="total executions n_t over all planned sites (default: 2 × number of sites)",
    )
    add_site_options(parser)
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``multiexec plan`` and ``multiexec evaluate``."""
    multiexec = commands.add_parser(
        "multiexec",
        help="guided multi-execution: executions per site from walking-noise μ",
        description="Execute sensitive noise sites more often: n_i ∝ μ_i^(−p) within a budget.",
    )
    actions = multiexec.add_subparsers(dest="action", required=True, metavar="ACTION")

    plan = actions.add_parser(
        "plan",
        help="print executions per site for a budget: uniform and n_i ∝ μ_i^(−p)",
        description="Fit μ per site of one walking-noise group and turn it into execution "
        "plans: n_i ∝ μ_i^(−p) scaled to the budget, every site at least once, rounded by "
        "largest remainder so the plan spends the budget exactly.",
    )
    _add_group_options(plan)
    plan.add_argument(
        "--power",
        type=float,
        nargs="+",
        default=list(DEFAULT_POWERS),
        help="powers p of n_i ∝ μ_i^(−p) (default: 0.5 1 2, i.e. 1/√μ, 1/μ, 1/μ²)",
    )
    plan.set_defaults(handler=_cmd_plan)

    evaluate = actions.add_parser(
        "evaluate",
        help="accuracy of uniform vs guided plans at a global noise level (the paper's Table 3)",
        description="Load the clean model of the walking-noise group from the store, inject "
        "noise at every site (inference-only) and compare: every site once, the uniform plan "
        "and the guided plans of the same budget, each evaluated R times (mean ± std).",
    )
    _add_group_options(evaluate)
    evaluate.add_argument(
        "--sigma",
        type=parse_sigma,
        required=True,
        help="global noise level σ (MUL,ADD for mixed); a σ near the global μ shows most",
    )
    evaluate.add_argument(
        "--power",
        type=float,
        nargs="+",
        default=[1.0],
        help="powers p of the guided plans (default: 1, the paper's 1/μ)",
    )
    evaluate.add_argument("--repeats", type=int, default=10, help="noisy evaluations R per plan")
    evaluate.add_argument(
        "--seed", type=int, default=None, help="seed of the clean model (default: the lowest)"
    )
    evaluate.add_argument(
        "--noise-seed", type=int, default=0, help="seed of the evaluation noise of every plan"
    )
    evaluate.add_argument(
        "--split", default="test", choices=["test", "validation"], help="evaluated split"
    )
    evaluate.set_defaults(handler=_cmd_evaluate)


def _walking_group(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(the results, their midpoint table, the chosen walking group's rows of the site table)."""
    from walkingnoise.analysis.multiexec import select_walking_group
    from walkingnoise.analysis.tables import (
        dataset_site_names,
        midpoint_table,
        result_test_sizes,
        site_table,
    )
    from walkingnoise.sweep import load_results

    results = load_results(args.store, history=False, weights=False)
    if args.where:
        kept = where_hashes(args.store, results, args.where)
        results = results[results["hash"].isin(kept)].reset_index(drop=True)
    midpoints = midpoint_table(
        results, a_min=args.a_min, n_test=result_test_sizes(results, args.data_root)
    )
    names = dataset_site_names(args.data_root, args.store) if args.site_names else None
    sites = site_table(midpoints, site_names=names)
    if sites.empty:
        raise ValueError(
            f"{args.store}: no walking-noise curve over a scalar σ (placement walking:N, "
            "additive or multiplicative noise, or mixed with a ratio) to fit μ from"
        )
    selection = {
        "dataset": args.dataset,
        "model": args.model,
        "batchnorm": args.batchnorm,
        "noise": args.noise,
        "train_noise": args.train_noise,
    }
    return results, midpoints, select_walking_group(sites, selection)


def _global_placement(text: str) -> GlobalPlacement:
    from walkingnoise.noise.placement import GlobalPlacement, parse_placement

    placement = parse_placement(text)
    if not isinstance(placement, GlobalPlacement):
        raise ValueError(f"--placement {text!r}: use global or global-except:KIND")
    return placement


def _budget(args: argparse.Namespace, n_sites: int) -> int:
    return 2 * n_sites if args.budget is None else args.budget


def _print_table(frame: pd.DataFrame) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(frame.to_string(index=False))


def _global_rows(midpoints: pd.DataFrame, group: dict[str, Any]) -> pd.DataFrame:
    """The global inference-only fits of the same model with a finite μ (none: empty)."""
    from walkingnoise.analysis.multiexec import rows_of_group
    from walkingnoise.analysis.tables import global_table

    table = global_table(midpoints)
    keys = {c: group[c] for c in ("dataset", "model", "batchnorm", "noise") if c in group}
    if table.empty or any(c not in table for c in keys):
        return table.iloc[0:0]
    rows = rows_of_group(table, keys | {"train_noise": False})
    return rows[rows["mu"].map(math.isfinite)]


def _group_options(args: argparse.Namespace) -> list[str]:
    """The options of ``plan`` that ``evaluate`` takes too, as given: the same group, fits,
    budget and powers."""
    options = [
        f"--{name}={value}"
        for name, value in (("dataset", args.dataset), ("model", args.model), ("noise", args.noise))
        if value is not None
    ]
    if args.batchnorm is not None:
        options.append("--batchnorm" if args.batchnorm else "--no-batchnorm")
    if args.train_noise is not None:
        options.append("--train-noise" if args.train_noise else "--inference-only")
    options += [f"--where={text}" for text in args.where]
    if args.a_min != "auto":
        options.append(f"--a-min={args.a_min}")
    if args.budget is not None:
        options.append(f"--budget={args.budget}")
    if args.data_root is not None:
        options.append(f"--data-root={args.data_root}")
    return [*options, "--power", *(f"{p:g}" for p in args.power)]


def _print_global_hint(args: argparse.Namespace, rows: pd.DataFrame, placement: object) -> None:
    """Each global μ of the model, and the ``evaluate`` command at that σ under the placement
    it was measured with (a σ near one placement's μ says little about another's), with the
    options that chose this plan."""
    from walkingnoise.analysis.tables import midpoint_text

    if rows.empty:
        return
    measured = "; ".join(f"{r['placement']}: μ = {midpoint_text(r)}" for _, r in rows.iterrows())
    print(f"\nglobal inference-only noise of this model: {measured}")
    print("evaluate plans near that σ, under the placement it was measured with:")
    for _, row in rows.iterrows():
        command = ["walking-noise", "multiexec", "evaluate", str(args.store)]
        command += ["--placement", str(row["placement"]), "--sigma", f"{row['mu']:.2g}"]
        print(f"  {shlex.join([*command, *_group_options(args)])}")
        if str(row["placement"]) != str(placement):
            print(
                f"    (this plans the sites of {row['placement']}, not those of {placement} above)"
            )


def _cmd_plan(args: argparse.Namespace) -> None:
    from walkingnoise.analysis.curves import describe_group
    from walkingnoise.analysis.multiexec import (
        describe_power,
        group_of,
        plan_table,
        planned_site_midpoints,
        power_label,
    )
    from walkingnoise.analysis.tables import midpoint_text
    from walkingnoise.experiment import Experiment
    from walkingnoise.sweep.sites import SiteCounter

    placement = _global_placement(args.placement)
    _, midpoints, rows = _walking_group(args)
    group = group_of(rows)
    probe = Experiment(
        dataset=group["dataset"], model=group["model"], batchnorm=group["batchnorm"], noise="none"
    )
    sites = SiteCounter(args.data_root).table(probe)
    mu = planned_site_midpoints(rows, placement, sites)
    budget = _budget(args, len(mu))
    names = {info.index: info.name for info in sites} if args.site_names else {}
    table = plan_table(mu, budget, args.power, names=names)
    if args.csv is not None:
        write_csv(table, args.csv)
    texts = {int(row["site"]): midpoint_text(row) for _, row in rows.iterrows()}
    shown = table.rename(columns={"site_name": "name"})
    shown["mu"] = [texts[s] for s in table["site"]]
    shown = shown.rename(columns={"mu": "μ ± err"})
    shown = shown.rename(columns={power_label(p): describe_power(p) for p in args.power})
    print(f"walking-noise group: {describe_group(group, skip=('placement',))}")
    print(
        f"budget n_t = {budget} executions over the {len(mu)} sites that get noise under "
        f"{placement}; n_i ∝ μ_i^(−p), each ≥ 1"
    )
    _print_table(shown)
    _print_power_zero_note(args.power)
    _print_global_hint(args, _global_rows(midpoints, group), placement)


def _print_power_zero_note(powers: list[float]) -> None:
    """Say how the uniform plan and the guided plan of p = 0 differ, when both are shown: both
    spread the budget evenly, but give the leftover executions to other sites."""
    if 0.0 in powers:
        print("uniform: leftover executions to the lowest site index; 1/μ^0: to the smallest μ")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from walkingnoise._files import check_writable
    from walkingnoise.analysis.curves import describe_group, prepare_results
    from walkingnoise.analysis.multiexec import (
        group_of,
        planned_site_midpoints,
        rows_of_group,
    )
    from walkingnoise.data import load_dataset
    from walkingnoise.experiment import Experiment
    from walkingnoise.sweep import Store
    from walkingnoise.training.checkpoint import read_checkpoint
    from walkingnoise.training.evaluate import evaluate_clean
    from walkingnoise.training.multiexec import clean_trainings, compare_plans, standard_plans

    if args.repeats < 1:
        raise ValueError(f"--repeats must be ≥ 1, got {args.repeats}")
    if args.csv is not None:
        check_writable(args.csv)  # before the evaluations, not after them
    placement = _global_placement(args.placement)
    results, _, rows = _walking_group(args)
    group = group_of(rows)
    members = rows_of_group(prepare_results(results), group)
    with Store(args.store, read_only=True) as store:
        trainings = clean_trainings(store, members["hash"])
    label = describe_group(group, skip=("placement",))
    if not trainings:
        raise ValueError(
            f"{args.store}: no clean trained model (checkpoint) of the group {label}; "
            "an inference-only experiment of that model must have run"
        )
    seed = min(trainings) if args.seed is None else args.seed
    if seed not in trainings:
        raise ValueError(f"--seed {seed}: no clean model of that seed; have {sorted(trainings)}")
    record = trainings[seed]
    trained, model = read_checkpoint(record.checkpoint.read_bytes(), str(record.checkpoint))
    setting = Experiment(
        dataset=trained.dataset,
        model=trained.model,
        batchnorm=trained.batchnorm,
        noise=group["noise"],
        order=group.get("order") or "mul_first",
        ratio=None if _nan(group.get("ratio")) else group["ratio"],
        placement=str(placement),
        sigma=args.sigma,
        train_noise=False,
    )
    noise = setting.noise_model()
    assert noise is not None
    planned = planned_site_midpoints(rows, placement, model.site_table)
    budget = _budget(args, len(planned))
    plans = standard_plans(planned, budget, args.power)
    dataset = load_dataset(trained.dataset, root=args.data_root)
    say_other_data(args.store, dataset)
    split = dataset.split(args.split)
    print(f"walking-noise group: {label}")
    print(
        f"model: clean training of seed {seed}; noise: {noise.name} {placement} σ={args.sigma}, "
        f"inference-only; {args.split} split ({len(split)} samples), R={args.repeats}"
    )
    if group.get("train_noise"):
        print(
            "warning: the plans follow the midpoints of models trained with noise, while the "
            "clean model is evaluated; --inference-only plans from its own midpoints",
            file=sys.stderr,
        )
    table = compare_plans(
        model,
        split,
        noise,
        placement,
        args.sigma,
        plans,
        repeats=args.repeats,
        seed=args.noise_seed,
        batch_size=trained.recipe.eval_batch_size,
    )
    table.insert(1, "seed", seed)
    clean = evaluate_clean(model, split, batch_size=trained.recipe.eval_batch_size).accuracy
    table["clean_accuracy"] = clean
    if args.csv is not None:
        write_csv(table, args.csv)
    shown = table[["plan", "budget", "executions"]].copy()
    shown["accuracy (%)"] = [
        f"{100 * a:.2f} ± {100 * s:.2f}"
        for a, s in zip(table["accuracy"], table["accuracy_std"], strict=True)
    ]
    _print_table(shown)
    _print_power_zero_note(args.power)
    print(
        f"\nclean accuracy {100 * clean:.2f} %; mean ± std over R={args.repeats} noisy "
        "evaluations; executions as site:n"
    )


def _nan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
