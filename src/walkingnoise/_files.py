"""Atomic file writing shared by checkpoints and the store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def is_database(path: Path) -> bool:
    """Whether ``path`` is a SQLite database file, by its first bytes (False where it is missing
    or unreadable)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def refuse_database(path: Path) -> None:
    """Raise ``FileExistsError`` if ``path`` is a SQLite database (a store): an output file
    given there by a slip (``fit STORE --csv STORE``) would replace every stored result."""
    if is_database(path):
        raise FileExistsError(
            f"{path}: is a SQLite database (a store?); not overwriting it with this output"
        )


def check_writable(path: Path) -> None:
    """Raise ``OSError`` naming ``path`` unless a file can be written there (its folder is
    made if missing) without replacing a store: checked before long work whose result goes
    there, not after it."""
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not a file to write")
    refuse_database(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise _cannot_write(path, error) from None


def check_folder(path: Path) -> None:
    """Make the output folder ``path`` (with its parents) or raise ``OSError`` naming it: before
    the work whose files go there, not after it."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: is a file; give a folder for the output")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise _cannot_write(path, error) from None


def _cannot_write(path: Path, error: OSError) -> OSError:
    """``error`` (its class kept) as one line that names the file the user gave, and the file
    in its way where a folder should be."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{blocker} is a file, not a folder" if blocker else error.strerror or error
    return type(error)(f"{path}: cannot be written ({reason})")


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
