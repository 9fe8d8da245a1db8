"""The stacked engine against the one-model-at-a-time path it replaces."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from walkingnoise.data import InMemoryDataset
from walkingnoise.data.augmentation import RandomCropFlip
from walkingnoise.data.dataset import Split
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model, register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.noise import (
    AdditiveNoise,
    MixedNoise,
    MultiplicativeNoise,
    WalkingPlacement,
    instrument,
)
from walkingnoise.noise.weight import attach_weight_noise, weight_noise_of
from walkingnoise.training.cohort import (
    evaluate_shared,
    evaluation_generators,
    stacking_slower,
    train_alone,
    train_cohort,
)
from walkingnoise.training.distillation import Distillation
from walkingnoise.training.evaluate import evaluate
from walkingnoise.training.loop import TrainHistory, train_model
from walkingnoise.training.memory import bytes_per_model
from walkingnoise.training.recipe import Recipe
from walkingnoise.training.run import build_noisy_model, evaluate_experiment, train_experiment
from walkingnoise.training.stacked import (
    KeptPrefixes,
    NotStackableError,
    StackedModel,
    _last_uses,
)
from walkingnoise.training.stacked_loop import (
    EXP_FLOOR,
    _loss_and_correct,
    _mean_cross_entropy,
    evaluate_stacked,
    train_stacked,
)

from ..noise.stats import assert_variance


def _experiments(n: int, **fields) -> list[Experiment]:
    base = {"noise": "additive", "sigma": 0.0, "train_noise": True, "recipe": Recipe(epochs=2)}
    return [
        Experiment(**({"placement": f"walking:{i % 11}", "seed": i} | base | fields))
        for i in range(n)
    ]


def test_members_start_from_the_weights_they_would_have_alone(digits: InMemoryDataset) -> None:
    experiments = _experiments(3)
    stack = StackedModel([build_noisy_model(e, digits) for e in experiments])
    for k, experiment in enumerate(experiments):
        alone = build_noisy_model(experiment, digits).source.state_dict()
        stacked = stack.state_dict(k)
        assert stacked.keys() == alone.keys()
        for name in alone:
            assert torch.equal(stacked[name], alone[name]), name


class SkipNet(nn.Module):
    """Conv, BatchNorm, a skip-connection add and functional ReLU: fast and vmap paths mixed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        h = h + self.conv2(h)
        return self.head(h.view(h.size(0), -1))


class AttentionNet(nn.Module):
    """nn.MultiheadAttention (run through vmap) with a residual and LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.squeeze(1))
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        return self.head(h.mean(dim=1))


class InPlaceFunctional(nn.Module):
    """``F.relu(..., inplace=True)`` on a convolution's output, which is read again after it:
    alone ``h + r`` is 2·relu(h) (the stack merges models and batches with a copy here)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        r = F.relu(h, inplace=True)
        F.leaky_relu(h, 0.1, inplace=True)  # for its effect on h alone
        return self.head((h + r).flatten(1))


class PairwiseDifferences(nn.Module):
    """Operands of different rank, ``h.unsqueeze(1) - h``: every sample against every sample of
    its own batch (B, B, C), not of all the models' batches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(64, 8), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x.flatten(1))
        return self.head((h.unsqueeze(1) - h).abs().mean(dim=1))


class StandardizedConv(nn.Conv2d):
    """A convolution subclass with a forward of its own (weight standardisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


class HalvedBatchNorm(nn.BatchNorm2d):
    """A BatchNorm subclass with a forward of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 0.5


def _subclassed_layers() -> nn.Module:
    return nn.Sequential(
        StandardizedConv(1, 4, 3, padding=1), HalvedBatchNorm(4), nn.Flatten(), nn.Linear(256, 10)
    )


class ShapeIdioms(nn.Module):
    """Sizes read as ``x.shape[0]``, unpacked from ``h.shape`` and asked with ``size(dim=...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.view(x.shape[0], -1))
        b, c = h.shape
        return self.fc2(h.reshape(b, h.size(dim=1)) * (c / 32))


def _softmax_over_batch(dim: int) -> nn.Module:
    """A parameter-free module that normalises over the samples of a batch (B, C)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Softmax(dim=dim), nn.Linear(8, 10))


def _instrumented(factory, shape: tuple[int, ...], seeds: range) -> list:
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(instrument(factory(), torch.randn(2, *shape)))
    return models


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (lambda: build_model("mlp", (1, 8, 8), 10, batchnorm=True), (1, 8, 8)),
        (lambda: build_model("lenet5", (1, 28, 28), 10, batchnorm=True), (1, 28, 28)),
        (lambda: build_model("cnn_s", (1, 10, 49), 12, batchnorm=False), (1, 10, 49)),
        (SkipNet, (1, 8, 8)),
        (AttentionNet, (1, 8, 8)),
        (lambda: _softmax_over_batch(0), (1, 8, 8)),
        (lambda: _softmax_over_batch(-2), (1, 8, 8)),
        (InPlaceFunctional, (1, 8, 8)),
        (PairwiseDifferences, (1, 8, 8)),
        (_subclassed_layers, (1, 8, 8)),
        (ShapeIdioms, (1, 8, 8)),
    ],
    ids=[
        "mlp", "lenet5", "cnn_s", "skipnet", "attention", "softmax-dim0", "softmax-dim-2",
        "inplace-functional", "pairwise", "subclassed-layers", "shape-idioms",
    ],
)  # fmt: skip
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shared", [False, True], ids=["own-input", "shared-input"])
def test_stacked_forward_equals_each_model(factory, shape, training: bool, shared: bool) -> None:
    models = _instrumented(factory, shape, range(3))
    stack = StackedModel(models).train(training)
    x = torch.randn(3, 5, *shape)
    if shared:  # one batch for all: the first layer runs once, with the weights side by side
        x = x[:1].expand_as(x)
    out = stack(x[0], shared=True) if shared else stack(x)
    for k, model in enumerate(models):
        model.train(training)
        torch.testing.assert_close(out[k], model(x[k]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("same_seed", [False, True], ids=["own-batches", "shared-batches"])
def test_training_a_stack_equals_training_each_model_alone(
    digits: InMemoryDataset, same_seed: bool
) -> None:
    experiments = _experiments(4, sigma=0.5, recipe=Recipe(epochs=2, batch_size=64))
    if same_seed:  # every batch is gathered once and the first layer runs as one matmul
        experiments = [e.model_copy(update={"seed": 7}) for e in experiments]
    experiments[1] = experiments[1].model_copy(
        update={"recipe": Recipe(epochs=2, batch_size=64, clamp=0.05)}
    )
    models = [build_noisy_model(e, digits) for e in experiments]
    stack = StackedModel(models)
    histories = train_stacked(
        stack,
        digits.train,
        experiments[0].recipe,
        seeds=[e.seed for e in experiments],
        clamps=[e.recipe.clamp for e in experiments],
        validation=digits.validation,
    )
    stack.write_back(models)
    x = digits.test.x
    for k, experiment in enumerate(experiments):
        alone, history = train_experiment(experiment, digits, progress=False)
        # Same batches, initial weights and noise draws: the losses agree to float precision.
        # Weights agree only loosely: Adam normalises gradients that are ~0 in exact arithmetic
        # (e.g. of always-blank pixels), so rounding-level differences become steps of size lr.
        torch.testing.assert_close(
            [r.train_loss for r in histories[k].epochs],
            [r.train_loss for r in history.epochs],
            rtol=1e-3,
            atol=0,
        )
        models[k].eval(), alone.eval()
        with torch.no_grad():
            stacked_logits, alone_logits = models[k](x), alone(x)
        torch.testing.assert_close(stacked_logits, alone_logits, rtol=0, atol=0.1)
        agree = (stacked_logits.argmax(1) == alone_logits.argmax(1)).float().mean().item()
        assert agree >= 0.99
    # BatchNorm statistics are per model, and the clamp bound only the clamped model
    means = [stack.state_dict(k)["layers.2.running_mean"] for k in range(4)]
    assert not torch.allclose(means[0], means[2])
    first_weights = [stack.state_dict(k)["layers.1.weight"].abs().max().item() for k in range(4)]
    assert first_weights[1] <= 0.05 + 1e-7
    assert min(first_weights[0], first_weights[2], first_weights[3]) > 0.05


def _assert_same_losses(stacked: TrainHistory, alone: TrainHistory, rtol: float) -> None:
    """Per-epoch training losses of a stack member and of the model trained alone agree."""
    torch.testing.assert_close(
        [r.train_loss for r in stacked.epochs],
        [r.train_loss for r in alone.epochs],
        rtol=rtol,
        atol=0,
    )


@pytest.mark.parametrize("same_seed", [False, True], ids=["own-batches", "shared-batches"])
def test_a_stack_trains_with_augmentation_and_class_weights_as_alone(
    digits: InMemoryDataset, same_seed: bool
) -> None:
    data = dataclasses.replace(
        digits,
        class_weights=torch.linspace(0.2, 3.0, digits.num_classes),
        augmentation=RandomCropFlip(padding=1),
    )
    recipe = Recipe(epochs=2, batch_size=64, augment=True)
    experiments = _experiments(3, sigma=0.5, recipe=recipe)
    if same_seed:
        experiments = [e.model_copy(update={"seed": 7}) for e in experiments]
    stacked = train_cohort(experiments, data)
    for result, experiment in zip(stacked, experiments, strict=True):
        _, alone = train_experiment(experiment, data, progress=False)
        _assert_same_losses(result.history, alone, rtol=1e-3)
    # both change training: without them the losses are others
    for changed in (
        dataclasses.replace(data, augmentation=None),
        dataclasses.replace(data, class_weights=None),
    ):
        _, other = train_experiment(experiments[0], changed, progress=False)
        first = stacked[0].history.epochs[0].train_loss
        assert abs(other.epochs[0].train_loss - first) > 1e-2 * first


def _batch_statistics_mlp() -> nn.Module:
    """An MLP whose BatchNorm keeps no running statistics: in evaluation too it normalises
    with its batch's, so its numbers depend on the evaluation batch size."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.BatchNorm1d(32, track_running_stats=False),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


@pytest.mark.usefixtures("one_thread")
def test_a_stack_validates_in_batches_of_the_recipes_eval_batch_size(
    digits: InMemoryDataset,
) -> None:
    """The validation pass of each epoch runs in batches of ``eval_batch_size``, as alone: a
    model whose evaluation reads its batch validates as alone (and a stack whose memory was
    sized for that batch stays within it)."""
    recipe = Recipe(epochs=2, batch_size=64, eval_batch_size=16)
    models = _instrumented(_batch_statistics_mlp, (1, 8, 8), range(2))
    alone = [copy.deepcopy(model) for model in models]
    histories = train_stacked(
        StackedModel(models), digits.train, recipe, seeds=[0, 1], validation=digits.validation
    )
    for k, model in enumerate(alone):
        history = train_model(model, digits.train, recipe, seed=k, validation=digits.validation)
        stacked = [record.val_accuracy for record in histories[k].epochs]
        assert stacked == [record.val_accuracy for record in history.epochs]


def _overflowing_classifier(overflows: bool) -> nn.Module:
    """A linear classifier; with ``overflows`` two of its logits lie further apart than float32
    holds, so its loss is +inf while its gradient stays finite and training goes on changing
    its weights."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    if overflows:
        with torch.no_grad():
            net[1].bias[:2] = torch.tensor([3e38, -3e38])
    return net


@pytest.mark.usefixtures("one_thread")
def test_a_diverged_member_keeps_the_weights_it_diverged_with_as_alone(
    digits: InMemoryDataset,
) -> None:
    """Alone, training stops at the first epoch whose loss is not finite; a member of a stack
    that diverges ends with the weights of that epoch too, while the others train on."""
    torch.manual_seed(0)
    example = torch.randn(2, 1, 8, 8)
    models = [instrument(_overflowing_classifier(o), example) for o in (True, False)]
    recipe = Recipe(epochs=3, batch_size=64, schedule="constant")

    def trained(epochs: int) -> tuple[StackedModel, list[TrainHistory]]:
        stack = StackedModel(copy.deepcopy(models))
        once = recipe.model_copy(update={"epochs": epochs})
        return stack, train_stacked(stack, digits.train, once, seeds=[0, 0])

    stack, histories = trained(3)
    after_one, _ = trained(1)
    assert histories[0].diverged
    assert len(histories[0].epochs) == 1
    assert not histories[1].diverged
    assert len(histories[1].epochs) == 3
    for name, value in stack.state_dict(0).items():
        assert torch.equal(value, after_one.state_dict(0)[name]), name
    weight = "1.weight"
    assert not torch.equal(stack.state_dict(1)[weight], after_one.state_dict(1)[weight])
    alone = copy.deepcopy(models[0])
    history = train_model(alone, digits.train, recipe, seed=0)
    assert history.diverged
    assert len(history.epochs) == 1
    torch.testing.assert_close(stack.state_dict(0)[weight], alone.source.state_dict()[weight])


class _Steps(TorchDispatchMode):
    """Counts the optimizer's fused Adam steps."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._fused_adam_.default
        return func(*args, **(kwargs or {}))


def test_a_stack_whose_every_member_diverged_stops(digits: InMemoryDataset) -> None:
    """Once every model's loss has stopped being finite the stack trains no further epoch, as
    each alone stops."""
    torch.manual_seed(0)
    models = [instrument(_overflowing_classifier(True), torch.randn(2, 1, 8, 8)) for _ in "ab"]
    steps = []
    for epochs in (1, 3):
        recipe = Recipe(epochs=epochs, batch_size=64, schedule="constant")
        with _Steps() as counted:
            histories = train_stacked(
                StackedModel(copy.deepcopy(models)), digits.train, recipe, seeds=[0, 1]
            )
        assert all(h.diverged and len(h.epochs) == 1 for h in histories)
        steps.append(counted.count)
    assert steps[0] > 0
    assert steps[1] == steps[0]


def test_weighted_stacked_loss_and_its_gradient_equal_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 40, 10) * 4
    target = torch.randint(0, 10, (3, 40))
    weight = torch.rand(10) * 3 + 0.1
    ours = logits.clone().requires_grad_()
    loss, _ = _mean_cross_entropy(ours, target, weight)
    (loss * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    reference = logits.clone().requires_grad_()
    expected = torch.stack(
        [F.cross_entropy(reference[k], target[k], weight=weight) for k in range(3)]
    )
    (expected * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert ours.grad is not None
    assert reference.grad is not None
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-5, atol=1e-8)
    unweighted, _ = _mean_cross_entropy(logits, target)
    assert not torch.allclose(loss, unweighted, rtol=1e-3)


def _layers(activation: type[nn.Module] = nn.ReLU, **batchnorm) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 8),
        nn.BatchNorm1d(8, **batchnorm),
        activation(),
        nn.Linear(8, 3),
    )


