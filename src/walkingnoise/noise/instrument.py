"""Attach noise sites to any ``nn.Module`` without the model's code knowing.

Two mechanisms, tried in this order by ``method="auto"``:

``fx``
    ``torch.fx`` traces the model into a graph. A site is inserted after the input, after every
    call of a module of a selected kind, and after selected functional operations (``x + y`` of
    a skip connection, ``torch.matmul``, ``F.relu``, ...). Modules of PyTorch itself (e.g.
    ``nn.MultiheadAttention``) are not traced into, so their internal operations get no site.
``hooks``
    When tracing fails (data-dependent control flow, untraceable calls), forward hooks on the
    modules of the selected kinds do the same for module calls; functional operations then get
    no site. The hooks are attached to the given model itself (``NoisyModel.remove_hooks``).

Both keep the model's parameters: the instrumented model trains and saves the same tensors.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.parameter import is_lazy

from walkingnoise.noise.kinds import (
    BINARY_KINDS,
    DEFAULT_KINDS,
    check_kinds,
    function_kind,
    module_kind,
)
from walkingnoise.noise.models import NoiseLevel, NoiseModel
from walkingnoise.noise.placement import Placement
from walkingnoise.noise.site import NoiseSite, SiteInfo

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Models torch.fx could not trace, and why, warned about once each in this process.
_SAID_UNTRACEABLE: set[tuple[str, str, str]] = set()

Method = Literal["auto", "fx", "hooks"]


class NoisyModel(nn.Module):
    """A model with noise sites attached; ``set_noise`` decides which sites inject what.

    Attributes:
        net: the model that runs (an ``fx.GraphModule`` or the original model with hooks).
        source: the original clean model (shares its parameters with ``net``); save this one.
        sites: the ``NoiseSite`` modules, index i = site i.
        method: ``fx`` or ``hooks``, the mechanism that attached the sites.
    """

    def __init__(
        self,
        net: nn.Module,
        source: nn.Module,
        sites: Sequence[NoiseSite],
        method: Literal["fx", "hooks"],
        handles: Sequence[Any] = (),
    ) -> None:
        super().__init__()
        self.net = net
        self._source = (source,)
        self.sites = nn.ModuleList(sites)
        self.method = method
        self._handles = list(handles)
        self.noise: NoiseModel | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model; active sites add noise on the way."""
        return self.net(*args, **kwargs)

    @property
    def source(self) -> nn.Module:
        """The original clean model; its ``state_dict`` has the model's own keys."""
        return self._source[0]

    @property
    def site_table(self) -> list[SiteInfo]:
        """One ``SiteInfo`` per site, in forward order."""
        return [site.info for site in self.sites]

    def site_frame(self) -> pd.DataFrame:
        """The site table as a DataFrame (index, name, kind, shape)."""
        import pandas as pd

        return pd.DataFrame([vars(info) for info in self.site_table]).set_index("index")

    def set_noise(
        self,
        noise: NoiseModel | None,
        placement: Placement | None = None,
        sigma: NoiseLevel | None = None,
    ) -> dict[int, NoiseLevel]:
        """Configure every site at once; returns the map {site index: σ} now in force.

        Sites outside the placement are switched off. ``noise=None`` switches all off. The model
        is not rebuilt: calling this again between forward passes changes σ at run time.
        """
        levels: dict[int, NoiseLevel] = {}
        if noise is not None:
            if placement is None:
                raise ValueError("set_noise needs a placement when noise is given")
            levels = placement.resolve(self.site_table, sigma)
            for value in levels.values():
                noise.levels(value)
        self.noise = noise
        for site in self.sites:
            site.set_noise(noise, levels.get(site.info.index))
        return levels

    @property
    def generator(self) -> torch.Generator | None:
        """The generator every site draws its noise from (None: PyTorch's global one)."""
        return self.sites[0].generator if len(self.sites) else None

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Draw all noise of this model from ``generator`` (None: the global generator)."""
        for site in self.sites:
            site.generator = generator

    def clear_noise(self) -> None:
        """Switch noise off at every site."""
        self.set_noise(None)

    @property
    def executions(self) -> dict[int, int]:
        """{site index: executions} of every site executed more than once."""
        return {site.info.index: site.executions for site in self.sites if site.executions > 1}

    def set_executions(self, counts: Mapping[int, int]) -> None:
        """Execute site i ``counts[i]`` times with fresh noise and average; others once.

        This is guided multi-execution: a site's noise std falls as 1/√n. Only the one-model
        forward path runs it: a ``StackedModel`` refuses such a model (``NotStackableError``).
        A site without active noise is unaffected.
        """
        known = range(len(self.sites))
        for index in counts:
            if index not in known:
                raise ValueError(
                    f"executions for site {index}: the model has sites 0..{len(known) - 1}"
                )
        previous = [site.executions for site in self.sites]
        try:
            for site in self.sites:
                site.set_executions(counts.get(site.info.index, 1))
        except ValueError:
            for site, count in zip(self.sites, previous, strict=True):
                site.executions = count
            raise

    def clear_executions(self) -> None:
        """Execute every site once again."""
        self.set_executions({})

    @contextmanager
    def noise_disabled(self) -> Iterator[NoisyModel]:
        """Within the block, no site injects noise and weights are read without weight noise
        (for clean evaluation); settings are kept."""
        from walkingnoise.noise.weight import weight_noise_disabled

        previous = [site.enabled for site in self.sites]
        for site in self.sites:
            site.enabled = False
        try:
            with weight_noise_disabled(self):
                yield self
        finally:
            for site, enabled in zip(self.sites, previous, strict=True):
                site.enabled = enabled

    @contextmanager
    def noise_preserved(self) -> Iterator[NoisyModel]:
        """Within the block, ``set_noise`` and ``set_generator`` may be called freely; the
        configuration is restored."""
        saved = (self.noise, [(site.noise, site.levels, site.generator) for site in self.sites])
        try:
            yield self
        finally:
            self.noise = saved[0]
            for site, (noise, levels, generator) in zip(self.sites, saved[1], strict=True):
                site.noise, site.levels, site.generator = noise, levels, generator

    def remove_hooks(self) -> None:
        """Detach the forward hooks of the ``hooks`` mechanism from the original model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def instrument(
    model: nn.Module,
    example_input: torch.Tensor | tuple[Any, ...],
    *,
    kinds: frozenset[str] | set[str] | tuple[str, ...] = DEFAULT_KINDS,
    method: Method = "auto",
) -> NoisyModel:
    """Attach a noise site at the input and after every operation of the selected ``kinds``.

    Args:
        model: any module; its parameters are shared, not copied.
        example_input: one batch (a tensor, or a tuple of positional arguments) used to trace the
            model and record each site's output shape. It is run in eval mode without
            gradients, so BatchNorm statistics are not touched.
        kinds: site kinds to instrument (see ``walkingnoise.noise.kinds.SITE_KINDS``); ``input``
            puts site 0 at the network input.
        method: ``fx``, ``hooks``, or ``auto`` (fx, falling back to hooks with a log line).

    Returns:
        The ``NoisyModel``; its ``site_table`` lists index, name, kind and shape of every site.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> noisy = instrument(net, torch.zeros(1, 4))
        >>> [s.name for s in noisy.site_table]
        ['input', '0:Linear', '1:ReLU', '2:Linear']
    """
    kinds = check_kinds(kinds)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if method not in ("auto", "fx", "hooks"):
        raise ValueError(f"method must be 'auto', 'fx' or 'hooks', not {method!r}")
    before = _snapshot(model)
    try:  # the example passes (and any tracing) change no buffer of the model
        _check_example(model, args)
        if method in ("auto", "fx"):
            try:
                with _probing(model):
                    return _on_model_device(_instrument_fx(model, args, kinds), model, args)
            except Exception as error:
                if method == "fx":
                    raise
                first = str(error).splitlines()[0] if str(error) else ""
                said = (type(model).__qualname__, type(error).__name__, first)
                if said not in _SAID_UNTRACEABLE:  # a sweep builds the model many times
                    _SAID_UNTRACEABLE.add(said)
                    log.warning(
                        "torch.fx could not trace %s (%s: %s); using module hooks instead: "
                        "functional operations such as skip-connection adds get no noise site",
                        type(model).__name__,
                        type(error).__name__,
                        first,
                    )
        with _probing(model):
            return _on_model_device(_instrument_hooks(model, args, kinds), model, args)
    finally:
        _restore_buffers(model, before)


