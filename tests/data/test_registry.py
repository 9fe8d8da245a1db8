"""Tests for walkingnoise.data.registry, plus checks run on every registered dataset."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from walkingnoise.data import (
    DatasetNotFoundError,
    DatasetStatus,
    InMemoryDataset,
    Split,
    dataset_names,
    dataset_status,
    load_dataset,
    register_dataset,
    registry,
)
from walkingnoise.data.registry import (
    UnknownDatasetError,
    data_root,
    split_arrays,
    split_train_validation,
    stratified_holdout_indices,
    train_validation_indices,
)

# Fixture giving the root each registered dataset needs; datasets not listed take root=None.
DATASET_ROOT_FIXTURES = {
    "mnist": "mnist_torchvision_root",
    "mnist-t10k": "mnist_t10k_dir",
    "fashion_mnist": "fashion_root",
    "cifar10": "cifar_root",
    "svhn": "svhn_root",
    "speech_commands": "speech_root",
}


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry that this test may add to without leaking into other tests."""
    copy = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", copy)
    monkeypatch.setattr(registry, "_LOCATORS", dict(registry._LOCATORS))
    return copy


def _tiny_dataset(name: str, n: int = 4) -> InMemoryDataset:
    split = Split(torch.zeros(n, 1, 2, 2), torch.arange(n) % 2)
    return InMemoryDataset(name, split, split, split, ("a", "b"))


# --- registry -------------------------------------------------------------------------------


def test_builtin_names_are_registered_and_sorted() -> None:
    names = dataset_names()
    assert set(DATASET_ROOT_FIXTURES) | {"digits"} == set(names)
    assert names == sorted(names)


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="'digits' is already registered"):
        register_dataset("digits")(lambda root, **options: _tiny_dataset("x"))
    assert "digits" in dataset_names()


def test_empty_name_raises() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        register_dataset("")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(KeyError) as err:
        load_dataset("foo")
    assert isinstance(err.value, UnknownDatasetError)
    message = str(err.value)
    assert message.startswith("unknown dataset 'foo'; known: ")
    assert "\n" not in message
    known = message.split("known: ")[1].split(", ")
    assert known == dataset_names()


def test_registered_loader_receives_root_and_options(isolated_registry: dict) -> None:
    calls = []

    @register_dataset("tiny")
    def load_tiny(root: str | Path | None, *, val_fraction: float = 0.1, n: int = 4):
        calls.append((root, val_fraction, n))
        return _tiny_dataset("tiny", n)

    assert "tiny" in dataset_names()
    dataset = load_dataset("tiny", "some/root", val_fraction=0.3, n=6)
    assert calls == [("some/root", 0.3, 6)]
    assert len(dataset.train) == 6
    assert "tiny" in isolated_registry


def test_loader_returning_wrong_type_raises(isolated_registry: dict) -> None:
    register_dataset("broken")(lambda root, **options: (torch.zeros(1), torch.zeros(1)))
    with pytest.raises(TypeError, match="'broken' returned tuple"):
        load_dataset("broken")


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError):
        load_dataset("digits", no_such_option=1)


# --- data root --------------------------------------------------------------------------------


