"""Cohorts that run out of GPU memory: their stacks run again in halves, with the same results.

The stacks themselves are tested in ``test_stacked.py``. A real out-of-memory error needs a GPU
filled to the brim; here it is raised, as PyTorch raises it, by stacks above a size.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from walkingnoise.data import InMemoryDataset
from walkingnoise.data.dataset import Split
from walkingnoise.experiment import Experiment
from walkingnoise.training import cohort
from walkingnoise.training.cohort import evaluate_shared, in_chunks_that_fit, train_cohort
from walkingnoise.training.memory import BUDGET_ENV, bytes_per_model, models_per_stack
from walkingnoise.training.recipe import Recipe
from walkingnoise.training.run import build_noisy_model, train_experiment


def _out_of_memory() -> Exception:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


#: How PyTorch, cuDNN and cuBLAS say that an allocation failed.
OUT_OF_MEMORY = {
    "pytorch": _out_of_memory,
    "cudnn": lambda: RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    "cublas": lambda: RuntimeError(
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
    ),
}


def _fits(
    limit: int,
    run: Callable[..., list],
    calls: list[int],
    members_at: int = 0,
    error: Callable[[], Exception] = _out_of_memory,
) -> Callable[..., list]:
    """``run``, raising ``error`` (CUDA's out-of-memory error) for more than ``limit`` models
    (its argument ``members_at``), each call's size noted in ``calls``."""

    def bounded(*args: Sequence) -> list:
        calls.append(len(args[members_at]))
        if len(args[members_at]) > limit:
            raise error()
        return run(*args)

    return bounded


@pytest.mark.parametrize("source", sorted(OUT_OF_MEMORY))
def test_a_chunk_out_of_memory_runs_again_in_halves(
    caplog: pytest.LogCaptureFixture, source: str
) -> None:
    """And every later chunk, of this group and the next, is no larger; whether PyTorch or one
    of the libraries it calls failed to allocate."""
    calls: list[int] = []
    run = _fits(2, lambda chunk: [item * 10 for item in chunk], calls, 0, OUT_OF_MEMORY[source])
    groups = [list(range(9)), [20, 21, 22, 23]]
    with caplog.at_level(logging.WARNING, logger="walkingnoise"):
        done = list(in_chunks_that_fit(groups, 6, run))
    assert [list(chunk) for chunk, _ in done] == [[i] for i in range(9)] + [[20], [21], [22], [23]]
    assert [value for _, values in done for value in values] == [
        i * 10 for group in groups for i in group
    ]
    assert calls == [6, 3] + [1] * 13
    assert caplog.text.count("ran out of GPU memory") == 2
    assert "stacks of at most 3 from now on" in caplog.text


def test_chunks_never_mix_groups() -> None:
    done = list(in_chunks_that_fit([[1, 2, 3], [4, 5]], 4, lambda chunk: list(chunk)))
    assert [list(chunk) for chunk, _ in done] == [[1, 2, 3], [4, 5]]


def test_an_error_of_the_model_itself_is_not_taken_for_running_out_of_memory() -> None:
    calls: list[int] = []
    run = _fits(
        0, list, calls, 0, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    )
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        list(in_chunks_that_fit([[1, 2, 3, 4]], 4, run))
    assert calls == [4]  # raised at once, not retried in halves


def test_one_item_that_does_not_fit_raises() -> None:
    run = _fits(0, lambda chunk: list(chunk), [])
    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(in_chunks_that_fit([[1, 2, 3]], 2, run))


def _walking(n: int) -> list[Experiment]:
    return [
        Experiment(
            noise="additive", sigma=0.5, train_noise=True, placement=f"walking:{i % 11}",
            seed=i, recipe=Recipe(epochs=1),
        )
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def one_thread():
    """Torch computing with one thread, as a sweep's units do: stacks of any size then give
    bit-identical models."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("one_thread")
def test_a_cohort_whose_stack_does_not_fit_trains_as_smaller_stacks(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiments = _walking(5)
    expected = train_cohort(experiments, digits, max_models=2)
    calls: list[int] = []
    monkeypatch.setattr(cohort, "_train_chunk", _fits(2, cohort._train_chunk, calls))
    got = train_cohort(experiments, digits)
    assert calls[0] == 5  # the cohort is one stack of mixed seeds
    assert max(calls[1:]) <= 2
    for a, b in zip(expected, got, strict=True):
        assert a.experiment == b.experiment
        for name, tensor in a.model.source.state_dict().items():
            torch.testing.assert_close(tensor, b.model.source.state_dict()[name], rtol=0, atol=0)
        assert a.metrics == b.metrics


def test_evaluations_whose_stack_does_not_fit_run_as_smaller_stacks(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = Experiment(noise="none", recipe=Recipe(epochs=2))
    model, _ = train_experiment(clean, digits, progress=False)
    members = [Experiment(placement="walking:3", sigma=s, eval_repeats=2) for s in (0.1, 1, 10)]
    expected = evaluate_shared(model, members, digits, max_models=1)
    calls: list[int] = []
    monkeypatch.setattr(cohort, "_evaluate_chunk", _fits(1, cohort._evaluate_chunk, calls, 1))
    assert evaluate_shared(model, members, digits) == expected
    assert calls == [3, 1, 1, 1]


def test_why_models_run_alone_is_said_once_a_process(caplog: pytest.LogCaptureFixture) -> None:
    """A sweep's units of one repeat the reason: the first time at INFO, then at DEBUG."""
    reason = "a reason only this test gives"
    with caplog.at_level(logging.DEBUG, logger="walkingnoise"):
        cohort._say_alone("training", 1, reason)
        cohort._say_alone("evaluating", 3, reason)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"training 1 experiment one at a time: {reason}"),
        (logging.DEBUG, f"evaluating 3 experiments one at a time: {reason}"),
    ]


