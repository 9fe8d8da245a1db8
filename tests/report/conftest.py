"""Stores for the report tests: synthetic curves, and a tiny real sweep with hostile names."""

from __future__ import annotations

from pathlib import Path

import pytest

from walkingnoise.analysis.synthetic import write_synthetic_store
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, parse_sweep, run_sweep
from walkingnoise.training.recipe import Recipe

#: Markup that must come out escaped wherever the report shows it.
SCRIPT_NAME = "<script>alert('name')</script>"
SCRIPT_BLOCK = "<script>alert('block')</script>"
IMG_ERROR = '<img src=x onerror="alert(1)">'

TINY_SWEEP = f"""
name: "tiny {SCRIPT_NAME}"
fixed:
  dataset: digits
  model: mlp
  noise: additive
  eval_repeats: 2
  recipe: {{epochs: 1}}
grid:
  placement: {{type: choice, options: ["walking:0", "walking:10"]}}
  sigma: {{type: logspace, min: -1, max: 2, num: 5}}
  seed: {{type: choice, options: [0, 1]}}
"{SCRIPT_BLOCK}":
  fixed:
    train_noise: false
"""


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logistic curves of every kind the report shows, written without training."""
    return write_synthetic_store(tmp_path_factory.mktemp("synthetic") / "synthetic.sqlite")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep (digits, MLP, 1 epoch, 2 sites × 5 σ × 2 seeds) plus one failed experiment."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.sqlite"
    summary = run_sweep(parse_sweep(TINY_SWEEP, "tiny.yaml"), path, progress=False)
    assert summary.failed == 0
    assert summary.ran == 20
    failed = Experiment(placement="walking:3", sigma=1.0, recipe=Recipe(epochs=1))
    with Store(path) as store:
        store.add([(failed, SCRIPT_BLOCK)])
        store.claim([failed.content_hash()])
        store.fail(failed.content_hash(), f"Traceback …\nValueError: {IMG_ERROR}\n")
    return path
