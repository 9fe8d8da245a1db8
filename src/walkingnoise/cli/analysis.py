"""Commands for results: ``fit`` (the μ table in the terminal) and ``report`` (HTML/MD/CSV)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from walkingnoise.cli._common import (
    add_selection_options,
    add_site_options,
    selected_hashes,
    selected_results,
    write_csv,
)

if TYPE_CHECKING:
    import pandas as pd


def default_report_dir(store: Path) -> Path:
    """Where a store's report goes without ``--out``: ``<store dir>/<store name>-report``."""
    return store.with_name(f"{store.stem}-report")


def _add_a_min(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--a-min",
        default="auto",
        choices=["auto", "chance", "free"],
        help="floor a_min of the logistic: chance level 1/K, fitted only for multiplicative "
        "noise (alone or first in mixed noise) with BatchNorm, where accuracy never falls to "
        "chance (auto, the default), "
        "always chance, or always fitted (free)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``fit`` and ``report`` commands."""
    fit = commands.add_parser(
        "fit", help="fit the midpoint noise level μ of every curve in a store and print them"
    )
    fit.add_argument("store", type=Path, help="the study's store (.sqlite)")
    _add_a_min(fit)
    fit.add_argument(
        "--double", action="store_true", help="fit two stacked logistics (curves with a plateau)"
    )
    fit.add_argument("--csv", type=Path, default=None, help="also write the full table here")
    add_site_options(fit)
    add_selection_options(fit)
    fit.set_defaults(handler=_cmd_fit)

    report = commands.add_parser(
        "report", help="write the HTML report (figures, tables, config) of a store"
    )
    report.add_argument("store", type=Path, help="the study's store (.sqlite)")
    report.add_argument(
        "--out", type=Path, default=None, help="report folder (default: <store>-report beside it)"
    )
    _add_a_min(report)
    report.add_argument(
        "--link-figures",
        action="store_true",
        help="link the PNG files from index.html instead of embedding them",
    )
    add_site_options(report)
    add_selection_options(report)
    report.set_defaults(handler=_cmd_report)


def _cmd_fit(args: argparse.Namespace) -> None:
    import pandas as pd

    from walkingnoise.analysis.tables import (
        AMPLITUDE_NOTE,
        amplitude_rows,
        dataset_site_names,
        double_midpoint_table,
        midpoint_cells,
        midpoint_table,
        midpoint_units,
        partial_drops,
        result_test_sizes,
    )
    from walkingnoise.report.markdown import cell_text, varying_columns
    from walkingnoise.sweep import load_results

    results, chosen, selection = selected_results(
        args, load_results(args.store, history=False, weights=False)
    )
    fitter = double_midpoint_table if args.double else midpoint_table
    table = fitter(results, a_min=args.a_min, n_test=result_test_sizes(results, args.data_root))
    if table.empty:
        finished = int((results["status"] == "done").sum()) if "status" in results else 0
        of = "" if chosen is None else f" among the {len(results)} selected ({finished} finished)"
        hint = _weight_noise_hint(results, args.store)
        raise ValueError(f"{args.store}: no finished experiments with a scalar σ to fit{of}{hint}")
    if selection:
        print(selection + "\n")
    if args.csv is not None:
        write_csv(table, args.csv)
    shown = table[varying_columns(table, always=("placement",))].map(cell_text)
    if args.site_names and table["site"].notna().any():
        names = dataset_site_names(args.data_root, args.store)
        shown["site"] = [
            names(r["dataset"], r["model"], r["batchnorm"]).get(int(r["site"]), "")
            if pd.notna(r["site"])
            else ""
            for _, r in table.iterrows()
        ]
    parts = ("1", "2") if args.double else ("",)
    for k in parts:  # a double fit has no single top: partial_drops marks none of it
        shown[f"μ{k} ± err"] = midpoint_cells(table, k)
    amplitudes = amplitude_rows(table).any()
    if amplitudes:
        shown["μ is"] = midpoint_units(table)
    mixed_spaces = table["space"].dropna().nunique() > 1
    if mixed_spaces:  # which rows' μ, s are in log10 σ
        shown["fit in"] = table["space"].map(lambda space: f"{space} σ" if space else "")
    if args.double:
        shown["plateau"] = table["plateau"].map(cell_text)
    else:
        shown["s"] = table["s"].map(cell_text)
    shown["a_min"] = table["a_min"].map(cell_text)
    shown["χ²/dof"] = table["chi2_red"].map(cell_text)
    shown["quality"] = table["quality"]
    with pd.option_context("display.max_rows", None, "display.width", 250):
        print(shown.to_string(index=False))
    if amplitudes:
        print(AMPLITUDE_NOTE)
    if partial_drops(table).any():
        print(
            "† the curve drops only partly (its fitted floor stays above half way to chance): "
            "μ is the middle of that drop, not a robustness level to rank against curves that "
            "fall to chance; compare them by the accuracy kept at the largest σ"
        )
    flagged = int((table["quality"] != "ok").sum())
    fitted = table["mu1" if args.double else "mu"].notna()
    spaces = " and ".join(sorted(table.loc[fitted, "space"].unique()))
    where = f" in {spaces} σ" if spaces else ""
    unfitted = f" ({int((~fitted).sum())} could not be fitted)" if not fitted.all() else ""
    logged = not args.double and (table.loc[fitted, "space"] == "log").any()
    widths = "; log-space widths s are in decades" if logged else ""
    print(
        f"\n{int(fitted.sum())} of {len(table)} curves fitted{where}{unfitted}, "
        f"{flagged} with a quality flag (a_min: {args.a_min}){widths}"
    )
    left_out = _unfinished_note(results)
    if left_out:
        print(left_out)


def _unfinished_note(results: pd.DataFrame) -> str:
    """``N experiments in no curve (… pending, … running, … failed): …``, or "" for none."""
    from walkingnoise._words import counted

    status = results.get("status")
    if status is None:
        return ""
    counts = {s: int((status == s).sum()) for s in ("pending", "running", "failed")}
    if not sum(counts.values()):
        return ""
    states = ", ".join(f"{count} {state}" for state, count in counts.items())
    return (
        f"{counted(sum(counts.values()), 'experiment')} in no curve ({states}): a curve may "
        "lack some of its σ"
    )


def _weight_noise_hint(results: pd.DataFrame, store: Path) -> str:
    """Where a study of weight noise alone, with no σ to fit, has its table: ``noisy-machines``."""
    from walkingnoise.analysis.noisy_machines import has_weight_noise

    if not has_weight_noise(results):
        return ""
    return f"; its weight noise is tabulated by `walking-noise noisy-machines {store}`"


def _cmd_report(args: argparse.Namespace) -> None:
    from walkingnoise.report import write_report
    from walkingnoise.sweep import load_results

    chosen, said, sweeps = None, "", None
    if args.sweep is not None or args.where:
        chosen, said = selected_hashes(args, load_results(args.store, history=False, weights=False))
    if args.sweep is not None:
        sweeps = {str(args.sweep): args.sweep.read_text(encoding="utf-8", errors="replace")}
    out = args.out or default_report_dir(args.store)
    index = write_report(
        args.store,
        out,
        a_min=args.a_min,
        embed=not args.link_figures,
        site_names=args.site_names,
        data_root=args.data_root,
        experiments=chosen,
        selection=said,
        sweeps=sweeps,
    )
    print(f"report: {index}")
    folders = [
        f"{name}: {out / name} ({kinds})"
        for name, kinds in (("tables", "CSV and Markdown"), ("figures", "PNG, SVG"))
        if (out / name).is_dir()  # a store without results gives neither
    ]
    if folders:
        print(", ".join(folders))
