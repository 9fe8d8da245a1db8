"""Saving and loading trained models: tensors and plain data only, read with ``weights_only``."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from walkingnoise import __version__
from walkingnoise._files import write_atomic
from walkingnoise.data.dataset import InMemoryDataset
from walkingnoise.experiment import STORED, Experiment
from walkingnoise.models import build_model, model_names
from walkingnoise.models.registry import unknown_model
from walkingnoise.noise.instrument import NoisyModel, instrument
from walkingnoise.noise.weight import set_weight_noise

FORMAT = "walkingnoise-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not hold what it should."""


def checkpoint_bytes(model: NoisyModel, experiment: Experiment, dataset: InMemoryDataset) -> bytes:
    """Serialize the clean model's weights, its experiment and the data shape."""
    payload = {
        "format": FORMAT,
        "version": __version__,
        "experiment": experiment.model_dump(mode="json"),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "state_dict": model.source.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(
    path: str | Path, model: NoisyModel, experiment: Experiment, dataset: InMemoryDataset
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    write_atomic(path, checkpoint_bytes(model, experiment, dataset))
    return path


def read_checkpoint(data: bytes, source: str = "<bytes>") -> tuple[Experiment, NoisyModel]:
    """Rebuild a model from checkpoint bytes, instrumented and with its experiment's noise.

    The bytes are read with ``weights_only=True``: they cannot run code. Their checksums are
    checked first: ``torch.load`` does not, and reads a flipped bit in the weights as a
    different weight.
    """
    _check_sums(data, source)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in str(error):  # torch's advice to unpickle unsafely: not for us
            first = "it holds objects a safe load refuses"
        raise CheckpointError(f"{source}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a walkingnoise checkpoint")
    stored = payload.get("experiment")
    model = stored.get("model") if isinstance(stored, dict) else None
    if isinstance(model, str) and model not in model_names():
        raise CheckpointError(f"{source}: its model is not built here: {unknown_model(model)}")
    try:
        experiment = Experiment.model_validate(payload["experiment"], context=STORED)
        input_shape = tuple(payload["input_shape"])
        clean = build_model(
            experiment.model,
            input_shape,
            payload["num_classes"],
            batchnorm=experiment.batchnorm,
            match_batchnorm=False,  # the file holds what was built then, checked or not
        )
        clean.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{source}: inconsistent checkpoint ({first})") from None
    noisy = instrument(clean, torch.zeros(2, *input_shape))
    noisy.set_noise(experiment.noise_model(), experiment.placement_spec(), experiment.sigma)
    set_weight_noise(noisy, experiment.weight_noise, training=experiment.train_noise)
    return experiment, noisy


def _check_sums(data: bytes, source: str) -> None:
    """Raise CheckpointError if a file in the checkpoint's zip archive fails its CRC-32."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{source}: not a readable checkpoint ({first})") from None
    if damaged is not None:
        raise CheckpointError(f"{source}: damaged checkpoint ({damaged} fails its checksum)")


def load_checkpoint(path: str | Path) -> tuple[Experiment, NoisyModel]:
    """Read a checkpoint file (see ``read_checkpoint``)."""
    path = Path(path)
    return read_checkpoint(path.read_bytes(), str(path))
