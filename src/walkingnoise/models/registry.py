"""The model registry: names → builders ``(input_shape, num_classes, batchnorm) -> nn.Module``."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Protocol

from torch import nn


class ModelBuilder(Protocol):
    """Builds a clean model for inputs of ``input_shape`` (no batch dim) and ``num_classes``."""

    def __call__(
        self, input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool
    ) -> nn.Module: ...


_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder under ``name``; a second registration of the same name raises."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def model_names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool = True
) -> nn.Module:
    """Build the registered model ``name`` for the given input shape and class count."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        hint = ""
        if multiprocessing.parent_process() is not None:
            hint = (
                " (in a worker process: register it in a module that `walking-noise --import` "
                "names, or at the top level of your script, not under `if __name__ == "
                "'__main__':`)"
            )
        raise KeyError(f"unknown model {name!r}; known: {', '.join(model_names())}{hint}") from None
    return builder(tuple(input_shape), num_classes, batchnorm=batchnorm)
