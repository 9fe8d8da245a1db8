"""Damaged dataset files and checkpoints give one-line errors naming the file; hostile ones run
nothing.

Each dataset format gets a damaged file (truncated gzip, truncated pickle, truncated MATLAB file,
garbage WAV); loading the dataset, and ``walking-noise run`` on a sweep that uses it, must stop
with one line that starts with the file's path, and the command with exit status 2 and no store.
Pickles whose ``__reduce__`` would run code (a CIFAR batch, a checkpoint) and a YAML sweep with
Python tags are refused before anything runs: the file the code would create never appears.
"""

from __future__ import annotations

import builtins
import gzip
import io
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.cli import main
from walkingnoise.data import load_dataset
from walkingnoise.data.errors import DatasetFormatError
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, SweepError, load_results, load_sweep, parse_sweep, run_sweep
from walkingnoise.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from walkingnoise.training.run import build_noisy_model

from ..data.helpers import (
    encode_idx,
    svhn_arrays,
    write_cifar_dir,
    write_speech_tree,
    write_svhn_mat,
)
from ..sweep.helpers import eval_only_spec, write_sweep

SWEEP = """
fixed:
  dataset: %s
  model: mlp
  noise: additive
  sigma: 0.1
  placement: "walking:1"
  eval_repeats: 1
  recipe: {epochs: 1}
"""


class RunsCode:
    """A pickled object whose ``__reduce__`` makes the unpickler create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


# -- one damaged file per dataset format ------------------------------------------------------


def _mnist(root: Path) -> Path:
    """MNIST as gzip IDX files; the training images' gzip stream cut in half."""
    rng = np.random.default_rng(0)
    for part, n in (("train", 40), ("t10k", 12)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (root / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(images)))
        (root / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(labels)))
    damaged = root / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    return damaged


def _mnist_header(root: Path) -> Path:
    """MNIST with a raw IDX label file whose magic number has a flipped bit."""
    _mnist(root)
    (root / "train-images-idx3-ubyte.gz").unlink()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    (root / "train-images-idx3-ubyte").write_bytes(encode_idx(images))
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    data = bytearray(encode_idx((np.arange(12) % 10).astype(np.uint8)))
    data[2] ^= 0x40
    damaged = root / "t10k-labels-idx1-ubyte"
    damaged.write_bytes(bytes(data))
    return damaged


def _cifar(root: Path) -> Path:
    """CIFAR-10's python batches; the third cut in half."""
    write_cifar_dir(root / "cifar-10-batches-py")
    damaged = root / "cifar-10-batches-py" / "data_batch_3"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    return damaged


def _svhn(root: Path) -> Path:
    """SVHN's MATLAB files; the test file cut in half."""
    for name, n, seed in (("train_32x32.mat", 30, 0), ("test_32x32.mat", 10, 1)):
        write_svhn_mat(root / name, *svhn_arrays(n, seed))
    damaged = root / "test_32x32.mat"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    return damaged


def _speech(root: Path) -> Path:
    """A tiny Speech Commands tree; one recording replaced by bytes that are no WAV."""
    pytest.importorskip("soundfile", reason="speech_commands needs the 'speech' extra")
    folder = root / "SpeechCommands" / "speech_commands_v0.02"
    write_speech_tree(folder, clips_per_word=3, background_seconds=3.0)
    damaged = sorted((folder / "left").glob("*.wav"))[0]
    damaged.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))
    return damaged


DAMAGED = {
    "mnist gzip": ("mnist", _mnist),
    "mnist header": ("mnist", _mnist_header),
    "cifar10 pickle": ("cifar10", _cifar),
    "svhn mat": ("svhn", _svhn),
    "speech wav": ("speech_commands", _speech),
}


@pytest.fixture(params=sorted(DAMAGED))
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, Path]:
    """(dataset, data root, the damaged file)."""
    dataset, write = DAMAGED[request.param]
    root = tmp_path / "data"
    root.mkdir()
    return dataset, root, write(root)


def test_loading_a_damaged_dataset_names_the_file_in_one_line(
    damaged: tuple[str, Path, Path],
) -> None:
    dataset, root, path = damaged
    with pytest.raises(DatasetFormatError) as caught:
        load_dataset(dataset, root=root)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}"), message


