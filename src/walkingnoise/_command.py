"""The ``walking-noise`` console script: it imports the command line itself, so that Ctrl-C
during the imports (PyTorch's take a second or more) is an interruption, not a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    """Import and run :func:`walkingnoise.cli.main`; Ctrl-C while importing is status 130."""
    try:
        from walkingnoise.cli import main as command
    except KeyboardInterrupt:
        print("walking-noise: interrupted", file=sys.stderr)
        return 130
    return command()