@pytest.mark.parametrize(
    ("other", "differs"),
    [
        (lambda: _layers(nn.Tanh), "module '3'"),
        (lambda: _layers(momentum=0.5), "module '2'"),
        (lambda: _layers(eps=1.0), "module '2'"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 3)), "graph"),
    ],
    ids=["activation", "momentum", "eps", "layers"],
)
def test_members_that_differ_in_more_than_their_weights_are_refused(other, differs: str) -> None:
    """Every member runs the template's graph and modules, so they must be the same."""
    example = torch.randn(2, 1, 8, 8)
    models = [instrument(_layers(), example), instrument(_layers(), example)]
    StackedModel(models)  # the same structure, other weights: a stack
    with pytest.raises(NotStackableError, match=f"model 1 differs from model 0 in its {differs}"):
        StackedModel([models[0], instrument(other(), example)])


class Gained(nn.Linear):
    """A custom layer whose ``extra_repr`` prints a parameter's value, different per member."""

    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.gain = nn.Parameter(torch.rand(()) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gain={self.gain.item():.4f}"


def test_members_that_differ_only_in_their_values_stack_whatever_they_print() -> None:
    models = _instrumented(lambda: nn.Sequential(nn.Flatten(), Gained(64, 3)), (1, 8, 8), range(2))
    assert (
        models[0].net.get_submodule("1").extra_repr()
        != models[1].net.get_submodule("1").extra_repr()
    )
    x = torch.randn(2, 5, 1, 8, 8)
    out = StackedModel(models).eval()(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model.eval()(x[k]))


def test_a_member_instrumented_with_hooks_is_refused() -> None:
    example = torch.randn(2, 1, 8, 8)
    traced = instrument(_layers(), example)
    hooked = instrument(_layers(), example, method="hooks")
    with pytest.raises(NotStackableError, match="hooks"):
        StackedModel([traced, hooked])


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    ],
    ids=["pytorch", "cudnn"],
)
def test_a_probe_out_of_gpu_memory_is_not_taken_for_a_stack_that_cannot_run(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Running out of memory says the stack is too big, which smaller stacks fix; it must not
    send the models one at a time as if they could not be stacked."""
    example = torch.randn(2, 1, 8, 8)
    stack = StackedModel([instrument(_layers(), example) for _ in range(2)])

    def exhausted(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(StackedModel, "__call__", exhausted)
    with pytest.raises(type(error)) as raised:
        stack.check(example)
    assert raised.value is error


class RunningScale(nn.Module):
    """A buffer its forward updates in place, in either mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 3)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        torch.Tensor.add_(self.scale, h.detach().abs().mean(), alpha=0.1)
        return self.head(h / self.scale)


def test_the_probe_leaves_the_models_state_and_mode_as_they_were() -> None:
    """``check`` runs a batch through the stack: afterwards its buffers are as before (a
    training run after it matches one alone), and its template keeps its mode."""
    models = _instrumented(RunningScale, (8,), range(2))
    for model in models:
        model.eval()
    stack = StackedModel(models)
    before = [stack.state_dict(k)["scale"].clone() for k in range(2)]
    stack.check(torch.randn(2, 8))
    assert [stack.state_dict(k)["scale"] for k in range(2)] == before
    assert not stack.training
    assert not models[0].training
    x = torch.randn(2, 5, 8)
    out = stack.train()(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model.train()(x[k]))
        torch.testing.assert_close(stack.state_dict(k)["scale"], model.source.scale)


def test_evaluating_copies_leaves_the_model_in_its_mode(digits: InMemoryDataset) -> None:
    """``evaluate_shared`` stacks copies of an evaluation-mode model: it stays in that mode, so
    a later plain call does not update its BatchNorm statistics."""
    experiments = _experiments(3, sigma=0.5)
    model = build_noisy_model(experiments[0].clean_training(), digits).eval()
    evaluate_shared(model, experiments, digits)
    assert not model.training
    statistics = {k: v.clone() for k, v in model.source.state_dict().items()}
    with torch.no_grad():
        model(digits.test.x[:8])
    for name, value in model.source.state_dict().items():
        torch.testing.assert_close(value, statistics[name], msg=name)


def test_each_member_gets_its_own_sigma_and_site(digits: InMemoryDataset) -> None:
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True), digits.train.x[:2])
    stack = StackedModel([model] * 3).eval()
    noise = AdditiveNoise()
    stack.set_noise([(noise, {10: 1.0}), (noise, {10: 0.1}), (noise, {5: 0.5})])
    assert stack.noisy_sites() == {10: 2, 5: 1}
    x = torch.randn(4000, 1, 8, 8)
    with torch.no_grad():
        clean = model.eval()(x)
        out = stack(x, shared=True)
    assert_variance(out[0] - clean, 1.0)
    assert_variance(out[1] - clean, 0.01)
    assert not torch.allclose(out[2], clean)  # noise at an inner site
    stack.noise_enabled = False
    with torch.no_grad():
        torch.testing.assert_close(stack(x, shared=True)[2], clean)


def test_stacked_noisy_accuracies_match_the_single_model_path(digits: InMemoryDataset) -> None:
    torch.manual_seed(0)
    model, _ = train_experiment(
        _experiments(1, recipe=Recipe(epochs=10))[0], digits, progress=False
    )
    members = [
        Experiment(placement=f"walking:{site}", sigma=sigma, eval_repeats=8)
        for site in (0, 5, 10)
        for sigma in (0.3, 3.0)
    ]
    stacked = evaluate_shared(model, members, digits)
    for experiment, metrics in zip(members, stacked, strict=True):
        alone = evaluate_experiment(experiment, model, digits)
        assert metrics["clean_test_accuracy"] == alone["clean_test_accuracy"]
        # the same noise draws: only float rounding can flip a prediction
        assert metrics["noisy_test_accuracy"] == pytest.approx(
            alone["noisy_test_accuracy"], abs=2 / len(digits.test)
        )


@pytest.fixture
def one_thread():
    """Torch computing with one thread, as a sweep's units do by default."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_chunked_cohort_equals_one_big_cohort(digits: InMemoryDataset, one_thread) -> None:
    """Bit for bit at one thread, as a unit computes by default. (With several threads, BLAS
    may split a lone model's matmul differently from a batch of them, which training then
    amplifies.)"""
    experiments = _experiments(5)
    whole = train_cohort(experiments, digits)
    chunked = train_cohort(experiments, digits, max_models=2)
    for a, b in zip(whole, chunked, strict=True):
        for name, tensor in a.model.source.state_dict().items():
            torch.testing.assert_close(
                tensor, b.model.source.state_dict()[name], rtol=1e-5, atol=1e-6
            )
        assert a.metrics["clean_test_accuracy"] == b.metrics["clean_test_accuracy"]


def test_memory_budget_splits_cohorts(digits: InMemoryDataset, monkeypatch) -> None:
    monkeypatch.setenv("WALKINGNOISE_MEMORY_BUDGET", "1KB")
    results = train_cohort(_experiments(3), digits)
    assert len(results) == 3
    assert all(r.metrics["clean_test_accuracy"] > 0.5 for r in results)


def test_hooks_models_fall_back_to_one_at_a_time(digits: InMemoryDataset, caplog) -> None:
    torch.manual_seed(0)
    model = instrument(
        build_model("mlp", (1, 8, 8), 10, batchnorm=True), digits.train.x[:2], method="hooks"
    )
    with pytest.raises(NotStackableError, match="hooks"):
        StackedModel([model, model])
    members = [Experiment(placement="walking:3", sigma=1.0, eval_repeats=2)]
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        metrics = evaluate_shared(model, members, digits)
    assert "one at a time" in caplog.text
    assert metrics == [evaluate_experiment(members[0], model, digits)]


class DropoutNet(nn.Module):
    """A user's MLP with dropout: random draws besides the noise sites."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.drop, self.out = nn.Linear(64, 32), nn.Dropout(0.2), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(F.relu(self.fc(x.flatten(1)))))


