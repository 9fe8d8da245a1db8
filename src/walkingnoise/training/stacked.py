"""K models of one architecture run as one: every tensor carries a leading model dimension.

The instrumented model's ``torch.fx`` graph is interpreted node by node. Each layer and
function runs once for all K models under ``torch.func.vmap`` over stacked parameters and
buffers (a Linear becomes a batched matmul, a convolution a grouped one; BatchNorm keeps
running statistics per model). Noise sites run outside ``vmap``: at each site noise is drawn
only for the models that have noise there, each model's from its own generator, so a model
draws the same noise in a stack as alone, whichever models share the stack; models given one
generator that draw alike (experiments that differ only in σ) take each draw once. Weight noise
(Noisy Machines) is drawn the same way: when a layer runs, each member with weight noise on it
draws its noise for its own slice of the stacked weight, in the order the model alone draws.

Every model keeps its own initial weights, σ and site, BatchNorm statistics, clamping and
optimizer state (Adam is elementwise, so one Adam over stacked tensors is K independent ones).

A stack of copies of one model (inference-only experiments sharing a clean model) evaluating one
shared batch computes the part of the graph before the first noisy site once, with the model
itself, and runs only the rest as a stack: walking noise at a late site costs little. Where that
site's noise is separable (``NoiseModel.separable``: additive, multiplicative, mixed) and a
Linear layer or convolution alone reads it, the layer maps the clean input and the noise's
directions once for all members instead of each member's noisy input: W(x + σz) + b is computed
as (Wx + b) + σ(Wz), which agrees with the model alone to float32 rounding (not bit for bit) and
does not depend on the members a stack holds.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils.parametrize import type_before_parametrizations
from torch.utils._pytree import tree_flatten, tree_unflatten

from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.kinds import module_kind
from walkingnoise.noise.models import NoiseLevel, NoiseModel, standard_normal
from walkingnoise.noise.site import MAX_LEVELS
from walkingnoise.noise.weight import (
    WeightNoise,
    hooked_beyond_weight_noise,
    noisy_weight_layers,
    weight_noise_disabled,
    weight_noise_layers,
    weight_noise_of,
    weight_noise_std,
)
from walkingnoise.training.clamp import clampable_weights
from walkingnoise.training.memory import KEPT_PREFIXES_CAP, is_out_of_memory
from walkingnoise.training.plain_tail import PlainTail

_SITES = "noise_sites."


class NotStackableError(RuntimeError):
    """The models cannot run as a stack (hooks instrumentation, untraceable operations...)."""


def _vmapped(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Call ``fn`` under vmap over every tensor in ``args``/``kwargs`` (all are stacked).

    Non-tensor outputs (``None`` attention weights, say) are passed through unbatched.
    """
    flat, spec = tree_flatten((args, kwargs))
    positions = [i for i, leaf in enumerate(flat) if isinstance(leaf, torch.Tensor)]
    if not positions:
        raise NotStackableError(f"{getattr(fn, '__name__', fn)} has no tensor input to stack")

    structure: list[Any] = []

    def call(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = list(flat)
        for position, tensor in zip(positions, tensors, strict=True):
            leaves[position] = tensor
        inner_args, inner_kwargs = tree_unflatten(leaves, spec)
        out_leaves, out_spec = tree_flatten(fn(*inner_args, **inner_kwargs))
        structure[:] = [out_spec, out_leaves]
        return tuple(leaf for leaf in out_leaves if isinstance(leaf, torch.Tensor))

    outputs = iter(vmap(call, randomness="different")(*(flat[i] for i in positions)))
    out_spec, out_leaves = structure
    leaves = [next(outputs) if isinstance(leaf, torch.Tensor) else leaf for leaf in out_leaves]
    return tree_unflatten(leaves, out_spec)


def _merged(fn: Callable[..., Any], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Apply a per-sample ``fn`` to (K, B, ...) by merging the model and batch dimensions."""
    k, b = x.shape[:2]
    merged = _merge(x, k)
    version = merged._version
    out = fn(merged, *args, **kwargs)
    if _changed_a_copy(x, merged, version, out):
        return x.copy_(out.view(x.shape))
    return out.reshape(k, b, *out.shape[1:])


def _merge(x: torch.Tensor, k: int) -> torch.Tensor:
    """(k, B, ...) as (k·B, ...), in the memory a stack of more than one member would give.

    More members merge as a view only where each member's batch dimension is its outermost
    (as in a contiguous batch); else as a contiguous copy. One member always merges as a view,
    so it is copied too where its batch is not outermost (the feature-major output of a
    stacked Linear layer, ``_linear``): kernels that read another layout (BatchNorm's) give
    other last bits, and a member's numbers would depend on its stack's size."""
    b = x.shape[1]
    if k == 1 and b > 1 and not x.is_contiguous() and x.stride(1) * b != x[0].numel():
        x = x.contiguous()
    return x.reshape(k * b, *x.shape[2:])


def _changed_a_copy(original: Any, merged: Any, version: int, out: Any) -> bool:
    """Whether a function changed ``merged`` in place since it was at ``version`` (and
    returned it, as in-place functions do), where merging ``original`` made a copy: the change
    belongs in ``original``."""
    return (
        out is merged
        and isinstance(original, torch.Tensor)
        and merged._version != version
        and merged.data_ptr() != original.data_ptr()
    )


def _linear(state: dict[str, torch.Tensor], x: torch.Tensor, feature_major: bool) -> torch.Tensor:
    """Stacked ``nn.Linear``: one batched matmul for all K models.

    With ``feature_major``, a (K, B, I) input gives (K, B, O) in (K, O, B) memory, which
    ``_batchnorm`` normalises as it is and the next layer reads as it is: no transposing
    copies between the layers of an MLP, forward or backward. An input in that memory is
    read as it is also when the output has to be in the usual one.
    """
    weight, bias = state["weight"], state.get("bias")
    if x.dim() == 3 and (feature_major or x.transpose(1, 2).is_contiguous()):
        xt = x.transpose(1, 2)
        out = (
            torch.bmm(weight, xt) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, xt)
        )
        out = out.transpose(1, 2)
        return out if feature_major else out.contiguous()
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    wt = weight.transpose(1, 2)
    out = torch.bmm(flat, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, wt)
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _linear_shared(
    state: dict[str, torch.Tensor], x: torch.Tensor, feature_major: bool
) -> torch.Tensor:
    """Stacked ``nn.Linear`` on an input all K models share: one matmul, weights side by side
    (``feature_major`` as for ``_linear``)."""
    weight, bias = state["weight"], state.get("bias")
    k, o = weight.shape[:2]
    flat = weight.reshape(k * o, -1)
    if feature_major and x.dim() == 3:
        xt = x[0].t()
        out = torch.mm(flat, xt) if bias is None else torch.addmm(bias.reshape(-1, 1), flat, xt)
        return out.view(k, o, -1).transpose(1, 2)
    out = F.linear(x[0], flat, None if bias is None else bias.reshape(-1))
    return out.view(*out.shape[:-1], k, o).movedim(-2, 0)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: Layers run by the stacked implementations here: these classes only, since a subclass may
#: have a forward of its own (weight standardisation, binarised weights...), which vmap runs.
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _conv(module: nn.modules.conv._ConvNd, state: dict[str, torch.Tensor], x: torch.Tensor):
    """Stacked convolution: the K models' filters as groups of one grouped convolution."""
    k, b = x.shape[:2]
    weight, bias = state["weight"], state.get("bias")
    merged = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])
    out = _CONV[weight.dim() - 3](
        merged,
        weight.reshape(k * weight.shape[1], *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        module.stride,
        module.padding,
        module.dilation,
        k * module.groups,
    )
    return out.reshape(b, k, -1, *out.shape[2:]).transpose(0, 1)


def _conv_shared(module: nn.modules.conv._ConvNd, state: dict[str, torch.Tensor], x):
    """Stacked convolution of an input all K models share: one convolution, K·C_out filters."""
    k = x.shape[0]
    weight, bias = state["weight"], state.get("bias")
    out = _CONV[weight.dim() - 3](
        x[0],
        weight.reshape(k * weight.shape[1], *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        module.stride,
        module.padding,
        module.dilation,
    )
    return out.view(out.shape[0], k, -1, *out.shape[2:]).transpose(0, 1)


def _batchnorm(module: nn.modules.batchnorm._BatchNorm, state: dict[str, torch.Tensor], x):
    """Stacked BatchNorm: K models' channels side by side, statistics per model and channel."""
    k, b, c = x.shape[:3]
    feature_major = x.dim() == 3 and x.transpose(1, 2).is_contiguous()
    if feature_major:  # (K, C, B) memory: channels side by side as they are, B the length
        merged = x.transpose(1, 2).reshape(1, k * c, b)
    else:
        merged = x.transpose(0, 1).reshape(b, k * c, *x.shape[3:])
    training = module.training or not module.track_running_stats
    mean, var = state.get("running_mean"), state.get("running_var")
    momentum = module.momentum
    if module.training and module.track_running_stats:
        counts = state["num_batches_tracked"]
        counts.add_(1)
        if momentum is None:  # a cumulative average: the members count alike (see __init__)
            momentum = 1.0 / float(counts[0])
    rate = 0.0 if momentum is None else momentum
    weight, bias = state.get("weight"), state.get("bias")
    weight = None if weight is None else weight.reshape(-1)
    bias = None if bias is None else bias.reshape(-1)
    float32 = x.dtype == torch.float32 and (weight is None or weight.dtype == torch.float32)
    if feature_major and training and b > 1 and float32:
        out, batch_mean, batch_var = _ChannelMajorBatchNorm.apply(merged, weight, bias, module.eps)
        if module.training and mean is not None and var is not None:
            # through .data, as PyTorch's kernel updates them: no version change that would
            # invalidate an earlier pass's saved statistics; and as it weighs them, which
            # keeps a statistic at ±inf (lerp's old + rate·(new − old) gives NaN)
            mean.data.view(-1).mul_(1.0 - rate).add_(batch_mean, alpha=rate)
            var.data.view(-1).mul_(1.0 - rate).add_(batch_var * (b / (b - 1)), alpha=rate)
        return out.view(k, c, b).transpose(1, 2)
    out = F.batch_norm(
        merged,
        None if mean is None else mean.view(-1),
        None if var is None else var.view(-1),
        weight,
        bias,
        training,
        rate,
        module.eps,
    )
    if feature_major:
        return out.view(k, c, b).transpose(1, 2)
    return out.reshape(b, k, c, *x.shape[3:]).transpose(0, 1)


class _ChannelMajorBatchNorm(torch.autograd.Function):
    """Training-mode batch normalisation of (1, C, L) memory with batch statistics.

    PyTorch's training kernel reduces such an input several times slower than one in (L, C)
    memory; two plain reductions give the statistics, its evaluation kernel normalises, and its
    backward kernel (which is fast here) takes the gradient. Returns (output, batch mean, biased
    batch variance); the statistics are not differentiated.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        channels = x.view(x.shape[1], -1)
        mean = channels.mean(dim=1)
        centred = channels - mean.unsqueeze(1)
        var = centred.mul_(centred).mean(dim=1)
        out = torch.native_batch_norm(x, weight, bias, mean, var, False, 0.0, eps)[0]
        ctx.save_for_backward(x, weight, mean, (var + eps).rsqrt())
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad, _mean, _var):
        x, weight, mean, invstd = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1]]
        wanted.append(ctx.needs_input_grad[2])
        grads = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, ctx.eps, wanted
        )
        return (*grads, None)


#: Modules that act on each element alone: they take (K, B, ...) as it is (these classes
#: themselves: a subclass may have a forward of its own).
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardtanh,
    nn.Hardswish, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout,
)  # fmt: skip


def _stock(module: nn.Module) -> bool:
    """Whether ``module`` is of a class of ``torch.nn`` itself."""
    return type(module).__module__.startswith("torch.nn.")


def _fast_module(
    module: nn.Module, state: dict[str, torch.Tensor], feature_major: bool
) -> tuple[Callable, Callable | None] | None:
    """A stacked implementation of a module, and one for an input all models share (None: the
    first serves); None to fall back to vmap. ``feature_major``: see ``_linear``."""
    if type(module) is nn.Linear:
        return (
            lambda x: _linear(state, x, feature_major),
            lambda x: _linear_shared(state, x, feature_major),
        )
    if (
        type(module) in _CONVOLUTIONS
        and not module.transposed
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    ):
        shared = (lambda x: _conv_shared(module, state, x)) if module.groups == 1 else None
        return (lambda x: _conv(module, state, x)), shared
    if type(module) in _BATCHNORMS:
        return (lambda x: _batchnorm(module, state, x)), None
    if not state and type(module) in _ELEMENTWISE:
        return module, lambda x: _once(module, x)
    if not state and module_kind(module) != "batchnorm" and _stock(module):

        def each(x: torch.Tensor) -> Any:
            if _per_sample(module, x.dim() - 1):
                return _merged(module, x)
            return _vmapped(module, (x,), {})

        return each, lambda x: _once(lambda v: _merged(module, v), x)
    return None


def _relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU as ``F.threshold``, whose backward keeps its input, not its output, so a noise site
    after it may add to the output in place."""
    return F.threshold(x, 0.0, 0.0)


def _feature_major_linears(graph: fx.Graph, modules: dict[str, nn.Module]) -> set[str]:
    """The Linear layers whose stacked output may stay in feature-major memory: every reader
    of it, through noise sites, BatchNorm and elementwise modules, is a Linear layer. Anything
    else (``view``, the model's output, a function) gets the usual memory."""
    accepted: dict[fx.Node, bool] = {}

    def accepts(node: fx.Node) -> bool:
        if node not in accepted:
            accepted[node] = bool(node.users) and all(takes_any_layout(u) for u in node.users)
        return accepted[node]

    def takes_any_layout(user: fx.Node) -> bool:
        if user.op != "call_module" or user.kwargs or len(user.args) != 1:
            return False
        target = str(user.target)
        module = modules.get(target)
        if type(module) is nn.Linear:
            return True
        passes_on = target.startswith(_SITES) or type(module) in (*_BATCHNORMS, *_ELEMENTWISE)
        return passes_on and not getattr(module, "inplace", False) and accepts(user)

    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and type(modules.get(str(node.target))) is nn.Linear:
            calls.setdefault(str(node.target), []).append(node)
    return {target for target, nodes in calls.items() if all(accepts(n) for n in nodes)}


def _reshapes_only(module: nn.Module) -> bool:
    """Whether ``module`` only reshapes each sample (or passes it on as it is)."""
    if type(module) is nn.Flatten:
        return module.start_dim == 1
    return type(module) is nn.Identity


def _linear_readers(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[str, tuple[str, ...]]:
    """{site: the modules from it to the Linear layer or convolution that alone reads its
    output, that layer last}, through modules that only reshape it. A stack of copies
    evaluating passes the site's noise through that layer as terms (``_NoiseTerms``) where
    none of them runs hooks then (``_Interpreter._terms``)."""
    readers: dict[str, tuple[str, ...]] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not str(node.target).startswith(_SITES):
            continue
        user, path = node, []
        while len(user.users) == 1:
            (user,) = user.users
            module = modules.get(str(user.target)) if user.op == "call_module" else None
            if module is None or user.kwargs or len(user.args) != 1:
                break
            path.append(str(user.target))
            if _linear_in_input(module):
                readers[str(node.target)] = tuple(path)
                break
            if not _reshapes_only(module):
                break
    return readers


#: Pooling layers of PyTorch's, which pool each sample alone.
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip


def _treats_samples_alone(module: nn.Module) -> bool:
    """Whether ``module`` in evaluation mode computes each sample of a batch alone, whatever
    the batch holds: a Linear layer, convolution, BatchNorm with running statistics,
    elementwise module, pooling (without indices) or ``Flatten`` after the batch dimension,
    of PyTorch's own classes."""
    kind = type(module)
    if kind in _BATCHNORMS:
        return module.track_running_stats and module.running_mean is not None
    if kind is nn.Flatten:
        return module.start_dim >= 1
    if kind in _POOLS:
        return not getattr(module, "return_indices", False)
    return kind in (nn.Linear, *_CONVOLUTIONS, *_ELEMENTWISE)


#: Batches of fewer samples than this a member run member by member where copies would merge
#: them: BLAS picks other kernels for a matmul of few rows, whose rows then differ in their last
#: bits from the same rows among many, and a member's numbers would depend on its stack's size.
_FEW_ROWS = 32


def on_merged_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    """A per-sample ``fn`` of the members' values (K, B, ...): on their batches merged into one
    (``_merged``), or member by member where a batch has fewer than ``_FEW_ROWS`` samples."""
    if x.shape[1] < _FEW_ROWS:
        return torch.stack([fn(member) for member in x])
    return _merged(fn, x)


def _weight_noises(modules: Sequence[nn.Module]) -> list[WeightNoise]:
    """The weight noise attached to any of the Linear layers and convolutions of ``modules``,
    each once."""
    found: dict[int, WeightNoise] = {}
    for module in modules:
        if _linear_in_input(module) and (noise := weight_noise_of(module)) is not None:
            found.setdefault(id(noise), noise)
    return list(found.values())


def _linear_in_input(module: nn.Module) -> bool:
    """Whether ``module`` is a Linear layer or a convolution of PyTorch's (affine in its input:
    its bias plus a linear map, ``_without_bias``)."""
    if type(module) is nn.Linear:
        return True
    return type(module) in _CONVOLUTIONS and not module.transposed


def _without_bias(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The linear part of a Linear layer or convolution: its result on ``x`` without the bias."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight)
    return module._conv_forward(x, module.weight, None)


def _per_sample(module: nn.Module, ndim: int) -> bool:
    """Whether a parameter-free module leaves the batch dimension of its ``ndim``-dimensional
    input alone, so the models' batches may be merged: no ``dim`` setting (``nn.Softmax``,
    ``nn.Flatten``, ...) names dimension 0 or is left to the module to choose."""
    for name in ("dim", "start_dim", "end_dim"):
        if not hasattr(module, name):
            continue
        dim = getattr(module, name)
        if not isinstance(dim, int) or dim % max(ndim, 1) == 0:
            return False
    return True


def _once(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A parameter-free ``fn`` of an input all K models share, computed once for all."""
    out = fn(x[:1])
    return out.expand(x.shape[0], *out.shape[1:])


#: The functional dropouts, whose third argument is ``training`` (``train``).
_DROPOUTS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
             F.feature_alpha_dropout, torch.dropout}  # fmt: skip
#: Functions and tensor methods that draw random numbers (besides the noise sites).
_RANDOM_FUNCTIONS = _DROPOUTS | {
    torch.bernoulli, torch.rand, torch.rand_like, torch.randn, torch.randn_like,
    torch.randint, torch.randint_like, torch.normal, torch.multinomial, torch.randperm,
}  # fmt: skip
_RANDOM_METHODS = {"bernoulli", "bernoulli_", "normal_", "uniform_", "random_", "exponential_"}


def _random_layers(net: fx.GraphModule) -> list[str]:
    """What in ``net`` draws random numbers in training: dropout modules with p > 0 (also
    within attention layers, whose ``dropout`` rate is a number), RReLU, and random functions
    or methods (a functional dropout whose ``training`` is fixed False draws nothing)."""
    found = []
    for name, module in net.named_modules():  # also inside leaf modules (attention, RReLU)
        dropout = isinstance(module, nn.modules.dropout._DropoutNd)
        rate = module.p if dropout else getattr(module, "dropout", None)
        if isinstance(module, nn.RReLU) or (isinstance(rate, float) and rate > 0):
            found.append(f"'{name}' ({type(module).__name__})")
    for node in net.graph.nodes:
        if node.op == "call_function" and node.target in _RANDOM_FUNCTIONS:
            default = node.kwargs.get("training", node.kwargs.get("train", True))
            training = node.args[2] if len(node.args) > 2 else default
            if training is not False or node.target not in _DROPOUTS:
                found.append(getattr(node.target, "__name__", str(node.target)))
        elif node.op == "call_method" and node.target in _RANDOM_METHODS:
            found.append(f".{node.target}()")
    return found


#: Layers whose stacked implementation returns memory of its own.
_FRESH_OUTPUT = (nn.Linear, *_CONVOLUTIONS, *_BATCHNORMS)

#: Functions applied per sample: (K, B, ...) inputs can be merged to (K·B, ...).
_PER_SAMPLE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.relu, torch.sigmoid, torch.tanh, torch.flatten,
    F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardtanh, F.dropout,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
}  # fmt: skip


@contextmanager
def _cumulative_rate(module: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """For a training pass of a BatchNorm with ``momentum=None`` (a cumulative average) run by
    vmap: its rate, 1 / batches seen, set as its momentum for the pass. Its own forward would
    read the count with ``float()``, which vmap cannot; the members' counts are equal (see
    ``StackedModel``)."""
    counts = state.get("num_batches_tracked")
    cumulative = (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.momentum is None
        and module.training
        and module.track_running_stats
        and counts is not None
    )
    if not cumulative:
        yield
        return
    module.momentum = 1.0 / (float(counts[0]) + 1.0)  # the count after this pass's increment
    try:
        yield
    finally:
        module.momentum = None


def _untensored(target: Callable, args: tuple, kwargs: dict) -> Any:
    """A function of no tensor (arithmetic on sizes, ``h.shape[0]``): the same for every
    model, so called once; one that makes a tensor from nothing is refused."""
    out = target(*args, **kwargs)
    if any(isinstance(v, torch.Tensor) for v in tree_flatten(out)[0]):
        name = getattr(target, "__name__", target)
        raise NotStackableError(f"{name} makes a tensor from no tensor input")
    return out


def _last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """{node: the values no later node reads}: what a run of ``graph`` may free after it."""
    seen: set[fx.Node] = set()
    freed: dict[fx.Node, list[fx.Node]] = {}
    for node in reversed(graph.nodes):
        for value in node.all_input_nodes:
            if value not in seen:
                seen.add(value)
                freed.setdefault(node, []).append(value)
    return freed


class _LeanInterpreter(fx.Interpreter):
    """``fx.Interpreter`` with less work per call, for graphs run once per batch.

    Its constructor takes the stack's module table and the values' last uses (``freed``, from
    ``_last_uses``; None keeps every value in ``env``), computed once per stack, and its loop
    keeps no progress bar or traceback metadata per node. A run ends with ``_PrefixEndError``
    at the node ``stop``.
    """

    def __init__(
        self,
        stack: StackedModel,
        freed: dict[fx.Node, list[fx.Node]] | None,
        stop: fx.Node | None,
    ) -> None:
        # not fx.Interpreter.__init__, which recomputes both on every call
        self.stack = stack
        self.module = stack.template.net
        self.submodules = stack._submodules
        self.graph = self.module.graph
        self.env: dict[fx.Node, Any] = {}
        self.garbage_collect_values = freed is not None
        self.extra_traceback = False
        self.freed = freed or {}
        self.stop = stop

    def run(self, *args: Any, initial_env: dict[fx.Node, Any] | None = None) -> Any:
        self.env = env = initial_env if initial_env is not None else {}
        self.args_iter = iter(self.graph.process_inputs(*args))
        for node in self.graph.nodes:
            if node in env:
                if node.op == "placeholder":  # given: its argument is not the next one's
                    next(self.args_iter, None)
                continue
            if node is self.stop:
                raise _PrefixEndError
            value = self.run_node(node)
            if node.op == "output":
                return self.graph.process_outputs(value)
            env[node] = value
            for done in self.freed.get(node, ()):
                del env[done]
        raise RuntimeError("the graph has no output node")

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        return getattr(self, n.op)(n.target, args, kwargs)


class _Interpreter(_LeanInterpreter):
    """Runs the instrumented graph on stacked tensors."""

    def __init__(
        self,
        stack: StackedModel,
        batch: int,
        owned: torch.Tensor | None = None,
        *,
        stop: fx.Node | None = None,
        first: fx.Node | None = None,
        free: bool | None = None,
    ) -> None:
        """``free``: drop each value after its last reader (default: unless ``stop`` is set,
        whose run keeps them all)."""
        free = stop is None if free is None else free
        super().__init__(stack, stack._freed if free else None, stop)
        self.batch = batch
        self.owned = owned
        #: the first noisy site of copies of one model, whose input is their shared clean
        #: value (``_run_copies``): its noise may pass to the next layer as terms
        self.first = first
        self._node: fx.Node | None = None
        self._computed: set[fx.Node] = set()
        #: nodes run here whose output no backward keeps: a noise site may add to it in place
        self._fresh: set[fx.Node] = set()

    def run_node(self, n: fx.Node) -> Any:
        self._node = n
        value = super().run_node(n)
        self._computed.add(n)
        return value

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        if args and isinstance(args[0], _NoiseTerms):
            module = self.fetch_attr(target)
            if not _linear_in_input(module):
                return args[0].reshaped(module)
            if target in self.stack._fresh_layers:
                self._fresh.add(self._node)
            return args[0].through(module)
        if target.startswith(_SITES):
            if self._node is self.first and (terms := self._terms(target, args[0])) is not None:
                return terms
            owned = self.owned is not None and args[0] is self.owned
            # not an input expanded from one batch, whose rows share their memory
            owned = owned and not args[0].requires_grad and args[0].stride(0) != 0
            inplace = owned or self._scratch(args[0])
            return self.stack._site(int(target[len(_SITES) :]), args[0], inplace=inplace)
        noisy = self.stack._noisy_weight(target)
        if noisy is None:
            return self._call_layer(target, args, kwargs)
        state = self.stack._module_state[target]
        clean, state["weight"] = state["weight"], noisy
        try:
            return self._call_layer(target, args, kwargs)
        finally:
            state["weight"] = clean

    def _call_layer(self, target: str, args: tuple, kwargs: dict) -> Any:
        """A layer (or other module) of the graph, run for all K models."""
        fast = self.stack._fast.get(target)
        if fast is not None and len(args) == 1 and not kwargs and self._activation(args[0]):
            each, shared = fast
            if shared is not None and self._shared(args[0]):
                return shared(args[0])
            if self._one_model_per_sample(target):
                if target in self.stack._fresh_layers:
                    self._fresh.add(self._node)
                module = self.fetch_attr(target)
                with weight_noise_disabled(module):  # the stack draws every member's
                    return on_merged_batches(module, args[0])
            if target in self.stack._relus and self._sole_reader():
                self._fresh.add(self._node)
                return _relu(args[0])
            if target in self.stack._fresh_layers:
                self._fresh.add(self._node)
            return each(args[0])
        module = self.fetch_attr(target)
        state = self.stack._module_state[target]
        if not state:
            return _vmapped(module, args, kwargs)
        names = list(state)

        def call(tensors: tuple[torch.Tensor, ...], *inner: Any, **inner_kw: Any) -> Any:
            return functional_call(module, dict(zip(names, tensors, strict=True)), inner, inner_kw)

        # the module itself runs here, hooks and all: its own weight noise stays off, since the
        # stack draws every member's (``StackedModel._noisy_weight``)
        with _cumulative_rate(module, state), weight_noise_disabled(module):
            return _vmapped(call, (tuple(state[n] for n in names), *args), kwargs)

    def _terms(self, site: str, x: Any) -> _NoiseTerms | None:
        """The first noisy site's output as terms for the layer that alone reads it, where that
        layer runs as the model's own (see ``_one_model_per_sample``); None to run the site."""
        path = self.stack._linear_readers.get(site)
        if path is None or not self._one_model_per_sample(path[-1]):
            return None
        # a hook (put there before or after the stack was built) must see every member's input
        if any(hooked_beyond_weight_noise(self.stack._submodules[name]) for name in path):
            return None
        return self.stack._site_terms(int(site[len(_SITES) :]), x)

    def _one_model_per_sample(self, target: str) -> bool:
        """Whether layer ``target`` may run as the model's own layer on the models' batches
        merged into one: copies of one model evaluating (one set of weights), and a layer
        that treats each sample alone (a Linear or convolution, BatchNorm with running
        statistics). One matmul over K·B rows, in the batch's own memory, takes the place of
        K batched ones and the transposing copies between them."""
        stack = self.stack
        if not stack.copies or stack.training or stack._noisy_weight_rows(target):
            return False
        module = stack._submodules[target]
        if type(module) in _BATCHNORMS:
            return module.track_running_stats and module.running_mean is not None
        return type(module) in (nn.Linear, *_CONVOLUTIONS)

    def _scratch(self, value: Any) -> bool:
        """Whether the site now running may overwrite its input ``value``: fresh memory a layer
        or activation computed in this run, which nothing else reads (nor, in training, the
        layer's backward)."""
        node = self._node
        assert node is not None
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (
            not isinstance(source, fx.Node)
            or source not in self._computed
            or set(source.users) != {node}
            or not isinstance(value, torch.Tensor)
            or value.stride(0) == 0
        ):
            return False
        if source in self._fresh:
            # a stacked layer's own output, which its backward does not read: the site adds its
            # noise under no_grad (the site's backward is the identity)
            return True
        if value.requires_grad:
            return False
        module = self.stack._layer(source)
        if type(module) in _FRESH_OUTPUT:
            return str(source.target) in self.stack._fast  # run as a stack: a fresh output
        return (
            type(module) in _ELEMENTWISE
            and not isinstance(module, (nn.Identity, nn.Dropout))
            and not getattr(module, "inplace", False)
        )

    def _sole_reader(self) -> bool:
        """Whether the node now running is the only reader of its input, also through noise
        sites (which may pass their input on as it is), and that input is memory a stacked
        layer made in this run (not a view or alias of another value): so nothing changes it
        in place later."""
        reader = self._node
        assert reader is not None
        source = reader.args[0]
        while isinstance(source, fx.Node) and set(source.users) == {reader}:
            if not (source.op == "call_module" and str(source.target).startswith(_SITES)):
                return source in self._fresh
            reader, source = source, source.args[0]
        return False

    def call_function(self, target: Callable, args: tuple, kwargs: dict) -> Any:
        if target is getattr and len(args) == 2 and args[1] == "shape":
            return args[0].shape[1:]
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if not tensors:
            return _untensored(target, args, kwargs)
        if target in _PER_SAMPLE_FUNCTIONS:
            # operands of one rank: merged, their leading (K·B) dimensions line up as the
            # batches do alone (a lower-rank operand would broadcast across the models)
            same_rank = len({t.dim() for t in tensors}) == 1
            if same_rank and all(self._activation(t) for t in tensors):
                if target is torch.flatten:
                    start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
                    if start < 1:
                        return _vmapped(target, args, kwargs)
                if all(self._shared(t) for t in tensors):
                    return self._once_call(target, args, kwargs)
                return self._merged_call(target, args, kwargs)
        return _vmapped(target, args, kwargs)

    def _activation(self, value: Any) -> bool:
        """Whether ``value`` is an activation (K, B, ...), not a stacked parameter."""
        return (
            isinstance(value, torch.Tensor)
            and value.dim() >= 2
            and value.shape[0] == self.stack.size
            and value.shape[1] == self.batch
            and id(value) not in self.stack._tensor_ids
        )

    def _shared(self, value: torch.Tensor) -> bool:
        """Whether an activation is one tensor all models share (expanded, not copied)."""
        return self.stack.size > 1 and value.stride(0) == 0

    def _once_call(self, target: Callable, args: tuple, kwargs: dict) -> Any:
        """A per-sample function of activations all models share, computed once for all."""
        flat, spec = tree_flatten((args, kwargs))
        firsts = [v[:1] if isinstance(v, torch.Tensor) else v for v in flat]
        inner_args, inner_kwargs = tree_unflatten(firsts, spec)
        out = self._merged_call(target, inner_args, inner_kwargs, k=1)
        return out.expand(self.stack.size, *out.shape[1:])

    def _merged_call(self, target: Callable, args: tuple, kwargs: dict, k: int = 0) -> Any:
        """``target`` on (K, B, ...) activations merged to (K·B, ...); ``k`` overrides K."""
        k, b = k or self.stack.size, self.batch

        def merge(value: Any) -> Any:
            return _merge(value, k) if isinstance(value, torch.Tensor) else value

        flat, spec = tree_flatten((args, kwargs))
        merged = [merge(v) for v in flat]
        versions = [v._version if isinstance(v, torch.Tensor) else 0 for v in merged]
        inner_args, inner_kwargs = tree_unflatten(merged, spec)
        out = target(*inner_args, **inner_kwargs)
        for original, value, version in zip(flat, merged, versions, strict=True):
            if _changed_a_copy(original, value, version, out):  # in place (``inplace=True``)
                return original.copy_(out.view(original.shape))
        return out.reshape(k, b, *out.shape[1:])

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if target == "size":
            sizes = args[0].shape[1:]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            return sizes if dim is None else sizes[dim]
        if target == "dim":
            return args[0].dim() - 1
        return _vmapped(lambda obj, *a, **kw: getattr(obj, target)(*a, **kw), args, kwargs)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        stacked = self.stack._tensors.get(target)
        return stacked if stacked is not None else super().get_attr(target, args, kwargs)


class _PrefixEndError(Exception):
    """Raised by ``_Prefix`` when it reaches the node where the stack has to take over."""


class _Prefix(_LeanInterpreter):
    """Runs the stack's template model alone up to (not including) ``stop``, keeping every
    value."""

    def __init__(self, stack: StackedModel, stop: fx.Node | None) -> None:
        super().__init__(stack, None, stop)


def _needed_from(env: dict[fx.Node, Any], stop: fx.Node) -> dict[fx.Node, Any]:
    """The prefix values the graph from ``stop`` on reads (None for the others, which the
    interpreter must still see as computed)."""
    nodes = list(stop.graph.nodes)
    needed = {arg for node in nodes[nodes.index(stop) :] for arg in node.all_input_nodes}
    return {
        node: value if node in needed else None
        for node, value in env.items()
        if node.op != "get_attr"
    }


def _read_only_at(values: dict[fx.Node, Any], stop: fx.Node) -> bool:
    """Whether ``stop`` is the only reader of the kept prefix ``values``, so nothing after it
    can change them in place and every pass may share them."""
    return all(set(node.users) <= {stop} for node, value in values.items() if value is not None)


def _copied(values: dict[fx.Node, Any], k: int | None = None) -> dict[fx.Node, Any]:
    """``values`` with every tensor in memory of its own, so in-place operations downstream
    leave the originals intact; with ``k``, given a leading model dimension of size ``k``, each
    model with its own memory.

    Tensors that share memory share the copy too (a view still sees its base change). Only the
    span of a memory the values reach is copied: a batch that is a slice of its split copies
    the batch, not the split.
    """
    leaves = [leaf for value in values.values() for leaf in tree_flatten(value)[0]]
    spans: dict[int, tuple[int, int]] = {}
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            pointer, start, end = _byte_span(leaf)
            low, high = spans.get(pointer, (start, end))
            spans[pointer] = (min(low, start), max(high, end))
    copies: dict[int, tuple[torch.UntypedStorage, int, int]] = {}

    def copy(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        storage = v.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in copies:
            low, high = spans[pointer]
            low -= low % _ALIGN  # a multiple of every element size, as the span's length
            length = -(-(high - low) // _ALIGN) * _ALIGN
            used = max(0, min(length, storage.nbytes() - low))
            raw = torch.empty(0, dtype=torch.uint8, device=v.device).set_(storage, low, (used,))
            block = torch.empty((k or 1, length), dtype=torch.uint8, device=v.device)
            block[:, :used].copy_(raw)
            copies[pointer] = (block.untyped_storage(), low, length)
        copied, low, length = copies[pointer]
        size = v.element_size()
        offset = (v.storage_offset() * size - low) // size
        shape, stride = v.shape, v.stride()
        if k is not None:
            shape, stride = (k, *shape), (length // size, *stride)
        out = torch.empty(0, dtype=v.dtype, device=v.device)
        return out.set_(copied, offset, shape, stride)

    copied = {}
    for node, value in values.items():
        flat, spec = tree_flatten(value)
        copied[node] = tree_unflatten([copy(v) for v in flat], spec)
    return copied


#: Alignment, in bytes, of the spans ``_copied`` copies: every element size divides it.
_ALIGN = 64


def _byte_span(tensor: torch.Tensor) -> tuple[int, int, int]:
    """(its memory's address, first byte, byte after the last) that ``tensor`` reaches."""
    size = tensor.element_size()
    start = tensor.storage_offset() * size
    if tensor.numel() == 0:
        return tensor.untyped_storage().data_ptr(), start, start
    last = sum((n - 1) * step for n, step in zip(tensor.shape, tensor.stride(), strict=True))
    return tensor.untyped_storage().data_ptr(), start, start + (last + 1) * size


def _broadcast(value: Any, k: int, *, copy: bool = True) -> Any:
    """Every tensor in ``value`` given a leading model dimension of size ``k``.

    With ``copy`` each model gets its own memory, so later in-place operations are safe;
    without, the K views share one (for a value only a noise site reads).
    """
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        wide = value.unsqueeze(0).expand(k, *value.shape)
        return wide.clone(memory_format=torch.contiguous_format) if copy else wide
    flat, spec = tree_flatten(value)
    return tree_unflatten([_broadcast(leaf, k, copy=copy) for leaf in flat], spec)


class KeptPrefixes:
    """Clean prefixes of batches kept for reuse (``StackedModel.prefixes_kept``), with the
    bytes still free."""

    def __init__(self, max_bytes: int = KEPT_PREFIXES_CAP) -> None:
        self.values: dict[tuple, Any] = {}
        self.room = max_bytes


@dataclass(frozen=True)
class _SiteNoise:
    """The noise of one site in a stack: which models have it (``index``, and ``rows`` as a
    list), their levels (n, MAX_LEVELS), and ``span``, the slice of those models when they lie
    next to each other (as a planner's unit orders them), so the site reads and writes a view
    instead of gathering and scattering rows."""

    noise: NoiseModel
    index: torch.Tensor
    rows: list[int]
    levels: torch.Tensor
    span: slice | None


@dataclass(frozen=True)
class _NoiseTerms:
    """The output of the first noisy site of copies evaluating, kept in parts until the layer
    that reads it, which is linear in its input: member k's value is
    ``base + Σ_t coefficients[k, t] · directions[t][draw[k]]``.

    ``base`` (B, ...) is the clean input all copies share, ``directions`` the noise model's
    d_t (one tensor (J, B, ...) per term, a row per distinct draw), ``coefficients`` (K, T) the
    members' c_t (zero for a member without noise at the site). The layer then maps the base
    and each direction once, on B rows, instead of each member's noisy input: W(x + σz) + b
    is computed as (Wx + b) + σ(Wz).
    """

    base: torch.Tensor
    directions: tuple[torch.Tensor, ...]
    coefficients: torch.Tensor
    draw: torch.Tensor

    def reshaped(self, module: nn.Module) -> _NoiseTerms:
        """The terms after a module that only reshapes each sample."""
        return replace(
            self,
            base=module(self.base),
            directions=tuple(_merged(module, d) for d in self.directions),
        )

    def through(self, module: nn.Module) -> torch.Tensor:
        """The members' outputs (K, B, ...) of a Linear layer or convolution: its base output
        plus, per term, the coefficients times the direction's output without the bias. Each
        direction's rows are mapped alone, so a member's numbers do not depend on the rows
        drawn for others."""
        with weight_noise_disabled(module):  # the stack draws every member's
            out = module(self.base)
        total = None
        for t, direction in enumerate(self.directions):
            mapped = torch.stack([_without_bias(module, row) for row in direction])
            if mapped.shape[0] == 1:
                mapped = mapped.expand(self.draw.shape[0], *mapped.shape[1:])
            else:
                mapped = mapped.index_select(0, self.draw)
            shape = (-1, *([1] * (mapped.dim() - 1)))
            term = mapped * self.coefficients[:, t].to(mapped.dtype).reshape(shape)
            total = term if total is None else total.add_(term)
        assert total is not None
        return total.add_(out)


@dataclass(frozen=True)
class _MemberWeightNoise:
    """One member's weight noise in a stack: η and the modes it is drawn in."""

    eta: float
    training: bool
    evaluation: bool

    def active_in(self, training: bool) -> bool:
        """Whether it is drawn in training (True) or evaluation (False) mode."""
        return self.training if training else self.evaluation


def _rows(x: torch.Tensor, config: _SiteNoise) -> torch.Tensor:
    """The members' rows of stacked ``x``: a view when they lie next to each other."""
    return x[config.span] if config.span is not None else x.index_select(0, config.index)


class StackedModel:
    """K instrumented models of one architecture as stacked tensors (see the module doc).

    Attributes:
        template: the first model; its modules run with the stacked tensors swapped in.
        size: K, the number of models.
    """

    def __init__(self, models: Sequence[NoisyModel]) -> None:
        if not models:
            raise ValueError("a stack needs at least one model")
        template = models[0]
        if any(model.method != "fx" for model in models):
            raise NotStackableError(
                "the model was instrumented with hooks (torch.fx could not trace it)"
            )
        if any(site.executions != 1 for model in models for site in model.sites):
            raise NotStackableError("a site is multi-executed, which only one model alone runs")
        _refuse_shared_tensors(template.net)
        _refuse_different_structure(template, models)
        self.template = template
        self.size = len(models)
        #: Whether all members are one model and its stacked tensors are still its own: set
        #: when built from copies, cleared once the tensors may change (handed to an optimizer,
        #: clamped, or BatchNorm statistics updated by a training pass).
        self.copies = all(m is template for m in models)
        self._kept: KeptPrefixes | None = None
        #: per first noisy node, the end of the graph copies run as plain calls (``_merged_tail``)
        self._tails: dict[fx.Node, tuple[fx.Node, PlainTail] | None] = {}
        #: each graph node's place in the graph's order
        self._order = {node: i for i, node in enumerate(template.net.graph.nodes)}
        #: the models' mode, as the template's (which ``train``/``eval`` set, and restore after)
        self.training = template.training
        self.noise_enabled = True
        net = template.net
        names = [n for n, _ in net.named_parameters()]
        buffer_names = [n for n, _ in net.named_buffers() if not n.startswith(_SITES)]
        # the keys written back: tensors torch.fx made buffers of plain attributes are constants
        own = template.source.state_dict()
        self.persistent = [k for k in net.state_dict() if not k.startswith(_SITES) and k in own]
        nets = [m.net for m in models]
        try:
            params = [dict(m.named_parameters()) for m in nets]
            buffers = [dict(m.named_buffers()) for m in nets]
            self._params = {
                n: torch.stack([p[n].detach() for p in params]).requires_grad_(
                    params[0][n].requires_grad
                )
                for n in names
            }
            self._buffers = {n: torch.stack([b[n] for b in buffers]) for n in buffer_names}
        except (KeyError, RuntimeError) as error:
            raise NotStackableError(f"the models differ in structure ({error})") from None
        if any(p[n].requires_grad != params[0][n].requires_grad for p in params for n in names):
            raise NotStackableError("the models differ in which parameters are frozen")
        self._tensors = {**self._params, **self._buffers}
        self._module_state: dict[str, dict[str, torch.Tensor]] = {}
        for node in net.graph.nodes:
            if node.op == "call_module" and not str(node.target).startswith(_SITES):
                prefix = f"{node.target}."
                self._module_state[str(node.target)] = {
                    n[len(prefix) :]: t for n, t in self._tensors.items() if n.startswith(prefix)
                }
        self._tensor_ids = {id(t) for t in self._tensors.values()}
        #: the values a run of the graph may free after each node
        self._freed = _last_uses(net.graph)
        modules = dict(net.named_modules())
        self._submodules: dict[str, nn.Module] = modules
        for name, module in modules.items():
            counts = self._buffers.get(f"{name}.num_batches_tracked")
            cumulative = getattr(module, "momentum", 0.0) is None and counts is not None
            if cumulative and not bool((counts == counts[0]).all()):
                raise NotStackableError(
                    f"{name}: BatchNorm with momentum None, and the models have seen "
                    "different numbers of batches"
                )
        feature_major = _feature_major_linears(net.graph, modules)
        self._linear_readers = _linear_readers(net.graph, modules)
        self._fast: dict[str, tuple[Callable, Callable | None]] = {
            name: fast
            for name, state in self._module_state.items()
            if (fast := _fast_module(modules[name], state, name in feature_major)) is not None
        }
        #: stacked layers whose backward keeps their input, not their output
        self._fresh_layers = {n for n in self._fast if type(modules[n]) in _FRESH_OUTPUT}
        #: plain ReLU modules, run as ``_relu`` where nothing else reads their input
        self._relus = {
            n for n in self._fast if type(modules[n]) is nn.ReLU and not modules[n].inplace
        }
        weight_ids = {id(w) for w in clampable_weights(template.source)}
        self._clampable = [n for n, p in net.named_parameters() if id(p) in weight_ids]
        self._site_noise: dict[int, _SiteNoise] = {}
        self._set_site_noise([(m.noise, _levels_of(m)) for m in models])
        self.generators: list[torch.Generator | None] = [m.generator for m in models]
        #: {layer: the members whose weights it reads with noise}, and each member's settings
        self._weight_rows: dict[str, list[int]] = {}
        self._weight_noise: list[_MemberWeightNoise | None] = [None] * self.size
        self._weight_generators: list[torch.Generator | None] = [None] * self.size
        #: the noisy members' rows as index tensors on the device, made once per set of rows
        self._row_indices: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        #: per member, the member whose draws it takes (itself unless they share a generator)
        self._leader = list(range(self.size))
        for k, model in enumerate(models):
            self._take_weight_noise(k, model)
        self._share_draws()

    # -- configuration ----------------------------------------------------------------------

    def parameters(self) -> list[torch.Tensor]:
        """The stacked parameters (leaf tensors with a leading model dimension; frozen ones, as
        in the models, do not require grad)."""
        self.copies = False
        return list(self._params.values())

    def train(self, mode: bool = True) -> StackedModel:
        """Training mode for every model (BatchNorm batch statistics, training noise)."""
        self.training = mode
        self.template.train(mode)
        return self

    def eval(self) -> StackedModel:
        """Evaluation mode for every model."""
        return self.train(False)

    def set_noise(self, members: Sequence[tuple[NoiseModel | None, dict[int, NoiseLevel]]]) -> None:
        """Per model: its noise model and {site: σ}. All models must share one noise model."""
        self._set_site_noise(members)
        self._share_draws()

    def _set_site_noise(
        self, members: Sequence[tuple[NoiseModel | None, dict[int, NoiseLevel]]]
    ) -> None:
        self._tails.clear()
        if len(members) != self.size:
            raise ValueError(f"expected noise for {self.size} models, got {len(members)}")
        kinds = {noise for noise, levels in members if noise is not None and levels}
        if len(kinds) > 1:
            raise NotStackableError(f"the models use different noise models: {kinds}")
        self._site_noise = {}
        if not kinds:
            return
        noise = kinds.pop()
        device = next(iter(self._params.values())).device
        per_site: dict[int, list[tuple[int, tuple[float, ...]]]] = {}
        for k, (_, levels) in enumerate(members):
            for site, sigma in levels.items():
                values = noise.levels(sigma)
                if noise.injects(values):
                    padded = (*values, *([0.0] * (MAX_LEVELS - len(values))))
                    per_site.setdefault(site, []).append((k, padded))
        for site, entries in per_site.items():
            rows = [k for k, _ in entries]
            index = torch.tensor(rows, device=device)
            levels = torch.tensor([v for _, v in entries], dtype=torch.float32, device=device)
            span = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] == len(rows) - 1 else None
            self._site_noise[site] = _SiteNoise(noise, index, rows, levels, span)

    def noisy_sites(self) -> dict[int, int]:
        """{site index: number of models with noise there}."""
        return {site: len(config.rows) for site, config in self._site_noise.items()}

    def set_weight_noise(self, etas: Sequence[float]) -> None:
        """Per model: η of its weight noise in evaluation (0: none), on every layer weight noise
        perturbs (``noisy_weight_layers``); for stacks of copies of one model, which only
        evaluate. Each draws from its generator of ``set_generators``: copies built from one
        model hold its generator until given their own, and so take the same draws (see
        ``set_generators``; with no generator, each draws from the global one in turn)."""
        if len(etas) != self.size:
            raise ValueError(f"expected weight noise for {self.size} models, got {len(etas)}")
        names = [name for name, _ in noisy_weight_layers(self.template.net)]
        rows = [k for k, eta in enumerate(etas) if eta > 0]
        if rows:
            for name in names:
                self._refuse_unreachable(name)
        self._weight_noise = [
            _MemberWeightNoise(float(eta), False, True) if eta > 0 else None for eta in etas
        ]
        self._weight_rows = {name: rows for name in names} if rows else {}
        self._tails.clear()
        self._share_draws()

    def _take_weight_noise(self, k: int, model: NoisyModel) -> None:
        """Take member ``k``'s weight noise (switched on, η > 0) from its layers' hooks."""
        layers = weight_noise_layers(model.net)
        handles = {id(noise): noise for noise in layers.values()}
        if not handles:
            return
        if len(handles) > 1:
            raise NotStackableError(f"model {k} carries more than one weight noise")
        noise = next(iter(handles.values()))
        if not noise.enabled or noise.eta == 0.0:
            return
        for name in layers:
            self._refuse_unreachable(name)
            self._weight_rows.setdefault(name, []).append(k)
        self._weight_noise[k] = _MemberWeightNoise(noise.eta, noise.training, noise.evaluation)
        self._weight_generators[k] = noise.generator

    def _refuse_unreachable(self, name: str) -> None:
        """Refuse weight noise on a layer no graph node calls (inside a module the graph calls
        whole, such as a Transformer layer, whose hooks would fire alone but not in a stack; or
        one torch.fx traced through)."""
        if name not in self._module_state:
            raise NotStackableError(
                f"weight noise on {name}, a layer no graph node calls (inside a module the "
                "graph runs whole, or traced through)"
            )

    def draws_noise(self, member: int | None = None) -> bool:
        """Whether a pass in the current mode draws noise: activation noise at a site, or weight
        noise of a member (of ``member`` alone, where given)."""
        if not self.noise_enabled:
            return False
        members = range(self.size) if member is None else (member,)
        sites = any(
            k in config.rows and config.noise.active_in(self.training)
            for config in self._site_noise.values()
            for k in members
        )
        return sites or any(
            (noise := self._weight_noise[k]) is not None and noise.active_in(self.training)
            for k in members
        )

    def check(self, example: torch.Tensor, *, training: bool = False) -> None:
        """Run one shared batch through the stack; raise ``NotStackableError`` if it fails.

        Every node runs stacked, also for copies of one model (which run their clean prefix
        with the model itself), since any node may come after a noisy site. ``training``: the
        stack is to be trained, which a model with random layers (dropout) cannot be: the
        members would share their draws, and each one's draws would depend on the others; the
        batch then runs in training mode, whose code may differ (spectral norm's power
        iteration).
        """
        if training:
            random = _random_layers(self.template.net)
            if random:
                raise NotStackableError(
                    f"the model draws random numbers in training ({', '.join(random[:3])}), "
                    "which the models of a stack would share"
                )
        was_training, was_enabled, was_copies = self.training, self.noise_enabled, self.copies
        self.noise_enabled = False  # the probe must not consume the models' noise draws
        self.copies = False
        # nor change their state: a forward may update a buffer in place, also in eval mode
        buffers = {name: buffer.clone() for name, buffer in self._buffers.items()}
        try:
            with torch.no_grad():
                self.train(training)(example, shared=True)
        except Exception as error:
            if is_out_of_memory(error):
                raise  # a stack too big for the GPU, not one that cannot run
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise NotStackableError(f"{type(error).__name__}: {first}") from error
        finally:
            with torch.no_grad():
                for name, buffer in self._buffers.items():
                    buffer.copy_(buffers[name])
            self.train(was_training)
            self.noise_enabled, self.copies = was_enabled, was_copies

    # -- running ----------------------------------------------------------------------------

    def __call__(
        self, x: torch.Tensor, *, shared: bool = False, owned: bool = False
    ) -> torch.Tensor:
        """Logits (K, B, ...) for inputs (K, B, ...), or for one batch (B, ...) if ``shared``.

        ``owned``: ``x`` is the caller's scratch tensor, which a noise site at the input may
        overwrite instead of copying.
        """
        if shared and self.copies and not self.training:
            return self._run_copies(x)
        if self.training:
            self.copies = False
        if shared:
            if self._kept is not None and not self.training:
                return self._run_kept(x)
            x = x.unsqueeze(0).expand(self.size, *x.shape)
            owned = False
        with _views_replayed():
            return _Interpreter(self, x.shape[1], x if owned else None).run(x)

    @contextmanager
    def prefixes_kept(self, *, kept: KeptPrefixes | None = None) -> Iterator[None]:
        """Within the block, the clean prefix of a shared batch seen before is reused, not
        recomputed (evaluation only).

        For repeated noisy passes over one split: the part of the graph before the first noisy
        site is the same on every pass. Copies of one model run the model itself up to that
        site, going on from the latest prefix of the batch kept before it; ``kept``, given to
        the stacks of copies of one model in turn (one per first noisy site), lets them share
        those prefixes. Batches are recognised by their memory, so the splits must not change
        while it is used; at most ``kept``'s room is kept (a new ``KeptPrefixes`` by default).
        """
        self._kept = kept if kept is not None else KeptPrefixes()
        try:
            yield
        finally:
            self._kept = None

    def _run_copies(self, x: torch.Tensor) -> torch.Tensor:
        """Copies of one model on one batch: the clean prefix once, the rest as a stack."""
        stop = self._first_noisy_node()
        batch = ("clean", self.template, x.data_ptr(), tuple(x.shape))
        kept = self._kept.values.get((*batch, stop)) if self._kept is not None else None
        if kept is None:
            kept = self._prefix(x, stop, self._kept_before(batch, stop))
            self._keep((*batch, stop), kept)
        if stop is None:
            return _broadcast(kept, self.size)
        if _read_only_at(kept, stop):
            env = {node: _broadcast(value, self.size, copy=False) for node, value in kept.items()}
        else:  # later nodes may change these values in place: each model gets its own memory
            env = _copied(kept, self.size)
        tail = self._merged_tail(stop)
        if tail is None:
            return _Interpreter(self, x.shape[0], first=stop).run(x, initial_env=env)
        start, plain = tail
        head = _Interpreter(self, x.shape[0], stop=start, first=stop, free=True)
        with suppress(_PrefixEndError):
            head.run(x, initial_env=env)
        with ExitStack() as disabled:
            for noise in _weight_noises(plain.modules):  # the stack draws every member's
                disabled.enter_context(noise.disabled())
            out = on_merged_batches(plain, head.env[start.args[0]])
        return self.template.net.graph.process_outputs(out)

    def _merged_tail(self, stop: fx.Node) -> tuple[fx.Node, PlainTail] | None:
        """The chain of nodes ending the graph after ``stop`` (and after the layer its noise
        reaches as terms) that copies evaluating may run as the model's own modules on their
        merged K·B batch, one after the other, as plain calls: layers that treat each sample
        alone (``_treats_samples_alone``), each reading the one before and read by it alone,
        read with no weight noise and watched by no hook, and noise sites without noise. Its
        first node and its modules (as a ``PlainTail``); None if the graph does not end so.
        Kept per ``stop`` until the noise changes."""
        if stop not in self._tails:
            self._tails[stop] = self._find_merged_tail(stop)
        return self._tails[stop]

    def _find_merged_tail(self, stop: fx.Node) -> tuple[fx.Node, PlainTail] | None:
        last = stop  # the last node the interpreter runs: the site, or the layer of its terms
        for _ in self._linear_readers.get(str(stop.target), ()):
            (last,) = last.users
        limit = self._order[last]
        output = next(reversed(self.template.net.graph.nodes))
        chain: list[fx.Node] = []
        node = output.args[0]
        while (
            isinstance(node, fx.Node)
            and self._order[node] > limit
            and len(node.users) == 1
            and self._runs_merged(node)
        ):
            chain.append(node)
            node = node.args[0]
        if not chain:
            return None
        chain.reverse()
        layers = [n for n in chain if not str(n.target).startswith(_SITES)]  # they pass it on
        return chain[0], PlainTail([self._submodules[str(n.target)] for n in layers])

    def _runs_merged(self, node: fx.Node) -> bool:
        """Whether ``node`` may run in ``_merged_tail``: see there."""
        if node.op != "call_module" or node.kwargs or len(node.args) != 1:
            return False
        if not isinstance(node.args[0], fx.Node):
            return False
        target = str(node.target)
        if target.startswith(_SITES):
            config = self._site_noise.get(int(target[len(_SITES) :]))
            return config is None or not config.noise.active_in(self.training)
        module = self._submodules[target]
        if self._noisy_weight_rows(target) or hooked_beyond_weight_noise(module):
            return False
        return _treats_samples_alone(module)

    def _kept_before(self, batch: tuple, stop: fx.Node | None) -> dict[fx.Node, Any] | None:
        """The kept clean prefix of ``batch`` that ends latest before ``stop`` (None if none),
        from which the model's run may go on instead of starting again."""
        if self._kept is None:
            return None
        end = len(self._order) if stop is None else self._order[stop]
        earlier = [
            (self._order[key[-1]], values)
            for key, values in self._kept.values.items()
            if key[:-1] == batch and key[-1] is not None and self._order[key[-1]] < end
        ]
        return max(earlier, key=lambda entry: entry[0])[1] if earlier else None

    def _run_kept(self, x: torch.Tensor) -> torch.Tensor:
        """Distinct models on one batch: the stacked prefix before the first noisy site kept
        across calls, the rest run anew."""
        stop = self._first_noisy_node()
        wide = x.unsqueeze(0).expand(self.size, *x.shape)
        if stop is None:
            return _Interpreter(self, x.shape[0]).run(wide)
        assert self._kept is not None
        key = ("stacked", self, x.data_ptr(), tuple(x.shape), stop)
        kept = self._kept.values.get(key)
        if kept is None:
            prefix = _Interpreter(self, x.shape[0], stop=stop)
            with suppress(_PrefixEndError):
                prefix.run(wide)
            kept = _needed_from(prefix.env, stop)
            self._keep(key, kept)
        env = dict(kept) if _read_only_at(kept, stop) else _copied(kept)
        return _Interpreter(self, x.shape[0]).run(wide, initial_env=env)

    def _keep(self, key: tuple, kept: Any) -> None:
        """Keep a computed prefix under ``key`` inside ``prefixes_kept``, while it has room."""
        if self._kept is None:
            return
        size = sum(t.nbytes for t in tree_flatten(kept)[0] if isinstance(t, torch.Tensor))
        if size <= self._kept.room:
            self._kept.values[key] = kept
            self._kept.room -= size

    def _prefix(
        self, x: torch.Tensor, stop: fx.Node | None, start: dict[fx.Node, Any] | None = None
    ) -> Any:
        """The model's output if no site is noisy; else the prefix values the rest needs. The
        run goes on from ``start``, an earlier prefix of ``x`` (copied first, since the nodes
        run now may change its values in place)."""
        prefix = _Prefix(self, stop)
        with self.template.noise_disabled():
            try:
                return prefix.run(x, initial_env=None if start is None else _copied(start))
            except _PrefixEndError:
                pass
        return _needed_from(prefix.env, stop)

    def _first_noisy_node(self) -> fx.Node | None:
        """The graph node of the first site that injects noise in evaluation, or of the first
        layer read with weight noise; None if none does."""
        if not self.noise_enabled:
            return None
        sites = [i for i, c in self._site_noise.items() if c.noise.active_in(False)]
        active = {f"{_SITES}{i}" for i in sites}
        active |= {layer for layer in self._weight_rows if self._weight_noisy(layer, False)}
        if not active:
            return None
        for node in self.template.net.graph.nodes:
            if node.op == "call_module" and node.target in active:
                return node
        raise NotStackableError(f"no graph node runs {min(active)}")

    def _noisy_weight_rows(self, layer: str) -> list[int]:
        """The members that read ``layer``'s weight with noise now (none with noise off)."""
        return self._weight_noisy(layer, self.training) if self.noise_enabled else []

    def _weight_noisy(self, layer: str, training: bool) -> list[int]:
        """The members that read ``layer``'s weight with noise in that mode."""
        return [
            k
            for k in self._weight_rows.get(layer, ())
            if (noise := self._weight_noise[k]) is not None and noise.active_in(training)
        ]

    def _noisy_weight(self, layer: str) -> torch.Tensor | None:
        """``layer``'s stacked weight with each noisy member's noise added, drawn from its own
        generator as alone (differentiable in the weight); None when no member has noise
        there now."""
        rows = self._noisy_weight_rows(layer)
        if not rows:
            return None
        weight = self._module_state[layer]["weight"]
        with torch.no_grad():
            deltas, drawn = [], {}
            for k in rows:
                member, noise = weight[k], self._weight_noise[k]
                assert noise is not None
                leader = self._leader[k]
                if leader not in drawn:
                    drawn[leader] = torch.randn(
                        member.shape,
                        generator=self._weight_generators[leader],
                        dtype=member.dtype,
                        device=member.device,
                    )
                deltas.append(drawn[leader] * weight_noise_std(member, noise.eta))
            delta = torch.stack(deltas)
        if len(rows) == self.size:
            return weight + delta
        return weight.index_add(0, self._index(rows, weight.device), delta)

    def _index(self, rows: Sequence[int], device: torch.device) -> torch.Tensor:
        """``rows`` as an index tensor on ``device``, made once (not copied to the device, a
        GPU sync, on every step)."""
        key = (tuple(rows), device)
        if key not in self._row_indices:
            self._row_indices[key] = torch.tensor(rows, device=device)
        return self._row_indices[key]

    def _layer(self, node: fx.Node) -> nn.Module | None:
        """The module a graph node calls (None for other nodes)."""
        if node.op != "call_module":
            return None
        return self.template.net.get_submodule(str(node.target))

    def _site(self, index: int, x: Any, *, inplace: bool = False) -> Any:
        """Site ``index`` on stacked activations; ``inplace``: ``x`` may be overwritten."""
        config = self._site_noise.get(index)
        if config is None or not self.noise_enabled:
            return x
        noise = config.noise
        if not noise.active_in(self.training):
            return x
        if isinstance(x, tuple):
            return (self._site(index, x[0]), *x[1:])
        if noise.differentiates_noise:
            return self._site_through_noise(config, x, inplace=inplace)
        # y = x + δ with δ drawn for the members only: the others pass unchanged, and the
        # backward pass sees the identity, so no gradient is gathered or scattered.
        everyone = len(config.rows) == self.size
        if everyone or noise.reads_input:
            part = x if everyone else _rows(x, config)
        else:
            part = x[:1].expand(len(config.rows), *x.shape[1:])
        z = self._draws(part, config.rows, noise.draws)
        with torch.no_grad():
            delta = noise.perturbation(part, config.levels, z, scratch=not _shared_rows(z))
        if everyone and not inplace:
            return x + delta if x.requires_grad else delta.add_(x)
        if not inplace:
            x = x.clone()  # in x's memory layout; for autograd, the identity
        with torch.no_grad():
            if everyone:
                return x.add_(delta)
            if config.span is not None:
                x[config.span].add_(delta)
                return x
            return x.index_add_(0, config.index, delta)

    def _site_through_noise(
        self, config: _SiteNoise, x: torch.Tensor, *, inplace: bool
    ) -> torch.Tensor:
        """A site whose gradient flows through the sampled noise: the noisy members' values
        replace theirs in ``x``."""
        everyone = len(config.rows) == self.size
        part = x if everyone else _rows(x, config)
        z = self._draws(part, config.rows, config.noise.draws)
        noisy = config.noise.apply(part, config.levels, z)
        if everyone:
            return noisy
        span = config.span
        if inplace and not x.requires_grad:
            if span is None:
                return x.index_copy_(0, config.index, noisy)
            x[span].copy_(noisy)
            return x
        if span is None:
            return x.index_copy(0, config.index, noisy)
        return torch.cat((x[: span.start], noisy, x[span.stop :]))

    def _site_terms(self, index: int, x: Any) -> _NoiseTerms | None:
        """Site ``index``'s noise on ``x``, the copies' shared clean value (K, B, ...), as
        terms (``_NoiseTerms``): the members' draws, taken as ``_site`` takes them, turned into
        the noise model's directions once per distinct draw. None where the site would not
        draw, the noise model is not separable, or a member draws from PyTorch's global
        generator (one draw per member: nothing to share)."""
        config = self._site_noise.get(index)
        if (
            config is None
            or not self.noise_enabled
            or not isinstance(x, torch.Tensor)
            or not config.noise.active_in(self.training)
            or not config.noise.separable
            or any(self.generators[k] is None for k in config.rows)
        ):
            return None
        base = x[0]
        rows, draws = self._leader_draws(base, config.rows, config.noise.draws)
        directions = config.noise.directions(base, draws)
        levels = config.levels
        coefficients = levels.new_zeros((self.size, len(directions)))
        coefficients.index_copy_(0, config.index, config.noise.coefficients(levels))
        draw = [0] * self.size  # a member without noise here: any row (its coefficients are 0)
        for k, row in zip(config.rows, rows, strict=True):
            draw[k] = row
        return _NoiseTerms(base, directions, coefficients, self._index(draw, x.device))

    def _leader_draws(
        self, x: torch.Tensor, members: list[int], count: int
    ) -> tuple[list[int], tuple[torch.Tensor, ...]]:
        """Per member, the row of the draws it takes, and ``count`` tensors of standard normal
        draws (J, *x.shape): a row for each distinct leader (``_leader``), from its generator."""
        drawing = list(dict.fromkeys(self._leader[j] for j in members))
        draws = []
        for _ in range(count):
            z = torch.empty((len(drawing), *x.shape), dtype=x.dtype, device=x.device)
            for row, j in zip(z, drawing, strict=True):
                row.normal_(generator=self.generators[j])
            draws.append(z)
        row_of = {leader: i for i, leader in enumerate(drawing)}
        return [row_of[self._leader[j]] for j in members], tuple(draws)

    def _draws(self, x: torch.Tensor, members: list[int], count: int) -> tuple[torch.Tensor, ...]:
        """Standard normal draws for ``x`` (n, B, ...), model j's from its own generator;
        members that share a generator (see ``set_generators``) take one draw."""
        if all(self.generators[j] is None for j in members):
            return standard_normal(x, count)
        rows, drawn = self._leader_draws(x[0], members, count)
        draws = []
        for z in drawn:
            if z.shape[0] == 1 < len(members):
                z = z.expand(len(members), *z.shape[1:])  # one draw for all: no copies
            elif z.shape[0] < len(members):
                z = z.index_select(0, self._index(rows, x.device))
            draws.append(z)
        return tuple(draws)

    def set_generators(self, generators: Sequence[torch.Generator | None]) -> None:
        """Draw model k's noise, activation and weight noise alike, from ``generators[k]``
        (None: PyTorch's global generator).

        Members given one generator object, seeded as each would be alone, take the same
        draws: the stack draws once for them all, which each alone would draw. Members given
        one generator that draw differently (noise at other sites, σ = 0 at one, weight noise
        or not) each get a copy of it, so no member's draws depend on the others.
        """
        if len(generators) != self.size:
            raise ValueError(f"expected {self.size} generators, got {len(generators)}")
        self.generators = list(generators)
        self._weight_generators = list(generators)
        self._share_draws()

    def _share_draws(self) -> None:
        """Find the members that take one draw (one generator, the same draws in both modes:
        ``_leader``), and give a copy of its generator to a member that holds one but draws
        otherwise."""
        first: dict[tuple[int, int], tuple] = {}
        leaders: dict[tuple, int] = {}
        self._leader = list(range(self.size))
        patterns = [self._draw_pattern(k) for k in range(self.size)]
        # members that draw come first: one that draws nothing (σ = 0) gets the copy, and
        # does not part the others when it comes first
        for k in sorted(range(self.size), key=lambda k: not (patterns[k][0] or patterns[k][1])):
            generator, weights = self.generators[k], self._weight_generators[k]
            if generator is None:
                continue
            held = (id(generator), id(weights))
            pattern = patterns[k]
            if first.setdefault(held, pattern) != pattern:
                own = _copy_generator(generator)
                self.generators[k] = own
                if weights is generator:
                    self._weight_generators[k] = own
                elif weights is not None:
                    self._weight_generators[k] = _copy_generator(weights)
                continue
            self._leader[k] = leaders.setdefault((held, pattern), k)

    def _draw_pattern(self, k: int) -> tuple:
        """What member ``k`` draws, in training and in evaluation mode: its noisy sites and
        the draws each takes, and the layers whose weights it reads with noise."""
        sites = tuple(
            (site, config.noise.draws, config.noise.training, config.noise.evaluation)
            for site, config in sorted(self._site_noise.items())
            if k in config.rows
        )
        noise = self._weight_noise[k]
        layers = tuple(sorted(n for n, rows in self._weight_rows.items() if k in rows))
        modes = None if noise is None else (noise.training, noise.evaluation)
        return sites, layers, modes

    @torch.no_grad()
    def clamp_(self, limits: torch.Tensor) -> None:
        """Clamp every model's weights (not norm layers, not biases) to ±limits[k]."""
        self.copies = False
        for name in self._clampable:
            weight = self._params[name]
            bound = limits.to(weight).reshape(-1, *([1] * (weight.dim() - 1)))
            torch.clamp(weight, -bound, bound, out=weight)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights and statistics, under the keys of the original clean model (those
        of modules the graph never calls are left out: the stack never changes them)."""
        return {name: self._tensors[name][k].detach().clone() for name in self.persistent}

    @torch.no_grad()
    def load_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Set model k's weights and statistics to ``state``, as ``state_dict(k)`` gave them."""
        for name in self.persistent:
            self._tensors[name][k].copy_(state[name])

    @torch.no_grad()
    def write_back(self, models: Sequence[NoisyModel]) -> None:
        """Copy every model's stacked weights and statistics into its own module."""
        for k, model in enumerate(models):
            own = model.source.state_dict()
            for name in self.persistent:
                own[name].copy_(self._tensors[name][k])


def _structure(model: NoisyModel) -> tuple:
    """What a stack takes from its template for every member: the graph, each module's class
    and, for PyTorch's own modules, its settings (a custom module's ``extra_repr`` may print
    its tensors' values, which are per member; so is the noise of the noise sites), and the
    site table."""
    modules = tuple(
        (name, type_before_parametrizations(module), module.extra_repr() if _stock(module) else "")
        for name, module in model.net.named_modules()
        if name and not name.startswith(_SITES)  # the root: its graph, compared as code
    )
    sites = tuple((s.index, s.name, s.kind, tuple(s.shape[1:])) for s in model.site_table)
    return model.net.code, modules, sites


def _refuse_different_structure(template: NoisyModel, models: Sequence[NoisyModel]) -> None:
    """Refuse members that differ from the template in more than their tensors' values (an
    activation, a BatchNorm's momentum, a padding mode...): every member runs the template."""
    others = [(k, model) for k, model in enumerate(models) if model is not template]
    if not others:  # copies of one model
        return
    expected = _structure(template)
    for k, model in others:
        found = _structure(model)
        if found == expected:
            continue
        what = ("graph", "modules", "site table")
        differs = next(w for w, a, b in zip(what, expected, found, strict=True) if a != b)
        if differs == "modules":
            for a, b in zip(expected[1], found[1], strict=False):
                if a != b:
                    differs = f"module {a[0]!r} ({a[1].__name__}({a[2]}) against "
                    differs += f"{b[1].__name__}({b[2]}))"
                    break
        raise NotStackableError(f"model {k} differs from model 0 in its {differs}")


def _refuse_shared_tensors(net: nn.Module) -> None:
    """Raise ``NotStackableError`` if two names hold one tensor (tied weights, a buffer shared
    by two modules): a stack keeps one copy per name, so the second would go stale."""
    seen: dict[int, str] = {}
    named = [
        *net.named_parameters(remove_duplicate=False),
        *net.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        if name.startswith(_SITES):
            continue
        first = seen.setdefault(id(tensor), name)
        if first != name:
            raise NotStackableError(
                f"{first} and {name} are one tensor (tied weights or a shared buffer), "
                "which a stack cannot keep per model"
            )


def _views_replayed() -> Any:
    """Autograd rebuilds a view changed in place under no_grad (a noise site adding to a
    layer's output) as the view it was (a transpose), not as ``as_strided``, whose backward
    copies the whole gradient."""
    return torch.autograd._force_original_view_tracking(True)


def _shared_rows(draws: tuple[torch.Tensor, ...]) -> bool:
    """Whether the rows of the draws are one row's memory (expanded, not to be written)."""
    return any(z.shape[0] > 1 and z.stride(0) == 0 for z in draws)


def _copy_generator(generator: torch.Generator) -> torch.Generator:
    """A new generator on ``generator``'s device, in its state."""
    return torch.Generator(device=generator.device).set_state(generator.get_state())


def _levels_of(model: NoisyModel) -> dict[int, NoiseLevel]:
    """The {site: σ} now configured on a model's sites."""
    levels: dict[int, NoiseLevel] = {}
    for site in model.sites:
        values = site.sigma
        if values:
            levels[site.info.index] = values[0] if len(values) == 1 else (values[0], values[1])
    return levels
