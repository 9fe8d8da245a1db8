"""Adaptive σ sampling: a known μ recovered with a fraction of a dense grid's experiments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from walkingnoise.analysis.midpoint import fit_midpoint, logistic
from walkingnoise.analysis.tables import midpoint_table
from walkingnoise.data import load_dataset
from walkingnoise.sweep import Store, load_results, parse_sweep, run_sweep, runner
from walkingnoise.sweep.adaptive import propose_sigmas
from walkingnoise.sweep.spec import AdaptiveAxis, SweepEntry, SweepError, expand

N_TEST = 2000
SEEDS = 3
CHANCE = 0.1


def _measure(sigmas: list[float], rng: np.random.Generator, mu_log: float, width: float):
    """Mean accuracy over seeds and its standard error, each seed a binomial test-set draw."""
    means, errors = [], []
    for sigma in sigmas:
        p = logistic(math.log10(sigma), mu_log, width, 0.44, CHANCE)
        runs = rng.binomial(N_TEST, p, size=SEEDS) / N_TEST
        means.append(runs.mean())
        errors.append(runs.std(ddof=1) / math.sqrt(SEEDS))
    return means, errors


def _adaptive(axis: AdaptiveAxis, rng: np.random.Generator, mu_log: float, width: float):
    sigmas: list[float] = []
    means: list[float] = []
    errors: list[float] = []
    for _ in range(30):
        new = propose_sigmas(axis, sigmas, means, errors, CHANCE)
        if not new:
            break
        m, e = _measure(new, rng, mu_log, width)
        sigmas, means, errors = sigmas + new, means + m, errors + e
    return sigmas, fit_midpoint(sigmas, means, errors, a_min=CHANCE, space="log")


def test_adaptive_sampling_recovers_a_known_midpoint_with_a_third_of_the_grid() -> None:
    axis = AdaptiveAxis(type="adaptive", min=-2, max=10, tolerance=0.05)
    dense_sigmas = list(np.logspace(-2, 10, 49))
    rng = np.random.default_rng(7)
    close = 0
    trials = 40
    for trial in range(trials):
        mu_log, width = rng.uniform(-1, 8), rng.uniform(0.1, 0.6)
        sigmas, fit = _adaptive(axis, rng, mu_log, width)
        means, errors = _measure(dense_sigmas, rng, mu_log, width)
        dense = fit_midpoint(dense_sigmas, means, errors, a_min=CHANCE, space="log")
        assert len(sigmas) <= len(dense_sigmas) / 3, trial
        assert fit.converged, trial
        combined = math.hypot(fit.log10_mu_err, dense.log10_mu_err)
        close += abs(fit.log10_mu - dense.log10_mu) <= 2 * combined
        assert abs(fit.log10_mu - mu_log) <= 5 * fit.log10_mu_err + 0.02, trial
    # within 2 combined standard errors ~95 % of the time; allow 3 binomial SE below that
    assert close >= trials * (0.95 - 3 * math.sqrt(0.95 * 0.05 / trials))


def test_adaptive_axis_starts_with_its_initial_grid_and_stops_at_its_budget() -> None:
    axis = AdaptiveAxis(type="adaptive", min=-1, max=1, initial=5, max_points=6)
    first = propose_sigmas(axis, [], [], [], CHANCE)
    assert first == pytest.approx(list(np.logspace(-1, 1, 5)))
    sigmas = [*first, 0.5]
    assert propose_sigmas(axis, sigmas, [0.9] * 6, [0.01] * 6, CHANCE) == []


def test_a_flat_curve_needs_no_more_points() -> None:
    axis = AdaptiveAxis(type="adaptive", min=-2, max=2, initial=5)
    sigmas = list(np.logspace(-2, 2, 5))
    assert propose_sigmas(axis, sigmas, [0.97] * 5, [0.005] * 5, CHANCE) == []


def test_one_seeds_curve_is_not_located_on_error_bars_without_its_test_size() -> None:
    """With one seed the spread over seeds is 0: only the test-set size gives each point the
    binomial error that makes μ uncertain; on 200 test samples a tolerance of 0.01 decades is
    not met by nine points, so the curve needs more."""
    axis = AdaptiveAxis(type="adaptive", min=-2, max=2, initial=5, tolerance=0.01)
    sigmas = list(np.logspace(-1, 1, 9))
    means = list(logistic(np.log10(sigmas), 0.0, 0.3, 0.44, CHANCE))
    errors = [0.0] * len(sigmas)
    assert propose_sigmas(axis, sigmas, means, errors, CHANCE) == []  # 0.005 floor: "located"
    more = propose_sigmas(axis, sigmas, means, errors, CHANCE, n_samples=200)
    assert more
    assert all(-2 <= math.log10(sigma) <= 2 for sigma in more)


def test_a_curve_is_never_left_unlocated_with_budget_to_spare() -> None:
    """Wide curves whose fixed candidates near μ are all measured: the gaps between them are
    split until μ is located or the budget is spent (the sampler used to stop there)."""
    axis = AdaptiveAxis(type="adaptive", min=-2, max=2, tolerance=0.02)
    rng = np.random.default_rng(1)
    for trial in range(60):
        mu_log = rng.uniform(-1.5, 1.5)
        sigmas: list[float] = []
        means: list[float] = []
        errors: list[float] = []
        while new := propose_sigmas(axis, sigmas, means, errors, CHANCE, n_samples=N_TEST * SEEDS):
            m, e = _measure(new, rng, mu_log, 1.0)
            sigmas, means, errors = sigmas + new, means + m, errors + e
        if len(sigmas) < axis.max_points:  # stopped early: only if μ is located
            fit = fit_midpoint(
                sigmas, means, errors, a_min=CHANCE, space="log", n_samples=N_TEST * SEEDS
            )
            inflated = fit.log10_mu_err * math.sqrt(max(1.0, fit.chi2_red))
            assert fit.converged, trial
            assert inflated <= axis.tolerance, (trial, len(sigmas), inflated)


def _record(store: Store, entries: list[SweepEntry], accuracy) -> None:
    """Store ``entries`` as done, each with the test accuracy ``accuracy(σ, seed)``."""
    store.add((entry.experiment, entry.block) for entry in entries)
    keys = [entry.experiment.content_hash() for entry in entries]
    store.claim(keys)
    for key, entry in zip(keys, entries, strict=True):
        experiment = entry.experiment
        store.finish(
            key,
            metrics={
                "noisy_test_accuracy": accuracy(experiment.sigma, experiment.seed),
                "chance_accuracy": CHANCE,
                "test_size": N_TEST,
            },
            history=[],
            weights={},
            timings={},
            diverged=False,
            checkpoint=None,
        )


def _entries(text: str) -> tuple[list[SweepEntry], dict[str, AdaptiveAxis]]:
    spec = parse_sweep(text, "adaptive.yaml")
    return expand(spec, max_experiments=None), spec.adaptive_axes()


def test_the_sigmas_proposed_do_not_depend_on_the_order_of_the_seeds(tmp_path) -> None:
    """Seeds listed in another order in the sweep file give the same new σ, bit for bit: a
    σ that differs in its last digits is another experiment, run again beside the first."""
    sweep = """
