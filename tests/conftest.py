"""The whole suite's setting: tests compute on the CPU unless they are marked ``gpu``.

Many tests claim bit-equal numbers across stacks, executors and resumes, which holds with one
thread on the CPU. On a GPU a stack's kernels round differently from a single model's, and
training amplifies that, so on a machine with CUDA those claims are kept on the CPU
(``WALKINGNOISE_DEVICE=cpu``, inherited by subprocesses and workers), and the GPU's own claims,
with the GPU's tolerances, are the tests marked ``gpu`` (``pytest -m gpu``).
"""

from __future__ import annotations

import pytest

from walkingnoise.training.memory import DEVICE_ENV


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compute on the CPU, except in tests marked ``gpu``."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv(DEVICE_ENV, "cpu")
