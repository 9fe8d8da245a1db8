"""Every sweep file in examples/ parses, expands to the size its header states, and the
scaled-down variants run their first experiment on the embedded data.

Conventions: ``NN_study.yaml`` is the paper-size study, ``NN_study.small.yaml`` its scaled-down
variant for 2 cores, and every file states its size in a ``# experiments: N`` header line. A
study of a dataset that cannot be scaled down to the embedded data says so in a
``# small variant: none (reason)`` header line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import expand, load_sweep
from walkingnoise.training.run import run_experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHAPES = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "svhn": ((3, 32, 32), 10),
    "speech_commands": ((1, 10, 49), 12),
}
FILES = sorted(EXAMPLES.glob("*.yaml"))
SMALL = [p for p in FILES if p.name.endswith(".small.yaml")]
#: Datasets that ship with the package or its dependencies: no download needed.
EMBEDDED = {"digits"}


def _stated_size(path: Path) -> int:
    match = re.search(r"^# experiments: (\d+)$", path.read_text(), flags=re.MULTILINE)
    assert match, f"{path.name} has no '# experiments: N' header line"
    return int(match.group(1))


def _entries(path: Path) -> list:
    return expand(load_sweep(path), site_count=SiteCounter(shapes=SHAPES), max_experiments=None)


def test_every_paper_study_has_a_small_variant() -> None:
    studies = [p for p in FILES if not p.name.endswith(".small.yaml")]
    studies = [p for p in studies if not p.name.startswith("01_quickstart")]
    assert studies, "no paper-size studies in examples/"
    for path in studies:
        none = re.search(r"^# small variant: none \(.+\)$", path.read_text(), flags=re.MULTILINE)
        if none:
            assert not path.with_suffix(".small.yaml").exists(), f"{path.name} has one after all"
            assert {e.experiment.dataset for e in _entries(path)}.isdisjoint(EMBEDDED)
            continue
        assert path.with_suffix(".small.yaml").exists(), f"{path.name} has no .small.yaml variant"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_expands_to_its_stated_size(path: Path) -> None:
    entries = _entries(path)
    assert len(entries) == _stated_size(path)
    assert len({entry.experiment.content_hash() for entry in entries}) == len(entries)


@pytest.mark.parametrize("path", SMALL, ids=[p.name for p in SMALL])
def test_small_variant_needs_no_download_and_its_first_experiment_runs(path: Path) -> None:
    entries = _entries(path)
    assert {e.experiment.dataset for e in entries} <= EMBEDDED
    first = entries[0].experiment
    result = run_experiment(first, progress=False)
    assert 0.0 <= result.metrics["clean_test_accuracy"] <= 1.0
    assert math.isfinite(result.metrics["noisy_test_accuracy"])
    assert len(result.history.epochs) == first.recipe.epochs or result.history.diverged