@pytest.fixture
def dropout_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """A model name registered for this test only (a copy of the registry)."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("test-dropout-net")(lambda shape, classes, *, batchnorm: DropoutNet())
    return "test-dropout-net"


def test_models_with_dropout_train_one_at_a_time(
    digits: InMemoryDataset, dropout_model: str, caplog
) -> None:
    """A stack's members would share their dropout masks, and each one's draws would depend on
    the others: such models train alone, each as it would by itself, whatever shares its
    cohort. They still evaluate as a stack (dropout draws nothing in evaluation)."""
    torch.manual_seed(0)
    model = instrument(DropoutNet(), digits.train.x[:2])
    stack = StackedModel([model, model])
    stack.check(digits.train.x[:2])
    with pytest.raises(
        NotStackableError, match=r"random numbers in training \('drop' \(Dropout\)\)"
    ):
        stack.check(digits.train.x[:2], training=True)
    members = [
        Experiment(model=dropout_model, batchnorm=False, placement=f"walking:{site}", sigma=0.3,
                   train_noise=True, recipe=Recipe(epochs=1), eval_repeats=1)
        for site in (1, 2)
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        together = train_cohort(members, digits)
    assert "one at a time" in caplog.text
    for trained in together:
        alone = train_alone(trained.experiment, digits)
        assert trained.history.epochs == alone.history.epochs
        assert trained.metrics == alone.metrics


@pytest.mark.parametrize(
    "random",
    [nn.RReLU(), nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True)],
    ids=["rrelu", "attention"],
)
def test_random_draws_inside_leaf_modules_are_found(random: nn.Module) -> None:
    """fx does not trace into these layers: their own modules and rates tell."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.random, self.out = nn.Linear(64, 32), random, nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x.flatten(1))
            if isinstance(self.random, nn.MultiheadAttention):
                h = self.random(h[:, None], h[:, None], h[:, None])[0][:, 0]
            else:
                h = self.random(h)
            return self.out(h)

    model = instrument(Net(), torch.randn(2, 1, 8, 8))
    with pytest.raises(NotStackableError, match=type(random).__name__):
        StackedModel([model, model]).check(torch.randn(2, 1, 8, 8), training=True)


def test_a_functional_dropout_fixed_off_draws_nothing() -> None:
    class Off(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.dropout(self.fc(x.flatten(1)), 0.5, False)
            return torch.dropout(h, 0.5, False)

    model = instrument(Off(), torch.randn(2, 1, 8, 8))
    StackedModel([model, model]).check(torch.randn(2, 1, 8, 8), training=True)


class SharedTensors(nn.Module):
    """An MLP whose two BatchNorm layers share their scale, or their running variance."""

    def __init__(self, share: str) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)
        self.bn_a, self.bn_b = nn.BatchNorm1d(16), nn.BatchNorm1d(16)
        if share == "weight":
            self.bn_b.weight = self.bn_a.weight
        else:
            self.bn_b.running_var = self.bn_a.running_var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn_a(self.a(x.flatten(1))))
        return self.out(F.relu(self.bn_b(self.b(h))))


@pytest.mark.parametrize("share", ["weight", "statistics"])
def test_shared_tensors_fall_back_to_one_at_a_time(
    digits: InMemoryDataset, share: str, caplog
) -> None:
    """One tensor under two names would be stacked twice, the second copy going stale: the
    stack refuses, naming both, and evaluation falls back to the model alone."""
    torch.manual_seed(0)
    model = instrument(SharedTensors(share), digits.train.x[:2])
    shared = "bn_a.weight and bn_b.weight" if share == "weight" else "bn_a.running_var and bn_b"
    with pytest.raises(NotStackableError, match=shared):
        StackedModel([model, model])
    members = [Experiment(placement="walking:2", sigma=0.5, eval_repeats=2)]
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        metrics = evaluate_shared(model, members, digits)
    assert "one at a time" in caplog.text
    assert "one tensor" in caplog.text
    assert metrics == [evaluate_experiment(members[0], model, digits)]


def test_evaluate_stacked_repeats_only_with_noise(digits: InMemoryDataset) -> None:
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True), digits.train.x[:2])
    model.set_noise(AdditiveNoise(), WalkingPlacement(0), 2.0)
    stack = StackedModel([model, model])
    noisy = evaluate_stacked(stack, digits.test, repeats=4)
    clean = evaluate_stacked(stack, digits.test, repeats=4, clean=True)
    assert [len(e.accuracies) for e in noisy] == [4, 4]
    assert [len(e.accuracies) for e in clean] == [1, 1]
    assert noisy[0].accuracies != noisy[1].accuracies  # independent noise per member


def test_stacked_scores_equal_cross_entropy_and_argmax_also_for_infinite_logits() -> None:
    """Also for logits hundreds apart (as σ = 100 at the output gives), whose exp the loss
    clamps out of the subnormal range, and for a logit of +inf (NaN, as F.cross_entropy
    gives); for ties and NaN the prediction is argmax's (the first of the largest, a NaN
    counting as the largest)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 50, 10) * 20
    logits[0, 1, 4] = float("inf")
    logits[1, 2, 7] = float("-inf")
    logits[2, 3, :] = float("-inf")
    y = torch.randint(0, 10, (50,))
    ties = torch.randint(0, 3, (1, 50, 10)).float()  # most samples tie among several classes
    nans = torch.randn(1, 50, 10)
    nans[0, :10, 5] = float("nan")  # one NaN: at the label for some samples
    nans[0, 10:20] = float("nan")  # all NaN, as a diverged model gives
    nans[0, 20:30, 7:] = float("nan")  # several NaN: the first counts
    nans[0, 20:30, 2] = float("inf")
    logits = torch.cat([logits, torch.randn(1, 50, 10) * 300, ties, nans])
    y[:30] = torch.tensor([5, 0, 7, 8, 2] * 6)
    loss, correct = _loss_and_correct(logits, y)
    assert (logits[3] - logits[3].amax(dim=-1, keepdim=True) < EXP_FLOOR).float().mean() > 0.5
    assert (ties[0] == ties[0].amax(dim=-1, keepdim=True)).sum(dim=-1).gt(1).sum() > 25
    assert 0 < correct[5] < 50
    for k in range(6):
        expected = F.cross_entropy(logits[k], y, reduction="none").sum()
        assert torch.allclose(loss[k], expected, equal_nan=True, rtol=1e-5)
        assert correct[k] == (logits[k].argmax(dim=-1) == y).sum()


@pytest.mark.parametrize("name", ["mlp", "mlp256"])
def test_an_experiment_scores_the_same_in_a_stack_whose_end_runs_node_by_node(
    digits: InMemoryDataset, name: str
) -> None:
    """``walking:0`` alone runs the layers after its site as plain calls; stacked with
    ``global`` (the same first site, noise at the output too) it runs them node by node: the
    same numbers either way, also where the closing layer reads 256 inputs."""
    torch.manual_seed(0)
    model, _ = train_experiment(_experiments(1, model=name, recipe=Recipe(epochs=1))[0], digits)
    recipe = Recipe(epochs=1, eval_batch_size=128)
    members = [
        Experiment(model=name, placement=placement, sigma=sigma, eval_repeats=2, recipe=recipe)
        for placement in ("walking:0", "global")
        for sigma in (0.1, 0.3)
    ]
    together = evaluate_shared(model, members, digits)
    assert together == evaluate_shared(model, members, digits, max_models=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stacked_training_loss_and_its_gradient_equal_cross_entropy(dtype: torch.dtype) -> None:
    """Per model: the mean cross-entropy, its gradient (softmax − one-hot, from the forward
    pass's exponentials) and the predictions, also for logits hundreds apart."""
    torch.manual_seed(0)
    scales = torch.tensor([1.0, 20.0, 300.0, 3.0]).view(4, 1, 1)
    logits = (torch.randn(4, 50, 10) * scales).to(dtype)
    target = torch.randint(0, 10, (4, 50))
    ours = logits.clone().requires_grad_()
    loss, predicted = _mean_cross_entropy(ours, target)
    loss.sum().backward(retain_graph=True)
    loss.sum().backward()  # a second backward pass through the same graph adds the same again
    reference = logits.clone().requires_grad_()
    expected = torch.stack([F.cross_entropy(reference[k].float(), target[k]) for k in range(4)])
    expected.sum().backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert ours.grad is not None
    assert reference.grad is not None
    assert ours.grad.dtype == dtype
    # bfloat16: both are float32 gradients rounded to bfloat16, so one may round the other way
    tolerance = {"rtol": 1e-5, "atol": 1e-8} if dtype == torch.float32 else {}
    torch.testing.assert_close(ours.grad, 2 * reference.grad, **tolerance)
    assert torch.equal(predicted, logits.argmax(dim=-1))


def test_stacked_training_loss_of_non_finite_logits_is_non_finite_as_cross_entropy() -> None:
    """A diverged model's loss and gradient stay non-finite (NaN or inf, as autograd of
    ``F.cross_entropy`` gives them), also where the clamp would have made them finite."""
    logits = torch.zeros(4, 2, 3)
    logits[0, 0] = float("-inf")  # every class
    logits[1, 0, 1] = float("nan")
    logits[2, 0, 2] = float("inf")
    logits[3, 0, 0] = float("-inf")  # one class: finite
    target = torch.tensor([[2, 0]] * 4)
    ours = logits.clone().requires_grad_()
    loss, _ = _mean_cross_entropy(ours, target)
    loss.sum().backward()
    reference = logits.clone().requires_grad_()
    expected = torch.stack([F.cross_entropy(reference[k], target[k]) for k in range(4)])
    expected.sum().backward()
    assert ours.grad is not None
    assert reference.grad is not None
    assert not loss[:3].isfinite().any()
    for k in range(3):  # a NaN in the row's gradient, which the weights' gradients take up
        assert ours.grad[k, 0].isnan().any(), k
    torch.testing.assert_close(loss[3], expected[3])
    torch.testing.assert_close(ours.grad[3], reference.grad[3])


def test_a_cohort_of_one_trains_exactly_like_training_alone(digits: InMemoryDataset) -> None:
    experiment = _experiments(1, sigma=0.5, placement="walking:3")[0]
    (stacked,) = train_cohort([experiment], digits)
    _, history = train_experiment(experiment, digits, progress=False)
    _assert_same_losses(stacked.history, history, rtol=1e-4)


@pytest.mark.parametrize("factory", [SkipNet, lambda: build_model("mlp", (1, 8, 8), 10)])
def test_copies_share_the_clean_prefix_and_give_what_separate_models_give(factory) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    model = instrument(factory().eval(), x[:2])
    twin = instrument(factory().eval(), x[:2])
    twin.source.load_state_dict(model.source.state_dict())
    last = len(model.sites) - 1
    noise = [(AdditiveNoise(), {2: 0.5}), (AdditiveNoise(), {last: 2.0}), (None, {})]
    copies, separate = StackedModel([model] * 3).eval(), StackedModel([model, twin, twin]).eval()
    assert copies.copies
    assert not separate.copies
    outputs = []
    for stack in (copies, separate):
        stack.set_noise(noise)
        stack.set_generators([torch.Generator().manual_seed(k) for k in range(3)])
        with torch.no_grad(), stack.prefixes_kept():
            outputs.append([stack(x, shared=True) for _ in range(2)])
    for kept, plain in zip(outputs[0], outputs[1], strict=True):
        torch.testing.assert_close(kept, plain, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(outputs[0][0][0], outputs[0][1][0])  # fresh noise on each pass
    with torch.no_grad():
        torch.testing.assert_close(outputs[0][0][2], model(x), rtol=1e-5, atol=1e-5)


def test_training_a_stack_of_copies_stops_sharing_its_prefix(digits: InMemoryDataset) -> None:
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10), digits.train.x[:2])
    stack = StackedModel([model] * 2)
    train_stacked(stack, digits.train, Recipe(epochs=1), seeds=[0, 1])
    assert not stack.copies
    stack.eval()
    with torch.no_grad():
        out = stack(digits.test.x[:32], shared=True)
    assert not torch.allclose(out[0], model.eval()(digits.test.x[:32]))


def test_multi_executed_sites_are_not_stacked() -> None:
    model = instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8))
    model.set_executions({3: 4})
    with pytest.raises(NotStackableError, match="multi-executed"):
        StackedModel([model, model])


