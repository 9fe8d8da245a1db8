"""What a run finds changed against its store: a fingerprint of one (a network, a teacher
file, a dataset) that differs from the one the store kept under the same key stops the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping

#: Builds the error for a changed key from (key, its fingerprint now, the stored one).
ChangeError = Callable[[str, list[str], list[str]], Exception]


def refuse_changes(
    now: Mapping[str, list[str]], stored: Mapping[str, list[str]], error: ChangeError
) -> None:
    """Raise ``error(key, now's, stored's)`` for the first key of ``now`` whose fingerprint
    differs from the stored one; a key not stored yet is new, not changed."""
    for key, fingerprint in now.items():
        before = stored.get(key)
        if before is not None and before != fingerprint:
            raise error(key, fingerprint, before)
