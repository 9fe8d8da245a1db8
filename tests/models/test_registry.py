"""Tests for the model registry: duplicate names, unknown names, the built-in names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walkingnoise.models import build_model, model_names, register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.models.mlp import MLP

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
    model = build_model("tiny", (1, 3), 4)
    assert model(torch.zeros(2, 1, 3)).shape == (2, 4)
    with pytest.raises(ValueError, match="'tiny' is already registered"):
        register_model("tiny")(_tiny_builder)


def test_unknown_name_raises_key_error_listing_known_names() -> None:
    with pytest.raises(KeyError) as info:
        build_model("nope", (1, 8, 8), 10)
    message = info.value.args[0]
    assert "'nope'" in message
    for name in model_names():
        assert name in message


def test_build_model_accepts_a_list_shape_and_passes_batchnorm() -> None:
    with_bn = build_model("mlp", [1, 8, 8], 10, batchnorm=True)
    without_bn = build_model("mlp", [1, 8, 8], 10, batchnorm=False)
    assert any(isinstance(m, nn.BatchNorm1d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in without_bn.modules())
    assert with_bn.layers[1].in_features == 64