name: adaptive
fixed: {dataset: digits, placement: "walking:1", recipe: {epochs: 1}}
grid:
  seed: {type: choice, options: %s}
  sigma: {type: adaptive, min: -2, max: 3}
"""
    forward, axes = _entries(sweep % "[0, 1, 2]")
    backward, _ = _entries(sweep % "[2, 1, 0]")
    offsets = {0: -3, 1: 1, 2: 4}  # correct answers of each seed off the curve

    def accuracy(sigma: float, seed: int) -> float:
        """A share of the test set: sums of three in another order can differ in the last bit."""
        expected = float(logistic(math.log10(sigma), 0.3, 0.4, 0.4, CHANCE))
        return round(expected * N_TEST + offsets[seed]) / N_TEST

    with Store(tmp_path / "a.sqlite") as store:
        _record(store, forward, accuracy)
        first = [e.experiment.content_hash() for e in runner.refine(forward, axes, store)]
        second = [e.experiment.content_hash() for e in runner.refine(backward, axes, store)]
    assert first
    assert sorted(first) == sorted(second)


def test_a_curve_that_keeps_a_plateau_is_refined_with_the_floor_fit_fits(tmp_path) -> None:
    """Multiplicative noise with BatchNorm never falls to chance: ``fit`` frees a_min there,
    and so must the sampler, or it sees a poor fit, spends its budget and centres its σ on
    another μ."""
    entries, axes = _entries(
        """
name: adaptive
fixed: {dataset: digits, placement: "walking:1", noise: multiplicative, recipe: {epochs: 1}}
grid:
  seed: {type: choice, options: [0, 1, 2]}
  sigma: {type: adaptive, min: -1, max: 1, initial: 9}
