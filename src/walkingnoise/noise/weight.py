"""Weight noise of Noisy Machines: every forward pass reads each layer's weights with noise.

Zhou et al., "Noisy Machines" (arXiv 2001.04974, Sec. 3) model an analog accelerator's weight
read-out as Gaussian noise scaled by each layer's weight range:

    W̃ = W + N,   N ~ N(0, σ_W²),   σ_W = η · (max W − min W)

with η the relative noise level (the paper's tables use η ∈ {0, 0.02, 0.04, 0.06}). The range is
taken per weight tensor, from its current clean values, on every forward pass; it is a constant
for autograd (no gradient flows through σ_W).

Which weights: every module with its own ``weight`` parameter except normalisation layers
(BatchNorm, LayerNorm, GroupNorm, ...), i.e. the convolution and linear layers of the built-in
models (also embeddings). Biases and normalisation parameters are read without noise.
``nn.MultiheadAttention`` is left clean: its forward reads its projection weights directly,
without calling the modules a hook could catch.

How: a forward pre-hook on each such layer swaps the stored ``weight`` parameter for
``weight + noise`` for the duration of that call, and a forward hook (``always_call``, so also
when the call raises) puts the parameter back. The stored parameter never changes, gradients
reach it unchanged (∂W̃/∂W = 1), and ``state_dict`` and checkpoints carry no trace of the noise.
A fresh sample is drawn on every call, from the handle's ``generator`` when set.

Each perturbed layer holds its noise and hook handles as an attribute, so ``copy.deepcopy`` of a
model gives a copy with weight noise of its own: the same settings, a copy of the generator,
visible to :func:`weight_noise_of` and removable like the original's.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from walkingnoise.noise.kinds import module_kind

#: Module kinds whose ``weight`` is never perturbed.
EXCLUDED_KINDS = ("batchnorm", "norm")

#: The attribute of a perturbed layer: ``(WeightNoise, hook handles)``.
_ATTRIBUTE = "_walkingnoise_weight_noise"


def noisy_weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer whose ``weight`` gets weight noise, in module order."""
    layers = []
    attention = [f"{n}." for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for name, module in model.named_modules():
        if module_kind(module) in EXCLUDED_KINDS or name.startswith(tuple(attention)):
            continue
        if isinstance(module._parameters.get("weight"), nn.Parameter):
            layers.append((name, module))
    return layers


def weight_noise_std(weight: torch.Tensor, eta: float) -> torch.Tensor:
    """σ_W = η · (max W − min W) of one weight tensor, detached (a scalar tensor)."""
    detached = weight.detach()
    return eta * (detached.max() - detached.min())


class WeightNoise:
    """Weight noise attached to the layers of one model; created by :func:`attach_weight_noise`.

    Attributes:
        eta: the relative noise level η (σ_W = η · weight range), ≥ 0.
        training: inject while the layer is in training mode.
        evaluation: inject while the layer is in evaluation mode.
        generator: where the noise is drawn from (None: PyTorch's global generator).
        enabled: False switches the noise off without detaching it (see :meth:`disabled`).
        layers: names of the perturbed layers, relative to the model it was attached to.
    """

    def __init__(
        self,
        eta: float,
        *,
        training: bool = True,
        evaluation: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 <= eta < math.inf:
            raise ValueError(f"weight noise η must be finite and ≥ 0, got {eta}")
        self.eta = float(eta)
        self.training = training
        self.evaluation = evaluation
        self.generator = generator
        self.enabled = True
        self.layers: tuple[str, ...] = ()
        self._modules: list[weakref.ref[nn.Module]] = []
        self._clean: dict[int, list[torch.Tensor]] = {}

    def active_in(self, training: bool) -> bool:
        """Whether noise is drawn for a layer in training (True) or evaluation (False) mode."""
        if not self.enabled or self.eta == 0.0:
            return False
        return self.training if training else self.evaluation

    def perturbed(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight + N(0, σ_W²)`` with fresh noise; differentiable with respect to ``weight``."""
        z = torch.randn(
            weight.shape, generator=self.generator, dtype=weight.dtype, device=weight.device
        )
        return weight + z * weight_noise_std(weight, self.eta)

    @contextmanager
    def disabled(self) -> Iterator[WeightNoise]:
        """Within the block no weight noise is drawn (clean evaluation); then as before."""
        previous, self.enabled = self.enabled, False
        try:
            yield self
        finally:
            self.enabled = previous

    def remove(self) -> None:
        """Detach the hooks from every layer; the model runs clean again."""
        for ref in self._modules:
            module = ref()
            if module is not None and _noise_on(module) is self:
                _detach(module)
        self._modules.clear()

    def __deepcopy__(self, memo: dict[int, Any]) -> WeightNoise:
        """The noise of a copied model: same settings, a copy of the generator, no layers yet
        (the copied layers carry it; :func:`weight_noise_of` finds them)."""
        twin = WeightNoise(
            self.eta,
            training=self.training,
            evaluation=self.evaluation,
            generator=copy.deepcopy(self.generator, memo),
        )
        twin.enabled = self.enabled
        twin.layers = self.layers
        return twin

    def _attach(self, module: nn.Module) -> None:
        handles = (
            module.register_forward_pre_hook(_swap_in),
            module.register_forward_hook(_swap_out, always_call=True),
        )
        module.__dict__[_ATTRIBUTE] = (self, handles)
        self._modules.append(weakref.ref(module))


def _noise_on(module: nn.Module) -> WeightNoise | None:
    """The weight noise a layer carries, if any."""
    entry = module.__dict__.get(_ATTRIBUTE)
    return None if entry is None else entry[0]


def _detach(module: nn.Module) -> None:
    """Remove a layer's weight-noise hooks and attribute."""
    _, handles = module.__dict__.pop(_ATTRIBUTE)
    for handle in handles:
        handle.remove()


def _swap_in(module: nn.Module, _inputs: Any) -> None:
    """Forward pre-hook: the layer reads ``weight + noise`` during this call."""
    noise = _noise_on(module)
    if noise is None or not noise.active_in(module.training):
        return
    clean = module._parameters["weight"]
    if clean is None:
        return
    noise._clean.setdefault(id(module), []).append(clean)
    module._parameters["weight"] = noise.perturbed(clean)  # type: ignore[assignment]


def _swap_out(module: nn.Module, _inputs: Any, _output: Any) -> None:
    """Forward hook (also when the call raised): the stored weight is back."""
    noise = _noise_on(module)
    stack = None if noise is None else noise._clean.get(id(module))
    if stack:
        module._parameters["weight"] = stack.pop()
        if not stack:
            del noise._clean[id(module)]


def attach_weight_noise(
    model: nn.Module,
    eta: float,
    *,
    training: bool = True,
    evaluation: bool = True,
    generator: torch.Generator | None = None,
) -> WeightNoise:
    """Perturb the weights of every layer of ``model`` on each forward pass (see module doc).

    Weight noise already attached to any of these layers is removed first, so this also
    changes η at run time. Returns the handle; ``handle.remove()`` detaches it.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> noise = attach_weight_noise(layer, 0.05, generator=torch.Generator().manual_seed(0))
        >>> before = layer.weight.detach().clone()
        >>> _ = layer(torch.ones(1, 3))
        >>> torch.equal(layer.weight, before)
        True
    """
    layers = noisy_weight_layers(model)
    uncalled = _read_without_calling(model, [name for name, _ in layers])
    if uncalled:
        raise ValueError(
            f"weight noise on {uncalled[0]}: torch.fx traced through this layer (a module of "
            "your own), so its weight is read without calling it and would stay clean; give "
            "it a forward that calls a torch.nn layer, or instrument the model with "
            "method='hooks'"
        )
    remove_weight_noise(model)
    noise = WeightNoise(eta, training=training, evaluation=evaluation, generator=generator)
    for _, module in layers:
        noise._attach(module)
    noise.layers = tuple(name for name, _ in layers)
    return noise


def _read_without_calling(model: nn.Module, names: list[str]) -> list[str]:
    """Those of the layers ``names`` (of ``model``) that a torch.fx graph in it reads the
    weight of without calling them (fx traced through a module of the user's own): their
    hooks would never run. Layers inside a module the graph calls are called by it."""
    uncalled = []
    for prefix, graph_module in model.named_modules():
        if not isinstance(graph_module, torch.fx.GraphModule):
            continue
        start = f"{prefix}." if prefix else ""
        called = [
            f"{start}{node.target}" for node in graph_module.graph.nodes if node.op == "call_module"
        ]
        within_called = tuple(f"{name}." for name in called)
        uncalled += [
            name
            for name in names
            if name.startswith(start) and name not in called and not name.startswith(within_called)
        ]
    return uncalled


def weight_noise_of(model: nn.Module) -> WeightNoise | None:
    """The weight noise attached to the layers of ``model``, if any.

    The noise of a deep copy learns its layers here, so its ``remove()`` then detaches them.
    """
    found = None
    for module in model.modules():
        noise = _noise_on(module)
        if noise is None or (found is not None and noise is not found):
            continue
        found = noise
        if all(ref() is not module for ref in noise._modules):
            noise._modules.append(weakref.ref(module))
    return found


def weight_noise_layers(model: nn.Module) -> dict[str, WeightNoise]:
    """{name: the weight noise it carries} of every layer of ``model`` that carries one."""
    return {
        name: noise
        for name, module in model.named_modules()
        if (noise := _noise_on(module)) is not None
    }


def remove_weight_noise(model: nn.Module) -> None:
    """Detach every weight noise attached to layers of ``model`` (also a deep copy's)."""
    for module in model.modules():
        if _noise_on(module) is not None:
            _detach(module)


def set_weight_noise(
    model: nn.Module,
    eta: float,
    *,
    training: bool = True,
    evaluation: bool = True,
    generator: torch.Generator | None = None,
) -> WeightNoise | None:
    """Give ``model`` weight noise of level η, or none for η = 0; returns the handle or None."""
    if eta == 0.0:
        remove_weight_noise(model)
        return None
    return attach_weight_noise(
        model, eta, training=training, evaluation=evaluation, generator=generator
    )


def weight_noise_active(model: nn.Module) -> bool:
    """Whether a forward pass of ``model`` in its current mode draws weight noise."""
    noise = weight_noise_of(model)
    return noise is not None and noise.active_in(model.training)


#: What :func:`weight_noise_preserved` restores of a ``WeightNoise`` besides its layers.
_SETTINGS = ("eta", "training", "evaluation", "generator", "enabled")


@contextmanager
def weight_noise_preserved(model: nn.Module) -> Iterator[None]:
    """Within the block the weight noise of ``model`` may be set freely; then every layer
    carries the noise it carried before, the same object with the same settings, so handles
    held outside the block still work."""
    saved = {module: _noise_on(module) for module in model.modules()}
    settings = {
        id(noise): (noise, {name: getattr(noise, name) for name in _SETTINGS})
        for noise in saved.values()
        if noise is not None
    }
    try:
        yield
    finally:
        for module, noise in saved.items():
            if _noise_on(module) is noise:
                continue
            if _noise_on(module) is not None:
                _detach(module)
            if noise is not None:
                noise._attach(module)
        for noise, values in settings.values():
            for name, value in values.items():
                setattr(noise, name, value)


def hooked_beyond_weight_noise(module: nn.Module) -> bool:
    """Whether forward hooks besides its weight noise's watch ``module`` (also hooks on every
    module): a caller that computes the layer's result without calling it would skip them."""
    entry = module.__dict__.get(_ATTRIBUTE)
    own = {handle.id for handle in entry[1]} if entry is not None else set()
    hooks = set(module._forward_pre_hooks) | set(module._forward_hooks)
    everywhere = nn.modules.module._global_forward_pre_hooks
    everywhere_after = nn.modules.module._global_forward_hooks
    return bool(hooks - own) or bool(everywhere) or bool(everywhere_after)


@contextmanager
def weight_noise_disabled(model: nn.Module) -> Iterator[None]:
    """Within the block ``model``'s weights are read without noise (if it has weight noise)."""
    noise = weight_noise_of(model)
    if noise is None:
        yield
        return
    with noise.disabled():
        yield
