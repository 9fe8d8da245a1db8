"""Knowledge distillation: the loss by hand, its settings, the clean teacher, and training."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F

from walkingnoise.data import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model
from walkingnoise.noise import AdditiveNoise, GlobalPlacement, instrument
from walkingnoise.noise.weight import attach_weight_noise
from walkingnoise.training import Recipe
from walkingnoise.training.checkpoint import save_checkpoint
from walkingnoise.training.distillation import (
    Distillation,
    DistillationLoss,
    distillation_loss,
    stacked_soft_targets,
)
from walkingnoise.training.run import train_experiment


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread, as sweep workers use: small models train fastest so on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


STUDENT = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [-0.5, 0.5, 2.5]]
LABELS = [1, 2]


def _softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def _by_hand(temperature: float, alpha: float) -> float:
    """α·T²·mean KL(p_teacher ‖ p_student) at T, plus (1−α)·mean cross-entropy at T = 1."""
    kl = ce = 0.0
    for s, t, y in zip(STUDENT, TEACHER, LABELS, strict=True):
        p_t, p_s = _softmax(t, temperature), _softmax(s, temperature)
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
        ce -= math.log(_softmax(s, 1.0)[y])
    n = len(LABELS)
    return alpha * temperature**2 * kl / n + (1 - alpha) * ce / n


@pytest.mark.parametrize(("temperature", "alpha"), [(6.0, 0.9), (2.0, 0.3), (1.0, 0.5)])
def test_loss_equals_a_hand_computation(temperature: float, alpha: float) -> None:
    loss = distillation_loss(
        torch.tensor(STUDENT, dtype=torch.float64),
        torch.tensor(TEACHER, dtype=torch.float64),
        torch.tensor(LABELS),
        temperature=temperature,
        alpha=alpha,
    )
    assert loss.item() == pytest.approx(_by_hand(temperature, alpha), rel=1e-12)


def test_alpha_zero_is_cross_entropy_and_equal_logits_have_no_soft_loss() -> None:
    student, teacher = torch.tensor(STUDENT), torch.tensor(TEACHER)
    labels = torch.tensor(LABELS)
    hard = distillation_loss(student, teacher, labels, temperature=6.0, alpha=0.0)
    torch.testing.assert_close(hard, F.cross_entropy(student, labels))
    same = distillation_loss(student, student, labels, temperature=6.0, alpha=1.0)
    assert abs(same.item()) < 1e-6


def test_class_weights_weigh_the_cross_entropy_part() -> None:
    student, teacher = torch.tensor(STUDENT), torch.tensor(TEACHER)
    labels = torch.tensor(LABELS)
    weights = torch.linspace(0.5, 4.0, student.shape[1])
    hard = distillation_loss(
        student, teacher, labels, temperature=6.0, alpha=0.0, class_weights=weights
    )
    torch.testing.assert_close(hard, F.cross_entropy(student, labels, weight=weights))
    assert not torch.allclose(hard, F.cross_entropy(student, labels))


def test_the_teacher_gets_no_gradient() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor(LABELS)).backward()
    assert student.grad is not None
    assert teacher.grad is None


@pytest.mark.parametrize("shared", [False, True], ids=["own-teacher-logits", "shared"])
def test_stacked_soft_targets_are_each_models_kl_divergence(shared: bool) -> None:
    """Per model of a stack, the soft term of ``distillation_loss`` before α · T², and the
    gradient it gives each model's logits."""
    torch.manual_seed(0)
    student = torch.randn(3, 16, 5, requires_grad=True)
    teacher = torch.randn(16, 5).expand(3, 16, 5) if shared else torch.randn(3, 16, 5)
    soft = stacked_soft_targets(student, teacher[0] if shared else teacher, temperature=4.0)
    soft.sum().backward()
    for k in range(3):
        alone = student[k].detach().requires_grad_(True)
        expected = F.kl_div(
            F.log_softmax(alone / 4.0, dim=1),
            F.log_softmax(teacher[k] / 4.0, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        expected.backward()
        torch.testing.assert_close(soft[k], expected)
        torch.testing.assert_close(student.grad[k], alone.grad)


def test_settings_defaults_and_validation() -> None:
    settings = Distillation()
    assert (settings.temperature, settings.alpha, settings.teacher) == (6.0, 0.9, "clean")
    for bad in ({"alpha": 1.5}, {"alpha": -0.1}, {"temperature": 0}, {"temperature": math.inf},
                {"teacher": "  "}, {"temp": 3}):  # fmt: skip
        with pytest.raises(pydantic.ValidationError):
            Distillation(**bad)


def test_the_teacher_runs_clean_in_eval_mode_and_keeps_its_mode(digits: InMemoryDataset) -> None:
    torch.manual_seed(0)
    teacher = instrument(
        build_model("mlp", digits.input_shape, digits.num_classes), digits.train.x[:2]
    )
    teacher.eval()
    x, y = digits.train.x[:32], digits.train.y[:32]
    with torch.no_grad():
        clean_logits = teacher(x)
    teacher.set_noise(AdditiveNoise(), GlobalPlacement(), 1.0)
    attach_weight_noise(teacher, 0.5)
    teacher.train()
    student_logits = torch.randn(32, digits.num_classes, requires_grad=True)
    settings = Distillation(temperature=3.0, alpha=0.5)
    loss = DistillationLoss(teacher, settings)(student_logits, x, y)
    expected = distillation_loss(student_logits, clean_logits, y, temperature=3.0, alpha=0.5)
    torch.testing.assert_close(loss, expected)
    assert teacher.training
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())


def _student(weight_noise: float = 0.04, **distillation: object) -> Experiment:
    return Experiment(
        noise="none",
        weight_noise=weight_noise,
        train_noise=True,
        recipe=Recipe(epochs=2),
        eval_repeats=2,
        seed=3,
        distillation=Distillation(temperature=4.0, alpha=0.8, **distillation),
    )


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_clean_teacher_is_trained_when_none_is_given(digits: InMemoryDataset) -> None:
    student = _student()
    alone, history = train_experiment(student, digits, progress=False)
    teacher, _ = train_experiment(student.clean_training(), digits, progress=False)
    given, _ = train_experiment(student, digits, progress=False, teacher=teacher)
    assert len(history.epochs) == 2
    assert _states_equal(alone.source, given.source)
    plain = student.model_copy(update={"distillation": None})
    undistilled, _ = train_experiment(plain, digits, progress=False)
    assert not _states_equal(alone.source, undistilled.source)


def test_a_teacher_checkpoint_file_is_used(digits: InMemoryDataset, tmp_path: Path) -> None:
    # Without weight noise: the two experiments differ in identity, hence in their noise seeds.
    clean = _student().clean_training()
    teacher, _ = train_experiment(clean, digits, progress=False)
    path = save_checkpoint(tmp_path / "teacher.pt", teacher, clean, digits)
    from_file, _ = train_experiment(_student(0.0, teacher=str(path)), digits, progress=False)
    from_model, _ = train_experiment(_student(0.0), digits, progress=False, teacher=teacher)
    assert _states_equal(from_file.source, from_model.source)


def test_a_missing_or_foreign_teacher_is_a_one_line_error(
    digits: InMemoryDataset, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no such checkpoint file"):
        train_experiment(_student(teacher=str(tmp_path / "absent.pt")), digits, progress=False)
    foreign = Experiment(dataset="mnist", noise="none")
    teacher, _ = train_experiment(_student().clean_training(), digits, progress=False)
    path = save_checkpoint(tmp_path / "mnist.pt", teacher, foreign, digits)
    with pytest.raises(ValueError, match="trained on mnist, not digits"):
        train_experiment(_student(teacher=str(path)), digits, progress=False)
