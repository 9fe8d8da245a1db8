"""The quickstart study: its expansion, and the crossing table on a scaled-down run."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml

from walkingnoise.analysis.crossing import half_accuracy_crossing
from walkingnoise.cli import main
from walkingnoise.experiment import Experiment
from walkingnoise.quickstart import crossing_table, quickstart_spec
from walkingnoise.sweep import load_results, parse_sweep, run_sweep
from walkingnoise.sweep.planner import plan
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import count_experiments, expand

SITES = (0, 10)
COLUMNS = ["add/eval-only", "add/noisy", "mul/eval-only", "mul/noisy"]


@pytest.fixture(scope="module")
def entries() -> list:
    return expand(quickstart_spec(), site_count=SiteCounter())


def test_quickstart_expands_to_1216_experiments(entries: list) -> None:
    # 2 noises × 2 trainings × 2 seeds × 8 σ × (11 sites with BatchNorm + 8 without).
    assert len(entries) == 2 * 2 * 2 * 8 * (11 + 8) == 1216
    assert count_experiments(quickstart_spec()) == 2 * 2 * 2 * 2 * 8  # walking:* counted once
    assert len({e.experiment.content_hash() for e in entries}) == 1216
    blocks = pd.Series([e.block for e in entries]).value_counts().to_dict()
    assert blocks == {"additive": 608, "multiplicative": 608}
    experiments = [e.experiment for e in entries]
    with_bn = [e for e in experiments if e.batchnorm]
    assert {e.placement for e in with_bn} == {f"walking:{i}" for i in range(11)}
    without = [e for e in experiments if not e.batchnorm]
    assert {e.placement for e in without} == {f"walking:{i}" for i in range(8)}
    assert {e.recipe.epochs for e in experiments} == {15}
    assert {e.eval_repeats for e in experiments} == {3}
    assert {e.seed for e in experiments} == {0, 1}
    assert {e.dataset for e in experiments} == {"digits"}


def test_quickstart_sigma_grids(entries: list) -> None:
    sigmas = {noise: sorted({e.experiment.sigma for e in entries if e.experiment.noise == noise})
              for noise in ("additive", "multiplicative")}  # fmt: skip
    assert sigmas["additive"] == pytest.approx([10 ** (-2 + 4 * i / 7) for i in range(8)])
    assert sigmas["multiplicative"] == pytest.approx([10 ** (-1.5 + 3.5 * i / 7) for i in range(8)])


def test_quickstart_trains_each_clean_model_once(entries: list) -> None:
    work = plan([e.experiment for e in entries])
    # Every noisy-training experiment trains its own model; inference-only ones share one
    # clean model per (BatchNorm flag, seed).
    assert work.trainings == 608 + 4
    assert work.shared_trainings == 4


def test_quickstart_is_the_first_example() -> None:
    example = Path(__file__).parents[1] / "examples" / "01_quickstart.yaml"
    if not example.is_file():
        pytest.skip("no examples folder beside the tests")
    shipped = resources.files("walkingnoise.studies").joinpath("quickstart.yaml").read_text()
    assert example.read_text() == shipped


# -- the crossing table on a scaled-down copy of the study ----------------------------------------


def _scaled_down() -> str:
    raw = yaml.safe_load(
        resources.files("walkingnoise.studies").joinpath("quickstart.yaml").read_text()
    )
    raw["name"] = "quickstart-small"
    raw["fixed"]["recipe"]["epochs"] = 2
    raw["fixed"]["eval_repeats"] = 2
    del raw["fixed"]["placement"]
    raw["grid"]["placement"] = {"type": "choice", "options": [f"walking:{s}" for s in SITES]}
    raw["grid"]["batchnorm"]["options"] = [True]
    raw["grid"]["seed"]["options"] = [0]
    raw["additive"]["grid"]["sigma"] = {"type": "logspace", "min": -1, "max": 2, "num": 3}
    raw["multiplicative"]["grid"]["sigma"] = {"type": "logspace", "min": -1, "max": 2, "num": 3}
    return yaml.safe_dump(raw)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    store = tmp_path_factory.mktemp("quickstart") / "small.sqlite"
    summary = run_sweep(parse_sweep(_scaled_down(), "small.yaml"), store, progress=False)
    # 2 sites × 2 trainings × 3 σ × 2 noises
    assert (summary.experiments, summary.ran, summary.failed) == (24, 24, 0)
    assert summary.trainings == 12 + 1
    return load_results(store)


def _expected(results: pd.DataFrame, noise: str, train_noise: bool, site: int) -> float:
    part = results[
        (results["noise"] == noise)
        & (results["train_noise"] == train_noise)
        & (results["placement"] == f"walking:{site}")
    ]
    curve = part.groupby("sigma")["noisy_test_accuracy"].mean()
    assert len(curve) == 3
    return half_accuracy_crossing(list(curve.index), list(curve.values), 0.1)


def test_crossing_table_per_site_noise_and_training(results: pd.DataFrame) -> None:
    table = crossing_table(results, batchnorm=True)
    assert list(table.index) == list(SITES)
    assert table.index.name == "site"
    assert sorted(table.columns) == COLUMNS
    for site in SITES:
        for noise in ("additive", "multiplicative"):
            for train_noise, training in ((True, "noisy"), (False, "eval-only")):
                value = table.loc[site, f"{noise[:3]}/{training}"]
                expected = _expected(results, noise, train_noise, site)
                if math.isinf(expected):
                    assert math.isinf(value)
                else:
                    assert value == pytest.approx(expected, rel=1e-12)
    # σ = 100 at the input leaves nothing of a digit: every curve crosses within the grid.
    assert (table.loc[0] < 100).all()


def test_crossing_table_averages_over_seeds_first(results: pd.DataFrame) -> None:
    # A second seed whose accuracies are lower by 0.3 at the middle σ (only): the mean curve
    # moves, and with it the crossings.
    other = results.assign(seed=1, hash=results["hash"] + "-1")
    middle = sorted(set(results["sigma"]))[1]
    other.loc[other["sigma"] == middle, "noisy_test_accuracy"] -= 0.3
    both = pd.concat([results, other], ignore_index=True)
    table = crossing_table(both, batchnorm=True)
    assert not table.equals(crossing_table(results, batchnorm=True))
    averaged = both.assign(seed=0)
    for site in SITES:
        for noise in ("additive", "multiplicative"):
            for train_noise, training in ((True, "noisy"), (False, "eval-only")):
                expected = _expected(averaged, noise, train_noise, site)
                value = table.loc[site, f"{noise[:3]}/{training}"]
                assert value == pytest.approx(expected, rel=1e-12) or (
                    math.isinf(expected) and math.isinf(value)
                )


def test_crossing_table_with_site_names(results: pd.DataFrame) -> None:
    names = {s.index: s.name for s in SiteCounter().table(Experiment(noise="none"))}
    table = crossing_table(results, batchnorm=True, names=names)
    assert list(table.index) == ["0 input", "10 layers.10:Linear"]
    plain = crossing_table(results, batchnorm=True)
    assert table.to_numpy().tolist() == plain.to_numpy().tolist()


def test_crossing_table_ignores_unfinished_rows(results: pd.DataFrame) -> None:
    pending = results.copy()
    first = pending.index[0]
    pending.loc[first, "status"] = "pending"
    pending.loc[first, "noisy_test_accuracy"] = 0.0  # would change the curve if it counted
    changed = results.drop(index=first)
    pd.testing.assert_frame_equal(
        crossing_table(pending, batchnorm=True), crossing_table(changed, batchnorm=True)
    )


def test_crossing_table_counts_a_diverged_training_at_chance(results: pd.DataFrame) -> None:
    # as the curves and fits do: NaN weights predict nothing, whatever argmax made of them
    noisy = results[(results["train_noise"] == True) & (results["noise"] == "additive")]  # noqa: E712
    first = noisy[noisy["placement"] == "walking:10"].sort_values("sigma").index[0]
    broken = results.copy()
    broken.loc[first, "diverged"] = True
    broken.loc[first, "noisy_test_accuracy"] = 0.95  # what argmax of NaN logits happened to hit
    at_chance = results.copy()
    at_chance.loc[first, "noisy_test_accuracy"] = results.loc[first, "chance_accuracy"]
    pd.testing.assert_frame_equal(
        crossing_table(broken, batchnorm=True), crossing_table(at_chance, batchnorm=True)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--executor", "inprocess", "--workers", "3"], "--workers 3: the inprocess executor"),
    ],
)
def test_quickstart_refuses_workers_it_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    """As ``run`` refuses them: one line naming the option, exit 2, no store."""
    store = tmp_path / "qs.sqlite"
    assert main(["quickstart", "--store", str(store), "--no-progress", *options]) == 2
    assert f"walking-noise: error: {message}" in capsys.readouterr().err
    assert not store.exists()
