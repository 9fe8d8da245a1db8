"""Errors raised by the data loaders: files missing, and files present but malformed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetFormatError", "DatasetNotFoundError", "one_line"]


def one_line(text: object) -> str:
    """Collapse whitespace so a (possibly wrapped) message fits on one line."""
    return " ".join(str(text).split())


class DatasetFormatError(ValueError):
    """A dataset file exists but is not what its published format promises.

    The message is one line that starts with the file's path and says what is wrong.
    """


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset's files are not on disk; the message says what to put where."""

    missing: tuple[str, ...] = ()
    searched: tuple[Path, ...] = ()

    @classmethod
    def missing_files(
        cls, dataset: str, missing: Sequence[str], searched: Sequence[Path], hint: str = ""
    ) -> DatasetNotFoundError:
        """Build the error for ``missing`` file names not found in any of the ``searched`` dirs."""
        message = (
            f"dataset {dataset!r}: missing {', '.join(missing)}; "
            f"searched {', '.join(str(d) for d in searched)}"
        )
        if hint:
            message += f"; {hint}"
        err = cls(message)
        err.missing = tuple(missing)
        err.searched = tuple(searched)
        return err