class KeywordReLU(nn.Module):
    """A ReLU module called with a keyword, which the stack runs through vmap as ``F.relu``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(input=self.fc1(x.flatten(1))))


class ReLUInputChanged(nn.Module):
    """The ReLU's input changed in place after the ReLU: h + relu(h)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1))
        r = self.act(h)
        h.add_(r)
        return self.fc2(h)


class ReLUOfAnAlias(nn.Module):
    """A ReLU of a view of a value that an in-place ReLU changes later."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.act2 = nn.Linear(64, 32), nn.ReLU(), nn.ReLU(inplace=True)
        self.fc2, self.fc3 = nn.Linear(32, 10), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.flatten(1))
        r = self.act(h.view(-1, 32))
        return self.fc2(r) + self.fc3(self.act2(h))


class ViewedLogits(nn.Module):
    """A Linear layer's output viewed with its batch and features merged (and back)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1)))).view(-1, 10).view(-1, 20)


_GRADIENT_CASES = {
    # noise at a site only some members use, next to each other in the stack (a view of their
    # rows), after Linear (1), BatchNorm (2), ReLU (3, 6) and the output layer (10)
    "mlp": (lambda: build_model("mlp", (1, 8, 8), 10), (1, 8, 8), (1, 2, 3, 3, 6, 10)),
    # members of one site apart from each other in the stack (gathered and scattered rows)
    "mlp-interleaved": (lambda: build_model("mlp", (1, 8, 8), 10), (1, 8, 8), (3, 1, 3, 2, 1)),
    # every member noisy at one site: after BatchNorm, then after ReLU
    "mlp-all-bn": (lambda: build_model("mlp", (1, 8, 8), 10), (1, 8, 8), (2, 2)),
    "mlp-all-relu": (lambda: build_model("mlp", (1, 8, 8), 10), (1, 8, 8), (3, 3)),
    # after a ReLU that works in place, whose backward reads its output (2)
    "inplace-relu": (
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Linear(32, 10)
        ),
        (1, 8, 8),
        (1, 2, 2),
    ),
    # after a ReLU run by vmap (3), and after one whose input changes in place later (2, 4)
    "keyword-relu": (KeywordReLU, (1, 8, 8), (3, 3, 2)),
    "relu-input-changed": (ReLUInputChanged, (1, 8, 8), (2, 4, 1)),
    "relu-of-an-alias": (ReLUOfAnAlias, (1, 8, 8), (1, 1, 0)),
    # after Linear layers, the last of whose output is viewed (1, 3)
    "viewed-logits": (ViewedLogits, (1, 8, 8), (1, 3, 2)),
    # after a convolution (1), BatchNorm2d (2), ReLU (3), pooling (4) and a hidden Linear (12)
    "lenet5": (
        lambda: build_model("lenet5", (1, 16, 16), 10, batchnorm=True),
        (1, 16, 16),
        (1, 2, 3, 4, 12),
    ),
}


@pytest.mark.parametrize("case", list(_GRADIENT_CASES))
@pytest.mark.parametrize("gradient", ["forward_only", "through_noise"])
@pytest.mark.parametrize("noise", [AdditiveNoise, MultiplicativeNoise], ids=["add", "mul"])
def test_stacked_gradients_equal_each_model_alone(noise, gradient: str, case: str) -> None:
    """Draws, outputs and gradients as alone, wherever the noise is: a site adding its noise to
    a layer's output in place must leave that layer's backward as it was."""
    factory, shape, sites = _GRADIENT_CASES[case]
    torch.manual_seed(0)
    x, y = torch.randn(32, *shape), torch.arange(32) % 10
    models = []
    for _ in sites:
        models.append(instrument(factory(), x[:2]).train())
    members = [(noise(gradient=gradient), {site: 0.7}) for site in sites]
    stack = StackedModel(models).train()
    stack.set_noise(members)
    stack.set_generators([torch.Generator().manual_seed(k) for k in range(len(sites))])
    logits = stack(x, shared=True).flatten(0, 1)
    F.cross_entropy(logits, y.repeat(len(sites)), reduction="sum").backward()
    grads = [p.grad for p in stack.parameters()]
    for k, model in enumerate(models):
        kind, levels = members[k]
        ((site, sigma),) = levels.items()
        model.set_noise(kind, WalkingPlacement(site), sigma)
        model.set_generator(torch.Generator().manual_seed(k))
        model.zero_grad()
        F.cross_entropy(model(x), y, reduction="sum").backward()
        for grad, (name, p) in zip(grads, model.net.named_parameters(), strict=True):
            torch.testing.assert_close(grad[k], p.grad, rtol=1e-4, atol=1e-5, msg=name)


class DoublingSkip(nn.Module):
    """A value from before the first noisy site that an in-place operation after it changes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        g = self.fc2(h)
        h.mul_(2)
        return self.head(h + g)


@pytest.mark.parametrize("factory", [DoublingSkip, lambda: build_model("mlp", (1, 6), 3)])
def test_distinct_models_reuse_their_prefix_across_passes(factory) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 6)
    models = [instrument(factory().eval(), x[:2]) for _ in range(2)]
    noise = [(AdditiveNoise(), {2: 0.5}), (AdditiveNoise(), {3: 2.0})]
    outputs = []
    for keep in (True, False):
        stack = StackedModel(models).eval()
        stack.set_noise(noise)
        stack.set_generators([torch.Generator().manual_seed(k) for k in range(2)])
        with torch.no_grad(), stack.prefixes_kept() if keep else contextlib.nullcontext():
            outputs.append([stack(x, shared=True) for _ in range(3)])
            if keep:
                assert len(stack._kept.values) == 1  # the prefix of the one batch, computed once
    for kept, plain in zip(*outputs, strict=True):
        torch.testing.assert_close(kept, plain, rtol=0, atol=0)
    assert not torch.equal(outputs[0][0], outputs[0][1])  # fresh noise on each pass
    for k, model in enumerate(models):  # noise added in place where safe: as each model alone
        ((site, sigma),) = noise[k][1].items()
        model.set_noise(AdditiveNoise(), WalkingPlacement(site), sigma)
        model.set_generator(torch.Generator().manual_seed(k))
        with torch.no_grad():
            for passed in outputs[1]:
                torch.testing.assert_close(passed[k], model(x), rtol=1e-5, atol=1e-5)


def test_an_owned_input_that_requires_grad_is_not_overwritten() -> None:
    torch.manual_seed(0)
    models = [instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8)) for _ in "ab"]
    stack = StackedModel(models).train()
    stack.set_noise([(AdditiveNoise(), {0: 0.5}), (AdditiveNoise(), {})])
    xs = torch.randn(2, 8, 1, 8, 8, requires_grad=True)
    before = xs.detach().clone()
    stack(xs, owned=True).sum().backward()
    assert torch.equal(xs.detach(), before)
    assert xs.grad is not None


def test_an_owned_input_expanded_from_one_batch_is_not_overwritten() -> None:
    """Its rows share one memory: noise for one model must not reach the others (or the batch)."""
    torch.manual_seed(0)
    models = [instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8)) for _ in "abc"]
    stack = StackedModel(models).eval()
    stack.set_noise([(AdditiveNoise(), {}), (AdditiveNoise(), {0: 1.0}), (AdditiveNoise(), {})])
    x = torch.randn(8, 1, 8, 8)
    before = x.clone()
    with torch.no_grad():
        out = stack(x.unsqueeze(0).expand(3, *x.shape), owned=True)
        clean = [model.eval()(x) for model in models]
    assert torch.equal(x, before)
    torch.testing.assert_close(out[0], clean[0])
    torch.testing.assert_close(out[2], clean[2])
    assert not torch.allclose(out[1], clean[1])


class ScaledOutput(nn.Module):
    """A second input with a default, after the input site."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 12), nn.Linear(12, 5)

    def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)) * scale)


@pytest.mark.parametrize("copies", [True, False], ids=["copies", "distinct"])
def test_an_input_default_is_kept_when_the_prefix_is_reused(copies: bool) -> None:
    """With noise at the input, the prefix handed on holds the first input; the next input
    takes its default, not the batch."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 16), torch.randint(0, 5, (40,))
    first = instrument(ScaledOutput(), x[:2]).eval()
    models = [first, first] if copies else [first, instrument(ScaledOutput(), x[:2]).eval()]
    stack = StackedModel(models)
    stack.check(x[:2])
    stack.set_noise([(AdditiveNoise(), {0: 0.5}), (AdditiveNoise(), {0: 0.5})])
    stack.set_generators([torch.Generator().manual_seed(k) for k in range(2)])
    stacked = evaluate_stacked(stack, Split(x, y), repeats=3, batch_size=16)
    for k, model in enumerate(models):
        with model.noise_preserved():
            model.set_noise(AdditiveNoise(), WalkingPlacement(0), 0.5)
            model.set_generator(torch.Generator().manual_seed(k))
            alone = evaluate(model, Split(x, y), repeats=3, batch_size=16)
        assert stacked[k].accuracy == pytest.approx(alone.accuracy, abs=1 / 40)


class ViewAlias(nn.Module):
    """A prefix value, a view of it, and an in-place change of the value after the noisy site."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x.flatten(1)))
        v = h.view(h.size(0), 32)
        g = self.fc2(h)
        h.mul_(3)  # changes v too
        return self.head(g + v)


@pytest.mark.parametrize("copies", [True, False], ids=["copies", "distinct"])
@pytest.mark.parametrize("k_models", [1, 2])
def test_kept_prefix_values_keep_sharing_memory(copies: bool, k_models: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    models = [instrument(ViewAlias().eval(), x[:2]) for _ in range(1 if copies else k_models)]
    models = models * k_models if copies else models
    site = next(s.info.index for s in models[0].sites if s.info.name.startswith("fc2"))
    stack = StackedModel(models).eval()
    stack.set_noise([(AdditiveNoise(), {site: 0.5})] * k_models)
    stack.set_generators([torch.Generator().manual_seed(k) for k in range(k_models)])
    with torch.no_grad(), stack.prefixes_kept():
        passes = [stack(x, shared=True) for _ in range(2)]
    for k, model in enumerate(models):
        model.set_noise(AdditiveNoise(), WalkingPlacement(site), 0.5)
        model.set_generator(torch.Generator().manual_seed(k))
        with torch.no_grad():
            for out in passes:
                torch.testing.assert_close(out[k], model(x), rtol=1e-5, atol=1e-5)


def _frozen_first_layer() -> nn.Module:
    net = build_model("mlp", (1, 8, 8), 10, batchnorm=True)
    net.get_submodule("layers.1").weight.requires_grad_(False)
    return net


def test_frozen_parameters_stay_as_they_are(digits: InMemoryDataset) -> None:
    models = _instrumented(_frozen_first_layer, (1, 8, 8), range(2))
    before = [copy.deepcopy(m.source.state_dict()) for m in models]
    stack = StackedModel(models)
    train_stacked(stack, digits.train, Recipe(epochs=1), seeds=[0, 1])
    stack.write_back(models)
    for k, model in enumerate(models):
        after = model.source.state_dict()
        assert torch.equal(after["layers.1.weight"], before[k]["layers.1.weight"])
        assert not torch.equal(after["layers.1.bias"], before[k]["layers.1.bias"])
    thawed = _instrumented(lambda: build_model("mlp", (1, 8, 8), 10), (1, 8, 8), range(1))
    with pytest.raises(NotStackableError, match="frozen"):
        StackedModel([models[0], thawed[0]])


def _with_weight_noise(models: list, etas: dict[int, float], seed: int = 10) -> None:
    """Weight noise η on the members ``etas`` names, each drawn from a generator of its own."""
    for k, eta in etas.items():
        attach_weight_noise(models[k], eta, generator=torch.Generator().manual_seed(seed + k))


def _reseed_weight_noise(models: list, seed: int = 10) -> None:
    for k, model in enumerate(models):
        noise = weight_noise_of(model)
        if noise is not None and noise.generator is not None:
            noise.generator.manual_seed(seed + k)


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (lambda: build_model("mlp", (1, 8, 8), 10, batchnorm=True), (1, 8, 8)),
        (lambda: build_model("lenet5", (1, 28, 28), 10, batchnorm=True), (1, 28, 28)),
        (SkipNet, (1, 8, 8)),
        (_subclassed_layers, (1, 8, 8)),  # a convolution of its own: run by vmap, hooks and all
    ],
    ids=["mlp", "lenet5", "skipnet", "subclassed-layers"],
)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shared", [False, True], ids=["own-input", "shared-input"])
def test_weight_noise_in_a_stack_draws_what_each_model_draws_alone(
    factory, shape, training: bool, shared: bool
) -> None:
    """Member k's weights are read with the noise the model alone reads them with: its own η,
    from its own generator, in the order alone; a member without weight noise reads them
    clean, and so does one whose noise is off in this mode."""
    models = _instrumented(factory, shape, range(4))
    _with_weight_noise(models, {0: 0.05, 2: 0.3})
    attach_weight_noise(models[3], 0.2, training=False, evaluation=False)
    stack = StackedModel(models).train(training)
    x = torch.randn(4, 5, *shape)
    if shared:
        x = x[:1].expand_as(x)
    with torch.no_grad():
        out = stack(x[0], shared=True) if shared else stack(x)
    _reseed_weight_noise(models)
    for k, model in enumerate(models):
        model.train(training)
        with torch.no_grad():
            alone = model(x[k])
            with model.noise_disabled():
                clean = model(x[k])
        torch.testing.assert_close(out[k], alone, rtol=1e-4, atol=1e-5)
        if k in (0, 2):  # the noise is really there
            assert (out[k] - clean).abs().max() > 1e-3
        else:
            torch.testing.assert_close(out[k], clean, rtol=1e-4, atol=1e-5)