def test_a_sweep_on_a_damaged_dataset_exits_2_naming_the_file(
    damaged: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset, root, path = damaged
    sweep = write_sweep(tmp_path, SWEEP % dataset)
    store = tmp_path / "runs" / "study.sqlite"
    code = main(["run", str(sweep), "--store", str(store), "--data-root", str(root)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"walking-noise: error: {path}"), err
    assert not store.parent.exists()


def test_a_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_cifar_dir(root / "cifar-10-batches-py")
    marker = tmp_path / "ran"
    hostile = root / "cifar-10-batches-py" / "data_batch_2"
    hostile.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    with pytest.raises(DatasetFormatError, match=r"refusing to load global __builtin__\.exec"):
        load_dataset("cifar10", root=root)
    assert not marker.exists()
    with pytest.raises(DatasetFormatError) as caught:
        load_dataset("cifar10", root=root)
    assert str(caught.value).startswith(f"{hostile}: not a CIFAR-10 batch")


# -- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine checkpoint of an untrained model on digits."""
    dataset = load_dataset("digits")
    experiment = Experiment(noise="additive", sigma=0.2, placement="walking:2", train_noise=True)
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    return save_checkpoint(path, build_noisy_model(experiment, dataset), experiment, dataset)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -20])
def test_a_truncated_checkpoint_names_the_file(
    checkpoint: Path, tmp_path: Path, keep: float
) -> None:
    data = checkpoint.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(data[:size])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(damaged)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{damaged}: not a readable checkpoint"), message
    experiment, _ = load_checkpoint(checkpoint)  # the intact file loads
    assert experiment.sigma == 0.2


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    if writer == "torch.save":
        buffer = io.BytesIO()
        torch.save({"format": "walkingnoise-checkpoint-1", "state_dict": RunsCode(marker)}, buffer)
        hostile.write_bytes(buffer.getvalue())
    else:
        hostile.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(hostile)
    assert str(caught.value).startswith(f"{hostile}: not a readable checkpoint")
    assert "\n" not in str(caught.value)
    assert not marker.exists()
    pickle.loads(pickle.dumps(RunsCode(marker)))  # the object does run code when unpickled
    assert marker.exists()


def test_a_damaged_clean_checkpoint_in_a_store_is_trained_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "eval.sqlite"
    run_sweep(eval_only_spec([0.1]), path, progress=False)
    with Store(path, read_only=True) as store:
        (key,) = {row["training"] for row in store.rows()}
        record = store.training(key)
    assert record is not None
    record.checkpoint.write_bytes(record.checkpoint.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        summary = run_sweep(eval_only_spec([0.1, 1.0]), path, progress=False)
    assert (summary.ran, summary.failed, summary.trainings) == (2, 0, 1)
    assert f"{record.checkpoint}: not a readable checkpoint" in caplog.text
    load_checkpoint(record.checkpoint)
    assert set(load_results(path)["status"]) == {"done"}


# -- YAML -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:builtins.exec",
        "!!python/object/new:builtins.exec",
        "!!python/name:builtins.exec",
        "!!python/object:builtins.object",
    ],
)
def test_a_sweep_file_with_python_tags_runs_nothing(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "ran"
    text = f"fixed:\n  noise: {tag} [\"open({str(marker)!r}, 'w').close()\"]\n"
    path = write_sweep(tmp_path, text)
    with pytest.raises(SweepError) as caught:
        load_sweep(path)
    assert str(caught.value).startswith(f"{path}: YAML syntax error")
    assert "\n" not in str(caught.value)
    assert not marker.exists()
    with pytest.raises(SweepError):
        parse_sweep(text.encode(), "inline.yaml")
    assert not marker.exists()


def test_a_missing_optional_dependency_is_one_line_naming_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    write_speech_tree(root / "SpeechCommands" / "speech_commands_v0.02", clips_per_word=3)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # as if it were not installed
    sweep = write_sweep(tmp_path, SWEEP % "speech_commands")
    store = tmp_path / "study.sqlite"
    code = main(["run", str(sweep), "--store", str(store), "--data-root", str(root)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("walking-noise: error: reading speech recordings needs the optional")
    assert "pip install 'walkingnoise[speech]'" in err
    assert not store.exists()
