"""What of a dataset is on disk: found files, missing files, and where the loader looked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from walkingnoise.data.errors import DatasetNotFoundError

__all__ = ["DatasetStatus", "disk_usage"]


def disk_usage(path: Path) -> int:
    """Bytes used by a file, or by all files below a directory (links not followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:  # vanished while walking
                continue
    return total


@dataclass(frozen=True)
class DatasetStatus:
    """Result of looking for a dataset's files under a root, without reading them.

    ``files`` are the paths (files or directories) a loader would read; ``missing`` names what is
    not there (empty when ``present``); ``searched`` lists the directories looked in; ``hint`` says
    where to put the files.
    """

    name: str
    files: tuple[Path, ...] = ()
    missing: tuple[str, ...] = ()
    searched: tuple[Path, ...] = ()
    hint: str = ""
    note: str = ""

    @property
    def present(self) -> bool:
        """True when nothing is missing."""
        return not self.missing

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the found files (directories counted recursively)."""
        return sum(disk_usage(path) for path in self.files if path.exists())

    def require(self) -> None:
        """Raise :class:`DatasetNotFoundError` (one line: what to put where) unless present."""
        if self.missing:
            raise DatasetNotFoundError.missing_files(
                self.name, self.missing, self.searched, hint=self.hint
            )

    @classmethod
    def of(
        cls,
        name: str,
        found: dict[str, Path | None],
        searched: Sequence[Path],
        hint: str = "",
    ) -> DatasetStatus:
        """Build a status from ``{display name: path or None}`` in a fixed order."""
        return cls(
            name=name,
            files=tuple(path for path in found.values() if path is not None),
            missing=tuple(label for label, path in found.items() if path is None),
            searched=tuple(searched),
            hint=hint,
        )