def instrument_like(model: nn.Module, template: NoisyModel) -> NoisyModel | None:
    """``model`` instrumented as ``template`` was, without tracing it again; None where that is
    not sure to give what :func:`instrument` gives, and ``instrument`` must be called instead.

    This is for the models of a cohort, which share an architecture and an example input and
    differ in their weights: tracing and the example passes cost several times more than
    building the model. The template's graph is copied onto ``model``'s modules (``model``'s
    parameters are shared, as ``instrument`` shares them; ``model`` itself is not changed)
    with fresh sites of the same table. It applies where the template was traced with fx,
    every module of ``model`` is one of PyTorch's or the built-in models' (whose trace follows
    from their structure), none is lazy, ``model``'s modules equal the template's source's and
    those its graph calls (by name, type and settings: ``extra_repr``, which holds a layer's
    sizes, strides, padding, ...), and its parameters and buffers the template's source's (by
    name, shape and dtype). The site shapes are the template's: for the same example input.
    """
    if template.method != "fx" or not _same_structure(model, template.source):
        return None
    old = template.net.graph
    root: dict[str, Any] = {}
    for node in old.nodes:
        if node.op == "get_attr":  # a tensor of the trace: not from the structure alone
            return None
        target = str(node.target)
        if node.op != "call_module" or target.startswith("noise_sites."):
            continue
        ours = _submodule(model, target)
        called = template.net.get_submodule(target)
        if ours is None or _settings(ours) != _settings(called):
            return None
        root[target] = ours
    sites = [NoiseSite(site.info) for site in template.sites]
    root.update({f"noise_sites.{i}": site for i, site in enumerate(sites)})
    graph = fx.Graph(tracer_cls=old._tracer_cls, tracer_extras=old._tracer_extras)
    graph._codegen = copy.deepcopy(old._codegen)
    value, output = graph.graph_copy(old, {}, return_output_node=True)
    graph.output(value, type_expr=output.type)  # the return annotation too: the same code
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__)
    gm.noise_sites = nn.ModuleList(sites)
    for name in template.net._modules:  # in the template's order
        gm._modules[name] = gm._modules.pop(name)
    noisy = NoisyModel(gm, model, sites, "fx")
    if sites:  # where the template's are, unless the model's tensors say otherwise
        noisy.sites.to(template.sites[0].levels.device)
    return _on_model_device(noisy, model, ())


