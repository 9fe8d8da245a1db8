"""The engine on a CUDA device: stacks, shared evaluation, memory budgets and a sweep's units.

These need a GPU (``pytest -m gpu``); without one they are skipped. On the CPU the same claims
are tested in ``test_stacked.py``, ``test_memory.py`` and ``tests/sweep``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from walkingnoise.data import InMemoryDataset
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import load_results, run_sweep
from walkingnoise.sweep.spec import parse_sweep
from walkingnoise.training.cohort import evaluate_shared, train_cohort
from walkingnoise.training.memory import GPU_SHARE_ENV, default_device, memory_budget
from walkingnoise.training.recipe import Recipe
from walkingnoise.training.run import build_noisy_model, evaluate_experiment, train_experiment
from walkingnoise.training.stacked import StackedModel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def on_gpu(digits: InMemoryDataset) -> InMemoryDataset:
    """The digits with every split on the GPU, as a sweep's unit moves them there."""
    splits = {s: digits.split(s).to("cuda") for s in ("train", "validation", "test")}
    return dataclasses.replace(digits, **splits)


def _walking(n: int, **fields) -> list[Experiment]:
    base = {"noise": "additive", "sigma": 0.5, "train_noise": True, "recipe": Recipe(epochs=3)}
    return [
        Experiment(**({"placement": f"walking:{i % 11}", "seed": i} | base | fields))
        for i in range(n)
    ]


def test_the_default_device_is_the_gpu() -> None:
    assert default_device().type == "cuda"


def test_members_start_on_the_gpu_from_the_weights_they_would_have_alone(
    on_gpu: InMemoryDataset,
) -> None:
    experiments = _walking(3)
    stack = StackedModel([build_noisy_model(e, on_gpu) for e in experiments])
    for k, experiment in enumerate(experiments):
        alone = build_noisy_model(experiment, on_gpu).source.state_dict()
        for name, tensor in alone.items():
            assert stack.state_dict(k)[name].device.type == "cuda"
            torch.testing.assert_close(stack.state_dict(k)[name], tensor, rtol=0, atol=0)


def test_a_cohort_on_the_gpu_trains_as_each_model_alone_there(on_gpu: InMemoryDataset) -> None:
    """Same batches, initial weights and noise draws (each model's own CUDA generator): the
    losses agree to float precision, the predictions almost everywhere."""
    experiments = _walking(4)
    stacked = train_cohort(experiments, on_gpu)
    x = on_gpu.test.x
    for experiment, trained in zip(experiments, stacked, strict=True):
        alone, history = train_experiment(experiment, on_gpu, progress=False)
        torch.testing.assert_close(
            [r.train_loss for r in trained.history.epochs],
            [r.train_loss for r in history.epochs],
            rtol=1e-2,
            atol=0,
        )
        trained.model.eval(), alone.eval()
        with torch.no_grad():
            agree = (trained.model(x).argmax(1) == alone(x).argmax(1)).float().mean().item()
        assert agree >= 0.97
        assert trained.metrics["clean_test_accuracy"] > 0.5


def test_shared_evaluation_on_the_gpu_equals_each_experiment_alone(
    on_gpu: InMemoryDataset,
) -> None:
    model, _ = train_experiment(
        Experiment(noise="none", recipe=Recipe(epochs=5)), on_gpu, progress=False
    )
    members = [
        Experiment(placement=f"walking:{site}", sigma=sigma, eval_repeats=4)
        for site in (0, 5, 10)
        for sigma in (0.3, 3.0)
    ]
    for experiment, metrics in zip(members, evaluate_shared(model, members, on_gpu), strict=True):
        alone = evaluate_experiment(experiment, model, on_gpu)
        assert metrics["clean_test_accuracy"] == alone["clean_test_accuracy"]
        # the same noise draws: only float rounding can flip a prediction
        assert metrics["noisy_test_accuracy"] == pytest.approx(
            alone["noisy_test_accuracy"], abs=3 / len(on_gpu.test)
        )


def test_the_gpu_budget_is_at_most_a_share_of_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WALKINGNOISE_MEMORY_BUDGET", raising=False)
    _, total = torch.cuda.mem_get_info()
    assert 0 < memory_budget(torch.device("cuda")) <= 0.7 * total
    monkeypatch.setenv(GPU_SHARE_ENV, "0.25")
    assert 0 < memory_budget(torch.device("cuda")) <= 0.7 * 0.25 * total + 1


SWEEP = """
name: gpu
fixed: {dataset: digits, model: mlp, noise: additive, eval_repeats: 2, recipe: {epochs: 4}}
grid:
  placement: {type: choice, options: ["walking:1", "walking:6"]}
  sigma: {type: choice, options: [0.1, 1.0]}
  train_noise: {type: choice, options: [true, false]}
"""


def test_a_sweep_computes_its_units_on_the_gpu(tmp_path: Path) -> None:
    store = tmp_path / "gpu.sqlite"
    summary = run_sweep(parse_sweep(SWEEP, "gpu.yaml"), store, progress=False)
    assert (summary.ran, summary.failed) == (8, 0)
    results = load_results(store)
    assert (results["status"] == "done").all()
    gpu = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    assert set(results["device"]) == {gpu}
    clean_models = results[~results["train_noise"].astype(bool)]
    assert (clean_models["clean_test_accuracy"] > 0.5).all()
