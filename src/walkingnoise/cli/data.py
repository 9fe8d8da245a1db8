"""Commands for datasets: ``data list`` (what is on disk) and ``data download NAME``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from walkingnoise.cli._common import add_progress_option


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``data`` command with its ``list`` and ``download`` actions."""
    data = commands.add_parser("data", help="list the datasets on disk, download missing ones")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list", help="every dataset: present or not, size on disk, where it was looked for"
    )
    _add_root(listing)
    listing.set_defaults(handler=_cmd_list)

    download = actions.add_parser(
        "download", help="fetch a dataset's published files and verify their checksums"
    )
    download.add_argument("name", help="dataset name (see `walking-noise data list`)")
    _add_root(download)
    download.add_argument(
        "--mirror",
        default=None,
        metavar="URL",
        help="fetch every file from this base URL instead of the publisher's (same checksums)",
    )
    download.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up on a server that sends nothing for this long, then try the next mirror "
        "(default: 60)",
    )
    add_progress_option(download)
    download.set_defaults(handler=_cmd_download)


def _add_root(parser: argparse.ArgumentParser) -> None:
    """``--root`` (alias ``--data-root``): the data root."""
    parser.add_argument(
        "--root",
        "--data-root",
        dest="root",
        default=None,
        metavar="DIR",
        help="data root (default: $WALKINGNOISE_DATA or ~/.cache/walkingnoise/data)",
    )


def _human(size: int | None) -> str:
    """Bytes as ``1.6 MB`` (powers of 1000), or ``-``."""
    if not size:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _location(files: tuple[Path, ...]) -> str:
    """The directories holding the found files (a found directory stands for itself)."""
    places: list[str] = []
    for path in files:
        place = str(path) if path.is_dir() else str(path.parent)
        if place not in places:
            places.append(place)
    return ", ".join(places)


def _cmd_list(args: argparse.Namespace) -> None:
    from walkingnoise.data import data_root, dataset_names, dataset_status, official_files

    rows = [("DATASET", "PRESENT", "SIZE", "DOWNLOAD", "LOCATION")]
    for name in dataset_names():
        status = dataset_status(name, args.root)
        download = sum(f.size or 0 for f in official_files(name))
        if status.note:
            present, where = "yes", status.note
        elif status.present:
            present, where = "yes", _location(status.files)
        else:
            present = "partly" if status.files else "no"
            where = f"missing {', '.join(status.missing)}; looked in " + ", ".join(
                str(d) for d in status.searched
            )
        size = _human(status.size_bytes) if status.files else "-"
        rows.append((name, present, size, _human(download), where))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"data root: {data_root(args.root)}")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, row[4]]))


def _cmd_download(args: argparse.Namespace) -> None:
    from walkingnoise.data import dataset_status, download_dataset
    from walkingnoise.data.download import damaged_files, data_root, official_files

    before = dataset_status(args.name, args.root)
    if not args.timeout > 0:  # NaN too
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    status = download_dataset(
        args.name, args.root, mirror=args.mirror, progress=args.progress, timeout=args.timeout
    )
    where = _location(status.files) or status.note
    if before.present:
        print(f"{args.name}: already present ({where})")
        for remote in damaged_files(official_files(args.name), args.root):
            path = remote.target(data_root(args.root))
            print(
                f"warning: {path}: does not match the published checksum (damaged, or a copy "
                "compressed differently); to replace it, delete it and run this again",
                file=sys.stderr,
            )
    else:
        print(f"{args.name}: downloaded and verified, {_human(status.size_bytes)} in {where}")