class LiveTensorBytes(TorchDispatchMode):
    """The bytes of the tensors that operations make within the block and that are still alive,
    and the most there were at once (``peak``): a stack's footprint on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _freed(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        given = tree_flatten((args, kwargs))[0]
        read = {t.untyped_storage().data_ptr() for t in given if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t._is_view():
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() in read:  # an in-place operation: no new memory
                continue
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._freed, storage.nbytes())
        return out


def _tiled(digits: InMemoryDataset, times: int) -> InMemoryDataset:
    """The digits with their evaluated splits repeated ``times`` times, for larger batches."""

    def tiled(split: Split) -> Split:
        return Split(split.x.repeat(times, 1, 1, 1), split.y.repeat(times))

    train = Split(digits.train.x[:256], digits.train.y[:256])
    return InMemoryDataset(
        digits.name, train, tiled(digits.validation), tiled(digits.test), digits.class_names
    )


@pytest.mark.usefixtures("one_thread")
def test_evaluations_keep_their_clean_prefixes_within_the_memory_budget(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean prefixes kept for reuse across passes count in the budget, which sizes the
    stacks too: they once took up to 256 MiB whatever the budget (2.6 MiB of 1 MiB here)."""
    recipe = Recipe(epochs=1, eval_batch_size=64)
    model, _ = train_experiment(Experiment(noise="none", recipe=recipe), digits, progress=False)
    members = [
        Experiment(placement=f"walking:{site}", sigma=sigma, eval_repeats=2, recipe=recipe)
        for site in (2, 5)
        for sigma in (0.5, 1.0)
    ]
    dataset = _tiled(digits, 10)
    expected = evaluate_shared(model, members, dataset)
    budget = 2**20
    monkeypatch.setenv(BUDGET_ENV, str(budget))
    with LiveTensorBytes() as footprint:
        assert evaluate_shared(model, members, dataset) == expected
    assert footprint.peak <= budget


