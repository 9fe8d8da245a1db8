"""The ``walking-noise`` command: a thin layer that parses arguments and calls library functions.

Each module of this package adds one group of subcommands through its ``register`` function;
every subcommand sets a ``handler`` taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from walkingnoise import __version__
from walkingnoise._signals import Terminated, terminate
from walkingnoise.cli import (
    analysis,
    binarization,
    data,
    experiment,
    multiexec,
    noisy_machines,
    profile,
    sweep,
)
from walkingnoise.cli._common import one_line
from walkingnoise.models.imports import import_user_modules

COMMAND_GROUPS = (
    experiment,
    sweep,
    data,
    analysis,
    binarization,
    multiexec,
    profile,
    noisy_machines,
)


#: Attribute of a parsed namespace: the innermost parser left with unknown arguments.
_LEFT_OVER_BY = "_walkingnoise_left_over_by"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the help, as every other bad input
    of the command is: argparse prints the whole usage first (14 lines for ``train``)."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on stderr; exit with status 2."""
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, noting the innermost (sub)command left with arguments it does not
        know: the error names its ``--help``, which lists its options."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, _LEFT_OVER_BY):
            setattr(namespace, _LEFT_OVER_BY, self)
        return namespace, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, an unknown argument of a command said by that command (``walking-noise
        train: error: unrecognized arguments: --bogus (see walking-noise train --help)``)."""
        namespace, extras = self.parse_known_args(args, namespace)
        parser = vars(namespace).pop(_LEFT_OVER_BY, self)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command group registered."""
    parser = _Parser(
        prog="walking-noise",
        description="Measure where and how much activation noise a neural network tolerates.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (and in every worker of a sweep): a module that registers "
        "your own models with walkingnoise.models.register_model; repeatable",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``walking-noise``; returns the exit status.

    Bad input (arguments, files, a store that cannot be used, a missing optional dependency) is
    one line ``walking-noise: error: …`` on stderr and status 2. A command whose work ran but
    partly failed (``run`` with failed experiments) returns status 1; Ctrl-C is status 130, and
    a closed output pipe (``| head``) 141. SIGTERM (a batch system's time limit) and SIGHUP end
    a command as Ctrl-C does, so a sweep puts its unfinished experiments back to pending and
    ends its workers; the status is 128 + the signal's number.
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        import_user_modules(args.imports)
        with _signals_end_the_command():
            status = args.handler(args)
        sys.stdout.flush()  # here, so a closed pipe is seen here too, not at the exit
    except BrokenPipeError as error:
        if not _output_closed():  # another pipe (a worker's, a download's): an error
            print(f"walking-noise: error: {one_line(error)}", file=sys.stderr)
            return 2
        # the reader went away (``| head``): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (ValueError, KeyError, OSError, ImportError) as error:  # ImportError: a missing extra
        print(f"walking-noise: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("walking-noise: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"walking-noise: terminated ({signal.Signals(stop.signum).name})", file=sys.stderr)
        return 128 + stop.signum
    return status or 0


@contextmanager
def _signals_end_the_command() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while a command runs, where they still
    have their default action (``nohup`` keeps SIGHUP ignored; an embedding program's own
    handlers stay); only the main thread can set handlers."""
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                installed[signum] = signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


def _output_closed() -> bool:
    """Whether standard output is a pipe whose reading end is closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout
        return False
