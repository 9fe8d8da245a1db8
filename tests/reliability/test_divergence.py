"""σ = 1e13: training that diverges never crashes a sweep, is flagged, and counts as chance.

Multiplicative noise of σ = 1e13 in noisy training overflows float32 within a few layers: the
loss turns NaN and the weights follow. The sweep must finish, store that experiment ``done``
with ``diverged`` set and its accuracy, leave its cohort mates (trained in the same stack)
untouched, and the analysis must count it as a chance-level point.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from walkingnoise.analysis.curves import accuracy_curves, prepare_results
from walkingnoise.analysis.tables import midpoint_table
from walkingnoise.cli import main
from walkingnoise.data import load_dataset
from walkingnoise.sweep import load_results, parse_sweep, run_sweep

pytestmark = pytest.mark.slow

SWEEP = """
name: diverge
fixed:
  dataset: digits
  model: mlp
  placement: global
  eval_repeats: 2
  recipe: {epochs: 2}
grid:
  noise: {type: choice, options: [additive, multiplicative]}
  sigma: {type: choice, options: %s}
  train_noise: {type: choice, options: [true, false]}
"""
HUGE = 1e13


def _run(path: Path, sigmas: list[float]) -> pd.DataFrame:
    summary = run_sweep(parse_sweep(SWEEP % (sigmas,), "diverge.yaml"), path, progress=False)
    assert summary.failed == 0
    return load_results(path)


def _select(frame: pd.DataFrame, noise: str, sigma: float, train_noise: bool) -> pd.Series:
    chosen = (frame["noise"] == noise) & (frame["sigma"] == sigma)
    rows = frame[chosen & (frame["train_noise"] == train_noise)]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("diverge") / "diverge.sqlite"
    _run(path, [0.1, 0.5, HUGE])
    return path


def test_the_sweep_finishes_and_flags_only_the_diverged_training(diverged: Path) -> None:
    frame = load_results(diverged)
    assert len(frame) == 12
    assert set(frame["status"]) == {"done"}
    flagged = frame[frame["diverged"]]
    assert len(flagged) == 1
    row = flagged.iloc[0]
    assert (row["noise"], row["sigma"], row["train_noise"]) == ("multiplicative", HUGE, True)
    assert math.isnan(row["clean_test_loss"])
    assert row["history"][-1]["train_loss"] != row["history"][-1]["train_loss"]  # NaN


def test_a_diverged_model_measures_chance_level_accuracy(diverged: Path) -> None:
    """Its stored accuracy is what was measured: one class for every input, about 1/K here."""
    row = _select(load_results(diverged), "multiplicative", HUGE, True)
    n_test = len(load_dataset("digits").test)
    chance = row["chance_accuracy"]
    assert chance == pytest.approx(0.1)
    tolerance = 3 * math.sqrt(chance * (1 - chance) / n_test)  # a class's share of the test set
    assert abs(row["noisy_test_accuracy"] - chance) < tolerance
    assert abs(row["clean_test_accuracy"] - chance) < tolerance


def test_a_diverging_model_leaves_its_cohort_mates_untouched(
    diverged: Path, tmp_path: Path
) -> None:
    """Trained in one stack with the diverging model, the others get the numbers they get
    without it."""
    alone = _run(tmp_path / "alone.sqlite", [0.1, 0.5])
    together = load_results(diverged)
    columns = ["clean_test_accuracy", "noisy_test_accuracy", "noisy_test_loss"]
    for sigma in (0.1, 0.5):
        one = _select(alone, "multiplicative", sigma, True)
        other = _select(together, "multiplicative", sigma, True)
        assert one["hash"] == other["hash"]
        assert not other["diverged"]
        assert one[columns].to_dict() == other[columns].to_dict()


def test_curves_and_fits_count_a_diverged_point_at_chance(diverged: Path) -> None:
    results = load_results(diverged)
    prepared = prepare_results(results)
    broken = prepared[prepared["diverged"]]
    assert len(broken) == 1
    assert broken["noisy_test_accuracy"].tolist() == broken["chance_accuracy"].tolist()
    assert broken["clean_test_accuracy"].tolist() == broken["chance_accuracy"].tolist()
    assert broken["noisy_test_accuracy_std"].tolist() == [0.0]

    curves = accuracy_curves(results)
    curve = curves[(curves["noise"] == "multiplicative") & curves["train_noise"]]
    point = curve[curve["sigma"] == HUGE].iloc[0]
    assert (point["n"], point["diverged"], point["mean"]) == (1, 1, pytest.approx(0.1))
    assert curves["diverged"].sum() == 1

    table = midpoint_table(results)
    fitted = table[(table["noise"] == "multiplicative") & table["train_noise"]]
    assert fitted["diverged"].tolist() == [1]
    assert table["diverged"].sum() == 1


def test_fit_and_report_commands_work_on_a_store_with_a_diverged_experiment(
    diverged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", str(diverged), "--no-site-names"]) == 0
    out = tmp_path / "report"
    code = main(["report", str(diverged), "--out", str(out), "--no-site-names"])
    assert code == 0, capsys.readouterr().err
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "1 finished experiment diverged in training (the loss became NaN" in page
