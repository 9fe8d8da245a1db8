"""A model changed between two runs of a sweep does not join the results of what it was."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from walkingnoise.cli import main
from walkingnoise.models import register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.noise import instrument
from walkingnoise.sweep import Store, load_results, run_sweep
from walkingnoise.sweep.architecture import (
    ArchitectureChangedError,
    check_networks,
    describe_network,
)

from .helpers import spec

SWEEP = """
fixed: {dataset: digits, model: mine, batchnorm: false, noise: additive, sigma: 0.5,
        train_noise: false, eval_repeats: 1, recipe: {epochs: 1}}
grid:
  placement: {type: choice, options: ["walking:1", "walking:2"]}
"""


def _builder(hidden: int, activation: type[nn.Module] = nn.ReLU):
    def build(input_shape, num_classes, *, batchnorm):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), activation(), nn.Linear(hidden, num_classes)
        )

    return build


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the model registry this test may change (as a user edits a model file)."""
    copy = dict(model_registry._REGISTRY)
    monkeypatch.setattr(model_registry, "_REGISTRY", copy)
    return copy


def _results(store: Path) -> list[tuple[str, float]]:
    frame = load_results(store)
    return sorted(zip(frame["hash"], frame["noisy_test_accuracy"], strict=True))


def test_a_model_changed_in_its_file_stops_the_next_run_and_keeps_the_store(
    tmp_path: Path, registry: dict
) -> None:
    store = tmp_path / "mine.sqlite"
    register_model("mine")(_builder(16))
    assert run_sweep(spec(SWEEP), store, progress=False).ran == 2
    before = _results(store)
    assert run_sweep(spec(SWEEP), store, progress=False).to_run == 0  # unchanged: resumes

    registry["mine"] = _builder(32)  # wider: the experiments' settings are all the same
    for dry_run in (True, False):
        with pytest.raises(ArchitectureChangedError) as caught:
            run_sweep(spec(SWEEP), store, progress=False, dry_run=dry_run)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(
            "model 'mine' (no-batchnorm, on digits) is not the network this store's experiments"
        )
        assert "now 'site 1: Linear (linear) 32', was 'site 1: Linear (linear) 16'" in message
        assert "register the changed model under a new name" in message
        assert message.endswith("(--accept-network-change: they may)")
    assert _results(store) == before
    with Store(store, read_only=True) as opened:
        assert opened.counts()["done"] == 2

    registry["mine"] = _builder(16)  # back as it was: runs again
    assert run_sweep(spec(SWEEP), store, progress=False).to_run == 0


def test_each_network_of_a_store_is_kept_and_a_store_without_one_takes_it(
    tmp_path: Path, registry: dict
) -> None:
    """Stores written before networks were kept have none to compare: the next run keeps
    the current ones, and later runs are checked against those."""
    store = tmp_path / "mine.sqlite"
    register_model("mine")(_builder(16))
    run_sweep(spec(SWEEP), store, progress=False)
    with Store(store, read_only=True) as opened:
        assert list(opened.fingerprints("network")) == ["digits|mine|no-batchnorm"]
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM meta WHERE key LIKE 'network:%'")
    registry["mine"] = _builder(16, nn.Tanh)
    assert run_sweep(spec(SWEEP), store, progress=False).to_run == 0
    with Store(store, read_only=True) as opened:
        assert len(opened.fingerprints("network")["digits|mine|no-batchnorm"]) > 0
    registry["mine"] = _builder(16)
    changed = r"now 'site 2: ReLU \(activation\) 16', was 'site 2: Tanh"
    with pytest.raises(ArchitectureChangedError, match=changed):
        run_sweep(spec(SWEEP), store, progress=False, dry_run=True)


def _described(model: nn.Module) -> list[str]:
    return describe_network(model, instrument(model, torch.zeros(2, 1, 8, 8)).site_table)


def test_the_description_names_sites_parameters_and_buffers_but_not_their_values() -> None:
    torch.manual_seed(0)
    first = _builder(16)((1, 8, 8), 10, batchnorm=False)
    lines = _described(first)
    assert lines[:3] == [
        "site 0: input (input) 1×8×8",
        "site 1: Linear (linear) 16",
        "site 2: ReLU (activation) 16",
    ]
    assert "parameter 0: 16×64 float32" in lines
    torch.manual_seed(1)
    assert _described(_builder(16)((1, 8, 8), 10, batchnorm=False)) == lines  # other weights
    renamed = nn.Sequential(
        OrderedDict(
            flat=nn.Flatten(), hidden=nn.Linear(64, 16), act=nn.ReLU(), out=nn.Linear(16, 10)
        )
    )
    assert _described(renamed) == lines  # module names change no result
    normed = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    assert "buffer 0: 8 float32" in _described(normed)


