"""Cohorts: experiments that train or evaluate together as stacks of models.

``train_cohort`` trains noisy-training experiments that share dataset, model and recipe
(clamping may differ) as stacks; ``evaluate_shared`` evaluates inference-only experiments of one
clean model at all their (placement, σ) in stacked passes. Both split the work to fit the memory
budget, and fall back to one model at a time, with a log line, for models a stack cannot run.
"""

from __future__ import annotations

import copy
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import nn

from walkingnoise.data.dataset import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.noise.instrument import NoisyModel
from walkingnoise.noise.models import NoiseLevel
from walkingnoise.noise.site import SiteInfo
from walkingnoise.noise.weight import weight_noise_disabled, weight_noise_preserved
from walkingnoise.training.evaluate import Evaluation, evaluate_clean
from walkingnoise.training.memory import (
    is_out_of_memory,
    kept_prefixes_bytes,
    models_per_stack,
)
from walkingnoise.training.run import (
    EVALUATED_SPLITS,
    ExperimentResult,
    build_noisy_model,
    build_noisy_models,
    configure_noise,
    evaluate_experiment,
    experiment_metrics,
    seeded_generator,
    train_experiment,
    training_augmentation,
)
from walkingnoise.training.stacked import KeptPrefixes, NotStackableError, StackedModel
from walkingnoise.training.stacked_loop import evaluate_stacked, train_stacked

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


#: Fewest models per stack, on average, for which stacks of one seed beat mixed ones.
MIN_SHARED_STACK = 8


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


#: Why models ran one at a time in this process, said once each (a sweep's units repeat them).
_SAID: set[str] = set()


def _say_alone(doing: str, count: int, reason: str) -> None:
    """Log that ``count`` experiments run one at a time and why: at INFO the first time a
    reason comes up in this process, at DEBUG after that."""
    level = logging.DEBUG if reason in _SAID else logging.INFO
    _SAID.add(reason)
    noun = "experiment" if count == 1 else "experiments"
    log.log(level, "%s %d %s one at a time: %s", doing, count, noun, reason)


