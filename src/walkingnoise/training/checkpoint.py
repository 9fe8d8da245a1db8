"""Saving and loading trained models: tensors and plain data only, read with ``weights_only``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from walkingnoise import __version__
from walkingnoise.data.dataset import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model
from walkingnoise.noise.instrument import NoisyModel, instrument


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not hold what it should."""


FORMAT = "walkingnoise-checkpoint-1"


def save_checkpoint(
    path: str | Path, model: NoisyModel, experiment: Experiment, dataset: InMemoryDataset
) -> Path:
    """Write the clean model's weights, its experiment and data shape atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": __version__,
        "experiment": experiment.model_dump(mode="json"),
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "state_dict": model.source.state_dict(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[Experiment, NoisyModel]:
    """Rebuild a saved model, instrumented and with its experiment's noise configured.

    The file is read with ``weights_only=True``: it cannot run code.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a walkingnoise checkpoint")
    try:
        experiment = Experiment.model_validate(payload["experiment"])
        input_shape = tuple(payload["input_shape"])
        clean = build_model(
            experiment.model, input_shape, payload["num_classes"], batchnorm=experiment.batchnorm
        )
        clean.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{path}: inconsistent checkpoint ({first})") from None
    noisy = instrument(clean, torch.zeros(2, *input_shape))
    noisy.set_noise(experiment.noise_model(), experiment.placement_spec(), experiment.sigma)
    return experiment, noisy
