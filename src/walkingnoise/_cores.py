"""How many CPU cores this process may use: what a sweep's defaults and checks count."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a cpuset, ``taskset`` or a batch
    scheduler's share), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
