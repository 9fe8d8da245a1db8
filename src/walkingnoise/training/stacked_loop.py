"""Training and evaluation of a ``StackedModel``: K models, one forward/backward per batch."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from walkingnoise._progress import bar_disabled
from walkingnoise.data.augmentation import Augmentation, augmentation_generator
from walkingnoise.data.dataset import Split
from walkingnoise.training.distillation import (
    Distillation,
    blended,
    clean_teacher,
    stacked_soft_targets,
)
from walkingnoise.training.evaluate import Evaluation
from walkingnoise.training.loop import EpochRecord, TrainHistory, make_optimizer
from walkingnoise.training.recipe import Recipe
from walkingnoise.training.stacked import KeptPrefixes, StackedModel, on_merged_batches

log = logging.getLogger(__name__)


def train_stacked(
    stack: StackedModel,
    train: Split,
    recipe: Recipe,
    *,
    seeds: Sequence[int],
    clamps: Sequence[float | None] | None = None,
    validation: Split | None = None,
    progress: bool | None = None,
    class_weights: torch.Tensor | None = None,
    augmentation: Augmentation | None = None,
    teacher: torch.nn.Module | None = None,
    distillation: Distillation | None = None,
) -> list[TrainHistory]:
    """Train every model of ``stack`` as ``train_model`` would train it alone.

    Model k draws its batches from a permutation seeded by ``seeds[k]`` (the same batches as
    alone), and is clamped to ``clamps[k]`` (None: not clamped). The loss is the sum of the
    models' mean cross-entropies, so each model's gradient is its own. When all seeds are equal
    every batch is gathered once and shared, so layers before the first noise or weight
    that differs between the models run once for all. ``class_weights`` and ``augmentation``
    act as in ``train_model``: model k's batches are augmented from ``seeds[k]``'s generator.
    With ``teacher`` and ``distillation`` every model is a student of ``teacher`` (as
    ``DistillationLoss`` trains one alone); the teacher runs once on a shared batch. A model
    whose epoch loss is not finite ends with that epoch's weights, as alone, where training
    stops there; the stack stops once every model has.
    """
    if (teacher is None) != (distillation is None):
        raise ValueError("give both a teacher and its distillation settings, or neither")
    k_models = stack.size
    if len(seeds) != k_models:
        raise ValueError(f"expected {k_models} seeds, got {len(seeds)}")
    clamps = list(clamps) if clamps is not None else [None] * k_models
    device = train.x.device
    if class_weights is not None:  # on the device once, not copied there every step
        class_weights = class_weights.to(device)
    limits = None
    if any(c is not None for c in clamps):  # on the device once, not copied there every step
        limits = torch.tensor([math.inf if c is None else c for c in clamps], device=device)
    optimizer, scheduler = make_optimizer(stack.parameters(), recipe, stacked=True)
    shared = len(set(seeds)) == 1
    generators = [torch.Generator().manual_seed(seed) for seed in seeds[: 1 if shared else None]]
    augment_with = [augmentation_generator(s) for s in seeds[: 1 if shared else None]]
    histories = [TrainHistory() for _ in range(k_models)]
    diverged: dict[int, dict[str, torch.Tensor]] = {}  # each such model's state at the time
    n = len(train)
    bar = tqdm(range(recipe.epochs), desc="epochs", unit="epoch", disable=bar_disabled(progress))
    for epoch in bar:
        stack.train()
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        loss_sum = torch.zeros(k_models, dtype=torch.float64, device=device)
        correct = torch.zeros(k_models, dtype=torch.int64, device=device)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        for start in range(0, n, recipe.batch_size):
            index = order[:, start : start + recipe.batch_size]
            size = index.shape[1]
            if size < 2 and recipe.batch_size > 1:
                continue
            if shared:
                y = train.y.index_select(0, index[0]).expand(k_models, size)
                x = train.x.index_select(0, index[0])
                if augmentation is not None:
                    x = augmentation(x, augment_with[0], index=index[0])
                logits = stack(x, shared=True)
            else:
                flat = index.reshape(-1)
                x = train.x.index_select(0, flat).view(k_models, size, *train.x.shape[1:])
                y = train.y.index_select(0, flat).view(k_models, size)
                if augmentation is not None:
                    x = torch.stack(
                        [augmentation(x[k], g, index=index[k]) for k, g in enumerate(augment_with)]
                    )
                # the input noise may overwrite x, unless a teacher reads x after the stack
                logits = stack(x, owned=teacher is None)
            per_model, predicted = _mean_cross_entropy(logits, y, class_weights)
            if teacher is not None and distillation is not None:
                per_model = _distilled(per_model, logits, x, shared, teacher, distillation)
            optimizer.zero_grad(set_to_none=True)
            per_model.sum().backward()
            optimizer.step()
            if limits is not None:
                stack.clamp_(limits)
            loss_sum += per_model.detach().double() * size
            correct += (predicted == y).sum(dim=1)
            seen += size
        if seen == 0:
            raise ValueError(f"the training split of {n} samples gives no batch to train on")
        scheduler.step()
        val = None
        if validation is not None and len(validation):
            clean = evaluate_stacked(
                stack, validation, clean=True, batch_size=recipe.eval_batch_size
            )
            val = [e.accuracy for e in clean]
        train_loss = (loss_sum / seen).tolist()
        train_accuracy = (correct.double() / seen).tolist()
        for k, history in enumerate(histories):
            if history.diverged:
                continue
            history.epochs.append(
                EpochRecord(
                    epoch, train_loss[k], train_accuracy[k], None if val is None else val[k], lr
                )
            )
            if not math.isfinite(train_loss[k]):
                history.diverged = True
                diverged[k] = stack.state_dict(k)
                log.warning(
                    "model %d of the stack diverged at epoch %d; its weights stay as they are",
                    k,
                    epoch,
                )
        bar.set_postfix(loss=f"{sum(train_loss) / k_models:.4f}")
        if len(diverged) == k_models:
            break
    bar.close()
    for k, state in diverged.items():  # alone, training stops where the loss is not finite
        stack.load_state(k, state)
    return histories


def _distilled(
    hard: torch.Tensor,
    logits: torch.Tensor,
    x: torch.Tensor,
    shared: bool,
    teacher: torch.nn.Module,
    settings: Distillation,
) -> torch.Tensor:
    """Each model's distillation loss, α · T² · KL + (1 − α) · ``hard`` (its cross-entropy), with
    the teacher's clean logits of its batch: ``x`` is one batch (B, ...) all models share, or
    their own (K, B, ...)."""
    with clean_teacher(teacher):
        # the models' own batches as the stack's layers take them: few samples member by
        # member, so a member's soft targets do not depend on how many others its stack has
        teacher_logits = teacher(x) if shared else on_merged_batches(teacher, x)
    soft = stacked_soft_targets(logits, teacher_logits, settings.temperature)
    return blended(soft, hard, settings.temperature, settings.alpha)


@torch.no_grad()
def evaluate_stacked(
    stack: StackedModel,
    split: Split,
    *,
    repeats: int = 1,
    batch_size: int = 1024,
    clean: bool = False,
    kept: KeptPrefixes | None = None,
) -> list[Evaluation]:
    """Evaluate every model on the same split; ``repeats`` noisy passes, one clean pass.

    ``kept``: clean prefixes to reuse and add to, shared by the stacks of copies of one model
    that evaluate the same splits in turn (see ``StackedModel.prefixes_kept``).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    was_training, was_enabled = stack.training, stack.noise_enabled
    stack.eval()
    stack.noise_enabled = not clean
    noisy = stack.draws_noise()
    # a member that draws no noise keeps one pass, as alone: its repeats are the same numbers,
    # whose mean in float64 may differ from them in the last bit
    passes = [None if stack.draws_noise(k) else 1 for k in range(stack.size)]
    accuracies: list[list[float]] = [[] for _ in range(stack.size)]
    losses: list[list[float]] = [[] for _ in range(stack.size)]
    reuse = noisy and (repeats > 1 or kept is not None)
    try:
        with stack.prefixes_kept(kept=kept) if reuse else contextlib.nullcontext():
            for _ in range(repeats if noisy else 1):
                correct = torch.zeros(stack.size, dtype=torch.float64, device=split.x.device)
                loss = torch.zeros(stack.size, dtype=torch.float64, device=split.x.device)
                for start in range(0, len(split), batch_size):
                    x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
                    logits = stack(x, shared=True)
                    batch_loss, batch_correct = _loss_and_correct(logits, y)
                    loss += batch_loss.double()
                    correct += batch_correct.double()
                for k, (c, lo) in enumerate(zip(correct.tolist(), loss.tolist(), strict=True)):
                    accuracies[k].append(c / len(split))  # one read per pass, not 2 per model
                    losses[k].append(lo / len(split))
    finally:
        if was_training:  # else eval() above left every module as it was asked to be
            stack.train()
        stack.noise_enabled = was_enabled
    return [
        Evaluation(tuple(a[:n]), tuple(lo[:n]))
        for a, lo, n in zip(accuracies, losses, passes, strict=True)
    ]


