"""Argument helpers and error formatting shared by the command modules."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

if TYPE_CHECKING:
    import pandas as pd

WHERE_HELP = (
    "keep only the finished experiments with this setting (repeatable), e.g. --where seed=0 "
    "--where recipe.clamp=null --where site=3; numbers match to ~3 significant digits"
)


def parse_sigma(text: str) -> float | tuple[float, float]:
    """Parse ``0.5`` or a mixed-noise pair ``0.1,0.5`` (σ_mul, σ_add)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a pair 'MUL,ADD': {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"expected one σ or a pair 'MUL,ADD', got {text!r}")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` and ``--data-root``."""
    parser.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    parser.add_argument("--data-root", default=None, help="directory holding the dataset files")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--progress/--no-progress``; the default shows bars only on a terminal."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: only on a terminal)",
    )


def add_site_options(parser: argparse.ArgumentParser) -> None:
    """Add --no-site-names and --data-root, for commands that name sites in their tables."""
    parser.add_argument(
        "--no-site-names",
        dest="site_names",
        action="store_false",
        help="show site indices only (names need each dataset loaded once)",
    )
    parser.add_argument("--data-root", default=None, help="directory holding the dataset files")


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """Add --sweep and --where, for commands that analyse a part of a store."""
    parser.add_argument(
        "--sweep",
        type=Path,
        default=None,
        metavar="FILE",
        help="only the experiments this sweep file defines as it is now (after an edit, those "
        "only its earlier versions defined are left out)",
    )
    parser.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE", help=WHERE_HELP
    )


def selected_hashes(args: argparse.Namespace, results: pd.DataFrame) -> tuple[set[str] | None, str]:
    """The hashes of the experiments ``--sweep`` and ``--where`` select from ``results`` (None
    without either), and the words that say which; an empty selection is a ValueError."""
    from walkingnoise.analysis.selection import parse_filters, select_results

    chosen: set[str] | None = None
    said = []
    if args.sweep is not None:
        from walkingnoise.sweep import Store, load_sweep
        from walkingnoise.sweep.membership import sweep_members

        spec = load_sweep(args.sweep)
        with Store(args.store, read_only=True) as store:
            chosen = sweep_members(spec, store, data_root=args.data_root) & set(results["hash"])
        if not chosen:
            raise ValueError(
                f"{args.store}: none of its experiments is in {args.sweep} as it is now"
            )
        said.append(f"those of {args.sweep} as it is now")
    filters = parse_filters(args.where)
    if filters:
        shown = " ".join(f"{key}={value}" for key, value in filters.items())
        passing = set(select_results(results, filters)["hash"])
        chosen = passing if chosen is None else chosen & passing
        if not chosen:
            raise ValueError(f"{args.store}: no finished experiment of those selected has {shown}")
        said.append(f"finished, with {shown}")
    return chosen, "; ".join(said)


def one_line(error: BaseException) -> str:
    """A single-line description of a user-facing error."""
    if isinstance(error, pydantic.ValidationError):
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
        return "; ".join(parts)
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV, creating its folder (as ``report --out`` and ``run --store``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
