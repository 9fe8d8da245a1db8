"""Synthetic accuracy curves with known parameters: for checking fits and trying the report.

Accuracy of one seed at σ is a binomial draw over a test set of ``n_test`` samples with success
probability F(σ) (the paper's logistic). Fitting such data tells how precise μ is for a given
number of seeds and test-set size, and whether the fit's error bars are honest (coverage).
:func:`write_synthetic_store` puts such curves into a real store, so analysis and figures can be
exercised without training; its rows are marked ``block = "synthetic"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from walkingnoise.analysis.midpoint import logistic


@dataclass(frozen=True)
class SyntheticCurve:
    """Per-seed accuracies ``accuracy[seed, point]`` and their mean, std and standard error."""

    sigma: np.ndarray
    accuracy: np.ndarray
    n_test: int

    @property
    def mean(self) -> np.ndarray:
        """Mean over seeds at each σ."""
        return self.accuracy.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Sample standard deviation over seeds (0 for one seed)."""
        if self.accuracy.shape[0] < 2:
            return np.zeros(self.accuracy.shape[1])
        return self.accuracy.std(axis=0, ddof=1)

    @property
    def sem(self) -> np.ndarray:
        """Standard error of the mean over seeds, std/√n."""
        return self.std / np.sqrt(self.accuracy.shape[0])

    @property
    def n_samples(self) -> int:
        """Test samples behind each mean: n_test × seeds."""
        return self.n_test * self.accuracy.shape[0]


def simulate_curve(
    sigma: Sequence[float] | np.ndarray,
    truth: Callable[[np.ndarray], np.ndarray],
    *,
    seeds: int,
    n_test: int,
    rng: np.random.Generator,
) -> SyntheticCurve:
    """Binomial accuracies of ``seeds`` models on a test set of ``n_test`` samples.

    ``truth`` maps σ to the expected accuracy, e.g.
    ``lambda s: logistic(np.log10(s), 0.0, 0.3, 0.4, 0.1)``.
    """
    sigma = np.asarray(sigma, dtype=float)
    p = np.clip(np.asarray(truth(sigma), dtype=float), 0.0, 1.0)
    hits = rng.binomial(n_test, p, size=(seeds, sigma.size))
    return SyntheticCurve(sigma, hits / n_test, n_test)


