"""The training loop: per-epoch history, learning-rate schedules, small batches, divergence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from walkingnoise.data import InMemoryDataset, Split
from walkingnoise.models import build_model
from walkingnoise.noise import AdditiveNoise, GlobalPlacement, instrument
from walkingnoise.training import Recipe, evaluate_clean, train_model
from walkingnoise.training.loop import make_optimizer


def _tiny_split(n: int, seed: int = 0) -> Split:
    generator = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 4, 4, generator=generator), torch.arange(n) % 3)


def _tiny_model(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (1, 4, 4), 3, batchnorm=batchnorm)


def _tiny_digits_model(digits: InMemoryDataset) -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", digits.input_shape, digits.num_classes, batchnorm=True)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_history_has_one_record_per_epoch(digits: InMemoryDataset) -> None:
    model = instrument(_tiny_digits_model(digits), digits.train.x[:2])
    history = train_model(
        model, digits.train, Recipe(epochs=4), seed=0, validation=digits.validation
    )
    assert [r.epoch for r in history.epochs] == [0, 1, 2, 3]
    assert not history.diverged
    for record in history.epochs:
        assert math.isfinite(record.train_loss)
        assert 0.0 <= record.train_accuracy <= 1.0
        assert record.val_accuracy is not None
        assert 0.0 <= record.val_accuracy <= 1.0
    # It learns: the loss falls and the model ends well above chance.
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert history.epochs[-1].val_accuracy > 0.5


def test_without_validation_split_val_accuracy_is_none() -> None:
    history = train_model(_tiny_model(False), _tiny_split(32), Recipe(epochs=2), seed=0)
    assert [r.val_accuracy for r in history.epochs] == [None, None]


def test_cosine_schedule_anneals_to_zero() -> None:
    epochs, lr = 8, 1e-2
    recipe = Recipe(epochs=epochs, lr=lr, batch_size=16, schedule="cosine")
    history = train_model(_tiny_model(False), _tiny_split(32), recipe, seed=0)
    lrs = [r.lr for r in history.epochs]
    expected = [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[0] == lr
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] < 0.05 * lr


def test_constant_schedule_keeps_the_learning_rate() -> None:
    recipe = Recipe(epochs=5, lr=3e-3, batch_size=16, schedule="constant")
    history = train_model(_tiny_model(False), _tiny_split(32), recipe, seed=0)
    assert [r.lr for r in history.epochs] == [3e-3] * 5


def test_final_batch_of_one_is_skipped_with_batchnorm() -> None:
    model = _tiny_model(True)
    before = _params(model)
    recipe = Recipe(epochs=2, batch_size=16)
    history = train_model(model, _tiny_split(17), recipe, seed=0)
    assert len(history.epochs) == 2
    assert all(math.isfinite(r.train_loss) for r in history.epochs)
    # The full batches did train.
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_batch_size_one_trains_a_model_without_batchnorm() -> None:
    """Recipe allows batch_size=1; the loop must then train, not silently skip every batch."""
    model = _tiny_model(False)
    before = _params(model)
    history = train_model(model, _tiny_split(8), Recipe(epochs=1, batch_size=1), seed=0)
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(changed), "no optimizer step was taken with batch_size=1"
    assert history.epochs[0].train_loss > 0.0


def test_divergence_is_flagged_and_stops_training() -> None:
    recipe = Recipe(epochs=10, lr=1e30, batch_size=16, schedule="constant")
    history = train_model(_tiny_model(False), _tiny_split(64), recipe, seed=0)
    assert history.diverged
    assert len(history.epochs) < recipe.epochs
    assert not math.isfinite(history.epochs[-1].train_loss)


def test_batch_order_depends_on_the_seed_only() -> None:
    split = _tiny_split(48)
    results = []
    for seed in (0, 0, 1):
        model = _tiny_model(False)  # same initial weights every time
        train_model(model, split, Recipe(epochs=2, batch_size=8), seed=seed)
        results.append(_params(model))
    same = all(torch.equal(a, b) for a, b in zip(results[0], results[1], strict=True))
    different = any(not torch.equal(a, b) for a, b in zip(results[0], results[2], strict=True))
    assert same
    assert different


def test_validation_accuracy_is_measured_without_noise(digits: InMemoryDataset) -> None:
    model = instrument(_tiny_digits_model(digits), digits.train.x[:2])
    model.set_noise(AdditiveNoise(), GlobalPlacement(), 1.0)
    history = train_model(
        model, digits.train, Recipe(epochs=3), seed=0, validation=digits.validation
    )
    assert history.epochs[-1].val_accuracy == evaluate_clean(model, digits.validation).accuracy
    # The noise is still configured after training.
    model.eval()
    assert all(site.is_active() for site in model.sites)


def test_adam_updates_a_stacked_tensor_as_each_model_alone() -> None:
    """Fused where no model's block has a scalar tail; the rest by the multi-tensor kernel."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(64, 64), (10,), (5, 3)]
    k_models = 64  # 64 · 10 is a multiple of the fused block: only the per-model count decides
    alone = [[torch.randn(s, generator=generator) for s in shapes] for _ in range(k_models)]
    stacked = [torch.stack([a[i] for a in alone]).requires_grad_() for i in range(len(shapes))]
    alone = [[t.clone().requires_grad_() for t in a] for a in alone]
    recipe = Recipe(lr=0.01)
    optimizer, _ = make_optimizer(stacked, recipe, stacked=True)
    fused = [[id(p) for p in g["params"]] for g in optimizer.param_groups if g["fused"]]
    assert fused == [[id(stacked[0])]]
    optimizers = [make_optimizer(a, recipe)[0] for a in alone]
    for _ in range(20):
        grads = [torch.randn(t.shape, generator=generator) for t in stacked]
        for tensor, grad in zip(stacked, grads, strict=True):
            tensor.grad = grad.clone()
        optimizer.step()
        for k, (tensors, each) in enumerate(zip(alone, optimizers, strict=True)):
            for tensor, grad in zip(tensors, grads, strict=True):
                tensor.grad = grad[k].clone()
            each.step()
    for k, tensors in enumerate(alone):
        for tensor, together in zip(tensors, stacked, strict=True):
            assert torch.equal(tensor, together[k])
