"""Commands of one study; filled in by its issue-7 work."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add this study's commands (none yet)."""
