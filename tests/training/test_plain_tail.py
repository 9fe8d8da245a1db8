"""The clean end of a graph as plain calls: the same numbers as the modules called in turn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walkingnoise.data.dataset import InMemoryDataset
from walkingnoise.models import build_model
from walkingnoise.noise.instrument import instrument
from walkingnoise.noise.models import AdditiveNoise
from walkingnoise.training import stacked_loop
from walkingnoise.training.plain_tail import PlainTail
from walkingnoise.training.stacked import StackedModel
from walkingnoise.training.stacked_loop import _loss_and_correct, evaluate_stacked


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


@pytest.mark.parametrize("rows", [1, 32, 100, 4096])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("width", [16, 512])
def test_class_major_logits_are_the_modules_output_bit_for_bit(
    rows: int, bias: bool, width: int
) -> None:
    """A closing Linear layer's output in (C, N) memory, as the (N, C) view: every logit is
    what the layer gives, also where it reads hundreds of inputs (W·xᵀ then rounds otherwise
    than x·Wᵀ), and a loss scores it as it scores the layer's own output."""
    modules = _layers(width)
    modules[-1] = nn.Linear(width, 10, bias=bias)
    x = torch.randn(rows, 20) * 3
    with torch.no_grad():
        expected = _in_turn(modules, x.clone())
        out = PlainTail(modules)(x, class_major=True)
        plain = PlainTail(modules)(x)
    assert out.shape == expected.shape
    assert out.t().is_contiguous()  # class-major memory
    assert plain.is_contiguous()
    assert torch.equal(out, expected)
    assert torch.equal(plain, expected)
    y = torch.randint(0, 10, (rows,))
    scored, reference = _loss_and_correct(out[None], y), _loss_and_correct(expected[None], y)
    assert torch.equal(scored[0], reference[0])
    assert torch.equal(scored[1], reference[1])


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


def test_a_hooked_module_is_called_as_itself() -> None:
    """A hook on a ReLU or on the closing Linear layer sees its call, and the output is then
    the layer's own (sample-major)."""
    modules = _layers()
    seen: list[str] = []
    modules[4].register_forward_hook(lambda *_: seen.append("relu"))
    modules[5].register_forward_hook(lambda *_: seen.append("linear"))
    x = torch.randn(64, 20)
    with torch.no_grad():
        out = PlainTail(modules)(x, class_major=True)
        expected = _in_turn(modules, x)
    assert seen == ["relu", "linear", "relu", "linear"]
    assert out.is_contiguous()
    assert torch.equal(out, expected)


def test_evaluating_copies_score_their_logits_class_major(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``evaluate_stacked`` asks copies for class-major logits (their closing layer's output
    in (C, K·B) memory); called directly, the stack gives them sample-major as before."""
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True).eval(), digits.test.x[:2])
    stack = StackedModel([model] * 3).eval()
    stack.set_noise([(AdditiveNoise(), {2: sigma}) for sigma in (0.1, 0.5, 1.0)])
    orders: list[bool] = []

    def scored(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        orders.append(logits.permute(2, 0, 1).is_contiguous())
        return _loss_and_correct(logits, y)

    monkeypatch.setattr(stacked_loop, "_loss_and_correct", scored)
    evaluate_stacked(stack, digits.test, repeats=1)
    assert orders == [True]
    with torch.no_grad():
        logits = stack(digits.test.x[:64], shared=True)
    assert logits.is_contiguous()


def test_a_hook_keeps_the_output_it_saw() -> None:
    """A hook that keeps the output of the layer before a ReLU (a user's probe, put there
    after the stack found its tail) keeps what the layer gave, not what the ReLU made of it."""
    modules = _layers()
    kept: list[torch.Tensor] = []
    modules[1].register_forward_hook(lambda _m, _args, out: kept.append(out))
    x = torch.randn(64, 20)
    with torch.no_grad():
        out = PlainTail(modules)(x, class_major=True)
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


def test_only_a_closing_linear_layer_of_pytorchs_on_rows_writes_class_major() -> None:
    """A closing Linear layer on (N, T, I) input, or of a subclass of the user's (its own
    forward), is called as itself: the same numbers, sample-major."""

    class Halved(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) / 2

    torch.manual_seed(0)
    x = torch.randn(64, 5, 20)
    with torch.no_grad():
        for modules, rows in [([nn.Linear(20, 10)], x), ([Halved(20, 10)], x[:, 0])]:
            out = PlainTail(modules)(rows, class_major=True)
            assert torch.equal(out, _in_turn(modules, rows))
            assert out.is_contiguous()
