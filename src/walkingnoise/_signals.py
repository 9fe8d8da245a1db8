"""Signals that end a command (SIGTERM, SIGHUP) raise :class:`Terminated`, except inside
:func:`deferred`, where one is held until the block ends: a block that must not be cut in two,
such as starting a worker process (cut, it prints a traceback as it dies)."""

from __future__ import annotations

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


__all__ = ["Terminated", "deferred", "terminate"]
