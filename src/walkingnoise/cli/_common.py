"""Argument helpers and error formatting shared by the command modules."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

if TYPE_CHECKING:
    import pandas as pd

    from walkingnoise.data.dataset import InMemoryDataset

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
        "only its earlier versions defined are left out; on an adaptive σ axis, every stored σ "
        "in its range)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=WHERE_HELP + "; a key given again adds values (seed=0 --where seed=1: either); "
        "KEY is a setting (seed, sigma, recipe.clamp, ...) or site, placement_kind, "
        "sigma_mul, sigma_add, block, device (cpu, cuda, cuda:0, or the full name)",
    )


def selected_hashes(args: argparse.Namespace, results: pd.DataFrame) -> tuple[set[str] | None, str]:
    """The hashes of the experiments ``--sweep`` and ``--where`` select from ``results`` (None
    without either), and the words that say which; an empty selection is a ValueError."""
    chosen: set[str] | None = None
    said = []
    if args.sweep is not None:
        chosen = sweep_hashes(args) & set(results["hash"])
        if not chosen:
            raise ValueError(
                f"{args.store}: none of its experiments is in {args.sweep} as it is now"
            )
        said.append(f"those of {args.sweep} as it is now")
    if args.where:
        chosen = where_hashes(args.store, results, args.where, among=chosen)
        said.append(f"finished ones that pass {' '.join(f'--where {t}' for t in args.where)}")
    return chosen, "; ".join(said)


def selected_results(
    args: argparse.Namespace, results: pd.DataFrame
) -> tuple[pd.DataFrame, set[str] | None, str]:
    """The results ``--sweep`` and ``--where`` keep, their hashes (None without either), and
    the line that says which (``N of M experiments (K finished): ...``; empty without)."""
    chosen, said = selected_hashes(args, results)
    if chosen is None:
        return results, None, ""
    stored = len(results)
    results = results[results["hash"].isin(chosen)].reset_index(drop=True)
    finished = int((results["status"] == "done").sum()) if "status" in results else 0
    return results, chosen, f"{len(results)} of {stored} experiments ({finished} finished): {said}"


def where_hashes(
    store: Path, results: pd.DataFrame, where: list[str], among: set[str] | None = None
) -> set[str]:
    """The hashes of the finished experiments (of ``among``, if given) that pass the ``--where``
    filters; none is a ValueError naming the filters and the values their keys take."""
    from walkingnoise.analysis.selection import parse_filters, select_results

    filters = parse_filters(where)
    passing = set(select_results(results, filters)["hash"])
    if among is not None:
        passing &= among
    if not passing:
        shown = " ".join(f"--where {text}" for text in where)
        scope = "" if among is None else " of those in the sweep file"
        candidates = results if among is None else results[results["hash"].isin(among)]
        hint = _values_hint(candidates, filters)
        raise ValueError(f"{store}: no finished experiment{scope} passes {shown}{hint}")
    return passing


def sweep_hashes(args: argparse.Namespace) -> set[str]:
    """The experiments ``--sweep`` defines; an error in its file names the file."""
    from walkingnoise.sweep import Store, load_sweep
    from walkingnoise.sweep.membership import sweep_members

    with naming_the_sweep_file(args.sweep):
        spec = load_sweep(args.sweep)
        with Store(args.store, read_only=True) as store:
            return sweep_members(spec, store, data_root=args.data_root)


@contextlib.contextmanager
def naming_the_sweep_file(sweep: Path) -> Iterator[None]:
    """A sweep's error found while it expands (``fixed.model: unknown model …``) names its
    file first, as those found while it is read do."""
    from walkingnoise.sweep import SweepError

    try:
        yield
    except SweepError as error:
        text = str(error)
        raise SweepError(text if str(sweep) in text else f"{sweep}: {text}") from None


def _values_hint(results: pd.DataFrame, filters: dict) -> str:
    """``; site takes 0, 1, 2`` for each filter key (values of the finished experiments)."""
    from walkingnoise.analysis.curves import prepare_results
    from walkingnoise.report.markdown import cell_text

    frame = prepare_results(results)
    if frame.empty:
        return " (none of them has finished)"
    hints = []
    for key in filters:
        column = frame[key]
        values = sorted({cell_text(v) for v in column.dropna()} - {""}, key=_natural)
        if column.isna().any():  # as --where takes them: null, and '' for a moot setting
            values.insert(0, "null")
        moot = bool((column.astype(str) == "").any())
        if moot:
            values.insert(0, "''")
        shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
        shown += " ('' where it does not apply)" if moot else ""
        hints.append(f"{key} takes {shown or 'no value'}")
    return "; " + "; ".join(hints)


def _natural(text: str) -> tuple:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


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
    """Write a table as CSV, creating its folder (as ``report --out`` and ``run --store``),
    whole or not at all, and never over a store."""
    from walkingnoise._files import refuse_database, write_atomic

    refuse_database(path)
    write_atomic(path, table.to_csv(index=False).encode("utf-8"))


def say_other_data(store: str | Path, dataset: InMemoryDataset) -> None:
    """Warn on stderr where the data read now are not those the store's models ran on (a
    command that evaluates them: ``binarization``, ``sqnr``, ``multiexec evaluate``)."""
    from walkingnoise.sweep.data_fingerprints import other_data_warning

    if warning := other_data_warning(store, dataset):
        print(warning, file=sys.stderr)
