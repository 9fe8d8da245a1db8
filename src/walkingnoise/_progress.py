"""Progress-bar policy shared by long-running functions."""

from __future__ import annotations


def bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` flag: None hides the bar when stderr is no terminal."""
    return None if progress is None else not progress
