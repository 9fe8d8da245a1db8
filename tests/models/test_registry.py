"""Tests for the model registry: duplicate names, unknown names, the built-in names."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from walkingnoise.models import (
    ModelBuildError,
    build_model,
    check_logits,
    model_names,
    register_model,
)
from walkingnoise.models import registry as model_registry
from walkingnoise.models.mlp import MLP
from walkingnoise.models.registry import check_trainable

BUILTIN = ("mlp", "mlp256", "mlp1024", "lenet5", "cnn_s")


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry that this test may add to without leaking into other tests."""
    copy = dict(model_registry._REGISTRY)
    monkeypatch.setattr(model_registry, "_REGISTRY", copy)
    return copy


def _tiny_builder(input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes))


def test_builtin_names_are_registered_and_sorted() -> None:
    names = model_names()
    assert set(BUILTIN) <= set(names)
    assert names == sorted(names)


def test_duplicate_builtin_name_raises_and_keeps_the_original() -> None:
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp")(_tiny_builder)
    assert isinstance(build_model("mlp", (1, 8, 8), 10), MLP)


@pytest.mark.usefixtures("isolated_registry")
def test_new_name_registers_builds_and_refuses_a_second_registration() -> None:
    assert register_model("tiny")(_tiny_builder) is _tiny_builder
    assert "tiny" in model_names()
    model = build_model("tiny", (1, 3), 4, batchnorm=False)
    assert model(torch.zeros(2, 1, 3)).shape == (2, 4)
    with pytest.raises(ValueError, match="'tiny' is already registered"):
        register_model("tiny")(_tiny_builder)


def test_unknown_name_raises_key_error_listing_known_names() -> None:
    with pytest.raises(KeyError) as info:
        build_model("nope", (1, 8, 8), 10)
    message = info.value.args[0]
    assert "'nope'" in message
    assert "import the module that registers it, on the command line with `--import MODULE`" in (
        message
    )
    for name in model_names():
        assert name in message


def test_build_model_accepts_a_list_shape_and_passes_batchnorm() -> None:
    with_bn = build_model("mlp", [1, 8, 8], 10, batchnorm=True)
    without_bn = build_model("mlp", [1, 8, 8], 10, batchnorm=False)
    assert any(isinstance(m, nn.BatchNorm1d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in without_bn.modules())
    assert with_bn.layers[1].in_features == 64


def _raising_builder(input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool):
    raise RuntimeError("my builder is broken\nsecond line")


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize(
    ("builder", "fragment"),
    [
        (_raising_builder, "its builder failed (RuntimeError: my builder is broken)"),
        (lambda shape, classes, *, batchnorm: None, "returned NoneType, not a torch.nn.Module"),
        (nn.Linear, "its builder failed (TypeError: "),  # a class registered as its builder
    ],
    ids=["raises", "returns-none", "a-class"],
)
def test_a_builder_that_fails_is_a_one_line_error_naming_the_model(builder, fragment) -> None:
    register_model("broken")(builder)
    with pytest.raises(ModelBuildError) as caught:
        build_model("broken", (1, 3), 4, batchnorm=False)
    message = str(caught.value)
    assert message.startswith("model 'broken': "), message
    assert fragment in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)  # the command line's one-line errors


@pytest.mark.usefixtures("isolated_registry")
def test_a_builders_own_value_error_is_kept_and_names_the_model() -> None:
    def refuse(shape, classes, *, batchnorm):
        raise ValueError(f"needs image inputs, got {shape}")

    def refuse_by_name(shape, classes, *, batchnorm):
        raise ValueError("picky2 needs image inputs")

    register_model("picky")(refuse)
    register_model("picky2")(refuse_by_name)
    with pytest.raises(ValueError, match=r"^model 'picky': needs image inputs, got \(1, 3\)$"):
        build_model("picky", (1, 3), 4)
    with pytest.raises(ValueError, match=r"^picky2 needs image inputs$"):  # named already
        build_model("picky2", (1, 3), 4)


@pytest.mark.usefixtures("isolated_registry")
def test_batchnorm_must_match_the_built_model() -> None:
    """A builder that ignores ``batchnorm`` would label its results with BatchNorm (and fit
    their curves as such) while the network has none, or the other way round."""
    register_model("tiny")(_tiny_builder)
    with pytest.raises(ModelBuildError, match=r"'tiny' has no BatchNorm layer .*batchnorm: false"):
        build_model("tiny", (1, 3), 4, batchnorm=True)
    register_model("always-bn")(
        lambda shape, classes, *, batchnorm: nn.Sequential(
            nn.Flatten(), nn.Linear(shape[-1], 8), nn.BatchNorm1d(8), nn.Linear(8, classes)
        )
    )
    with pytest.raises(ModelBuildError, match=r"'always-bn' has BatchNorm layers .*=False"):
        build_model("always-bn", (1, 3), 4, batchnorm=False)
    assert isinstance(build_model("always-bn", (1, 3), 4, batchnorm=True), nn.Sequential)


class _TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x), x


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (
            nn.Linear(3, 3),
            "gives shape (2, 3) for a batch of 2; it must give logits of shape (2, 4)",
        ),
        (_TupleOut(), "gives tuple for a batch of 2"),
    ],
    ids=["classes", "tuple"],
)
def test_check_logits_refuses_outputs_that_are_not_one_logit_per_class(model, fragment) -> None:
    with pytest.raises(ModelBuildError, match=re.escape(fragment)):
        check_logits("mine", model, torch.zeros(2, 3), 4)


class _Counting(nn.Module):
    """A classifier whose forward counts its calls in a buffer, in any mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x)


def test_check_logits_passes_a_classifier_and_leaves_it_as_it_was() -> None:
    model = _Counting()
    model.train()
    check_logits("mine", model, torch.randn(2, 3), 4)
    assert model.training
    assert model.calls.item() == 0  # its forward ran, and the buffer is as it was
    model(torch.randn(2, 3))
    assert model.calls.item() == 1


@pytest.mark.parametrize(
    "model",
    [nn.Flatten(), nn.Sequential(nn.Flatten(), nn.Linear(3, 4)).requires_grad_(False)],
    ids=["no-parameters", "all-frozen"],
)
def test_check_trainable_refuses_a_model_with_nothing_to_train(model: nn.Module) -> None:
    with pytest.raises(ModelBuildError, match=r"^model 'mine' has no parameter to train"):
        check_trainable("mine", model)


def test_check_trainable_takes_a_model_with_frozen_layers_and_one_to_train() -> None:
    check_trainable("mine", nn.Sequential(nn.Linear(3, 3).requires_grad_(False), nn.Linear(3, 4)))