def _same_structure(model: nn.Module, other: nn.Module) -> bool:
    """Whether both are made of the same modules of PyTorch's or the built-in models' (by name,
    type and settings) with the same parameters and buffers (by name, shape and dtype), none
    lazy."""

    def layout(module: nn.Module) -> tuple[Any, ...]:
        tensors = [*module.named_parameters(), *module.named_buffers()]
        return (
            [(name, *_settings(m)) for name, m in module.named_modules()],
            [(name, t.shape, t.dtype) for name, t in tensors],
        )

    def built_in(module: nn.Module) -> bool:
        return all(type(m).__module__.startswith(_MODE_FREE_MODULES) for m in module.modules())

    lazy = any(is_lazy(t) for t in [*model.parameters(), *model.buffers()])
    return not lazy and built_in(model) and layout(model) == layout(other)


def _settings(module: nn.Module) -> tuple[type, str]:
    """A module's class and settings (``Conv2d(1, 4, kernel_size=(3, 3), stride=(2, 2))``)."""
    return type(module), module.extra_repr()


def _submodule(module: nn.Module, target: str) -> nn.Module | None:
    """The submodule at the dotted path ``target``, or None."""
    try:
        return module.get_submodule(target)
    except AttributeError:
        return None


def _on_model_device(noisy: NoisyModel, model: nn.Module, args: tuple[Any, ...]) -> NoisyModel:
    """Move the sites (their level buffers) to the model's device, else the example input's,
    so that noise levels set later live where the activations do."""
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    tensors = [*model.parameters(), *model.buffers(), *inputs]
    if tensors:
        noisy.sites.to(tensors[0].device)
    return noisy


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's buffers (not lazy ones, which hold nothing yet)."""
    return {name: b.clone() for name, b in model.named_buffers() if not is_lazy(b)}