def test_each_member_reads_its_weights_with_its_own_eta() -> None:
    """The noise a member's weights are read with has standard deviation η_k · (max W_k −
    min W_k), per member: a layer fed the identity matrix outputs its (noisy) weights."""
    models = _instrumented(lambda: nn.Sequential(nn.Linear(64, 64, bias=False)), (64,), range(3))
    _with_weight_noise(models, {0: 0.1, 2: 0.02})
    stack = StackedModel(models).eval()
    with torch.no_grad():
        read = stack(torch.eye(64), shared=True).transpose(1, 2)  # (K, out, in): W̃ per member
    for k, eta in enumerate((0.1, 0.0, 0.02)):
        weight = stack.state_dict(k)["0.weight"]
        noise = read[k] - weight
        if eta == 0:
            assert torch.equal(read[k], weight)
        else:
            assert_variance(noise, (eta * (weight.max() - weight.min()).item()) ** 2)


def test_weight_noise_trains_and_evaluates_as_a_stack_as_alone(
    digits: InMemoryDataset, caplog
) -> None:
    """Weight-noise experiments (alone, with activation noise, next to plain ones) train in one
    stack with the losses and metrics they get alone; inference-only weight-noise experiments
    of a shared model are evaluated stacked with the numbers they get alone, and the model
    keeps its own noise settings, weight noise included."""
    recipe = Recipe(epochs=2)
    trained = [
        Experiment(noise="none", weight_noise=0.3, train_noise=True, recipe=recipe, seed=4),
        Experiment(
            placement="walking:2", sigma=0.5, weight_noise=0.1, train_noise=True, recipe=recipe
        ),
        Experiment(placement="walking:2", sigma=0.5, train_noise=True, recipe=recipe),
    ]
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        cohort = train_cohort(trained, digits)
    assert "one at a time" not in caplog.text
    for result, experiment in zip(cohort, trained, strict=True):
        alone = train_alone(experiment, digits)
        _assert_same_losses(result.history, alone.history, rtol=1e-3)
        for key in ("clean_test_accuracy", "noisy_test_accuracy"):
            assert result.metrics[key] == pytest.approx(
                alone.metrics[key], abs=3 / len(digits.test)
            )
    assert cohort[0].metrics["noisy_test_accuracy_std"] > 0  # the weight noise of evaluation
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10), digits.train.x[:2])
    model.set_noise(AdditiveNoise(), WalkingPlacement(3), 0.5)
    own = attach_weight_noise(model, 0.2, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator()
    model.set_generator(generator)
    evaluated = [
        Experiment(noise="none", weight_noise=0.3, eval_repeats=2),
        Experiment(noise="none", weight_noise=0.05, eval_repeats=2),
        Experiment(placement="walking:1", sigma=0.5, weight_noise=0.1, eval_repeats=2),
        Experiment(placement="walking:1", sigma=0.5, eval_repeats=2),
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        shared = evaluate_shared(model, evaluated, digits)
    assert "one at a time" not in caplog.text
    assert weight_noise_of(model) is own
    assert own.enabled
    assert own.eta == 0.2
    assert isinstance(model.noise, AdditiveNoise)
    assert [site.info.index for site in model.sites if site.sigma] == [3]
    assert model.generator is generator
    alone = [evaluate_experiment(e, model, digits) for e in evaluated]
    for metrics, reference in zip(shared, alone, strict=True):
        assert metrics["clean_test_accuracy"] == reference["clean_test_accuracy"]
        # the same noise draws, stacked: only float rounding can flip a prediction
        for key in ("noisy_test_accuracy", "noisy_test_accuracy_std"):
            assert metrics[key] == pytest.approx(reference[key], abs=3 / len(digits.test))
    for metrics in shared[:3]:  # two passes, two draws of the weights
        assert metrics["noisy_test_accuracy_std"] > 0
    assert shared[0]["noisy_test_accuracy"] < shared[1]["noisy_test_accuracy"]


class SmallConvNet(nn.Module):
    """A convolution, then a linear layer: a convolutional model the 8×8 digits fit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv2d(1, 4, 3), nn.Linear(144, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.conv(x)).flatten(1))


def test_a_convolutional_model_trains_alone_on_the_cpu(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """On the CPU a convolutional model's experiments train one at a time, with the numbers
    they get alone (stacked convolutions are slower there); its inference-only experiments
    with activation noise still evaluate as a stack, those with weight noise one at a time."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("test-conv-net")(lambda shape, classes, *, batchnorm: SmallConvNet())
    common = {"model": "test-conv-net", "batchnorm": False, "recipe": Recipe(epochs=1)}
    noisy = Experiment(noise="none", weight_noise=0.1, train_noise=True, **common)
    plain = [
        Experiment(placement=f"walking:{site}", sigma=0.3, train_noise=True, **common)
        for site in (1, 2)
    ]
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        cohort = train_cohort([noisy, *plain], digits)
    assert "training 3 experiments one at a time: a model with convolutions" in caplog.text
    for result, experiment in zip(cohort, [noisy, *plain], strict=True):
        assert result.metrics == train_alone(experiment, digits).metrics
    evaluated = [
        Experiment(noise="none", weight_noise=0.1, eval_repeats=2, **common),
        Experiment(placement="walking:1", sigma=0.3, eval_repeats=2, **common),
    ]
    model = cohort[1].model
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        shared = evaluate_shared(model, evaluated, digits)
    assert "evaluating 1 experiment one at a time: a model with convolutions" in caplog.text
    assert caplog.text.count("one at a time") == 1  # the other one was stacked
    assert shared[0] == evaluate_experiment(evaluated[0], model, digits)


def test_students_of_their_own_batches_give_the_teacher_the_clean_input(
    digits: InMemoryDataset,
) -> None:
    """Students of different seeds (each its own batches) with noise on the input: the
    teacher reads their clean batches, as alone, not the ones the input noise went into."""
    recipe = Recipe(epochs=2)
    teacher, _ = train_experiment(Experiment(noise="none", recipe=recipe), digits, progress=False)
    students = [
        Experiment(placement="walking:0", sigma=2.0, train_noise=True, recipe=recipe, seed=seed,
                   distillation=Distillation())
        for seed in (0, 1)
    ]  # fmt: skip
    for result, student in zip(
        train_cohort(students, digits, teacher=teacher), students, strict=True
    ):
        _assert_same_losses(
            result.history, train_alone(student, digits, teacher=teacher).history, 1e-3
        )


def test_only_convolutional_models_on_the_cpu_train_one_at_a_time() -> None:
    conv = instrument(SmallConvNet(), torch.randn(2, 1, 8, 8))
    mlp = instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8))
    assert "convolutions" in str(stacking_slower(conv))
    assert stacking_slower(mlp) is None
    assert stacking_slower(conv.to("meta")) is None  # another device (as CUDA): they stack


class EncoderNet(nn.Module):
    """A Transformer layer, which torch.fx calls whole: its inner Linear layers run unseen."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, dim_feedforward=16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.view(x.shape[0], 8, 8))).mean(dim=1))


def test_weight_noise_inside_a_module_run_whole_is_not_stacked(digits: InMemoryDataset) -> None:
    models = _instrumented(EncoderNet, (1, 8, 8), range(2))
    attach_weight_noise(models[0], 0.1)
    with pytest.raises(NotStackableError, match=r"encoder\.linear1, a layer no graph node calls"):
        StackedModel(models)
    copies = StackedModel([models[1]] * 2)
    with pytest.raises(NotStackableError, match="inside a module the graph runs whole"):
        copies.set_weight_noise([0.0, 0.1])
    copies.set_weight_noise([0.0, 0.0])  # no weight noise: nothing to refuse


def test_a_weight_noise_stack_takes_more_memory_per_model() -> None:
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8))
    params = sum(p.numel() for p in model.source.parameters())
    for training in (False, True):
        plain = bytes_per_model(model, 64, training=training)
        noisy = bytes_per_model(model, 64, training=training, weight_noise=True)
        assert noisy - plain == 4 * 3 * params


def test_a_cohort_of_distillation_experiments_needs_its_teacher(digits: InMemoryDataset) -> None:
    student = Experiment(train_noise=True, sigma=0.1, distillation=Distillation())
    with pytest.raises(ValueError, match=r"give train_cohort\(\.\.\., teacher=\.\.\.\)"):
        train_cohort([student], digits)


def test_students_train_as_a_stack_as_alone(digits: InMemoryDataset, caplog) -> None:
    """Students of one teacher (weight noise of several η, activation noise, another
    temperature) train in stacks with the losses and metrics they get alone, next to a model
    that is no student; the teacher runs once per batch its students share, and keeps its
    weights, statistics, mode and noise."""
    recipe = Recipe(epochs=2)
    teacher, _ = train_experiment(Experiment(noise="none", recipe=recipe), digits, progress=False)
    teacher.set_noise(AdditiveNoise(), WalkingPlacement(2), 5.0)
    before = {k: v.clone() for k, v in teacher.source.state_dict().items()}
    student = {"train_noise": True, "recipe": recipe, "seed": 3}
    experiments = [
        *(Experiment(noise="none", weight_noise=eta, distillation=Distillation(), **student)
          for eta in (0.0, 0.05, 0.1)),
        Experiment(placement="walking:3", sigma=0.3, distillation=Distillation(), **student),
        Experiment(noise="none", weight_noise=0.05, distillation=Distillation(temperature=2),
                   **student),
        Experiment(placement="walking:3", sigma=0.3, **student),
    ]  # fmt: skip
    calls = []
    hook = teacher.register_forward_hook(lambda _m, inputs, _out: calls.append(len(inputs[0])))
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        cohort = train_cohort(experiments, digits, teacher=teacher.train())
    hook.remove()
    assert "one at a time" not in caplog.text
    # two stacks of students (one per temperature), each running the teacher once per batch
    batches = math.ceil(len(digits.train) / recipe.batch_size) * recipe.epochs
    assert len(calls) == 2 * batches
    assert teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.source.state_dict().items())
    assert [s.sigma for s in teacher.sites if s.sigma] == [(5.0,)]
    for result, experiment in zip(cohort, experiments, strict=True):
        alone = train_alone(experiment, digits, teacher=teacher)
        _assert_same_losses(result.history, alone.history, rtol=1e-3)
        for key in ("clean_test_accuracy", "noisy_test_accuracy"):
            assert result.metrics[key] == pytest.approx(
                alone.metrics[key], abs=3 / len(digits.test)
            )
    plain = [r.train_loss for r in cohort[-1].history.epochs]
    distilled = [r.train_loss for r in cohort[-3].history.epochs]  # same noise, with a teacher
    assert plain != pytest.approx(distilled, rel=0.05)


def _cumulative_batchnorm() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU(), nn.Linear(8, 3)
    )


class PerStepBatchNorm(nn.Module):
    """BatchNorm over the steps of every sample, (B·T, C): its input's second dimension is not
    the batch, so the stack runs it through vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(6, 6), nn.Linear(6, 3)
        self.bn = nn.BatchNorm1d(6, momentum=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.fc(x).reshape(-1, 6)).reshape(-1, 4, 6)
        return self.head(h.mean(dim=1))


