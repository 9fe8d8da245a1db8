"""The teacher file behind each distillation of a store: a teacher retrained into the same
file between two runs of a sweep must not leave its students' results "already done".

A student whose teacher is a checkpoint file is identified by the file's path as written, not
by its content (reading every teacher to expand a sweep would make ``status --sweep`` need the
files). So the store keeps, per path, the SHA-256 of the file its students ran with. A run
whose file differs from the stored one stops before it runs anything, unless told the change
is meant. A relative path read from another directory is another file, and is caught too. A
file that is gone is not checked: finished students keep their results without it (students
still to run need it, see ``runner._check_teachers``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from walkingnoise.experiment import Experiment
from walkingnoise.sweep.changes import refuse_changes


class TeacherChangedError(ValueError):
    """A teacher checkpoint file is not the one the store's students of it ran with."""


def teacher_fingerprints(experiments: Iterable[Experiment]) -> dict[str, list[str]]:
    """``{path as written: ["sha256 HEX", "N bytes"]}`` of every teacher checkpoint file the
    distillations of ``experiments`` read that exists now (a relative path from the current
    directory, as the students read it)."""
    paths = {path for e in experiments if (path := e.teacher_file()) is not None}
    found = {}
    for written in sorted(paths):
        path = Path(written).expanduser()
        if path.is_file():
            found[written] = _fingerprint(path)
    return found


def _fingerprint(path: Path) -> list[str]:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return [f"sha256 {digest.hexdigest()}", f"{path.stat().st_size} bytes"]


def check_teacher_files(now: Mapping[str, list[str]], stored: Mapping[str, list[str]]) -> None:
    """Raise ``TeacherChangedError`` (one line, naming the file) if a teacher file of ``now``
    differs from the one ``stored`` under the same path."""
    refuse_changes(now, stored, _changed_teacher)


def _changed_teacher(path: str, fingerprint: list[str], before: list[str]) -> TeacherChangedError:
    return TeacherChangedError(
        f"distillation.teacher {path}: not the file this store's students of it ran with "
        f"(now {', '.join(fingerprint)}; was {', '.join(before)}); save a new teacher under "
        "a new path, or use a new store, so that its students run anew instead of counting "
        "as done (--accept-teacher-change: their results stay)"
    )
