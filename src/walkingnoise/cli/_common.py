"""Argument helpers and error formatting shared by the command modules."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

if TYPE_CHECKING:
    import pandas as pd


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