def test_data_root_explicit_env_and_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert data_root(tmp_path) == tmp_path
    assert data_root(str(tmp_path)) == tmp_path
    monkeypatch.setenv(registry.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv(registry.DATA_ROOT_ENV)
    assert data_root(None) == Path.home() / ".cache" / "walkingnoise" / "data"


# --- splits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "fraction"), [(8000, 0.1), (1438, 0.1), (10, 0.25), (5, 0.0)])
def test_train_validation_indices_partition(n: int, fraction: float) -> None:
    train, val = train_validation_indices(n, fraction)
    assert len(val) == round(n * fraction)
    assert len(train) + len(val) == n
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    assert torch.equal(train, train.sort().values)


def test_split_is_shuffled_and_independent_of_global_torch_seed() -> None:
    torch.manual_seed(1)
    train_a, val_a = train_validation_indices(1000, 0.1)
    torch.manual_seed(2)
    train_b, val_b = train_validation_indices(1000, 0.1)
    assert torch.equal(train_a, train_b)
    assert torch.equal(val_a, val_b)
    # Shuffled, not the last 10 %: validation indices spread over the whole range.
    assert not torch.equal(val_a, torch.arange(900, 1000))
    assert val_a.min() < 100
    assert val_a.max() > 900
    _, val_other_seed = train_validation_indices(1000, 0.1, seed=1)
    assert not torch.equal(val_a, val_other_seed)


def test_split_train_validation_keeps_rows_paired() -> None:
    x = torch.arange(50, dtype=torch.float32).reshape(50, 1) * 10
    y = torch.arange(50)
    train, val = split_train_validation(x, y, 0.2)
    assert (len(train), len(val)) == (40, 10)
    for split in (train, val):
        assert torch.equal(split.x[:, 0], split.y.float() * 10)
    assert set(train.y.tolist()).isdisjoint(val.y.tolist())


def test_split_arrays_takes_the_rows_of_split_train_validation() -> None:
    """Loaders split the files' uint8 arrays with split_arrays before converting them to
    floats: the same rows, in the same order, as split_train_validation of the floats."""
    x = np.arange(300, dtype=np.uint8).reshape(100, 3)
    y = np.arange(100) % 7
    (train_x, train_y), (val_x, val_y) = split_arrays(x, y, 0.1)
    train, val = split_train_validation(torch.from_numpy(x).float(), torch.from_numpy(y), 0.1)
    assert train_x.dtype == np.uint8
    assert torch.equal(torch.from_numpy(train_x).float(), train.x)
    assert torch.equal(torch.from_numpy(val_x).float(), val.x)
    assert (train_y.tolist(), val_y.tolist()) == (train.y.tolist(), val.y.tolist())
    with pytest.raises(ValueError, match="x has 100 rows but y has 99"):
        split_arrays(x, y[:99], 0.1)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_invalid_val_fraction_raises(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        train_validation_indices(100, fraction)


def test_val_fraction_leaving_no_training_data_raises() -> None:
    with pytest.raises(ValueError, match="no training data"):
        train_validation_indices(1, 0.6)


def test_split_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="3 rows but y has 2"):
        split_train_validation(torch.zeros(3, 1), torch.zeros(2), 0.5)


def test_stratified_holdout_takes_fraction_of_each_class() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    rest, held = stratified_holdout_indices(y, 0.2)
    assert torch.bincount(y[held]).tolist() == [10, 6, 4]
    assert torch.equal(torch.cat([rest, held]).sort().values, torch.arange(100))
    rest_again, held_again = stratified_holdout_indices(y, 0.2)
    assert torch.equal(held, held_again)
    assert torch.equal(rest, rest_again)


# --- errors -----------------------------------------------------------------------------------


def test_dataset_not_found_error_message_and_pickling(tmp_path: Path) -> None:
    err = DatasetNotFoundError.missing_files(
        "mnist", ["a-idx3-ubyte[.gz]"], [tmp_path, tmp_path / "MNIST" / "raw"], hint="do X"
    )
    assert isinstance(err, FileNotFoundError)
    assert str(err) == (
        f"dataset 'mnist': missing a-idx3-ubyte[.gz]; searched {tmp_path}, "
        f"{tmp_path / 'MNIST' / 'raw'}; do X"
    )
    assert err.missing == ("a-idx3-ubyte[.gz]",)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err)
    assert copy.missing == err.missing


# --- every registered dataset -----------------------------------------------------------------


@pytest.mark.parametrize("name", dataset_names())
def test_every_registered_dataset_is_well_formed(name: str, request: pytest.FixtureRequest) -> None:
    fixture = DATASET_ROOT_FIXTURES.get(name)
    root = request.getfixturevalue(fixture) if fixture else None
    dataset = load_dataset(name, root)
    assert dataset.name == name
    assert dataset.num_classes == len(dataset.class_names) >= 2
    for split_name in ("train", "validation", "test"):
        split = dataset.split(split_name)
        assert len(split) > 0, split_name
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert tuple(split.x.shape[1:]) == dataset.input_shape
        assert torch.isfinite(split.x).all()
        assert 0 <= split.y.min() <= split.y.max() < dataset.num_classes
        norm = dataset.metadata["normalization"]
        if norm is not None:  # pixels in [0, 1] mapped by (x - mean) / std per channel
            mean, std = torch.tensor(norm["mean"]), torch.tensor(norm["std"])
            assert split.x.min() >= float(((0 - mean) / std).min()) - 1e-5
            assert split.x.max() <= float(((1 - mean) / std).max()) + 1e-5
            assert len(norm["mean"]) == dataset.input_shape[0]
    assert len(dataset.validation) < len(dataset.train)
    assert "paper_augmentation" in dataset.metadata
    if dataset.class_weights is not None:
        assert dataset.class_weights.shape == (dataset.num_classes,)


@pytest.mark.parametrize("name", dataset_names())
def test_every_registered_dataset_reports_its_files(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fixture = DATASET_ROOT_FIXTURES.get(name)
    if fixture is None:  # bundled: nothing on disk, always present
        status = dataset_status(name, tmp_path)
        assert status.present
        assert status.files == ()
        return
    root = request.getfixturevalue(fixture)
    status = dataset_status(name, root)
    assert status.present, status.missing
    assert status.size_bytes > 0
    assert all(path.exists() for path in status.files)
    empty = dataset_status(name, tmp_path)
    assert not empty.present
    assert empty.missing
    assert empty.size_bytes == 0
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path)
    assert "\n" not in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_dataset_status_of_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownDatasetError, match="known: cifar10, digits"):
        dataset_status("nope")


def test_download_is_passed_only_to_file_based_loaders(isolated_registry: dict) -> None:
    seen = []

    def locate(root: str | Path | None) -> DatasetStatus:
        return DatasetStatus("files")

    @register_dataset("files", locate=locate)
    def load_files(root: str | Path | None, *, download: object = False):
        seen.append(download)
        return _tiny_dataset("files")

    load_dataset("files")
    load_dataset("files", download=True)
    assert seen == [False, True]
    # Datasets without files never receive it (digits ignores download=True).
    assert load_dataset("digits", download=True).name == "digits"


def test_importing_the_package_loads_no_optional_dependency() -> None:
    code = (
        "import sys, walkingnoise.data, walkingnoise.cli; "
        "print(sorted(m for m in ('soundfile', 'scipy.io', 'librosa') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