@pytest.mark.parametrize(
    ("factory", "shape", "layer"),
    [(_cumulative_batchnorm, (16,), "2"), (PerStepBatchNorm, (4, 6), "bn")],
    ids=["stacked", "vmap"],
)
def test_batchnorm_with_a_cumulative_average_trains_as_alone(factory, shape, layer: str) -> None:
    models = _instrumented(factory, shape, range(2))
    stack = StackedModel(models).train()
    batches = torch.randn(3, 2, 5, *shape)
    outputs = [stack(x) for x in batches]  # the average's weight 1/n changes every batch
    for k, model in enumerate(models):
        model.train()
        for x, out in zip(batches, outputs, strict=True):
            torch.testing.assert_close(out[k], model(x[k]), rtol=1e-5, atol=1e-6)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            name = f"{layer}.{name}"
            torch.testing.assert_close(stack.state_dict(k)[name], model.source.state_dict()[name])
    assert models[0].source.get_submodule(layer).momentum is None
    models[1].source.get_submodule(layer).num_batches_tracked += 1
    with pytest.raises(NotStackableError, match="momentum None"):
        StackedModel(models)


@pytest.mark.parametrize(
    "options",
    [{}, {"affine": False}, {"track_running_stats": False}, {"momentum": 0.5}],
    ids=["default", "no-affine", "no-running-stats", "momentum"],
)
def test_batchnorm_trains_as_alone(options: dict) -> None:
    """Outputs, running statistics and gradients of BatchNorm in training, as alone."""

    def factory() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8, **options), nn.ReLU(), nn.Linear(8, 3)
        )

    models = _instrumented(factory, (16,), range(3))
    stack = StackedModel(models).train()
    batches = torch.randn(2, 3, 6, 16) * 3 + 5  # statistics far from the initial ones
    for x in batches:
        stack(x).sum().backward()
    grads = [p.grad for p in stack.parameters()]
    for k, model in enumerate(models):
        model.train()
        for x in batches:
            model(x[k]).sum().backward()
        for grad, (name, p) in zip(grads, model.net.named_parameters(), strict=True):
            torch.testing.assert_close(grad[k], p.grad, rtol=1e-4, atol=1e-5, msg=name)
        for name, value in model.source.state_dict().items():
            torch.testing.assert_close(stack.state_dict(k)[name], value, msg=name)


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_batchnorm_statistics_past_float32_stay_infinite_as_alone() -> None:
    """Batches whose variance overflows float32 (noise far above the activations) make the
    running variance +inf, and PyTorch's kernel keeps it +inf on the next such batch: the
    stack's update too, not inf + rate·(inf − inf) = NaN, after which the model evaluated to
    NaN where alone it gives finite logits."""
    models = _instrumented(_bn_net, (16,), range(2))
    stack = StackedModel(models).train()
    batches = torch.randn(2, 2, 6, 16) * 1e25
    with torch.no_grad():
        for x in batches:
            stack(x)
        for k, model in enumerate(models):
            model.train()
            for x in batches:
                model(x[k])
            for name, value in model.source.state_dict().items():
                torch.testing.assert_close(stack.state_dict(k)[name], value, msg=name)
            assert stack.eval()(x[:, :3])[k].isfinite().all()


