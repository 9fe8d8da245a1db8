"""Site kinds: which modules and functional operations a noise site may follow."""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Every kind a site can have; ``input`` is the network input (site 0).
SITE_KINDS = (
    "input",
    "linear",
    "conv",
    "batchnorm",
    "norm",
    "activation",
    "pool",
    "attention",
    "embedding",
    "add",
    "matmul",
)

#: Kinds instrumented by default: every layer of the paper's networks, plus what residual and
#: attention networks add (normalisation, attention, skip-connection adds, matrix products).
DEFAULT_KINDS = frozenset(SITE_KINDS)

_MODULE_KINDS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Bilinear, "linear"),
    (nn.modules.conv._ConvNd, "conv"),
    (nn.modules.batchnorm._BatchNorm, "batchnorm"),
    (
        (
            nn.LayerNorm,
            nn.GroupNorm,
            nn.modules.instancenorm._InstanceNorm,
            nn.LocalResponseNorm,
            nn.RMSNorm,
        ),
        "norm",
    ),
    (nn.MultiheadAttention, "attention"),
    ((nn.Embedding, nn.EmbeddingBag), "embedding"),
    (
        (
            nn.modules.pooling._MaxPoolNd,
            nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd,
            nn.modules.pooling._AdaptiveMaxPoolNd,
            nn.modules.pooling._LPPoolNd,
        ),
        "pool",
    ),
)

_FUNCTION_NAMES: dict[str, str] = {
    "add": "add",
    "iadd": "add",
    "matmul": "matmul",
    "imatmul": "matmul",
    "bmm": "matmul",
    "linear": "linear",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "batch_norm": "batchnorm",
    "layer_norm": "norm",
    "group_norm": "norm",
    "rms_norm": "norm",
    "max_pool1d": "pool",
    "max_pool2d": "pool",
    "max_pool3d": "pool",
    "avg_pool1d": "pool",
    "avg_pool2d": "pool",
    "avg_pool3d": "pool",
    "adaptive_avg_pool1d": "pool",
    "adaptive_avg_pool2d": "pool",
    "adaptive_max_pool1d": "pool",
    "adaptive_max_pool2d": "pool",
    **{
        name: "activation"
        for name in (
            "relu",
            "relu_",
            "relu6",
            "gelu",
            "silu",
            "sigmoid",
            "tanh",
            "softmax",
            "log_softmax",
            "leaky_relu",
            "elu",
            "selu",
            "hardtanh",
            "hardswish",
            "mish",
            "softplus",
        )
    },
}

_FUNCTION_KINDS: dict[Callable, str] = {
    getattr(namespace, name): kind
    for name, kind in _FUNCTION_NAMES.items()
    for namespace in (operator, torch, F)
    if callable(getattr(namespace, name, None))
}

_METHOD_KINDS: dict[str, str] = {
    **{name: kind for name, kind in _FUNCTION_NAMES.items() if hasattr(torch.Tensor, name)},
    "add_": "add",
    "__add__": "add",
    "__iadd__": "add",
    "__matmul__": "matmul",
}

#: Operations whose site is only wanted when two tensors meet (a skip connection, not ``x + 1``).
BINARY_KINDS = frozenset({"add", "matmul"})


def module_kind(module: nn.Module) -> str | None:
    """The site kind of a module, or None if no site follows it (e.g. Flatten, Dropout)."""
    for types, kind in _MODULE_KINDS:
        if isinstance(module, types):
            return kind
    if type(module).__module__ == "torch.nn.modules.activation":
        return "activation"
    return None


def function_kind(target: Callable | str) -> str | None:
    """The site kind of an fx ``call_function`` target or ``call_method`` name, or None."""
    if isinstance(target, str):
        return _METHOD_KINDS.get(target)
    try:
        return _FUNCTION_KINDS.get(target)
    except TypeError:
        return None


def check_kinds(kinds: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """Validate a selection of site kinds, naming the unknown ones."""
    unknown = sorted(set(kinds) - set(SITE_KINDS))
    if unknown:
        raise ValueError(f"unknown site kind(s) {unknown}; known: {', '.join(SITE_KINDS)}")
    return frozenset(kinds)
