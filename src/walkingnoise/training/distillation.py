"""Knowledge distillation: a student learns from a teacher's softened outputs and the labels.

Hinton et al. (arXiv 1503.02531) train a student on the teacher's class probabilities at a
temperature T; Noisy Machines (Zhou et al., arXiv 2001.04974, Sec. 4) combine it with weight-noise
injection, with T = 6, and find the student tolerates markedly more weight noise. The loss of a
batch, with student logits s, teacher logits t and labels y, is

    L = α · T² · KL(softmax(t / T) ‖ softmax(s / T)) + (1 − α) · CE(s, y)

KL and CE are means over the batch. The T² keeps the soft term's gradient on the scale of the
hard term's as T changes (the gradient of the softened KL falls as 1/T²).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from walkingnoise._numbers import no_bool
from walkingnoise.noise.weight import weight_noise_disabled

#: ``teacher`` value meaning the experiment's own clean training (``Experiment.clean_training``).
CLEAN_TEACHER = "clean"


class Distillation(BaseModel):
    """How a student is distilled: temperature, loss weight and where the teacher comes from.

    Attributes:
        temperature: T of the softened distributions (> 0; Noisy Machines: 6).
        alpha: weight α of the soft-target term in [0, 1]; the hard-label cross-entropy gets
            1 − α. The default 0.9 is the usual choice with Hinton et al.'s loss (most weight on
            the teacher, a little on the labels); α = 1 ignores the labels.
        teacher: ``clean``: the clean training of the same dataset, model, BatchNorm flag,
            recipe and seed (trained once, shared, kept in a sweep's store); otherwise the path
            of a checkpoint file written by this toolkit (``walking-noise train --save``). A path
            is part of the experiment's identity as written, not the file's content; a sweep's
            store keeps the content's digest and stops a run whose file changed
            (``sweep.teacher_files``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=6.0, gt=0)
    alpha: float = Field(default=0.9, ge=0, le=1)
    teacher: str = CLEAN_TEACHER

    _numbers = field_validator("temperature", "alpha", mode="before")(no_bool)

    @field_validator("temperature")
    @classmethod
    def _temperature_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"temperature must be finite, got {value}")
        return value

    @field_validator("teacher")
    @classmethod
    def _teacher_given(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("teacher must be 'clean' or the path of a checkpoint file")
        return value


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 6.0,
    alpha: float = 0.9,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """α · T² · KL(softened teacher ‖ softened student) + (1 − α) · cross-entropy (module doc).

    The teacher's logits are treated as constants (detached); ``class_weights`` weigh the
    cross-entropy's classes (the dataset's, as training without a teacher does).
    """
    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    weight = None if class_weights is None else class_weights.to(student_logits.device)
    hard = F.cross_entropy(student_logits, targets, weight=weight)
    return blended(soft, hard, temperature, alpha)


def blended(
    soft: torch.Tensor, hard: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """The distillation loss from its two terms, α · T² · ``soft`` + (1 − α) · ``hard``: one
    formula for a model alone and for the models of a stack (each its own terms)."""
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def stacked_soft_targets(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(softened teacher ‖ softened student) per model of (K, B, C) student logits, the
    batch mean (``distillation_loss``'s soft term before α · T²); the teacher's logits are
    (B, C), shared by every model, or (K, B, C), and treated as constants."""
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(dim=-1).mean(dim=-1)


@contextmanager
def clean_teacher(teacher: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``teacher`` runs in eval mode, without gradients and without any noise."""
    was_training = teacher.training
    if was_training:
        teacher.eval()
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(weight_noise_disabled(teacher))
            noise_disabled = getattr(teacher, "noise_disabled", None)
            if noise_disabled is not None:
                stack.enter_context(noise_disabled())
            yield teacher
    finally:
        if was_training:
            teacher.train()


class DistillationLoss:
    """The training loss of a student: the teacher's clean logits on the same batch, then
    :func:`distillation_loss`. Called by the training loop as ``loss(logits, x, y)``."""

    def __init__(
        self,
        teacher: nn.Module,
        settings: Distillation,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        self.teacher = teacher
        self.temperature = settings.temperature
        self.alpha = settings.alpha
        self.class_weights = class_weights

    def __call__(
        self, logits: torch.Tensor, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The loss of one batch ``x`` whose student logits are ``logits``."""
        with clean_teacher(self.teacher):
            teacher_logits = self.teacher(x)
        return distillation_loss(
            logits,
            teacher_logits,
            targets,
            temperature=self.temperature,
            alpha=self.alpha,
            class_weights=self.class_weights,
        )