@pytest.mark.parametrize(
    ("now", "fragment"),
    [
        (["a", "b", "c"], "it has 1 more entries, from 'c'"),
        (["a"], "it lacks 1 entries, from 'b'"),
        (["a", "x"], "now 'x', was 'b'"),
    ],
)
def test_check_networks_names_the_first_difference(now: list[str], fragment: str) -> None:
    stored = {"d|m|batchnorm": ["a", "b"]}
    check_networks({"d|m|batchnorm": ["a", "b"], "d|other|batchnorm": ["z"]}, stored)
    with pytest.raises(ArchitectureChangedError, match=fragment):
        check_networks({"d|m|batchnorm": now}, stored)


def test_a_change_accepted_on_purpose_runs_and_becomes_the_stored_network(
    tmp_path: Path, registry: dict
) -> None:
    store = tmp_path / "mine.sqlite"
    register_model("mine")(_builder(16))
    run_sweep(spec(SWEEP), store, progress=False)
    registry["mine"] = _builder(32)
    assert run_sweep(spec(SWEEP), store, progress=False, accept_network_change=True).to_run == 0
    with Store(store, read_only=True) as opened:
        stored = opened.fingerprints("network")["digits|mine|no-batchnorm"]
        assert "site 1: Linear (linear) 32" in stored
    registry["mine"] = _builder(16)  # now the old one is the change
    with pytest.raises(ArchitectureChangedError, match="now 'site 1: Linear \\(linear\\) 16'"):
        run_sweep(spec(SWEEP), store, progress=False)


def test_a_network_another_run_stored_first_is_the_one_compared(tmp_path: Path) -> None:
    """Two runs that start at once both find no stored network; the one that saves second
    sees the first one's, read in the same transaction as its own save."""
    with Store(tmp_path / "s.sqlite") as store:
        first = {"d|m|batchnorm": ["a"]}
        assert store.save_fingerprints("network", first) == first
        stored = store.save_fingerprints(
            "network", {"d|m|batchnorm": ["b"], "d|n|batchnorm": ["c"]}
        )
        assert stored == {"d|m|batchnorm": ["a"], "d|n|batchnorm": ["c"]}
        with pytest.raises(ArchitectureChangedError, match="model 'm'"):
            check_networks({"d|m|batchnorm": ["b"]}, stored)


def test_a_model_name_with_a_bar_is_named_whole() -> None:
    with pytest.raises(ArchitectureChangedError, match=r"^model 'my\|net' \(batchnorm, on d\)"):
        check_networks({"d|my|net|batchnorm": ["b"]}, {"d|my|net|batchnorm": ["a"]})


def test_the_command_line_stops_in_one_line_and_accepts_a_change_on_request(
    tmp_path: Path, registry: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "mine.yaml"
    sweep.write_text(SWEEP)
    run = ["run", str(sweep), "--store", str(tmp_path / "mine.sqlite"), "--no-progress"]
    register_model("mine")(_builder(16))
    assert main(run) == 0
    registry["mine"] = _builder(32)
    capsys.readouterr()
    assert main(run) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("walking-noise: error: model 'mine' (no-batchnorm, on digits)")
    assert main([*run, "--accept-network-change"]) == 0
    assert main(run) == 0


def test_a_stores_tables_name_the_sites_of_a_model_that_is_not_imported(
    tmp_path: Path,
    registry: dict,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Analysis on a machine without the model's module: the names the run kept."""
    store = tmp_path / "mine.sqlite"
    register_model("mine")(_builder(16))
    run_sweep(spec(SWEEP), store, progress=False)
    with Store(store, read_only=True) as opened:
        kept = opened.fingerprints("sites")["digits|mine|no-batchnorm"]
    assert kept[:3] == ["input", "1:Linear", "2:ReLU"]
    del registry["mine"]  # as where its module is not imported
    with caplog.at_level("INFO", logger="walkingnoise"):
        assert main(["fit", str(store)]) == 0
    out = capsys.readouterr().out
    assert "1:Linear" in out
    assert "2:ReLU" in out
    assert "site names of mine from" in caplog.text
    assert "no site names" not in caplog.text