@pytest.mark.usefixtures("one_thread")
def test_a_training_stack_on_the_cpu_is_sized_for_its_evaluation_too(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack sized to its training batches of 4 samples evaluates in batches of 1024: it once
    took 4.5 MiB of a budget of 2.5 MiB here."""
    recipe = Recipe(epochs=1, batch_size=4, eval_batch_size=1024)
    experiments = [
        Experiment(placement="walking:0", sigma=0.1 * k, train_noise=True, eval_repeats=2,
                   recipe=recipe)
        for k in range(1, 9)
    ]  # fmt: skip
    dataset = _tiled(digits, 3)
    expected = train_cohort(experiments, dataset, max_models=1)
    probe = build_noisy_model(experiments[0], dataset)
    budget = len(experiments) * bytes_per_model(probe, recipe.batch_size, training=True)
    monkeypatch.setenv(BUDGET_ENV, str(budget))
    with LiveTensorBytes() as footprint:
        got = train_cohort(experiments, dataset)
    assert footprint.peak <= budget
    assert [r.metrics for r in got] == [r.metrics for r in expected]


def _stack_sizes(
    monkeypatch: pytest.MonkeyPatch, model: Any, passes: Sequence[tuple[int, bool]]
) -> dict[str, int]:
    """{budget: models per stack} of ``model`` with weight noise at the two budgets the tests
    below compare: the fewest over ``passes`` (batch size, training)."""
    sizes = {}
    for budget in ("4MiB", "64MiB"):
        monkeypatch.setenv(BUDGET_ENV, budget)
        sizes[budget] = min(
            models_per_stack(model, batch, torch.device("cpu"), training=t, weight_noise=True)
            for batch, t in passes
        )
    return sizes


@pytest.mark.usefixtures("one_thread")
def test_weight_noise_evaluations_do_not_depend_on_the_stack_size(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies reading their weights with noise: a stack of one once handed BatchNorm the
    stacked Linear layer's output in feature-major memory, which more copies copy first; the
    noisy losses differed in their last bits."""
    recipe = Recipe(epochs=1)
    clean = Experiment(noise="none", batchnorm=True, recipe=recipe)
    model, _ = train_experiment(clean, digits, progress=False)
    members = [
        Experiment(noise="none", batchnorm=True, weight_noise=eta, eval_repeats=2, recipe=recipe)
        for eta in (0.02, 0.06, 0.1, 0.15)
    ]
    sizes = _stack_sizes(monkeypatch, model, [(len(digits.test), False)])
    assert sizes["4MiB"] == 1
    assert sizes["64MiB"] >= len(members)
    metrics = {}
    for budget in sizes:
        monkeypatch.setenv(BUDGET_ENV, budget)
        metrics[budget] = evaluate_shared(model, members, digits)
    assert metrics["4MiB"] == metrics["64MiB"]


@pytest.mark.usefixtures("one_thread")
def test_distillation_students_do_not_depend_on_the_stack_size(
    digits: InMemoryDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Students of two seeds, with and without weight noise, on a training split whose last
    batch has 2 samples: the teacher once ran the stack's batches merged, 2·K rows that BLAS
    computes otherwise than 2; and a student without noise in a noisy stack averaged its
    repeated passes, whose float64 mean moved its accuracy by an ulp."""
    recipe = Recipe(epochs=2)
    train = Split(digits.train.x[:1282], digits.train.y[:1282])  # 10 batches of 128, then 2
    dataset = InMemoryDataset(
        digits.name, train, digits.validation, digits.test, digits.class_names
    )
    teacher, _ = train_experiment(
        Experiment(noise="none", batchnorm=True, recipe=recipe), dataset, progress=False
    )
    students = [
        Experiment(
            noise="none", batchnorm=True, train_noise=True, weight_noise=eta, seed=seed,
            distillation={"temperature": 6, "alpha": 0.9, "teacher": "clean"}, recipe=recipe,
        )
        for eta in (0.0, 0.06)
        for seed in (0, 1)
    ]  # fmt: skip
    probe = build_noisy_model(students[0], dataset)
    passes = [(recipe.batch_size, True), (len(dataset.test), False)]
    sizes = _stack_sizes(monkeypatch, probe, passes)
    assert sizes["4MiB"] == 1
    assert sizes["64MiB"] >= len(students)
    results = {}
    for budget in sizes:
        monkeypatch.setenv(BUDGET_ENV, budget)
        results[budget] = train_cohort(students, dataset, teacher=teacher)
    for a, b in zip(results["4MiB"], results["64MiB"], strict=True):
        assert a.history == b.history
        assert a.metrics == b.metrics