def log_logistic(mu: float, s: float, delta_a: float, a_min: float) -> Callable:
    """σ ↦ F(log10 σ; log10 μ, s, δa, a_min): the logistic in log σ with width ``s`` decades."""
    center = float(np.log10(mu))

    def curve(sigma: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return logistic(np.log10(sigma), center, s, delta_a, a_min)

    return curve


def write_synthetic_store(
    path: str | Path,
    *,
    seeds: int = 2,
    sigmas: Iterable[float] = tuple(np.logspace(-2, 2, 9)),
    n_test: int = 360,
    rng_seed: int = 0,
    floor: float = 0.35,
) -> Path:
    """A store of logistic curves for the MLP on digits, written without training.

    Holds walking additive noise with and without noisy training and clamping, walking
    multiplicative noise with BatchNorm (a_min above chance), global noise, and mixed noise as
    amplitude × ratio in both orders. μ falls from the input towards the middle sites and rises
    with noisy training. Per-layer weights are made up (clamped ones smaller). ``floor`` is the
    accuracy the multiplicative curves with BatchNorm fall to (above half way to chance,
    0.525, they drop only partly).
    """
    from walkingnoise.experiment import Experiment
    from walkingnoise.sweep.store import Store
    from walkingnoise.training.recipe import Recipe

    rng = np.random.default_rng(rng_seed)
    sigmas = tuple(float(s) for s in sigmas)
    chance = 0.1
    entries: list[tuple[Experiment, Callable[[np.ndarray], np.ndarray], float]] = []

    def walking(noise: str, train: bool, clamp: float | None, sites: int, bn: bool) -> None:
        for site in range(sites):
            gain = (10.0 if train else 1.0) * (0.3 if clamp else 1.0)
            mu = gain * (0.3 + 2.0 * abs(site - sites / 2) / sites)
            a_min = floor if noise == "multiplicative" and site < sites - 3 else chance
            curve = log_logistic(mu, 0.25, (0.95 - a_min) / 2, a_min)
            for seed in range(seeds):
                for sigma in sigmas:
                    experiment = Experiment(
                        dataset="digits",
                        model="mlp",
                        batchnorm=bn,
                        noise=noise,
                        placement=f"walking:{site}",
                        sigma=sigma,
                        train_noise=train,
                        recipe=Recipe(epochs=1, clamp=clamp),
                        seed=seed,
                    )
                    entries.append((experiment, curve, 1.0 if clamp else 2.0))

    walking("additive", False, None, 11, True)
    walking("additive", True, None, 11, True)
    walking("additive", True, 1.0, 11, True)
    walking("multiplicative", False, None, 11, True)
    walking("additive", False, None, 8, False)
    for noise in ("additive", "multiplicative"):
        for bn in (True, False):
            curve = log_logistic(0.2 if noise == "additive" else 0.1, 0.3, 0.425, chance)
            for seed in range(seeds):
                for sigma in sigmas:
                    placement = "global-except:batchnorm" if bn else "global"
                    experiment = Experiment(
                        dataset="digits",
                        model="mlp",
                        batchnorm=bn,
                        noise=noise,
                        placement=placement,
                        sigma=sigma,
                        seed=seed,
                        recipe=Recipe(epochs=1),
                    )
                    entries.append((experiment, curve, 2.0))
    for order in ("mul_first", "add_first"):
        for ratio in (0.1, 0.5, 0.9):
            for amplitude in sigmas:
                sigma_add, sigma_mul = amplitude * ratio, amplitude * (1 - ratio)
                limit = 1.0 if order == "mul_first" else 0.3
                level = 0.95 - 0.85 / (1 + np.exp(-4 * np.log10(sigma_add / limit + 1e-12)))
                level = level if order == "add_first" else max(level, 0.5 - 0.2 * (sigma_mul > 10))
                experiment = Experiment(
                    dataset="digits",
                    model="mlp",
                    noise="mixed",
                    order=order,
                    ratio=ratio,
                    placement="walking:4",
                    sigma=amplitude,
                    train_noise=True,
                    recipe=Recipe(epochs=1),
                    seed=0,
                )
                entries.append((experiment, lambda s, v=level: np.full_like(s, v), 2.0))

    with Store(path) as store:
        store.add((experiment, "synthetic") for experiment, _, _ in entries)
        store.claim([experiment.content_hash() for experiment, _, _ in entries])
        for experiment, curve, scale in entries:
            sigma = float(np.asarray(experiment.sigma, dtype=float).ravel()[0])
            p = float(np.clip(curve(np.asarray([sigma]))[0], 0.0, 1.0))
            clean = float(np.clip(curve(np.asarray([1e-6]))[0], 0.0, 1.0))
            repeats = rng.binomial(n_test, p, size=3) / n_test
            layers = ("layers.1", "layers.2", "layers.4", "layers.10")
            weights = {
                name: {"mean_abs": scale * (0.05 + 0.01 * i) * (1 + 0.05 * rng.standard_normal())}
                for i, name in enumerate(layers)
            }
            store.finish(
                experiment.content_hash(),
                metrics={
                    "chance_accuracy": chance,
                    "clean_test_accuracy": float(rng.binomial(n_test, clean) / n_test),
                    "noisy_test_accuracy": float(repeats.mean()),
                    "noisy_test_accuracy_std": float(repeats.std(ddof=1)),
                    "test_size": n_test,  # as a real evaluation records it
                },
                history=[],
                weights=weights,
                timings={"evaluate": 0.0},
                diverged=False,
                checkpoint=None,
            )
        store.save_sweep("synthetic", "name: synthetic\n# written by write_synthetic_store\n")
    return Path(path)
