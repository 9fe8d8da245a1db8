"""Checkpoints: round trip, safe loading with weights_only, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from walkingnoise.data import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import ModelBuildError, build_model, register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.training import Recipe
from walkingnoise.training.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from walkingnoise.training.run import ExperimentResult, build_noisy_model, run_experiment

EXPERIMENT = Experiment(
    noise="additive",
    placement="walking:3",
    sigma=0.5,
    train_noise=True,
    recipe=Recipe(epochs=3),
    eval_repeats=2,
    seed=1,
)


@pytest.fixture(scope="module")
def result(digits: InMemoryDataset) -> ExperimentResult:
    return run_experiment(EXPERIMENT, dataset=digits, progress=False)


@pytest.fixture(scope="module")
def saved(result: ExperimentResult, digits: InMemoryDataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "nested" / "model.pt"
    assert save_checkpoint(path, result.model, EXPERIMENT, digits) == path
    return path


def test_round_trip_gives_the_same_experiment_and_predictions(
    result: ExperimentResult, saved: Path, digits: InMemoryDataset
) -> None:
    experiment, model = load_checkpoint(saved)
    assert experiment == EXPERIMENT
    assert experiment.content_hash() == EXPERIMENT.content_hash()
    original, loaded = result.model.source.state_dict(), model.source.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    result.model.eval()
    model.eval()
    with torch.no_grad(), result.model.noise_disabled(), model.noise_disabled():
        assert torch.equal(model(digits.test.x), result.model(digits.test.x))
    # The loaded model carries the experiment's noise configuration.
    assert model.site_table == result.model.site_table
    assert [s.sigma for s in model.sites] == [s.sigma for s in result.model.sites]
    assert [s.is_active() for s in model.sites] == [i == 3 for i in range(len(model.sites))]


def test_save_leaves_only_the_file(saved: Path) -> None:
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.pt"]


def test_file_loads_with_weights_only(saved: Path, digits: InMemoryDataset) -> None:
    payload = torch.load(saved, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["experiment"] == EXPERIMENT.model_dump(mode="json")
    assert tuple(payload["input_shape"]) == digits.input_shape
    assert payload["num_classes"] == digits.num_classes
    assert "layers.1.weight" in payload["state_dict"]


def test_mixed_noise_with_a_sigma_pair_round_trips(digits: InMemoryDataset, tmp_path: Path) -> None:
    experiment = Experiment(noise="mixed", sigma=(0.1, 0.2), placement="global-except:batchnorm")
    model = build_noisy_model(experiment, digits)
    path = save_checkpoint(tmp_path / "mixed.pt", model, experiment, digits)
    loaded, noisy = load_checkpoint(path)
    assert loaded == experiment
    assert loaded.sigma == (0.1, 0.2)
    assert [s.sigma for s in noisy.sites] == [s.sigma for s in model.sites]


def _assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message


def test_truncated_file_raises_checkpoint_error(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pt"
    data = saved.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    _assert_one_line_naming(error, path)


def test_flipped_bit_in_the_weights_raises_checkpoint_error(saved: Path, tmp_path: Path) -> None:
    """torch.load reads such a file without complaint, with one weight changed."""
    data = bytearray(saved.read_bytes())
    weight = torch.load(saved, weights_only=True)["state_dict"]["layers.1.weight"]
    start = bytes(data).find(weight.numpy().tobytes()[:64])
    assert start > 0
    data[start + 2] ^= 0x10
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    changed = torch.load(path, weights_only=True)["state_dict"]["layers.1.weight"]
    assert not torch.equal(changed, weight)
    with pytest.raises(CheckpointError, match="damaged checkpoint") as error:
        load_checkpoint(path)
    _assert_one_line_naming(error, path)


def test_garbage_file_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint\n\x00\x01\x02" * 10)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    _assert_one_line_naming(error, path)


def test_torch_file_without_format_key_raises(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a walkingnoise checkpoint") as error:
        load_checkpoint(path)
    _assert_one_line_naming(error, path)


def test_state_dict_of_another_model_raises(saved: Path, tmp_path: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["experiment"]["model"] = "mlp256"
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="inconsistent") as error:
        load_checkpoint(path)
    _assert_one_line_naming(error, path)


def test_a_model_not_registered_here_says_how_to_register_it(saved: Path, tmp_path: Path) -> None:
    """A checkpoint of a user's own model, read without ``--import`` of its module: the file
    is fine, the model is missing."""
    payload = torch.load(saved, weights_only=True)
    payload["experiment"]["model"] = "my-own-net"
    path = tmp_path / "mine.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    _assert_one_line_naming(error, path)
    message = str(error.value)
    assert "its model is not built here: unknown model 'my-own-net'" in message
    assert "--import MODULE" in message
    assert "inconsistent" not in message


def test_a_checkpoint_labelled_with_batchnorm_it_lacks_still_loads(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written before builders were checked against ``batchnorm`` (a builder that
    ignored it) load as they were built; only new builds are refused."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("ignores-bn")(
        lambda shape, classes, *, batchnorm: build_model("mlp", shape, classes, batchnorm=False)
    )
    payload = torch.load(saved, weights_only=True)
    plain = build_model(
        "mlp", tuple(payload["input_shape"]), payload["num_classes"], batchnorm=False
    )
    payload["experiment"]["model"] = "ignores-bn"
    payload["state_dict"] = plain.state_dict()
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    experiment, model = load_checkpoint(path)
    assert experiment.batchnorm
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    with pytest.raises(ModelBuildError, match="no BatchNorm layer"):
        build_model("ignores-bn", (1, 8, 8), 10, batchnorm=True)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")