#: Where a logit's shifted value is clamped before ``exp``: below it exp gives a subnormal
#: float32 (or 0), which the CPU computes about ten times slower, and whatever it adds to a
#: sum whose largest term is exp(0) = 1 is lost in rounding anyway.
EXP_FLOOR = -87.0


def _softmax_parts(
    logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log Σ exp of the shifted logits, the shift, predicted class, exp of the shifted
    logits, their sum) over the last dimension: one max gives both the prediction and the
    shift, where ``argmax`` and ``logsumexp`` would reduce twice."""
    top, predicted = logits.max(dim=-1)
    shift = top.masked_fill(~torch.isfinite(top), 0.0)
    shifted = (logits - shift.unsqueeze(-1)).clamp_min_(EXP_FLOOR)
    # all classes at -inf: NaN (as F.cross_entropy gives), not the clamp's uniform softmax
    shifted.masked_fill_((top == float("-inf")).unsqueeze(-1), float("nan"))
    exps = shifted.exp_()
    total = exps.sum(dim=-1)
    # a logit at +inf: NaN, as F.cross_entropy gives, not +inf
    spread = total.log().masked_fill_(top == float("inf"), float("nan"))
    return spread, shift, predicted, exps, total


class _MeanCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy per model of (K, B, C) logits against targets (K, B), and the
    predicted classes; with class weights (C,), the weighted mean (weights of the samples'
    classes, divided by their sum, as ``F.cross_entropy`` weighs). The backward pass is
    softmax − one-hot from the forward pass's exponentials, not a second ``exp`` as
    ``logsumexp``'s backward computes."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> Any:
        spread, shift, predicted, exps, total = _softmax_parts(logits)
        picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        per_sample = spread - picked.sub_(shift)  # as _loss_and_correct: far from zero too
        if weight is None:
            scale = None
            mean = per_sample.mean(dim=1)
        else:
            sample_weight = weight.to(per_sample.device, per_sample.dtype)[target]
            scale = sample_weight / sample_weight.sum(dim=1, keepdim=True)
            mean = (per_sample * scale).sum(dim=1)
        ctx.save_for_backward(exps.div_(total.unsqueeze(-1)), target, scale)
        ctx.mark_non_differentiable(predicted)
        return mean, predicted

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _predicted: Any) -> Any:
        softmax, target, scale = ctx.saved_tensors  # kept intact, for a graph run backward twice
        minus_one = torch.full_like(softmax[..., :1], -1.0)
        gradient = softmax.scatter_add(-1, target.unsqueeze(-1), minus_one)
        if scale is None:
            return gradient.mul_((grad / softmax.shape[1]).view(-1, 1, 1)), None, None
        return gradient.mul_((grad.view(-1, 1) * scale).unsqueeze(-1)), None, None


def _mean_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy per model, predicted classes) of (K, B, C) logits against targets
    (K, B), as ``F.cross_entropy`` (with ``weight``: its class weights) and ``argmax`` give
    them, in float32 (as autocast would)."""
    wide = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return _MeanCrossEntropy.apply(wide, target, weight)


def _loss_and_correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and number of correct predictions per model of (K, B, C) logits
    against labels ``y`` (B,); the prediction is ``argmax``'s (the first of the largest, a NaN
    counting as the largest)."""
    target = y.unsqueeze(0).expand(logits.shape[0], -1)
    top, predicted = logits.max(dim=-1)
    shift = top.nan_to_num(0.0, 0.0, 0.0)  # no shift for ±inf and NaN, as _softmax_parts
    total = (logits - shift.unsqueeze(-1)).clamp_min_(EXP_FLOOR).exp_().sum(dim=-1)
    # all classes at -inf, or one at +inf: NaN, as F.cross_entropy gives (not the clamp's
    # uniform softmax, nor +inf); marked per sample, since no gradient needs the softmax
    spread = total.log_().masked_fill_(top.isinf(), float("nan"))
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    # log Σ exp(x − top) − (x_label − top), as log_softmax takes it: logits far from zero
    # keep their small differences, which log Σ exp(x) − x_label would round away
    return (spread - picked.sub_(shift)).sum(dim=1), (predicted == target).sum(dim=1)
