"""Fixtures of the reliability tests: a local Ray cluster that commands can join."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .helpers import RAY_ENV


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The address of a 2-CPU Ray cluster started by this process, shut down after the module
    (other tests start their own Ray and expect none running).

    Commands join it with ``--ray-address``: a killed ``walking-noise run`` ends only its own
    Ray job, as it would on a real cluster, and each run skips starting Ray anew.
    """
    ray = pytest.importorskip("ray")
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
