"""Checks run on every registered model, plus the paper's site order and hidden shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walkingnoise.models import build_model, model_names
from walkingnoise.noise import NoiseSite, instrument
from walkingnoise.noise.instrument import instrument_like

# Input shapes (without batch) each registered model is checked on; every model needs one.
INPUT_SHAPES: dict[str, list[tuple[int, ...]]] = {
    "mlp": [(1, 8, 8)],
    "mlp256": [(1, 8, 8)],
    "mlp1024": [(1, 8, 8)],
    "lenet5": [(1, 28, 28), (3, 32, 32)],
    "cnn_s": [(1, 10, 49)],
}
NUM_CLASSES = {"cnn_s": 12}
BATCH = 4

IN, L, C, B, A, P = "input", "linear", "conv", "batchnorm", "activation", "pool"
# The paper's noise-point order (SPEC §2) for each network, with and without BatchNorm.
KINDS: dict[tuple[str, bool], list[str]] = {
    ("mlp", True): [IN, L, B, A, L, B, A, L, B, A, L],
    ("mlp", False): [IN, L, A, L, A, L, A, L],
    ("lenet5", True): [IN, C, B, A, P, C, B, A, P, L, B, A, L, B, A, L],
    ("lenet5", False): [IN, C, A, P, C, A, P, L, A, L, A, L],
    ("cnn_s", True): [IN, C, B, A, C, B, A, L, B, A, L],
    ("cnn_s", False): [IN, C, A, C, A, L, A, L],
}
for _width in ("mlp256", "mlp1024"):
    KINDS[(_width, True)], KINDS[(_width, False)] = KINDS[("mlp", True)], KINDS[("mlp", False)]


def _cases() -> list:
    return [
        pytest.param(name, shape, batchnorm, id=f"{name}-{'x'.join(map(str, shape))}-bn{batchnorm}")
        for name in model_names()
        for shape in INPUT_SHAPES.get(name, [])
        for batchnorm in (True, False)
    ]


def _build(name: str, shape: tuple[int, ...], batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, shape, NUM_CLASSES.get(name, 10), batchnorm=batchnorm)


def test_every_registered_model_has_an_input_shape_here() -> None:
    assert set(model_names()) <= set(INPUT_SHAPES), "add an input shape for each new model"


@pytest.mark.parametrize(("name", "shape", "batchnorm"), _cases())
def test_forward_gives_finite_logits_and_gradients(
    name: str, shape: tuple[int, ...], batchnorm: bool
) -> None:
    model = _build(name, shape, batchnorm)
    num_classes = NUM_CLASSES.get(name, 10)
    x = torch.randn(BATCH, *shape)
    model.train()
    logits = model(x)
    assert logits.shape == (BATCH, num_classes)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == batchnorm


@pytest.mark.parametrize(("name", "shape", "batchnorm"), _cases())
def test_models_are_built_in_training_mode_throughout(
    name: str, shape: tuple[int, ...], batchnorm: bool
) -> None:
    """A fresh model and every submodule are in training mode, as any new nn.Module is."""
    model = _build(name, shape, batchnorm)
    assert [n for n, m in model.named_modules() if not m.training] == []


@pytest.mark.parametrize(("name", "shape", "batchnorm"), _cases())
def test_models_are_plain_modules_without_noise_sites(
    name: str, shape: tuple[int, ...], batchnorm: bool
) -> None:
    model = _build(name, shape, batchnorm)
    assert not any(isinstance(m, NoiseSite) for m in model.modules())


@pytest.mark.parametrize(("name", "shape", "batchnorm"), _cases())
def test_default_sites_follow_the_papers_order(
    name: str, shape: tuple[int, ...], batchnorm: bool
) -> None:
    model = _build(name, shape, batchnorm)
    noisy = instrument(model, torch.zeros(2, *shape))
    table = noisy.site_table
    assert [s.kind for s in table] == KINDS[(name, batchnorm)]
    assert [s.index for s in table] == list(range(len(table)))
    assert table[0].name == "input"
    assert table[0].shape == (2, *shape)
    # Every site is named after the module it follows, ``path:ClassName``.
    modules = dict(model.named_modules())
    for site in table[1:]:
        path, cls = site.name.split(":")
        assert type(modules[path]).__name__ == cls, site
    # The last site follows the output layer: the model's last Linear, giving the logits.
    last_linear = [path for path, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert table[-1].name == f"{last_linear}:Linear"
    assert table[-1].shape == (2, NUM_CLASSES.get(name, 10))
    # Instrumenting adds no parameters of its own: the noisy model trains the same tensors.
    assert {id(p) for p in noisy.parameters()} == {id(p) for p in model.parameters()}


@pytest.mark.parametrize(("name", "shape", "batchnorm"), _cases())
def test_a_model_instrumented_like_another_has_the_code_instrument_gives(
    name: str, shape: tuple[int, ...], batchnorm: bool
) -> None:
    """A cohort's models are instrumented like the first (``instrument_like``), and a stack
    takes only models of one graph: the copy's code, its forward's type hints included, is
    what tracing the model gives."""
    example = torch.zeros(2, *shape)
    template = instrument(_build(name, shape, batchnorm), example)
    model = _build(name, shape, batchnorm)
    like = instrument_like(model, template)
    assert like is not None
    assert like.net.code == instrument(model, example).net.code


@pytest.mark.parametrize(
    ("name", "shape", "with_bn", "without_bn"),
    [
        ("mlp", (1, 8, 8), 11, 8),
        ("lenet5", (1, 28, 28), 16, 12),
        ("cnn_s", (1, 10, 49), 11, 8),
    ],
)
def test_site_counts(name: str, shape: tuple[int, ...], with_bn: int, without_bn: int) -> None:
    for batchnorm, expected in ((True, with_bn), (False, without_bn)):
        model = _build(name, shape, batchnorm)
        assert len(instrument(model, torch.zeros(2, *shape)).sites) == expected


def test_mlp_with_batchnorm_site_names() -> None:
    noisy = instrument(_build("mlp", (1, 8, 8), True), torch.zeros(2, 1, 8, 8))
    assert [s.name for s in noisy.site_table] == [
        "input",
        "layers.1:Linear",
        "layers.2:BatchNorm1d",
        "layers.3:ReLU",
        "layers.4:Linear",
        "layers.5:BatchNorm1d",
        "layers.6:ReLU",
        "layers.7:Linear",
        "layers.8:BatchNorm1d",
        "layers.9:ReLU",
        "layers.10:Linear",
    ]


@pytest.mark.parametrize(("name", "width"), [("mlp", 64), ("mlp256", 256), ("mlp1024", 1024)])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_mlp_hidden_widths_show_in_site_shapes(name: str, width: int, batchnorm: bool) -> None:
    noisy = instrument(_build(name, (1, 8, 8), batchnorm), torch.zeros(3, 1, 8, 8))
    shapes = [s.shape for s in noisy.site_table]
    assert shapes[0] == (3, 1, 8, 8)
    assert shapes[1:-1] == [(3, width)] * (len(shapes) - 2)
    assert shapes[-1] == (3, 10)


def test_lenet5_hidden_shapes_match_the_paper() -> None:
    noisy = instrument(_build("lenet5", (1, 28, 28), True), torch.zeros(2, 1, 28, 28))
    shapes = [s.shape[1:] for s in noisy.site_table]
    assert shapes == [
        (1, 28, 28),  # input
        (6, 24, 24),  # conv1, BN, ReLU
        (6, 24, 24),
        (6, 24, 24),
        (6, 12, 12),  # pool
        (16, 8, 8),  # conv2, BN, ReLU
        (16, 8, 8),
        (16, 8, 8),
        (16, 4, 4),  # pool
        (120,),  # FC120, BN, ReLU
        (120,),
        (120,),
        (84,),  # FC84, BN, ReLU
        (84,),
        (84,),
        (10,),  # output
    ]


def test_lenet5_on_cifar_shaped_inputs_flattens_16x5x5() -> None:
    model = _build("lenet5", (3, 32, 32), False)
    noisy = instrument(model, torch.zeros(2, 3, 32, 32))
    shapes = [s.shape[1:] for s in noisy.site_table]
    assert shapes[1] == (6, 28, 28)
    assert shapes[6] == (16, 5, 5)
    first_fc = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first_fc.in_features == 16 * 5 * 5


def test_cnn_s_hidden_shapes_match_hello_edge() -> None:
    noisy = instrument(_build("cnn_s", (1, 10, 49), True), torch.zeros(2, 1, 10, 49))
    shapes = {s.index: s.shape[1:] for s in noisy.site_table}
    assert shapes[1] == (28, 7, 20)  # conv1: 4×10 kernel, stride (1, 2)
    assert shapes[4] == (30, 4, 11)  # conv2: 4×10 kernel, stride 1
    assert shapes[7] == (128,)
    assert shapes[10] == (12,)


@pytest.mark.parametrize("name", ["lenet5", "cnn_s"])
def test_convnets_on_too_small_inputs_raise_naming_model_and_shape(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}.*\(1, 8, 8\)"):
        build_model(name, (1, 8, 8), 10)


def test_lenet5_on_a_flat_input_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"lenet5.*\(8, 8\)"):
        build_model("lenet5", (8, 8), 10)
