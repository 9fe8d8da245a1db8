"""Progress reporting shared by long-running functions: bars on a terminal, lines in a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

#: Seconds between two progress lines in a log.
LINE_INTERVAL = 60.0


def bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` flag: None hides the bar when stderr is no terminal."""
    return None if progress is None else not progress


def lines_wanted(progress: bool | None, stream: TextIO | None = None) -> bool:
    """Whether to write progress lines: by default, where stderr is no terminal (a batch job's
    log), since a bar there is either hidden or one endless line of redraws."""
    if progress is not None:
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``: a duration to the precision a progress line needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressLines:
    """Where a bar would redraw, one plain line at most every ``every`` seconds, and a last one
    when there were any: ``name: 312 of 1532 experiments run (0 failed), 2 min, about 8 min
    left``."""

    def __init__(
        self,
        name: str,
        total: int,
        *,
        every: float = LINE_INTERVAL,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.total, self.every = name, total, every
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.started = self.last = clock()
        self.done = self.failed = 0
        self.share: float | None = None
        self.written = 0
        self._unwritten = False

    def say(self, text: str) -> None:
        """Write one line of ``text`` about this work."""
        print(f"{self.name}: {text}", file=self.stream, flush=True)

    def update(self, done: int, failed: int, share: float | None = None) -> None:
        """Record ``done`` finished (``failed`` of them failed) and, where it is known, the
        ``share`` of the work that is done (else the time left goes by the experiments); write a
        line if one is due."""
        self.done, self.failed, self.share, self._unwritten = done, failed, share, True
        if self.clock() - self.last >= self.every:
            self._write()

    def close(self) -> None:
        """Write the last state if lines were written and it is not among them."""
        if self.written and self._unwritten:
            self._write()

    def _write(self) -> None:
        now = self.clock()
        elapsed = now - self.started
        text = f"{self.done} of {self.total} experiments run ({self.failed} failed), "
        text += duration_text(elapsed)
        share = self.done / self.total if self.share is None else self.share
        if 0 < self.done < self.total and share > 0:
            text += f", about {duration_text(elapsed * (1 - share) / share)} left"
        self.say(text)
        self.last, self.written, self._unwritten = now, self.written + 1, False
