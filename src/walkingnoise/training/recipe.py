"""The training recipe: optimizer, schedule, batch size, epochs, weight clamping."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from walkingnoise._numbers import no_bool, within_float32


class Recipe(BaseModel):
    """How a model is trained. Optimizer, learning rate, schedule and batch size default to the
    Walking Noise paper's settings; epochs default to 10 (the paper: 100 to 300, below) and
    augmentation to off, so that a first run is short.

    Attributes:
        epochs: passes over the training split (the paper: 100 for MNIST and FashionMNIST MLPs,
            300 for CIFAR-10, 150 for speech commands).
        batch_size: samples per optimizer step (paper: 128; 512 for speech commands).
        lr: Adam's learning rate (paper: 1e-3; 5e-4 for speech commands).
        weight_decay: Adam's L2 penalty.
        schedule: ``cosine`` annealing of the learning rate to 0 over all epochs, or ``constant``.
        clamp: if set, clamp every weight (not BatchNorm parameters, not biases, not a
            parametrized weight: ``weight_norm``'s, ``spectral_norm``'s) to [-clamp, clamp]
            after each optimizer step; the paper uses 1.0.
        eval_batch_size: samples per forward pass during evaluation (memory only).
        augment: apply the dataset's published training augmentation to every training batch
            (FashionMNIST, SVHN, CIFAR-10: random crop with padding 4 and horizontal flip, as in
            the papers; speech commands: time shift and background noise on the waveforms,
            then the features again); datasets without one (MNIST, digits) train as they are.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    clamp: float | None = Field(default=None, gt=0)
    eval_batch_size: int = Field(default=1024, ge=1)
    augment: bool = False

    _numbers = field_validator(
        "epochs", "batch_size", "lr", "weight_decay", "clamp", "eval_batch_size", mode="before"
    )(no_bool)
    _float32 = field_validator("lr", "weight_decay", "clamp")(within_float32)