"""
    )

    def accuracy(sigma: float, seed: int) -> float:
        return float(logistic(math.log10(sigma), 0.1, 0.3, 0.3, 0.35)) + (seed - 1) * 0.002

    path = tmp_path / "a.sqlite"
    with Store(path) as store:
        _record(store, entries, accuracy)
        proposed = runner.refine(entries, axes, store)
    (fit,) = midpoint_table(load_results(path)).itertuples()
    assert fit.quality == "ok"
    assert fit.log10_mu_err < axes["root"].tolerance / 2
    assert proposed == []


def test_only_sigma_can_be_adaptive() -> None:
    text = "grid:\n  seed: {type: adaptive, min: 0, max: 1}\n"
    with pytest.raises(SweepError, match=r"grid\.seed: only sigma can be adaptive"):
        parse_sweep(text)


@pytest.mark.slow
def test_an_adaptive_sweep_adds_rounds_and_resumes(tmp_path, monkeypatch, capsys) -> None:
    spec = parse_sweep(
        """
name: adaptive
fixed: {dataset: digits, recipe: {epochs: 3}, eval_repeats: 2, placement: "walking:1"}
grid:
  seed: {type: choice, options: [0, 1]}
  sigma: {type: adaptive, min: -2, max: 3, initial: 4, max_points: 9}
""",
        "adaptive.yaml",
    )
    samples: list[object] = []

    def proposing(*args, n_samples=None):  # the sampler, seeing what the sweep gives it
        samples.append(n_samples)
        return propose_sigmas(*args, n_samples=n_samples)

    monkeypatch.setattr(runner, "propose_sigmas", proposing)
    store = tmp_path / "a.sqlite"
    summary = run_sweep(spec, store)  # stderr is no terminal: a line per round
    assert summary.failed == 0
    starts = capsys.readouterr().err.splitlines()
    assert starts[0].startswith("adaptive: running 8 experiments in ")
    assert starts[1].startswith("adaptive: adaptive σ, round 2: running ")
    # each point's mean is over 2 seeds of the digits test set: that many test samples
    test_size = len(load_dataset("digits").test)
    assert samples
    assert all(n == [2 * test_size] * len(n) for n in samples)
    with Store(store) as opened:
        done = opened.counts()["done"]
        sigmas = {e.sigma for e in opened.experiments()}
    assert 2 * 4 < done <= 2 * 9
    assert len(sigmas) == done // 2
    again = run_sweep(spec, store, progress=False)
    assert again.ran == 0


@pytest.mark.slow
def test_a_budget_of_many_rounds_is_spent(tmp_path) -> None:
    """One σ a round up to 26 σ takes 22 rounds: more than the sweep's usual cap of rounds,
    which stopped it at 24 σ, silently, and every later run too."""
    spec = parse_sweep(
        """
name: many-rounds
fixed: {dataset: digits, recipe: {epochs: 1}, eval_repeats: 1, placement: "walking:1"}
grid:
  sigma: {type: adaptive, min: -2, max: 3, per_round: 1, max_points: 26, tolerance: 0.0001}
""",
        "many-rounds.yaml",
    )
    assert runner.MAX_ROUNDS < 1 + 26 - 5
    store = tmp_path / "a.sqlite"
    summary = run_sweep(spec, store, progress=False)
    assert summary.failed == 0
    with Store(store) as opened:
        assert len({e.sigma for e in opened.experiments()}) == 26
    assert run_sweep(spec, store, progress=False).ran == 0


@pytest.mark.slow
def test_a_dry_run_counts_the_rounds_the_store_decides(tmp_path) -> None:
    """After the budget is raised, a dry run counts the σ the next round adds, as the run
    does; it counted the first round alone, all done: nothing to run."""
    sweep = """
name: dry
fixed: {dataset: digits, recipe: {epochs: 1}, eval_repeats: 1, placement: "walking:1"}
grid:
  sigma: {type: adaptive, min: -2, max: 3, max_points: %d, tolerance: 0.0001}
"""
    store = tmp_path / "a.sqlite"
    assert run_sweep(parse_sweep(sweep % 8, "dry.yaml"), store, progress=False).ran == 8
    raised = parse_sweep(sweep % 11, "dry.yaml")
    dry = run_sweep(raised, store, dry_run=True)
    ran = run_sweep(raised, store, progress=False)
    assert (dry.experiments, dry.done_before, dry.to_run) == (11, 8, 3)
    assert ran.ran == dry.to_run
