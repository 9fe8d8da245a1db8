"""Start ``walking-noise`` in a fresh process that can be killed at any moment.

A ``python -m walkingnoise.cli`` spends seconds importing PyTorch and scikit-learn before it
does anything; twenty kills would mostly kill imports. The processes here are forked by
:mod:`multiprocessing`'s fork server, which has imported those once and never ran a tensor
operation: each process is a new one (its own pid, no state shared with the test) running the
real ``walkingnoise.cli.main`` with the given arguments, its output going to a log file.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

#: ``_LINUX_CAPABILITY_VERSION_3`` of ``<linux/capability.h>``, for ``capset``.
_CAPABILITY_VERSION_3 = 0x20080522
#: Imported once by the fork server, so that each forked command starts at once ("__main__",
#: the test runner's, would otherwise be imported again by every process).
PRELOAD = [
    "__main__",
    "torch",
    "torch._dynamo",
    "torch.fx.passes.shape_prop",
    "sklearn.datasets",
    "walkingnoise.cli",
    "walkingnoise.sweep",
    "walkingnoise.sweep.work",
    "walkingnoise.training.checkpoint",
    __name__,
]


def drop_capabilities() -> None:
    """Give up every capability (Linux): even root then obeys file permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)  # this process
    sets = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty, twice
    if libc.capset(header, sets) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _command(argv: list[str], cwd: str, log: str, env: dict[str, str], unprivileged: bool) -> None:
    """The forked process: output to ``log``, then ``walking-noise ARGV``; exits with its status.

    ``unprivileged`` first gives up every capability, as an ordinary user's process has none.
    """
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)
    if unprivileged:
        drop_capabilities()
    os.chdir(cwd)
    os.environ.update(env)
    from walkingnoise.cli import main

    sys.exit(main(argv))


def start_command(
    argv: Sequence[str],
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    unprivileged: bool = False,
) -> BaseProcess:
    """``walking-noise ARGV`` in a new process (started, not waited for)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    arguments = (list(argv), str(cwd), str(log), dict(env or {}), unprivileged)
    process = context.Process(target=_command, args=arguments, daemon=False)
    process.start()
    return process
