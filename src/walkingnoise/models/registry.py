"""The model registry: names → builders ``(input_shape, num_classes, batchnorm) -> nn.Module``."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from torch.nn.parameter import is_lazy


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


def own_model_names() -> list[str]:
    """The registered names whose builders are the user's, not this package's, sorted."""
    return sorted(name for name, builder in _REGISTRY.items() if not _ours(builder))


def _ours(builder: ModelBuilder) -> bool:
    module = getattr(builder, "__module__", None) or ""
    return module == "walkingnoise" or module.startswith("walkingnoise.")


class ModelBuildError(ValueError):
    """A registered builder failed, or built something other than the model it was asked for."""


def unknown_model(name: str) -> str:
    """Why ``name`` cannot be built here, and how a model of one's own gets registered."""
    if multiprocessing.parent_process() is not None:
        hint = (
            "in a worker process: register it in a module that `walking-noise --import` "
            "names, or at the top level of your script, not under `if __name__ == '__main__':`"
        )
    else:
        hint = (
            "a model of your own: import the module that registers it, on the command line "
            "with `--import MODULE`"
        )
    return f"unknown model {name!r}; known: {', '.join(model_names())} ({hint})"


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    batchnorm: bool = True,
    match_batchnorm: bool = True,
) -> nn.Module:
    """Build the registered model ``name`` for the given input shape and class count.

    ``match_batchnorm``: refuse a model whose BatchNorm layers do not match ``batchnorm``
    (False: rebuild what was built before, e.g. from a checkpoint, as it was).
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(unknown_model(name)) from None
    try:
        model = builder(tuple(input_shape), num_classes, batchnorm=batchnorm)
    except ValueError as error:  # a builder's own refusal (e.g. of an input shape)
        if name in str(error):
            raise
        raise ValueError(f"model {name!r}: {error}") from error
    except Exception as error:  # the user's code: whatever it raises, name the model
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelBuildError(
            f"model {name!r}: its builder failed ({type(error).__name__}: {first}); a builder "
            "takes (input_shape, num_classes, *, batchnorm) and returns a torch.nn.Module"
        ) from error
    if not isinstance(model, nn.Module):
        raise ModelBuildError(
            f"model {name!r}: its builder returned {type(model).__name__}, not a torch.nn.Module"
        )
    if match_batchnorm:
        _check_batchnorm(name, model, batchnorm)
    return model


def _check_batchnorm(name: str, model: nn.Module, batchnorm: bool) -> None:
    """Refuse a model whose BatchNorm layers do not match the ``batchnorm`` it was built for:
    that setting labels its results and decides how their curves are fitted."""
    has = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has == batchnorm:
        return
    if batchnorm:
        raise ModelBuildError(
            f"model {name!r} has no BatchNorm layer but was built with batchnorm=True (the "
            "default): set `batchnorm: false` in the sweep file (--no-batchnorm on the command "
            "line), or make its builder add BatchNorm when batchnorm is true"
        )
    raise ModelBuildError(
        f"model {name!r} has BatchNorm layers but was built with batchnorm=False: set "
        "`batchnorm: true`, or make its builder leave BatchNorm out when batchnorm is false"
    )


def check_logits(name: str, model: nn.Module, example: torch.Tensor, num_classes: int) -> None:
    """Raise ``ModelBuildError`` unless ``model`` maps the ``example`` batch to logits of
    shape (batch, ``num_classes``), as the loss and the accuracy need; eval mode, no gradients,
    its buffers unchanged."""
    buffers = {key: b.clone() for key, b in model.named_buffers() if not is_lazy(b)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(example)
    finally:
        model.train(was_training)
        for key, b in model.named_buffers():
            if key in buffers:
                b.data = buffers[key]  # as it was, also where the forward reshaped it
    want = (example.shape[0], num_classes)
    if isinstance(output, torch.Tensor) and tuple(output.shape) == want:
        return
    if isinstance(output, torch.Tensor):
        got = f"shape {tuple(output.shape)}"
    else:
        got = type(output).__name__
    raise ModelBuildError(
        f"model {name!r} gives {got} for a batch of {example.shape[0]}; it must give logits of "
        f"shape {want}: one per class of the dataset"
    )


def check_trainable(name: str, model: nn.Module) -> None:
    """Raise ``ModelBuildError`` unless ``model`` has a parameter to train: every experiment
    trains its model (an inference-only one, the clean model it evaluates)."""
    if any(parameter.requires_grad for parameter in model.parameters()):
        return
    raise ModelBuildError(
        f"model {name!r} has no parameter to train (none at all, or all with requires_grad "
        "False), and every experiment trains its model"
    )