def _check_example(model: nn.Module, args: tuple[Any, ...]) -> None:
    """Raise a one-line ValueError if the model cannot run the example input at all (a wrong
    shape), before tracing would report it as a limit of torch.fx."""
    try:
        with _probing(model):
            model(*args)
    except Exception as error:
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{type(model).__name__} cannot run the example input {shapes} "
            f"({type(error).__name__}: {first})"
        ) from None


@contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Run example passes in eval mode without gradients, restoring the training flag after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value
    return None


def _first_meta(meta: Any) -> TensorMetadata | None:
    if not isinstance(meta, TensorMetadata) and isinstance(meta, (tuple, list)) and meta:
        meta = meta[0]
    if isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point:
        return meta
    return None


class _SiteTracer(fx.Tracer):
    """Traces into user modules, stopping at modules that get a site and at PyTorch's own."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_kind(m) is not None or super().is_leaf_module(m, module_qualified_name)


def _unique(names: list[str]) -> list[str]:
    """Suffix repeated names with ``#2``, ``#3``... (a module called twice gets two sites)."""
    seen: Counter[str] = Counter()
    result = []
    for name in names:
        seen[name] += 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


def _fx_candidate(
    node: fx.Node, modules: dict[str, nn.Module], n_inputs: int
) -> tuple[str, str] | None:
    """(name, kind) of the site that should follow ``node``, before kind filtering."""
    if node.op == "placeholder":
        return ("input" if n_inputs == 1 else f"input:{node.target}", "input")
    if node.op == "call_module":
        module = modules[str(node.target)]
        kind = module_kind(module)
        return None if kind is None else (f"{node.target}:{type(module).__name__}", kind)
    if node.op in ("call_function", "call_method"):
        kind = function_kind(node.target)
        if kind is None:
            return None
        if kind in BINARY_KINDS:
            tensors = [
                a
                for a in node.args
                if isinstance(a, fx.Node) and _first_meta(a.meta.get("tensor_meta"))
            ]
            if len(tensors) < 2:
                return None
        op = node.target if isinstance(node.target, str) else node.target.__name__
        op = op.strip("_")
        stack = node.meta.get("nn_module_stack") or {}
        scope = next(reversed(stack.values()))[0] if stack else ""
        return (f"{scope}:{op}" if scope else op, kind)
    return None


class ModeDependentTraceError(RuntimeError):
    """A forward that reads ``self.training`` (functional dropout, a train-only branch): a
    torch.fx graph would fix it to one mode."""


#: Modules whose own forward reads no ``self.training`` (PyTorch's containers, the built-in
#: models): a model made of these alone is traced once.
_MODE_FREE_MODULES = ("torch.nn.", "walkingnoise.models.")


class StateChangedWhileTracingError(RuntimeError):
    """A forward that changes a buffer in place by constants (``self.count.add_(1)``): torch.fx
    runs such an operation once, while tracing, and leaves it out of the graph."""


def _trace(model: nn.Module) -> fx.Graph:
    """The graph of ``model`` in eval mode (``model`` is in eval mode here).

    Raises :class:`ModeDependentTraceError` if the graph of training mode differs, since fx
    evaluates ``self.training`` while tracing and would keep one mode's code for both; and
    :class:`StateChangedWhileTracingError` if tracing changed a buffer (restored first).
    """
    before = _snapshot(model)
    try:
        graph = _trace_both_modes(model)
    finally:
        changed = _restore_buffers(model, before)
    if changed:
        raise StateChangedWhileTracingError(
            f"the forward of {type(model).__name__} changes {', '.join(changed[:3])} in place, "
            "which torch.fx would do once while tracing instead of on every pass"
        )
    return graph