def test_an_evaluation_pass_and_a_training_pass_in_one_graph_backpropagate_as_alone() -> None:
    """The training pass updates the running statistics the evaluation pass keeps for its
    backward, which must not count as a change of them (as with PyTorch's own kernel)."""
    models = _instrumented(_bn_net, (16,), range(2))
    stack = StackedModel(models)
    x = torch.randn(6, 16)
    first = stack.eval()(x, shared=True)
    (first * stack.train()(x, shared=True)).sum().backward()
    grads = [p.grad for p in stack.parameters()]
    for k, model in enumerate(models):
        first = model.eval()(x)
        (first * model.train()(x)).sum().backward()
        for grad, (name, p) in zip(grads, model.net.named_parameters(), strict=True):
            torch.testing.assert_close(grad[k], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_batchnorm_trains_under_autocast_as_alone() -> None:
    models = _instrumented(_bn_net, (16,), range(2))
    stack = StackedModel(models).train()
    x = torch.randn(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stack(x, shared=True)
        for k, model in enumerate(models):
            torch.testing.assert_close(out[k], model.train()(x), rtol=2e-2, atol=2e-2)


class ItemNet(nn.Module):
    """A Python number computed from the activations (``.item()``), which vmap cannot run."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x.flatten(1)))
        return self.head(h / (1.0 + h.abs().max().item()))


def test_copies_that_cannot_run_stacked_are_evaluated_alone(
    digits: InMemoryDataset, caplog
) -> None:
    """Copies run their clean prefix with the model itself, but the rest as a stack: the check
    runs every node stacked, so an unstackable node after the noisy site falls back too."""
    torch.manual_seed(0)
    model = instrument(ItemNet(), digits.train.x[:2])
    with pytest.raises(NotStackableError, match="item"):
        StackedModel([model, model]).check(digits.test.x[:2])
    members = [Experiment(placement="walking:1", sigma=0.5, eval_repeats=2)] * 2
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        metrics = evaluate_shared(model, members, digits)
    assert "one at a time" in caplog.text
    assert metrics == [evaluate_experiment(members[0], model, digits)] * 2


class ScaledNet(nn.Module):
    """A plain tensor attribute, which torch.fx turns into a buffer the model itself lacks."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.scale = torch.linspace(1.0, 2.0, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * self.scale


def test_write_back_leaves_constants_alone(digits: InMemoryDataset) -> None:
    models = _instrumented(ScaledNet, (1, 8, 8), range(2))
    before = [m.source.fc.weight.detach().clone() for m in models]
    stack = StackedModel(models)
    train_stacked(stack, digits.train, Recipe(epochs=1), seeds=[0, 1])
    stack.write_back(models)
    for k, model in enumerate(models):
        assert set(stack.state_dict(k)) == set(model.source.state_dict())
        assert torch.equal(model.source.fc.weight, stack.state_dict(k)["fc.weight"])
        assert not torch.equal(model.source.fc.weight, before[k])


class SkipSum(nn.Module):
    """x → a → b, and a + b: ``a`` is read by two nodes, the later one frees it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.fc1(x)
        b = self.fc2(a)
        return a + b


def test_each_value_is_freed_once_after_its_last_reader() -> None:
    graph = torch.fx.symbolic_trace(SkipSum()).graph
    freed = _last_uses(graph)
    names = {node.name: [v.name for v in values] for node, values in freed.items()}
    assert names == {"fc1": ["x"], "add": ["fc1", "fc2"], "output": ["add"]}
    order = list(graph.nodes)
    for node, values in freed.items():
        for value in values:
            readers = [order.index(user) for user in value.users]
            assert order.index(node) == max(readers)


def _alone(model, noise, site: int, sigma: float, x: torch.Tensor, seed: int) -> list:
    """``model``'s outputs of two passes over ``x`` with noise σ at ``site`` drawn from a
    generator seeded ``seed`` (its own noise settings restored)."""
    with model.noise_preserved(), torch.no_grad():
        model.set_noise(noise, WalkingPlacement(site), sigma)
        model.set_generator(torch.Generator().manual_seed(seed))
        return [model.eval()(x) for _ in range(2)]


@pytest.mark.parametrize("noise", [AdditiveNoise(), MultiplicativeNoise()])
def test_members_given_one_generator_take_one_draw_as_each_would_alone(noise) -> None:
    """Members holding one generator that draw alike take the same draws, once (the σ of one
    seed and site: common random numbers); one holding it but drawing elsewhere gets a copy.
    Each gets what it gets alone from a generator seeded alike, on every pass."""
    torch.manual_seed(0)
    x = torch.randn(300, 1, 8, 8)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True), x[:2]).eval()
    last = len(model.sites) - 1
    members = [(last, 0.5), (last, 2.0), (5, 1.0), (last, 0.0)]
    stack = StackedModel([model] * len(members)).eval()
    stack.set_noise([(noise, {site: sigma}) for site, sigma in members])
    one = torch.Generator().manual_seed(7)
    stack.set_generators([one] * len(members))
    with torch.no_grad():
        passes = [stack(x, shared=True) for _ in range(2)]
        clean = model(x)
    for k, (site, sigma) in enumerate(members):
        for one_pass, alone in zip(passes, _alone(model, noise, site, sigma, x, 7), strict=True):
            torch.testing.assert_close(one_pass[k], alone)
    # at the logits the draws show: σ = 2 is four times σ = 0.5's noise, element for element
    torch.testing.assert_close(
        passes[1][1] - clean, 4 * (passes[1][0] - clean), rtol=1e-4, atol=1e-4
    )
    assert not torch.allclose(passes[0][0], passes[1][0])  # fresh draws on each pass
    torch.testing.assert_close(passes[0][3], clean)


def test_weight_noise_of_members_given_one_generator_is_drawn_once() -> None:
    """Weight noise too: members holding one generator read their weights with the same
    draws, each scaled by its own η, as each alone from a generator seeded alike."""
    torch.manual_seed(0)
    model = instrument(nn.Sequential(nn.Linear(64, 64, bias=False)), torch.randn(2, 64))
    stack = StackedModel([model] * 2).eval()
    stack.set_weight_noise([0.1, 0.3])
    stack.set_generators([torch.Generator().manual_seed(3)] * 2)
    with torch.no_grad():
        read = stack(torch.eye(64), shared=True).transpose(1, 2)  # (K, out, in): W̃ per member
    weight = stack.state_dict(0)["0.weight"]
    torch.testing.assert_close(read[1] - weight, 3 * (read[0] - weight), rtol=1e-4, atol=1e-5)
    for k, eta in enumerate((0.1, 0.3)):
        alone = copy.deepcopy(model)
        attach_weight_noise(alone, eta, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            torch.testing.assert_close(read[k], alone.eval()(torch.eye(64)).T)


def test_inference_only_experiments_of_one_seed_and_site_see_one_draw(
    digits: InMemoryDataset,
) -> None:
    """Through ``evaluate_shared``, as the engine runs them: the σ of one site share their draws
    (one stack, one generator), and each experiment's metrics are those it gets alone."""
    torch.manual_seed(0)
    trained = _experiments(1, recipe=Recipe(epochs=3))[0]
    model, _ = train_experiment(trained, digits, progress=False)
    members = [Experiment(placement="walking:10", sigma=s, eval_repeats=2) for s in (0.5, 1.0)]
    members.append(Experiment(placement="walking:4", sigma=1.0, eval_repeats=2))
    generators = evaluation_generators(members)
    assert generators[0] is generators[1]
    assert generators[2] is not generators[0]
    stacked = evaluate_shared(model, members, digits)
    for experiment, metrics in zip(members, stacked, strict=True):
        alone = evaluate_experiment(experiment, model, digits)
        assert metrics["noisy_test_accuracy"] == alone["noisy_test_accuracy"]
        assert metrics == pytest.approx(alone, rel=1e-5, abs=1e-6)  # losses: summed otherwise


@pytest.mark.usefixtures("one_thread")
def test_an_experiment_with_zero_sigma_at_its_first_mapped_site_evaluates_as_in_any_stack(
    digits: InMemoryDataset,
) -> None:
    """``map:0=0;3=30`` injects noise first at site 3, so it is stacked with the experiments
    whose noise starts there, not with those starting at site 0: its noise passes the layer
    after site 3 as terms in every stack, and its numbers do not depend on its stack's."""
    torch.manual_seed(0)
    clean = Experiment(noise="none", recipe=Recipe(epochs=1))
    model, _ = train_experiment(clean, digits, progress=False)
    mapped = Experiment(placement="map:0=0;3=30", sigma=None, eval_repeats=1)
    first = Experiment(placement="walking:0", sigma=1.0, eval_repeats=1)
    assert (
        evaluate_shared(model, [mapped, first], digits)[0]
        == evaluate_shared(model, [mapped], digits)[0]
    )


@pytest.mark.parametrize("factory", [ViewAlias, lambda: build_model("mlp", (1, 8, 8), 10)])
def test_stacks_of_copies_at_later_sites_go_on_from_the_kept_clean_prefix(factory) -> None:
    """Stacks of copies of one model sharing ``KeptPrefixes`` run the model's first layer once a
    batch, whichever sites they start at, and still give what the model gives alone (also where
    a later node changes an earlier value in place)."""
    torch.manual_seed(0)
    x, y = torch.randn(48, 1, 8, 8), torch.randint(0, 10, (48,))
    model = instrument(factory().eval(), x[:2])
    first = next(n for n, m in model.net.named_modules() if isinstance(m, nn.Linear))
    calls = []
    model.net.get_submodule(first).register_forward_hook(lambda *_: calls.append(1))
    sites = [s.info.index for s in model.sites][1:4]
    kept, results = KeptPrefixes(), {}
    for site in sites:  # a stack of two σ per site, in turn, as evaluate_shared runs them
        stack = StackedModel([model] * 2).eval()
        stack.set_noise([(AdditiveNoise(), {site: sigma}) for sigma in (0.5, 2.0)])
        stack.set_generators([torch.Generator().manual_seed(site)] * 2)
        results[site] = evaluate_stacked(stack, Split(x, y), repeats=2, batch_size=16, kept=kept)
    assert len(calls) == 3  # one clean run of each of the 3 batches, for all sites
    for site in sites:
        for k, sigma in enumerate((0.5, 2.0)):
            with model.noise_preserved():
                model.set_noise(AdditiveNoise(), WalkingPlacement(site), sigma)
                model.set_generator(torch.Generator().manual_seed(site))
                alone = evaluate(model, Split(x, y), repeats=2, batch_size=16)
            assert results[site][k].accuracies == alone.accuracies
            assert results[site][k].losses == pytest.approx(alone.losses, rel=1e-5)


def test_copies_evaluating_run_the_models_own_layers_on_their_merged_batches() -> None:
    """After the first noisy site, copies of one model in evaluation run each Linear and
    BatchNorm as the model's own layer on the K·B samples at once (one matmul), and give what
    the model gives alone; a layer whose weights copies read with noise runs stacked."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True).eval(), x[:2])
    seen = []
    for name in ("layers.4", "layers.5"):  # the second Linear and its BatchNorm
        layer = model.net.get_submodule(name)
        layer.register_forward_hook(lambda _m, args, _o, n=name: seen.append((n, args[0].shape)))
    stack = StackedModel([model] * 3).eval()
    stack.set_noise([(AdditiveNoise(), {1: sigma}) for sigma in (0.1, 0.5, 1.0)])
    stack.set_generators([torch.Generator().manual_seed(4)] * 3)
    with torch.no_grad():
        out = stack(x, shared=True)
    assert seen == [("layers.4", (96, 64)), ("layers.5", (96, 64))]
    for k, sigma in enumerate((0.1, 0.5, 1.0)):
        alone = _alone(model, AdditiveNoise(), 1, sigma, x, seed=4)[0]
        torch.testing.assert_close(out[k], alone, rtol=1e-5, atol=1e-5)
    seen.clear()
    stack.set_weight_noise([0.0, 0.1, 0.0])  # on the Linear layers' weights, stacked
    with torch.no_grad():
        stack(x, shared=True)
    assert seen == [("layers.5", (96, 64))]


def test_a_member_at_sigma_zero_listed_first_does_not_part_the_others_draws() -> None:
    """A σ grid starting at 0 (``linspace: min 0``): the member that draws nothing must not
    keep the σ > 0 members of its seed from taking one draw."""
    x = torch.randn(4, 64)
    model = instrument(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), x[:2])
    stack = StackedModel([model] * 3).eval()
    stack.set_noise([(AdditiveNoise(), {1: sigma}) for sigma in (0.0, 0.5, 1.0)])
    stack.set_generators([torch.Generator().manual_seed(1)] * 3)
    assert stack._leader[1] == stack._leader[2]


def test_copies_merged_after_the_site_read_the_models_weights_without_its_own_noise() -> None:
    """The model's own weight noise stays off in a stack of its copies (each member's comes from
    ``set_weight_noise``), also on the layers run as the model's own on the merged batch."""
    torch.manual_seed(0)
    x = torch.randn(16, 64)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    model = instrument(net.eval(), x[:2])
    attach_weight_noise(model, 0.5, generator=torch.Generator().manual_seed(1))
    stack = StackedModel([model] * 2).eval()
    stack.set_weight_noise([0.0, 0.0])
    stack.set_noise([(AdditiveNoise(), {1: 0.3})] * 2)
    outputs = []
    for copies in (True, False):
        stack.copies = copies  # merged layers, or stacked ones
        stack.set_generators([torch.Generator().manual_seed(2)] * 2)
        with torch.no_grad():
            outputs.append(stack(x, shared=True))
    torch.testing.assert_close(outputs[0], outputs[1])


class InputSkip(nn.Module):
    """Reads the flattened input (a view of the split's memory) after every site."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 32)
        self.head, self.skip = nn.Linear(32, 10), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(f))))) + self.skip(f)


def test_kept_prefixes_hold_no_more_memory_than_they_count() -> None:
    """A prefix continued from a kept one copies only the memory its values reach, so what
    ``KeptPrefixes`` holds is what its room counts: a view of the split (the flattened input,
    read again after the site) keeps a copy of its batch, not of the whole split."""
    torch.manual_seed(0)
    x, y = torch.randn(2048, 1, 8, 8), torch.randint(0, 10, (2048,))
    model = instrument(InputSkip().eval(), x[:2])
    kept = KeptPrefixes(64 * 2**20)
    for site in (1, 2, 3):
        stack = StackedModel([model] * 2).eval()
        stack.set_noise([(AdditiveNoise(), {site: sigma}) for sigma in (0.5, 1.0)])
        stack.set_generators([torch.Generator().manual_seed(site)] * 2)
        evaluate_stacked(stack, Split(x, y), batch_size=64, kept=kept)
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for values in kept.values.values()
        for t in tree_flatten(values)[0]
        if isinstance(t, torch.Tensor)
    }
    assert sum(storages.values()) <= 64 * 2**20 - kept.room


def test_a_member_given_its_own_generators_copies_a_weight_generator_of_its_own() -> None:
    """Copies holding one activation generator and one weight-noise generator (two objects),
    with noise at different sites: each gets copies of both, and reads its weights with the
    noise it reads alone, not with the draws after another member's."""
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True).eval(), x[:2])
    model.set_generator(torch.Generator().manual_seed(1))
    attach_weight_noise(model, 0.1, generator=torch.Generator().manual_seed(2))
    stack = StackedModel([model] * 2).eval()
    stack.set_noise([(AdditiveNoise(), {site: 0.5}) for site in (2, 5)])
    with torch.no_grad():
        out = stack(x, shared=True)
    for k, site in enumerate((2, 5)):
        alone = copy.deepcopy(model)
        alone.set_noise(AdditiveNoise(), WalkingPlacement(site), 0.5)
        alone.set_generator(torch.Generator().manual_seed(1))
        attach_weight_noise(alone, 0.1, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(out[k], alone(x), rtol=1e-5, atol=1e-5)


def test_members_of_two_shared_generators_at_one_site_each_take_their_own_draw() -> None:
    """Members at one site holding two generators, interleaved: each group takes one draw,
    gathered to its members' rows, as each alone from a generator seeded alike."""
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    model = instrument(build_model("mlp", (1, 8, 8), 10, batchnorm=True).eval(), x[:2])
    members = [(0.5, 1), (1.0, 2), (0.5, 1), (2.0, 2)]
    stack = StackedModel([model] * 4).eval()
    stack.set_noise([(AdditiveNoise(), {4: sigma}) for sigma, _ in members])
    generators = {seed: torch.Generator().manual_seed(seed) for seed in (1, 2)}
    stack.set_generators([generators[seed] for _, seed in members])
    with torch.no_grad():
        out = stack(x, shared=True)
    for k, (sigma, seed) in enumerate(members):
        torch.testing.assert_close(out[k], _alone(model, AdditiveNoise(), 4, sigma, x, seed)[0])
    torch.testing.assert_close(out[0], out[2])  # one draw, one σ


class _LayerCalls(TorchDispatchMode):
    """Records the rows of every matmul or convolution that reads ``weight``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight.data_ptr()
        self.rows: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        operands = {
            aten.mm.default: (0, 1),
            aten.addmm.default: (1, 2),
            aten.convolution.default: (0, 1),
        }.get(func)
        if operands is not None and args[operands[1]].data_ptr() == self.weight:
            self.rows.append(args[operands[0]].shape[0])
        return func(*args, **(kwargs or {}))


_SEPARABLE = {
    "additive": (AdditiveNoise(), [0.0, 0.3, 1.0, 4.0]),
    "multiplicative": (MultiplicativeNoise(), [0.0, 0.3, 1.0, 4.0]),
    "mul_first": (MixedNoise(order="mul_first"), [(0.0, 0.0), (0.3, 0.1), (1.0, 2.0), (4.0, 0.5)]),
    "add_first": (MixedNoise(order="add_first"), [(0.0, 0.0), (0.3, 0.1), (1.0, 2.0), (4.0, 0.5)]),
}
_READERS = {  # model, input, site, which Linear or convolution alone reads it (via Flatten)
    "mlp-input": (lambda: build_model("mlp", (1, 6, 6), 10, batchnorm=True), (1, 6, 6), 0, 0),
    "mlp-hidden": (lambda: build_model("mlp", (1, 6, 6), 10, batchnorm=True), (1, 6, 6), 3, 1),
    "lenet-input": (
        lambda: build_model("lenet5", (1, 16, 16), 10, batchnorm=True),
        (1, 16, 16),
        0,
        0,
    ),
}


@pytest.mark.parametrize("case", list(_READERS))
@pytest.mark.parametrize("kind", list(_SEPARABLE))
def test_copies_pass_the_first_sites_noise_through_the_next_layer_once_per_draw(
    kind: str, case: str
) -> None:
    """Copies evaluating, whose σ share one draw, map the clean input and the noise's
    directions through the layer after their site once each, on B rows, not each member's
    noisy input (W(x + σz) + b as (Wx + b) + σ(Wz)). Each member gets what it gets alone, to
    float32 rounding, and bit for bit what it gets in a stack of its own."""
    noise, sigmas = _SEPARABLE[kind]
    factory, shape, site, reader = _READERS[case]
    torch.manual_seed(0)
    x = torch.randn(24, *shape)
    model = instrument(factory().eval(), x[:2])
    layers = [m for m in model.net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    stack = StackedModel([model] * len(sigmas)).eval()
    stack.set_noise([(noise, {site: sigma}) for sigma in sigmas])
    stack.set_generators([torch.Generator().manual_seed(5)] * len(sigmas))
    calls = _LayerCalls(layers[reader].weight)
    with torch.no_grad(), calls:
        out = stack(x, shared=True)
    assert calls.rows == [24] * (1 + len(noise.directions(x, (x,) * noise.draws)))
    for k, sigma in enumerate(sigmas):
        alone = _alone(model, noise, site, sigma, x, seed=5)[0]
        torch.testing.assert_close(out[k], alone, rtol=1e-5, atol=1e-5)
        own = StackedModel([model]).eval()
        own.set_noise([(noise, {site: sigma})])
        own.set_generators([torch.Generator().manual_seed(5)])
        with torch.no_grad():
            assert torch.equal(own(x, shared=True)[0], out[k])
    with torch.no_grad():
        assert torch.equal(out[0], model(x))  # σ = 0: the clean model


@pytest.mark.parametrize("layer", ["layers.0", "layers.1"], ids=["flatten", "linear"])
@pytest.mark.parametrize("registered", ["before", "after"])
def test_a_layer_watched_by_a_hook_sees_every_members_noisy_input(
    layer: str, registered: str
) -> None:
    """A hook on the layer after the site, or on the Flatten before it (a user's probe, put
    there before or after the stack is built), sees what it sees alone: the noisy inputs of
    all K members, so the stack does not pass the noise through as terms there."""
    torch.manual_seed(0)
    x = torch.randn(40, 1, 6, 6)  # enough samples that the copies' batches merge
    model = instrument(build_model("mlp", (1, 6, 6), 10, batchnorm=True).eval(), x[:2])
    seen = []

    def watch() -> None:
        model.net.get_submodule(layer).register_forward_hook(
            lambda _m, args, _o: seen.append(tuple(args[0].shape[:1]))
        )

    if registered == "before":
        watch()
    stack = StackedModel([model] * 3).eval()
    if registered == "after":
        watch()
    stack.set_noise([(AdditiveNoise(), {0: sigma}) for sigma in (0.1, 0.5, 1.0)])
    stack.set_generators([torch.Generator().manual_seed(2)] * 3)
    with torch.no_grad():
        out = stack(x, shared=True)
    assert seen == [(120,)]
    for k, sigma in enumerate((0.1, 0.5, 1.0)):
        torch.testing.assert_close(out[k], _alone(model, AdditiveNoise(), 0, sigma, x, seed=2)[0])


def test_a_noise_model_of_its_own_arithmetic_is_applied_as_alone_before_a_linear_layer() -> None:
    """A user's noise model that clips its output is not separable: copies apply it at the
    site, as the model alone does, and the layer after it reads the clipped values."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Clipped(AdditiveNoise):
        def sample(self, x, levels, z):
            return super().sample(x, levels, z).clamp(-0.5, 0.5)

        def perturbation(self, x, levels, z, *, scratch=False):
            return self.sample(x, levels, z) - x

    torch.manual_seed(0)
    x = torch.randn(16, 1, 6, 6)
    model = instrument(build_model("mlp", (1, 6, 6), 10, batchnorm=True).eval(), x[:2])
    stack = StackedModel([model] * 2).eval()
    stack.set_noise([(Clipped(), {0: sigma}) for sigma in (0.5, 2.0)])
    stack.set_generators([torch.Generator().manual_seed(3)] * 2)
    with torch.no_grad():
        out = stack(x, shared=True)
    for k, sigma in enumerate((0.5, 2.0)):
        torch.testing.assert_close(out[k], _alone(model, Clipped(), 0, sigma, x, seed=3)[0])


def test_copies_evaluating_leave_the_models_own_noise_at_later_sites_off() -> None:
    """The layers after the copies' site run as the model's own modules, but the model's own
    noise settings (here σ = 3 at a later site, and weight noise) stay off: each member gets
    what the model gives with its member's noise alone."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 6, 6)
    model = instrument(build_model("mlp", (1, 6, 6), 10, batchnorm=True).eval(), x[:2])
    model.set_noise(AdditiveNoise(), WalkingPlacement(8), 3.0)
    attach_weight_noise(model, 0.5, generator=torch.Generator().manual_seed(9))
    stack = StackedModel([model] * 2).eval()
    stack.set_noise([(AdditiveNoise(), {2: sigma}) for sigma in (0.5, 1.0)])
    stack.set_weight_noise([0.0, 0.0])
    stack.set_generators([torch.Generator().manual_seed(4)] * 2)
    with torch.no_grad():
        out = stack(x, shared=True)
    own = weight_noise_of(model)
    assert own is not None
    with own.disabled():
        for k, sigma in enumerate((0.5, 1.0)):
            alone = _alone(model, AdditiveNoise(), 2, sigma, x, seed=4)[0]
            torch.testing.assert_close(out[k], alone)


@pytest.mark.parametrize("batches", ["last of 1", "last of 2", "last of 9", "of 100"])
def test_a_last_batch_of_few_samples_evaluates_as_in_a_stack_of_one(
    digits: InMemoryDataset, batches: str
) -> None:
    """BLAS picks another kernel for a matmul of few rows, whose rows then differ in their
    last bits from the same rows among many: copies evaluating a batch of few samples run the
    layers after their site member by member, so a stack of many gives each experiment what a
    stack of one gives (here: a test split whose last batch holds 1, 2 or 9 samples; and
    batches of 100, whose K·100 merged rows are no multiple of a vector kernel's block)."""
    torch.manual_seed(0)
    model, _ = train_experiment(_experiments(1, recipe=Recipe(epochs=1))[0], digits)
    last = batches.removeprefix("last of ")
    batch = 100 if batches == "of 100" else len(digits.test) - int(last)
    recipe = Recipe(epochs=1, eval_batch_size=batch)
    members = [
        Experiment(placement=f"walking:{site}", sigma=sigma, eval_repeats=2, recipe=recipe)
        for site in (0, 2, 5)
        for sigma in (0.3, 1.0, 3.0)
    ]
    together = evaluate_shared(model, members, digits)
    assert together == evaluate_shared(model, members, digits, max_models=1)


@pytest.mark.parametrize("offset", [1e7, -3e38])
def test_stacked_scores_keep_small_differences_of_logits_far_from_zero(offset: float) -> None:
    """Logits a few apart around 10⁷ (or −3·10³⁸): the evaluation's and the training's loss
    are F.cross_entropy's, which takes the differences to the largest first; their log Σ exp
    less the label's logit would round the loss away at that magnitude."""
    torch.manual_seed(0)
    logits = offset + torch.randn(2, 40, 10).mul_(2).round_()  # differences that float32 holds
    y = torch.randint(0, 10, (40,))
    loss, _ = _loss_and_correct(logits, y)
    mean, _ = _mean_cross_entropy(logits, y.expand(2, -1))
    for k in range(2):
        expected = F.cross_entropy(logits[k], y, reduction="none")
        assert expected.sum() > 10
        torch.testing.assert_close(loss[k], expected.sum(), rtol=1e-5, atol=0)
        torch.testing.assert_close(mean[k], expected.mean(), rtol=1e-5, atol=0)


def test_stacked_training_loss_of_an_infinite_logit_is_cross_entropys_nan() -> None:
    """A logit at +inf away from the label: the training's loss is NaN for that model, as
    F.cross_entropy gives (not +inf); the other model's is finite."""
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 10)
    target = torch.randint(0, 10, (2, 8))
    logits[0, 0, (int(target[0, 0]) + 1) % 10] = float("inf")
    loss, _ = _mean_cross_entropy(logits, target)
    expected = torch.stack([F.cross_entropy(logits[k], target[k]) for k in range(2)])
    assert expected[0].isnan()
    torch.testing.assert_close(loss, expected, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_scores_of_many_classes_in_any_float_type_are_argmaxs(dtype: torch.dtype) -> None:
    """Logits of 300 classes (more than bfloat16 counts exactly) in half, bfloat16 and double
    precision: the loss is F.cross_entropy's (in float32 for the halves), the number correct
    argmax's."""
    torch.manual_seed(0)
    logits = (torch.randn(2, 64, 300) * 4).to(dtype)
    y = torch.randint(250, 300, (64,))
    logits[:, torch.arange(64), y] = logits.amax(dim=-1) + 1  # every label the largest
    logits[1, :32] = logits[1, :32].round()  # ties among the largest, at the label or before
    y[40:48] = 257  # the largest, tied with class 256, which bfloat16 cannot tell from 257
    logits[:, 40:48, 256:258] = logits[:, 40:48].amax(dim=-1, keepdim=True) + 2
    loss, correct = _loss_and_correct(logits, y)
    for k in range(2):
        expected = F.cross_entropy(logits[k].float(), y, reduction="none").sum()
        torch.testing.assert_close(loss[k].float(), expected, rtol=1e-2, atol=1e-2)
        assert correct[k] == (logits[k].argmax(dim=-1) == y).sum()
    assert correct[0] == 56


_PARAMETRIZATIONS = {"weight_norm": weight_norm, "spectral_norm": spectral_norm}


@pytest.fixture
def parametrized_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.nn.utils.parametrize`` gives every parametrized layer a class of its own."""
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    for name, parametrization in _PARAMETRIZATIONS.items():
        register_model(f"test-{name}")(
            lambda shape, classes, *, batchnorm, parametrization=parametrization: nn.Sequential(
                nn.Flatten(), parametrization(nn.Linear(64, 32)), nn.ReLU(), nn.Linear(32, classes)
            )
        )


@pytest.mark.usefixtures("parametrized_models")
@pytest.mark.parametrize("name", sorted(_PARAMETRIZATIONS))
def test_models_of_parametrized_layers_train_as_a_stack_where_they_can(
    digits: InMemoryDataset, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Members built apart hold layers of different classes of one name (``ParametrizedLinear``);
    they stack all the same. Spectral norm's power iteration, which runs in training alone and
    writes into its buffers (``out=``), cannot run under vmap: its cohort trains one at a time,
    with the reason, not as a stack that fails. Either way each model trains as it does alone."""
    members = [
        Experiment(model=f"test-{name}", batchnorm=False, placement=f"walking:{site}",
                   sigma=0.3, train_noise=True, recipe=Recipe(epochs=1), eval_repeats=1)
        for site in (1, 2)
    ]  # fmt: skip
    models = [build_noisy_model(e, digits) for e in members]
    stack = StackedModel(models)
    if name == "spectral_norm":
        with pytest.raises(NotStackableError, match="div"):
            stack.check(digits.train.x[:2], training=True)
    else:
        stack.check(digits.train.x[:2], training=True)
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        together = train_cohort(members, digits)
    assert ("one at a time" in caplog.text) == (name == "spectral_norm")
    for trained in together:
        alone = train_alone(trained.experiment, digits)
        assert trained.metrics == pytest.approx(alone.metrics, abs=1e-6)
