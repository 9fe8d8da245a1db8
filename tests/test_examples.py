"""Every sweep file in examples/ parses, validates and expands without any data on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import expand, load_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHAPES = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
}
#: The experiment counts the files' header comments state.
SIZES = {
    "01_quickstart.yaml": 1216,
    "02_global.yaml": 1520,
    "03_walking.yaml": 10260,
    "04_clamped.yaml": 5586,
    "05_mixed.yaml": 1230,
}


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(SIZES)


@pytest.mark.parametrize(("name", "size"), SIZES.items())
def test_example_expands_to_its_stated_size(name: str, size: int) -> None:
    spec = load_sweep(EXAMPLES / name)
    entries = expand(spec, site_count=SiteCounter(shapes=SHAPES), max_experiments=None)
    assert len(entries) == size
    assert len({entry.experiment.content_hash() for entry in entries}) == size
