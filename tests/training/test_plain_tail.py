"""The clean end of a graph as plain calls: the same numbers as the modules called in turn."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from walkingnoise.training.plain_tail import PlainTail


def _layers(width: int = 16) -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        nn.Linear(20, width),
        nn.BatchNorm1d(width).eval(),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    ]


def _in_turn(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x


class _ReluCalls(TorchDispatchMode):
    """Counts ReLUs that write a tensor of their own and those that act in place."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket in (torch.ops.aten.relu, torch.ops.aten.relu_):
            self.calls.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_the_tail_gives_the_modules_output_with_its_relus_in_place() -> None:
    """The numbers of the modules called in turn, bit for bit, with every ReLU acting in
    place on what the layer before it made."""
    modules = _layers()
    x = torch.randn(100, 20) * 3
    calls = _ReluCalls()
    with torch.no_grad():
        expected = _in_turn(modules, x.clone())
        with calls:
            out = PlainTail(modules)(x)
    assert torch.equal(out, expected)
    assert calls.calls == ["relu_", "relu_"]


@pytest.mark.parametrize(
    "first",
    [[], [nn.Flatten()], [nn.Identity(), nn.Flatten()], [nn.Flatten(), nn.Dropout().eval()]],
    ids=["relu", "flatten", "identity", "dropout"],
)
def test_relu_acts_in_place_only_on_what_the_tail_made(first: list[nn.Module]) -> None:
    """The input, which others may read (a kept clean prefix), is left as it is, also when a
    ReLU comes first or after modules that pass the input on (or a view of it); the output
    is what the modules give."""
    modules = [*first, nn.ReLU(), *_layers()]
    x = torch.randn(64, 20) if not first else torch.randn(64, 4, 5)
    before = x.clone()
    with torch.no_grad():
        out = PlainTail(modules)(x)
        expected = _in_turn(modules, before.clone())
    assert torch.equal(x, before)
    assert torch.equal(out, expected)


def test_a_hooked_relu_is_called_as_itself() -> None:
    """A hook on a ReLU sees its call, and the output is the modules' own."""
    modules = _layers()
    seen: list[str] = []
    modules[4].register_forward_hook(lambda *_: seen.append("relu"))
    x = torch.randn(64, 20)
    with torch.no_grad():
        out = PlainTail(modules)(x)
        expected = _in_turn(modules, x)
    assert seen == ["relu", "relu"]
    assert torch.equal(out, expected)


def test_a_hook_keeps_the_output_it_saw() -> None:
    """A hook that keeps the output of the layer before a ReLU (a user's probe, put there
    after the stack found its tail) keeps what the layer gave, not what the ReLU made of it."""
    modules = _layers()
    kept: list[torch.Tensor] = []
    modules[1].register_forward_hook(lambda _m, _args, out: kept.append(out))
    x = torch.randn(64, 20)
    with torch.no_grad():
        out = PlainTail(modules)(x)
        expected = modules[1](modules[0](x))
    assert len(kept) == 2
    assert torch.equal(kept[0], expected)
    assert (kept[0] < 0).any()
    assert torch.equal(out, _in_turn(modules, x))


def test_with_gradients_the_relu_leaves_what_backward_needs() -> None:
    """Copies evaluating with gradients on (a caller differentiating through the stack in
    evaluation mode): a ReLU after a Tanh, whose backward reads its output, does not change
    that output in place; the gradient is the modules' own."""
    torch.manual_seed(0)
    modules = [nn.Linear(20, 16), nn.Tanh(), nn.ReLU(), nn.Linear(16, 10)]
    x = torch.randn(64, 20, requires_grad=True)
    (grad,) = torch.autograd.grad(PlainTail(modules)(x).sum(), x)
    (expected,) = torch.autograd.grad(_in_turn(modules, x).sum(), x)
    assert torch.equal(grad, expected)
