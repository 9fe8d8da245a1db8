"""A store's results of one dataset stay with its data: other data under the same name stops
the next run instead of joining them."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.cli import main
from walkingnoise.data import load_dataset
from walkingnoise.data.dataset import Split
from walkingnoise.sweep import Store, load_results, run_sweep
from walkingnoise.sweep.data_fingerprints import (
    DataChangedError,
    check_datasets,
    dataset_fingerprint,
)

from ..data.helpers import encode_idx
from .helpers import spec

SWEEP = """
fixed: {dataset: fashion_mnist, model: mlp, batchnorm: false, noise: additive,
        placement: "walking:1", train_noise: false, eval_repeats: 1, recipe: {epochs: 1}}
grid:
  sigma: {type: choice, options: %s}
"""


def _write_fashion(root: Path, *, shuffle_labels: bool = False) -> Path:
    """Small FashionMNIST files in torchvision's layout; the same images and labels for every
    call, or the labels shuffled (a relabelled copy of the data)."""
    rng = np.random.default_rng(0)
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    for part, count in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        if shuffle_labels:
            labels = np.random.default_rng(1).permutation(labels)
        (folder / f"{part}-images-idx3-ubyte").write_bytes(encode_idx(images))
        (folder / f"{part}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    return root


def test_the_fingerprint_tells_inputs_labels_and_splits_apart(tmp_path: Path) -> None:
    data = load_dataset("fashion_mnist", _write_fashion(tmp_path / "a"))
    again = load_dataset("fashion_mnist", _write_fashion(tmp_path / "b"))
    relabelled = load_dataset("fashion_mnist", _write_fashion(tmp_path / "c", shuffle_labels=True))
    first = dataset_fingerprint(data)
    assert first == dataset_fingerprint(again)
    assert first[2] == "train 54, validation 6, test 20"
    assert dataset_fingerprint(relabelled)[0] == first[0]
    assert dataset_fingerprint(relabelled)[1] != first[1]
    with pytest.raises(DataChangedError, match="its labels differ: now ") as err:
        check_datasets({"fashion_mnist": dataset_fingerprint(relabelled)}, {"fashion_mnist": first})
    assert "\n" not in str(err.value)
    brighter = torch.nextafter(data.test.x, torch.tensor(2.0))  # one ulp: still other inputs
    nudged = dataset_fingerprint(replace(data, test=Split(brighter, data.test.y)))
    with pytest.raises(DataChangedError, match=r"its inputs differ: .*can differ in their last"):
        check_datasets({"fashion_mnist": nudged}, {"fashion_mnist": first})
    check_datasets({"fashion_mnist": first, "digits": ["x"]}, {"fashion_mnist": first})


def test_other_data_under_the_same_name_stops_the_run_and_keeps_the_store(
    tmp_path: Path,
) -> None:
    store = tmp_path / "f.sqlite"
    first = _write_fashion(tmp_path / "first")
    assert run_sweep(spec(SWEEP % "[0.1, 1.0]"), store, data_root=first, progress=False).ran == 2
    before = sorted(load_results(store)["hash"])

    relabelled = _write_fashion(tmp_path / "relabelled", shuffle_labels=True)
    with pytest.raises(DataChangedError, match=r"^dataset 'fashion_mnist': not the data this"):
        run_sweep(spec(SWEEP % "[0.1, 1.0, 3.0]"), store, data_root=relabelled, progress=False)
    assert sorted(load_results(store)["hash"]) == before

    # The same data in another folder is the same data: its results join.
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    grown = run_sweep(spec(SWEEP % "[0.1, 1.0, 3.0]"), store, data_root=moved, progress=False)
    assert grown.ran == 1

    accepted = run_sweep(
        spec(SWEEP % "[0.1, 1.0, 3.0, 10.0]"),
        store,
        data_root=relabelled,
        progress=False,
        accept_data_change=True,
    )
    assert accepted.ran == 1
    with Store(store, read_only=True) as opened:
        kept = opened.fingerprints("data")["fashion_mnist"]
    assert kept == dataset_fingerprint(load_dataset("fashion_mnist", relabelled))


def test_the_command_line_names_the_dataset_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "f.yaml"
    sweep.write_text(SWEEP % "[0.1]")
    run = ["run", str(sweep), "--store", str(tmp_path / "f.sqlite"), "--no-progress"]
    assert main([*run, "--data-root", str(_write_fashion(tmp_path / "a"))]) == 0
    other = str(_write_fashion(tmp_path / "b", shuffle_labels=True))
    capsys.readouterr()
    assert main([*run, "--data-root", other]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("walking-noise: error: dataset 'fashion_mnist': not the data")
    assert line.endswith("(--accept-data-change: they may, and these data become the store's)")
    assert "its labels differ: now inputs " in line
    assert main([*run, "--data-root", other, "--dry-run"]) == 2
    assert main([*run, "--data-root", other, "--accept-data-change"]) == 0


def test_a_store_is_tied_to_its_data_only_once_an_experiment_of_it_finished(
    tmp_path: Path,
) -> None:
    """A run stopped before anything finished leaves a fingerprint that binds nothing: the next
    run may read other data, and its fingerprint replaces that one."""
    store = tmp_path / "f.sqlite"
    relabelled = _write_fashion(tmp_path / "relabelled", shuffle_labels=True)
    other = ["inputs sha256 0", "labels sha256 0", "train 1, validation 1, test 1"]
    with Store(store) as opened:
        opened.save_fingerprints("data", {"fashion_mnist": other})
    assert run_sweep(spec(SWEEP % "[0.1]"), store, data_root=relabelled, progress=False).ran == 1
    with Store(store, read_only=True) as opened:
        kept = opened.fingerprints("data")["fashion_mnist"]
    assert kept == dataset_fingerprint(load_dataset("fashion_mnist", relabelled))


def test_a_store_from_before_fingerprints_says_it_records_this_runs_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "f.sqlite"
    first = _write_fashion(tmp_path / "first")
    run_sweep(spec(SWEEP % "[0.1]"), store, data_root=first, progress=False)
    with sqlite3.connect(store) as db:  # as a store written before data fingerprints
        db.execute("DELETE FROM meta WHERE key LIKE 'data:%'")
    with caplog.at_level("WARNING", logger="walkingnoise"):
        run_sweep(spec(SWEEP % "[0.1, 1.0]"), store, data_root=first, progress=False)
    assert "no fingerprint of the data of fashion_mnist kept with its finished" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="walkingnoise"):
        run_sweep(spec(SWEEP % "[0.1, 1.0]"), store, data_root=first, progress=False)
    assert "no fingerprint" not in caplog.text  # recorded now
