"""The training loop: in-memory batches, Adam, cosine annealing, optional clamping."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from walkingnoise._progress import bar_disabled
from walkingnoise.data.augmentation import Augmentation, augmentation_generator
from walkingnoise.data.dataset import Split
from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.weight import weight_noise_disabled
from walkingnoise.training.clamp import clamp_weights
from walkingnoise.training.evaluate import accuracy_and_loss, logits_of
from walkingnoise.training.recipe import Recipe

log = logging.getLogger(__name__)

#: A training loss ``(logits, x, y) -> scalar``; the default is cross-entropy of logits and y.
LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EpochRecord:
    """What one epoch did: mean training loss and accuracy (with training noise, if any),
    clean validation accuracy, and the learning rate used."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float | None
    lr: float


@dataclass
class TrainHistory:
    """Per-epoch records; ``diverged`` is set when the loss stopped being finite."""

    epochs: list[EpochRecord] = field(default_factory=list)
    diverged: bool = False


#: Fused Adam updates a tensor in vector lanes and the last ``numel % lanes`` elements one by
#: one, which rounds differently. Tensors with a multiple of this many elements per model have
#: no such tail (for any vector width up to 64 floats), so each element is updated alike alone
#: and in a stack of models; the others use the multi-tensor kernel, which has no tail.
FUSED_MULTIPLE = 64


def make_optimizer(
    parameters: Iterable[torch.Tensor], recipe: Recipe, *, stacked: bool = False
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with the recipe's learning rate, and its per-epoch learning-rate schedule.

    Adam runs as the fused kernel (one pass over each tensor) for tensors with a multiple of
    ``FUSED_MULTIPLE`` elements per model, and over all other tensors at once (``foreach``),
    so a model trains alike alone and in any stack. ``stacked``: the parameters carry a leading
    model dimension.
    """
    params = list(parameters)

    def fusable(p: torch.Tensor) -> bool:
        per_model = p[0].numel() if stacked else p.numel()
        return p.device.type in ("cpu", "cuda") and per_model % FUSED_MULTIPLE == 0

    groups = [
        {"params": [p for p in params if fusable(p)], "fused": True, "foreach": False},
        {"params": [p for p in params if not fusable(p)], "fused": False, "foreach": True},
    ]
    optimizer = torch.optim.Adam(
        [g for g in groups if g["params"]] or params, lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    if recipe.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return optimizer, scheduler


def train_model(
    model: nn.Module,
    train: Split,
    recipe: Recipe,
    *,
    seed: int,
    validation: Split | None = None,
    progress: bool | None = None,
    loss: LossFunction | None = None,
    class_weights: torch.Tensor | None = None,
    augmentation: Augmentation | None = None,
) -> TrainHistory:
    """Train ``model`` in place on ``train`` following ``recipe``.

    Batches are drawn from a permutation seeded by ``seed`` (model initialisation and noise use
    the global generator, seeded by the caller). A final batch of one sample is skipped, since
    BatchNorm cannot normalise it. Validation accuracy is measured without noise (activation
    and weight noise). ``loss`` replaces the cross-entropy (e.g. a
    ``training.distillation.DistillationLoss``); ``class_weights`` (K,) weigh the cross-entropy's
    classes. ``augmentation`` transforms every training batch, drawing from a generator derived
    from ``seed``. ``progress=None`` shows a bar only on a terminal.
    """
    if loss is not None and class_weights is not None:
        raise ValueError("give class_weights to the loss function, not to train_model")
    if class_weights is not None:
        class_weights = class_weights.to(train.x.device)
    optimizer, scheduler = make_optimizer(model.parameters(), recipe)
    generator = torch.Generator().manual_seed(seed)
    augment_with = augmentation_generator(seed) if augmentation is not None else None
    history = TrainHistory()
    n = len(train)
    bar = tqdm(range(recipe.epochs), desc="epochs", unit="epoch", disable=bar_disabled(progress))
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=generator).to(train.x.device)
        # summed where the batches are and read once an epoch: no GPU sync per step
        loss_sum = torch.zeros((), dtype=torch.float64, device=train.x.device)
        correct = torch.zeros((), dtype=torch.int64, device=train.x.device)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        for start in range(0, n, recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            if len(index) < 2 and recipe.batch_size > 1:
                continue  # the one-sample remainder of an epoch: BatchNorm cannot normalise it
            x, y = train.x[index], train.y[index]
            if augmentation is not None:
                x = augmentation(x, augment_with, index=index)
            logits = logits_of(model, x)
            if loss is None:
                batch_loss = F.cross_entropy(logits, y, weight=class_weights)
            else:
                batch_loss = loss(logits, x, y)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            if recipe.clamp is not None:
                clamp_weights(model, recipe.clamp)
            loss_sum += batch_loss.detach().double() * len(index)
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += len(index)
        if seen == 0:
            raise ValueError(f"the training split of {n} samples gives no batch to train on")
        scheduler.step()
        train_loss = loss_sum.item() / seen
        val_accuracy = None
        if validation is not None and len(validation):
            with _noise_off(model):
                val_accuracy = accuracy_and_loss(model, validation, recipe.eval_batch_size)[0]
        record = EpochRecord(epoch, train_loss, correct.item() / seen, val_accuracy, lr)
        history.epochs.append(record)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=_fmt(val_accuracy))
        log.debug("epoch %d: %s", epoch, record)
        if not math.isfinite(train_loss):
            history.diverged = True
            log.warning("training diverged at epoch %d (loss %s); stopping", epoch, train_loss)
            break
    bar.close()
    return history


@contextmanager
def _noise_off(model: nn.Module) -> Iterator[None]:
    """No activation noise (a ``NoisyModel``'s sites) and no weight noise within the block."""
    sites = model.noise_disabled() if isinstance(model, NoisyModel) else nullcontext()
    with sites, weight_noise_disabled(model):
        yield


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