def in_chunks_that_fit(
    groups: Sequence[Sequence[T]], size: int, run: Callable[[Sequence[T]], list[R]]
) -> Iterator[tuple[Sequence[T], list[R]]]:
    """``run`` each group in chunks of at most ``size`` items, yielding (chunk, its results).
    A chunk that runs out of GPU memory (the budget is an estimate; the allocator, cuBLAS and
    other processes take their part) runs again as two halves, and every later chunk, of any
    group, is no larger, so a sweep does not die because a stack did not fit; a single item
    that does not fit raises."""
    for group in groups:
        queue = deque(_chunks(group, size))
        while queue:
            chunk = queue.popleft()
            results = _unless_out_of_memory(run, chunk)
            if results is not None:
                yield chunk, results
                continue
            size = max(1, len(chunk) // 2)
            log.warning(
                "a stack of %d models ran out of GPU memory; stacks of at most %d from now on",
                len(chunk),
                size,
            )
            gc.collect()  # the failed stack's frames are gone with its exception
            torch.cuda.empty_cache()
            rest = [item for part in (chunk, *queue) for item in part]
            queue = deque(_chunks(rest, size))


def _unless_out_of_memory(
    run: Callable[[Sequence[T]], list[R]], chunk: Sequence[T]
) -> list[R] | None:
    """``run(chunk)``, or None if it ran out of GPU memory with more than one item."""
    try:
        return run(chunk)
    except Exception as error:
        if len(chunk) == 1 or not is_out_of_memory(error):
            raise
        return None


def train_cohort(
    experiments: Sequence[Experiment],
    dataset: InMemoryDataset,
    *,
    max_models: int | None = None,
    progress: bool | None = False,
    teacher: NoisyModel | None = None,
) -> list[ExperimentResult]:
    """Train and evaluate noisy-training experiments of one cohort, as stacks where possible.

    Stacks are formed per seed, with the models that put noise on the input apart, so the
    models of a stack see the same batches and share everything before their first layer;
    unless that leaves fewer than ``MIN_SHARED_STACK`` models per stack on average, when one
    stack of mixed seeds is faster. Experiments with weight noise stack with the others;
    distillation experiments (students of ``teacher``, which runs once per shared batch) stack
    with those of the same distillation settings. Where ``stacking_slower`` says why, every
    experiment trains one at a time. Results come back in the order of ``experiments``.
    """
    if not experiments:
        return []
    if teacher is None:
        for experiment in experiments:
            if experiment.distillation is not None:
                raise ValueError(
                    f"experiment {experiment.content_hash()[:12]} distils from a teacher: "
                    "give train_cohort(..., teacher=...)"
                )
    probe = build_noisy_model(experiments[0], dataset)
    reason = stacking_slower(probe)
    if reason is not None:
        _say_alone("training", len(experiments), reason)
        return [train_alone(e, dataset, teacher=teacher) for e in experiments]
    recipe = experiments[0].recipe
    device = dataset.train.x.device
    weight_noise = any(e.weight_noise for e in experiments)
    fit = models_per_stack(
        probe, recipe.batch_size, device, training=True, weight_noise=weight_noise
    )
    # the stack is evaluated too, in batches of eval_batch_size: more samples than it trains on
    evaluated = models_per_stack(
        probe,
        _evaluation_batch(recipe.eval_batch_size, dataset),
        device,
        training=False,
        weight_noise=weight_noise,
    )
    fit = min(fit, evaluated)
    size = min(fit, max_models or fit)
    sites = probe.site_table
    results: list[ExperimentResult | None] = [None] * len(experiments)
    by_loss: dict[object, list[int]] = {}
    for i, experiment in enumerate(experiments):
        by_loss.setdefault(experiment.distillation, []).append(i)
    groups: dict[tuple, list[int]] = {}
    for settings, members in by_loss.items():
        per_seed: dict[tuple, list[int]] = {}
        for i in members:
            input_noise = _first_site(experiments[i], sites) == 0
            per_seed.setdefault((settings, experiments[i].seed, input_noise), []).append(i)
        if len(members) < MIN_SHARED_STACK * len(per_seed):
            per_seed = {(settings,): members}
        groups |= per_seed

    def train(chunk: Sequence[int]) -> list[ExperimentResult]:
        return _train_chunk([experiments[i] for i in chunk], dataset, progress, teacher)

    for chunk, trained in in_chunks_that_fit(list(groups.values()), size, train):
        for i, result in zip(chunk, trained, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def stacking_slower(model: NoisyModel, device: torch.device | None = None) -> str | None:
    """Why this model's trainings, and its evaluations with weight noise, run one at a time
    on ``device`` (None: where the model is), or None.

    On the CPU, a model with convolutions: a stack runs them as grouped convolutions over every
    member's activations at once, which was measured slower there than one model at a time
    (the trainings of a LeNet-5 walking sweep, a CNN-S training step). Its evaluations with
    activation noise still stack, since sharing the clean prefix before the first noisy site
    saves more; with weight noise there is no clean prefix.
    """
    if device is None:
        device = next(model.parameters()).device
    convolutions = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.net.modules())
    if device.type == "cpu" and convolutions:
        return "a model with convolutions, on the CPU (stacked ones are slower there)"
    return None


def trains_alone(
    model: NoisyModel, experiment: Experiment, example: torch.Tensor, device: torch.device
) -> str | None:
    """Why ``train_cohort`` would train a cohort of ``experiment`` one model at a time on
    ``device``, or None where it stacks: ``stacking_slower`` there, or a stack that cannot
    run two copies of ``model`` (the experiment's instrumented model on the CPU, which keeps
    its own settings) in training on the ``example`` batch. That is a matter of the model's
    structure, checked on the CPU, so probing takes no memory of the device. A sweep cuts
    such cohorts into units of one training, so a stopped run keeps every one it finished."""
    reason = stacking_slower(model, device)
    if reason is not None:
        return reason
    copies = [copy.deepcopy(model) for _ in range(2)]
    for member in copies:
        configure_noise(member, experiment, seeded_generator(0, "cpu"))
    try:
        StackedModel(copies).check(example, training=True)
    except NotStackableError as error:
        return str(error)
    return None


def _train_chunk(
    chunk: Sequence[Experiment],
    dataset: InMemoryDataset,
    progress: bool | None,
    teacher: NoisyModel | None,
) -> list[ExperimentResult]:
    started = time.perf_counter()
    models = build_noisy_models(chunk, dataset)
    try:
        stack = StackedModel(models)
        stack.check(dataset.train.x[:2], training=True)
    except NotStackableError as error:
        _say_alone("training", len(chunk), str(error))
        return [train_alone(e, dataset, teacher=teacher) for e in chunk]
    distillation = chunk[0].distillation
    histories = train_stacked(
        stack,
        dataset.train,
        chunk[0].recipe,
        seeds=[e.seed for e in chunk],
        clamps=[e.recipe.clamp for e in chunk],
        validation=dataset.validation,
        progress=progress,
        class_weights=dataset.class_weights,
        augmentation=training_augmentation(chunk[0].recipe, dataset),
        teacher=teacher if distillation is not None else None,
        distillation=distillation,
    )
    trained = time.perf_counter()
    repeats = chunk[0].eval_repeats
    device = dataset.test.x.device
    stack.set_generators(evaluation_generators(chunk, device))
    batch = chunk[0].recipe.eval_batch_size
    clean = {s: evaluate_stacked(stack, dataset.split(s), clean=True, batch_size=batch)
             for s in EVALUATED_SPLITS}  # fmt: skip
    noisy = {
        s: evaluate_stacked(
            stack, dataset.split(s), repeats=repeats, batch_size=batch, kept=_kept(repeats, device)
        )
        for s in EVALUATED_SPLITS
    }
    stack.write_back(models)
    finished = time.perf_counter()
    seconds = {
        "train": (trained - started) / len(chunk),
        "evaluate": (finished - trained) / len(chunk),
    }
    return [
        ExperimentResult(
            experiment,
            model,
            histories[k],
            experiment_metrics(
                dataset, {s: clean[s][k] for s in clean}, {s: noisy[s][k] for s in noisy}
            ),
            dict(seconds),
        )
        for k, (experiment, model) in enumerate(zip(chunk, models, strict=True))
    ]


def train_alone(
    experiment: Experiment, dataset: InMemoryDataset, *, teacher: NoisyModel | None = None
) -> ExperimentResult:
    """Train and evaluate one experiment by itself: the path for models a stack cannot run
    (``teacher``: a distillation experiment's)."""
    started = time.perf_counter()
    model, history = train_experiment(experiment, dataset, progress=False, teacher=teacher)
    trained = time.perf_counter()
    metrics = evaluate_experiment(experiment, model, dataset)
    seconds = {"train": trained - started, "evaluate": time.perf_counter() - trained}
    return ExperimentResult(experiment, model, history, metrics, seconds)


def evaluate_shared(
    model: NoisyModel,
    experiments: Sequence[Experiment],
    dataset: InMemoryDataset,
    *,
    max_models: int | None = None,
) -> list[dict[str, float]]:
    """Metrics of inference-only experiments that all evaluate one trained ``model``.

    The clean metrics are computed once; the noisy ones in stacks of copies of the model, each
    copy with its experiment's placement, σ and weight noise. Experiments are stacked by their
    first noisy site (with weight noise: the first layer), so the stack computes the clean part
    of the network before it only once; and since every member of a stack starts its noise at
    that site, a layer after it that maps the noise once for all of them (``StackedModel``)
    computes each experiment as it computes it in any other stack. ``model`` keeps its own
    noise settings.
    """
    if not experiments:
        return []
    batch = experiments[0].recipe.eval_batch_size
    with model.noise_preserved():
        model.clear_noise()
        clean = {s: evaluate_clean(model, dataset.split(s), batch_size=batch)
                 for s in EVALUATED_SPLITS}  # fmt: skip
    reason = stacking_slower(model)
    alone = [i for i, e in enumerate(experiments) if e.weight_noise and reason is not None]
    stacked = sorted(set(range(len(experiments))) - set(alone))
    device = dataset.test.x.device
    fit = models_per_stack(
        model,
        _evaluation_batch(batch, dataset),
        device,
        training=False,
        weight_noise=any(experiments[i].weight_noise for i in stacked),
    )
    size = min(fit, max_models or fit)
    sites = model.site_table
    by_noise: dict[object, list[int]] = {}
    for i in stacked:
        experiment = experiments[i]
        site = _first_site(experiment, sites)
        key = (experiment.noise_model(), experiment.eval_repeats, site, experiment.weight_noise > 0)
        by_noise.setdefault(key, []).append(i)
    metrics: list[dict[str, float]] = [{} for _ in experiments]
    if alone:
        members = [experiments[i] for i in alone]
        for i, values in zip(
            alone, _evaluate_alone(model, members, dataset, str(reason)), strict=True
        ):
            metrics[i] = values
    # the stacks set each experiment's weight noise; the model's own (if any) stays off, as alone
    stacks: dict[int, StackedModel | NotStackableError] = {}
    # the model's clean runs on each batch, for every stack's prefix, within the budget
    kept = KeptPrefixes(kept_prefixes_bytes(device))

    def evaluate(chunk: Sequence[int]) -> list[dict[str, float]]:
        nonlocal kept
        members = [experiments[i] for i in chunk]
        try:
            return _evaluate_chunk(model, members, dataset, clean, stacks, kept)
        except Exception as error:
            if is_out_of_memory(error):
                stacks.clear()  # the stacks of copies built so far hold memory too
                kept = KeptPrefixes(kept_prefixes_bytes(device))
            raise

    with weight_noise_disabled(model):
        for chunk, values in in_chunks_that_fit(list(by_noise.values()), size, evaluate):
            for i, one in zip(chunk, values, strict=True):
                metrics[i] = one
    return metrics


def _evaluation_batch(batch_size: int, dataset: InMemoryDataset) -> int:
    """The most samples an evaluation pass in batches of ``batch_size`` runs at once: fewer
    where no evaluated split has that many."""
    return max(1, min(batch_size, max(len(dataset.split(s)) for s in EVALUATED_SPLITS)))


def _kept(repeats: int, device: torch.device) -> KeptPrefixes | None:
    """Where a trained stack's repeated noisy passes over a split keep its clean prefixes,
    within the memory budget (None for one pass, which has nothing to reuse)."""
    return KeptPrefixes(kept_prefixes_bytes(device)) if repeats > 1 else None


def evaluation_generators(
    experiments: Sequence[Experiment], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """Each experiment's evaluation-noise generator, seeded with its ``evaluation_seed``; the
    experiments of one seed (those that differ only in σ) hold one generator, so a stack takes
    their draws once (``StackedModel.set_generators``)."""
    seeds = [experiment.evaluation_seed() for experiment in experiments]
    made = {seed: seeded_generator(seed, device) for seed in dict.fromkeys(seeds)}
    return [made[seed] for seed in seeds]


def _first_site(experiment: Experiment, sites: Sequence[SiteInfo]) -> int | None:
    """The first site where the experiment injects noise (None: nowhere); a site a ``map:``
    placement gives σ = 0 injects none, as in its stack (``NoiseModel.injects``)."""
    noise = experiment.noise_model()
    if noise is None:
        return None
    levels = _levels(experiment, sites)
    noisy = [site for site, sigma in levels.items() if noise.injects(noise.levels(sigma))]
    return min(noisy, default=None)


def _levels(experiment: Experiment, sites: Sequence[SiteInfo]) -> dict[int, NoiseLevel]:
    """{site: σ} of the experiment's activation noise (none without a noise model)."""
    if experiment.noise_model() is None:
        return {}
    return experiment.placement_spec().resolve(sites, experiment.sigma)


def _evaluate_chunk(
    model: NoisyModel,
    members: Sequence[Experiment],
    dataset: InMemoryDataset,
    clean: dict[str, Evaluation],
    stacks: dict[int, StackedModel | NotStackableError],
    kept: KeptPrefixes,
) -> list[dict[str, float]]:
    """Noisy metrics of experiments evaluating ``model``, as one stack of its copies; the
    stacks of copies already built, by size, are reused (only their noise changes), and so
    are the model's clean runs on each batch (``kept``)."""
    if members[0].noise_model() is None and not members[0].weight_noise:
        return [experiment_metrics(dataset, clean, clean) for _ in members]
    stack = stacks.get(len(members))
    if stack is None:
        try:
            stack = StackedModel([model] * len(members))
            stack.check(dataset.test.x[:2])
        except NotStackableError as error:
            stack = error
        stacks[len(members)] = stack
    if isinstance(stack, NotStackableError):
        return _evaluate_alone(model, members, dataset, str(stack))
    sites = model.site_table
    stack.set_noise([(e.noise_model(), _levels(e, sites)) for e in members])
    try:
        stack.set_weight_noise([e.weight_noise for e in members])
    except NotStackableError as error:
        return _evaluate_alone(model, members, dataset, str(error))
    repeats = members[0].eval_repeats
    device = dataset.test.x.device
    stack.set_generators(evaluation_generators(members, device))
    batch = members[0].recipe.eval_batch_size
    noisy = {
        s: evaluate_stacked(stack, dataset.split(s), repeats=repeats, batch_size=batch, kept=kept)
        for s in EVALUATED_SPLITS
    }
    return [
        experiment_metrics(dataset, clean, {s: noisy[s][k] for s in noisy})
        for k in range(len(members))
    ]


def _evaluate_alone(
    model: NoisyModel, members: Sequence[Experiment], dataset: InMemoryDataset, reason: str
) -> list[dict[str, float]]:
    """Metrics of experiments evaluated one at a time (each sets the model's noise for its
    evaluation; the model's own settings are restored)."""
    _say_alone("evaluating", len(members), reason)
    with model.noise_preserved(), weight_noise_preserved(model):
        return [evaluate_experiment(e, model, dataset) for e in members]
