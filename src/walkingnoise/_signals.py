"""Signals that end a command (SIGTERM, SIGHUP) raise :class:`Terminated`, except inside
:func:`deferred`, where one is held until the block ends: a block that must not be cut in two,
such as starting a worker process (cut, it prints a traceback as it dies)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """A SIGTERM or SIGHUP, raised where the command is: a BaseException like Ctrl-C's, so no
    ``except Exception`` (a task's failure) takes it for an error of the work."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_deferring = 0
_pending: list[int] = []


def terminate(signum: int, _frame: object) -> None:
    """The handler of the signals that end a command."""
    if _deferring:
        _pending.append(signum)
        return
    raise Terminated(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold :func:`terminate`'s signal until the block ends, then raise it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            signum = _pending.pop()
            _pending.clear()
            raise Terminated(signum)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and :func:`terminate`'s signals until the block ends, then raise
    the first: for clean-up that a second interrupt must not cut in two, such as putting a
    stopped sweep's claims back (a Ctrl-C reaches the pool's workers too, and the
    interrupt a worker sends back may come before this process's own). Only the main thread
    can hold SIGINT; elsewhere the block runs as it is."""
    held: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = (
        signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum)) if main else None
    )
    try:
        with deferred():
            yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if held:
        raise KeyboardInterrupt


__all__ = ["Terminated", "deferred", "interrupts_held", "terminate"]