def _restore_buffers(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Put back every buffer that differs from ``before``; return their names."""
    changed = []
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            old = before.get(name)
            if old is None or old.shape != buffer.shape:
                continue
            same = torch.equal(buffer, old) or (
                buffer.is_floating_point()
                and torch.allclose(buffer, old, rtol=0, atol=0, equal_nan=True)
            )
            if not same:
                buffer.copy_(old)
                changed.append(name)
    return changed


def _trace_both_modes(model: nn.Module) -> fx.Graph:
    """The eval-mode graph, traced after a training-mode one that must read the same."""
    if all(type(m).__module__.startswith(_MODE_FREE_MODULES) for m in model.modules()):
        return _SiteTracer().trace(model)
    attributes = set(vars(model))
    model.train()
    try:
        training = _SiteTracer().trace(model)
    finally:
        model.eval()
        for name in set(vars(model)) - attributes:  # its tensor constants: the next trace's
            delattr(model, name)
    graph = _SiteTracer().trace(model)
    if training.python_code("self").src != graph.python_code("self").src:
        raise ModeDependentTraceError(
            f"the forward of {type(model).__name__} depends on self.training (functional "
            "dropout, a train-only branch), which a torch.fx graph would fix to one mode"
        )
    return graph


def _activations(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """The nodes that compute activations, each with the later nodes that read the tensor it
    changes in place (``h.add_(r)``: the reads of ``h`` after it; none for other nodes).

    An activation is computed from the input and read later, directly or through the tensor
    it changes. Not: sums of parameters or buffers (noise there would be one draw for the
    whole batch), nor a result nothing reads (a buffer's in-place update, whose noise would
    go nowhere).
    """
    order = {node: i for i, node in enumerate(graph.nodes)}
    from_input: set[fx.Node] = set()
    activations: dict[fx.Node, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op != "placeholder" and not any(n in from_input for n in node.all_input_nodes):
            continue
        from_input.add(node)
        changed = _changed_in_place(node)
        readers = []
        if changed is not None:
            readers = [u for u in changed.users if u is not node and order[u] > order[node]]
        if node.users or readers:
            activations[node] = readers
    return activations


def _changed_in_place(node: fx.Node) -> fx.Node | None:
    """The tensor an in-place method or function (``h.add_(r)``, ``torch.relu_(h)``) changes,
    else None."""
    if node.op == "call_method":
        name = node.target if isinstance(node.target, str) else ""
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
    else:
        return None
    if not name.endswith("_") or name.endswith("__"):  # not operator.__iadd__ and such
        return None
    changed = node.args[0] if node.args else None
    return changed if isinstance(changed, fx.Node) else None


def _instrument_fx(model: nn.Module, args: tuple[Any, ...], kinds: frozenset[str]) -> NoisyModel:
    if hasattr(model, "noise_sites"):
        raise ValueError(
            f"{type(model).__name__} has an attribute noise_sites, the name of the sites fx "
            "instrumentation adds"
        )
    graph = _trace(model)
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    ShapeProp(gm).propagate(*args)
    modules = dict(gm.named_modules())
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    activations = _activations(graph)
    chosen: list[tuple[fx.Node, str, str, tuple[int, ...]]] = []
    for node in graph.nodes:
        meta = _first_meta(node.meta.get("tensor_meta"))
        candidate = _fx_candidate(node, modules, len(placeholders))
        if meta is None or candidate is None or candidate[1] not in kinds:
            continue
        if node.op != "placeholder" and node not in activations:
            continue
        chosen.append((node, candidate[0], candidate[1], tuple(meta.shape)))
    names = _unique([name for _, name, _, _ in chosen])
    sites = [
        NoiseSite(SiteInfo(index=i, name=name, kind=kind, shape=shape))
        for i, (name, (_, _, kind, shape)) in enumerate(zip(names, chosen, strict=True))
    ]
    gm.add_module("noise_sites", nn.ModuleList(sites))
    for i, (node, *_rest) in enumerate(chosen):
        with graph.inserting_after(node):
            site_node = graph.call_module(f"noise_sites.{i}", (node,))
        node.replace_all_uses_with(
            site_node, delete_user_cb=lambda user, s=site_node: user is not s
        )
        for reader in activations.get(node, ()):  # after h.add_(r), reads of h see the noise
            changed = _changed_in_place(node)
            assert changed is not None
            reader.replace_input_with(changed, site_node)
    graph.lint()
    gm.recompile()
    return NoisyModel(gm, model, sites, "fx")


#: Model classes whose layers without sites were logged in this process (once is enough).
_WARNED_CLASSES: set[str] = set()


def _warn_of_layers_without_sites(model: nn.Module, covered: list[str]) -> None:
    """Log the layers of the user's own (modules of no site kind with parameters of their own,
    outside those that get a site) after which module hooks put no noise: once per model
    class and process, since a sweep instruments each of its models."""
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if cls in _WARNED_CLASSES:
        return
    missed = [
        name or type(model).__name__
        for name, module in model.named_modules()
        if module_kind(module) is None
        and next(module.parameters(recurse=False), None) is not None
        and not any(name == p or name.startswith(p + ".") for p in covered)
    ]
    if missed:
        _WARNED_CLASSES.add(cls)
        shown = ", ".join(missed[:5]) + (f" and {len(missed) - 5} more" if len(missed) > 5 else "")
        log.warning(
            "module hooks put no noise site after %s: hooks follow only modules of a site kind "
            "(torch.nn's Linear, convolutions, BatchNorm, activations, pooling, ...); with a "
            "forward torch.fx can trace, the operations of layers of your own get sites",
            shown,
        )


def _instrument_hooks(model: nn.Module, args: tuple[Any, ...], kinds: frozenset[str]) -> NoisyModel:
    targets: dict[nn.Module, tuple[str, str]] = {}
    covered: list[str] = []
    for name, module in model.named_modules():
        kind = module_kind(module)
        if kind is None or kind not in kinds or any(name.startswith(p + ".") for p in covered):
            continue
        covered.append(name)
        label = f"{name}:{type(module).__name__}" if name else type(module).__name__
        targets[module] = (label, kind)
    _warn_of_layers_without_sites(model, covered)

    calls: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        tensor = _first_tensor(output)
        if tensor is not None:
            calls.append((module, tuple(tensor.shape)))

    probes = [m.register_forward_hook(record) for m in targets]
    try:
        model(*args)
    finally:
        for probe in probes:
            probe.remove()

    infos: list[tuple[str, str, tuple[int, ...]]] = []
    first = _first_tensor(args[0]) if args else None
    if "input" in kinds and first is not None:
        infos.append(("input", "input", tuple(first.shape)))
    infos += [(*targets[module], shape) for module, shape in calls]
    names = _unique([name for name, _, _ in infos])
    sites = [
        NoiseSite(SiteInfo(index=i, name=name, kind=kind, shape=shape))
        for i, (name, (_, kind, shape)) in enumerate(zip(names, infos, strict=True))
    ]
    offset = 1 if infos and infos[0][1] == "input" else 0
    per_module: dict[nn.Module, list[NoiseSite]] = {}
    for (module, _), site in zip(calls, sites[offset:], strict=True):
        per_module.setdefault(module, []).append(site)
    call_count: Counter[nn.Module] = Counter()

    def start(root: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
        call_count.clear()
        for site in sites:  # the sites follow the model's mode, also set on the model alone
            site.training = root.training
        if offset and inputs and _first_tensor(inputs[0]) is not None:
            return (sites[0](inputs[0]), *inputs[1:])
        return None

    def inject(module: nn.Module, _inputs: Any, output: Any) -> Any:
        own = per_module[module]
        site = own[min(call_count[module], len(own) - 1)]
        call_count[module] += 1
        return site(output)

    handles = [model.register_forward_pre_hook(start)]
    handles += [m.register_forward_hook(inject) for m in per_module]
    return NoisyModel(model, model, sites, "hooks", handles)
