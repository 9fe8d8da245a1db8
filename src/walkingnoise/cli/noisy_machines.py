"""The ``noisy-machines`` command: accuracy vs weight noise η, by training, from a store."""

from __future__ import annotations

import argparse
from pathlib import Path

from walkingnoise.cli._common import add_selection_options, selected_results, write_csv


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``noisy-machines`` command."""
    table = commands.add_parser(
        "noisy-machines",
        help="accuracy vs weight noise η (Noisy Machines): inference-only, noise injection "
        "and distillation side by side",
    )
    table.add_argument("store", type=Path, help="the study's store (.sqlite)")
    table.add_argument(
        "--metric",
        default="noisy_test_accuracy",
        help="accuracy column to tabulate (default: noisy_test_accuracy)",
    )
    table.add_argument(
        "--csv", type=Path, default=None, help="also write the long table (numbers) here"
    )
    table.add_argument("--data-root", default=None, help="directory holding the dataset files")
    add_selection_options(table)
    table.set_defaults(handler=_cmd_noisy_machines)


def _cmd_noisy_machines(args: argparse.Namespace) -> None:
    import pandas as pd

    from walkingnoise.analysis.noisy_machines import (
        ETA_ZERO_NOTE,
        accuracy_vs_eta,
        distillation_settings,
        shares_clean_models,
        weight_noise_accuracy,
    )
    from walkingnoise.sweep import load_results

    results, _, selection = selected_results(
        args, load_results(args.store, history=False, weights=False)
    )
    finished = results["status"].eq("done").any() if "status" in results else len(results)
    if not finished:
        raise ValueError(f"{args.store}: no finished experiments to tabulate")
    table = weight_noise_accuracy(results, args.metric)
    if table.empty or not (pd.to_numeric(table["weight_noise"]) > 0).any():
        among = f" among the {len(results)} selected" if selection else ""
        raise ValueError(f"{args.store}: no experiment{among} has weight noise (weight_noise > 0)")
    if selection:
        print(selection + "\n")
    wide = accuracy_vs_eta(table)
    print(f"{args.metric} in % (mean ± std over seeds) vs weight noise η:")
    with pd.option_context("display.max_rows", None, "display.width", 160):
        print(wide.to_string())
    if shares_clean_models(table):
        print(ETA_ZERO_NOTE)
    if setting := distillation_settings(table):
        print(setting)
    if args.csv is not None:
        write_csv(table, args.csv)
        print(f"table: {args.csv}")
