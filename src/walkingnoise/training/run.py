"""Run one experiment end to end: data, model, noise, training, clean and noisy evaluation."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from walkingnoise.analysis.weights import weight_statistics
from walkingnoise.data import InMemoryDataset, Split, load_dataset
from walkingnoise.data.augmentation import Augmentation
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model, check_logits
from walkingnoise.models.registry import check_trainable
from walkingnoise.noise.instrument import NoisyModel, instrument, instrument_like
from walkingnoise.noise.weight import set_weight_noise, weight_noise_active, weight_noise_disabled
from walkingnoise.training.checkpoint import CheckpointError, load_checkpoint
from walkingnoise.training.distillation import DistillationLoss
from walkingnoise.training.evaluate import (
    Evaluation,
    accuracy_and_loss,
    evaluate,
    evaluate_clean,
)
from walkingnoise.training.loop import TrainHistory, train_model
from walkingnoise.training.recipe import Recipe

log = logging.getLogger(__name__)

#: The splits every experiment is evaluated on, clean and noisy.
EVALUATED_SPLITS = ("validation", "test")


@dataclass
class ExperimentResult:
    """Metrics of one experiment plus the trained model.

    ``metrics`` holds ``{clean,noisy}_{validation,test}_{accuracy,loss}`` and their ``_std``
    over the noisy repeats, all accuracies as fractions in [0, 1].
    """

    experiment: Experiment
    model: NoisyModel
    history: TrainHistory
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def weights(self) -> dict[str, dict[str, float]]:
        """Per-layer weight statistics of the trained model."""
        return weight_statistics(self.model.source)


def build_noisy_model(experiment: Experiment, dataset: InMemoryDataset) -> NoisyModel:
    """Build the experiment's model for ``dataset``, instrument it, and configure its noise.

    The global generator is seeded with the experiment's seed first, so the initial weights are
    a function of the seed alone; the model draws its training noise (activation and weight
    noise) from its own generator, seeded by ``experiment.training_noise_seed()``.
    """
    noisy = _instrumented(experiment, _seeded_model(experiment, dataset), dataset)
    return _configured(noisy, experiment, dataset.train.x.device)


def build_noisy_models(
    experiments: Sequence[Experiment], dataset: InMemoryDataset
) -> list[NoisyModel]:
    """:func:`build_noisy_model` of each experiment, the same models, built faster together.

    A cohort's models share an architecture: after the first of each (model, batchnorm), the
    others are instrumented like it (:func:`instrument_like`), without tracing and running
    them again, which took most of the time of building one. Where that does not apply, or
    instrumenting the first drew random numbers (so the others' would differ), each is built
    as alone.
    """
    device = dataset.train.x.device
    templates: dict[tuple[str, bool], NoisyModel | None] = {}
    models = []
    for experiment in experiments:
        clean = _seeded_model(experiment, dataset)
        key = (experiment.model, experiment.batchnorm)
        if key not in templates:  # the first of its architecture: traced, and a template
            drawn = _random_state(device)
            noisy = _instrumented(experiment, clean, dataset)
            after = _random_state(device)
            same = all(torch.equal(a, b) for a, b in zip(drawn, after, strict=True))
            templates[key] = noisy if same else None
        else:
            template = templates[key]
            like = None if template is None else instrument_like(clean, template)
            noisy = like if like is not None else _instrumented(experiment, clean, dataset)
        models.append(_configured(noisy, experiment, device))
    return models


def _seeded_model(experiment: Experiment, dataset: InMemoryDataset) -> nn.Module:
    """The experiment's clean model, its weights drawn after seeding the global generator with
    the experiment's seed, on the dataset's device."""
    torch.manual_seed(experiment.seed)
    clean = build_model(
        experiment.model,
        dataset.input_shape,
        dataset.num_classes,
        batchnorm=experiment.batchnorm,
    )
    return clean.to(dataset.train.x.device)


def _instrumented(experiment: Experiment, clean: nn.Module, dataset: InMemoryDataset) -> NoisyModel:
    """``clean`` instrumented (traced with a batch of the dataset), its logits checked, and
    that it has a parameter to train."""
    noisy = instrument(clean, dataset.train.x[:2])
    check_logits(experiment.model, noisy, dataset.train.x[:2], dataset.num_classes)
    check_trainable(experiment.model, clean)
    return noisy


def _random_state(device: torch.device) -> list[torch.Tensor]:
    """The states of the global generators that instrumenting on ``device`` could draw from:
    the CPU's, and the GPU's on a GPU."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _configured(noisy: NoisyModel, experiment: Experiment, device: torch.device) -> NoisyModel:
    """``noisy`` with the experiment's noise, drawn from its own training-noise generator on
    ``device``."""
    configure_noise(noisy, experiment, seeded_generator(experiment.training_noise_seed(), device))
    return noisy


def configure_noise(
    model: NoisyModel, experiment: Experiment, generator: torch.Generator | None
) -> None:
    """Give ``model`` the experiment's activation noise and weight noise, drawn from ``generator``.

    Both are on in evaluation and, with ``train_noise``, in training; weight noise η = 0 leaves
    the weights clean.
    """
    model.set_noise(experiment.noise_model(), experiment.placement_spec(), experiment.sigma)
    model.set_generator(generator)
    set_weight_noise(
        model, experiment.weight_noise, training=experiment.train_noise, generator=generator
    )


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def train_experiment(
    experiment: Experiment,
    dataset: InMemoryDataset,
    *,
    progress: bool | None = None,
    teacher: nn.Module | None = None,
) -> tuple[NoisyModel, TrainHistory]:
    """Build and train the experiment's model (with its training noise, if any).

    A distillation experiment learns from ``teacher``; without one, its teacher is loaded from
    the checkpoint its settings name, or its clean training is trained first (see
    :func:`load_teacher`).
    """
    loss = None
    if experiment.distillation is not None:
        if teacher is None:
            teacher = load_teacher(experiment, dataset, progress=progress)
        loss = DistillationLoss(teacher, experiment.distillation, dataset.class_weights)
    model = build_noisy_model(experiment, dataset)
    history = train_model(
        model,
        dataset.train,
        experiment.recipe,
        seed=experiment.seed,
        validation=dataset.validation,
        progress=progress,
        loss=loss,
        class_weights=dataset.class_weights if loss is None else None,  # else the loss has them
        augmentation=training_augmentation(experiment.recipe, dataset),
    )
    return model, history


def training_augmentation(recipe: Recipe, dataset: InMemoryDataset) -> Augmentation | None:
    """The dataset's training augmentation if the recipe asks for it, else None."""
    return dataset.augmentation if recipe.augment else None


def load_teacher(
    experiment: Experiment, dataset: InMemoryDataset, *, progress: bool | None = None
) -> NoisyModel:
    """The teacher of a distillation experiment, on the dataset's device.

    ``teacher: clean`` trains ``experiment.clean_training()`` here (a sweep instead shares one
    stored clean training, see ``sweep.work``); a path is read as a checkpoint file, which must
    hold a model of the same dataset.
    """
    settings = experiment.distillation
    if settings is None:
        raise ValueError("the experiment has no distillation settings, hence no teacher")
    clean = experiment.teacher_training()
    if clean is not None:
        log.info("training the clean teacher %s", clean.content_hash()[:12])
        return train_experiment(clean, dataset, progress=progress)[0]
    return teacher_from_file(experiment).to(dataset.train.x.device)


def teacher_from_file(experiment: Experiment) -> NoisyModel:
    """The teacher model a distillation experiment reads from a checkpoint file, checked: the
    file exists, is a walkingnoise checkpoint, and holds a model of the experiment's dataset.
    Raises ``ValueError`` naming ``distillation.teacher`` and the file."""
    settings = experiment.distillation
    if settings is None or experiment.teacher_file() is None:
        raise ValueError("the experiment does not distil from a checkpoint file")
    path = Path(settings.teacher).expanduser()
    if not path.is_file():
        where = ""
        if not path.is_absolute():
            where = f" (looked for {path.absolute()}: a relative path is read from the current "
            where += "directory)"
        raise ValueError(f"distillation.teacher {settings.teacher}: no such checkpoint file{where}")
    try:
        taught, model = load_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(f"distillation.teacher {error}") from None
    if taught.dataset != experiment.dataset:
        raise ValueError(
            f"distillation.teacher {settings.teacher}: trained on {taught.dataset}, "
            f"not {experiment.dataset}"
        )
    return model


def evaluate_experiment(
    experiment: Experiment, model: NoisyModel, dataset: InMemoryDataset
) -> dict[str, float]:
    """Clean and noisy metrics on validation and test, with the experiment's evaluation noise.

    Also records ``chance_accuracy`` (1/K), the floor of the midpoint fit, and ``test_size``,
    which sets the binomial error of an accuracy.

    The model's noise (activation and weight noise) is set to the experiment's and drawn from a
    generator seeded with ``experiment.evaluation_seed()``, so a shared clean model gives every
    inference-only experiment the noise it would get alone (``evaluate_shared`` computes it
    with the same draws, to float32 rounding). The clean metrics have neither.
    """
    generator = seeded_generator(experiment.evaluation_seed(), dataset.test.x.device)
    configure_noise(model, experiment, generator)
    batch = experiment.recipe.eval_batch_size
    clean, noisy = {}, {}
    for split in EVALUATED_SPLITS:
        data = dataset.split(split)
        with weight_noise_disabled(model):
            clean[split] = evaluate_clean(model, data, batch_size=batch)
        noisy[split] = evaluate_noisy(
            model, data, repeats=experiment.eval_repeats, batch_size=batch
        )
    return experiment_metrics(dataset, clean, noisy)


def evaluate_noisy(
    model: NoisyModel, split: Split, *, repeats: int = 1, batch_size: int = 1024
) -> Evaluation:
    """``evaluate`` with the model's noise, repeated ``repeats`` times also when only weight
    noise is active (``evaluate`` looks at the noise sites alone)."""
    was_training = model.training
    model.eval()
    weights_noisy = weight_noise_active(model)
    model.train(was_training)
    if not weights_noisy:
        return evaluate(model, split, repeats=repeats, batch_size=batch_size)
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    runs = [accuracy_and_loss(model, split, batch_size) for _ in range(repeats)]
    return Evaluation(tuple(a for a, _ in runs), tuple(loss for _, loss in runs))


def experiment_metrics(
    dataset: InMemoryDataset, clean: dict[str, Evaluation], noisy: dict[str, Evaluation]
) -> dict[str, float]:
    """The flat metrics stored for an experiment, from its clean and noisy evaluations."""
    metrics: dict[str, float] = {
        "chance_accuracy": dataset.chance_accuracy,
        "test_size": len(dataset.test),
    }
    for split in EVALUATED_SPLITS:
        metrics |= clean[split].as_dict(f"clean_{split}")
        metrics |= noisy[split].as_dict(f"noisy_{split}")
    return metrics


def run_experiment(
    experiment: Experiment,
    *,
    dataset: InMemoryDataset | None = None,
    data_root: str | Path | None = None,
    progress: bool | None = None,
    teacher: nn.Module | None = None,
) -> ExperimentResult:
    """Train and evaluate one experiment; pass ``dataset`` to reuse data already in memory.

    ``teacher`` is the teacher of a distillation experiment (see :func:`train_experiment`).
    """
    started = time.perf_counter()
    if dataset is None:
        dataset = load_dataset(experiment.dataset, root=data_root)
    loaded = time.perf_counter()
    model, history = train_experiment(experiment, dataset, progress=progress, teacher=teacher)
    trained = time.perf_counter()
    metrics = evaluate_experiment(experiment, model, dataset)
    finished = time.perf_counter()
    log.info(
        "%s: clean test accuracy %.4f, noisy %.4f ± %.4f",
        experiment.content_hash()[:12],
        metrics["clean_test_accuracy"],
        metrics["noisy_test_accuracy"],
        metrics["noisy_test_accuracy_std"],
    )
    seconds = {"load": loaded - started, "train": trained - loaded, "evaluate": finished - trained}
    return ExperimentResult(experiment, model, history, metrics, seconds)


def history_records(history: TrainHistory) -> list[dict[str, Any]]:
    """The per-epoch history as plain dicts (JSON-ready)."""
    return [vars(record).copy() for record in history.epochs]
