"""``walking-noise weights``, ``binarization`` and ``mixed-map`` on a tiny real sweep on digits."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from walkingnoise.cli import main
from walkingnoise.sweep import Store, load_results, parse_sweep, run_sweep

#: 2 multiplicative (walking:3), 4 additive with and without clamping, 8 mixed-noise trainings.
STUDY_SWEEP = """
name: study-cli
fixed:
  dataset: digits
  model: mlp
  train_noise: true
  eval_repeats: 2
  recipe: {epochs: 2}
binarization:
  fixed: {noise: multiplicative, placement: "walking:3"}
  grid:
    sigma: {type: choice, options: [1.0, 1.0e8]}
clamped:
  fixed: {noise: additive, placement: "walking:1", sigma: 0.5}
  grid:
    recipe.clamp: {type: choice, options: [null, 1.0]}
    seed: {type: choice, options: [0, 1]}
mixed:
  fixed: {noise: mixed, placement: "walking:4"}
  grid:
    order: {type: choice, options: [mul_first, add_first]}
    sigma_mul: {type: choice, options: [0.1, 1.0]}
    sigma_add: {type: choice, options: [0.1, 1.0]}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "study.sqlite"
    summary = run_sweep(parse_sweep(STUDY_SWEEP, "study.yaml"), path, progress=False)
    assert (summary.ran, summary.failed) == (14, 0)
    return path


@pytest.fixture(scope="module")
def results(store: Path) -> pd.DataFrame:
    return load_results(store)


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("walking-noise: error: ")
    assert "\n" not in err
    return err


# -- weights ----------------------------------------------------------------------------------


def test_weights_compares_unclamped_with_clamped(
    store: Path, results: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "weights.csv"
    args = ["weights", str(store), "--compare", "recipe.clamp", "--where", "noise=additive"]
    assert main([*args, "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "mean |w| recipe.clamp=null" in out
    assert "mean |w| recipe.clamp=1" in out
    assert "ratio = recipe.clamp=null / recipe.clamp=1" in out
    additive = results[results["noise"] == "additive"]
    free = additive[additive["recipe.clamp"].isna()]["weights"]
    clamped = additive[additive["recipe.clamp"].notna()]["weights"]
    ratio = np.mean([w["layers.4"]["mean_abs"] for w in free]) / np.mean(
        [w["layers.4"]["mean_abs"] for w in clamped]
    )
    table = pd.read_csv(csv).set_index("layer")
    assert table.loc["layers.4", "ratio"] == pytest.approx(ratio)
    assert (table["models_a"] == 2).all()
    assert (table["models_b"] == 2).all()
    assert set(table["a"]) == {"recipe.clamp=null"}  # which group each column is
    assert set(table["b"]) == {"recipe.clamp=1"}
    line = next(line for line in out.splitlines() if line.strip().startswith("layers.4 "))
    assert f"{ratio:.2f}" in line or f"{ratio:.3g}" in line
    assert "2/2" in line


def test_weights_needs_a_field_with_two_values(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", str(store), "--compare", "noise"]) == 2
    assert "noise takes 3 value(s)" in _error(capsys)
    assert main(["weights", str(store), "--compare", "seed", "--where", "colour=red"]) == 2
    assert "no column 'colour'" in _error(capsys)
    assert main(["weights", str(store), "--compare", "recipe.clamp", "--by", "colour"]) == 2
    assert "no column 'colour' in the results to split by" in _error(capsys)


# -- binarization -----------------------------------------------------------------------------


def test_binarization_takes_the_largest_sigma_at_the_site(
    store: Path, results: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "bin"
    assert main(["binarization", str(store), "--site", "3", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    chosen = results[(results["placement"] == "walking:3")]
    chosen = chosen[chosen["sigma"].map(lambda s: s == 1e8)]
    key = chosen["hash"].iloc[0][:12]
    assert f"experiment {key}" in out
    assert "site 3 (layers.3:ReLU)" in out
    for name in (f"{key}-site3-histograms.png", f"{key}-site3-histograms.svg", f"{key}-site3.csv"):
        assert (out_dir / name).stat().st_size > 0
    table = pd.read_csv(out_dir / f"{key}-site3.csv").set_index("setting")
    assert list(table.index) == ["clean", "noisy", "quantized"]
    assert table.loc["quantized", "n_levels"] == 3  # σ = 1e8 makes both signs
    assert table.loc["quantized", "threshold_from"] == "otsu"
    assert 0.4 < table.loc["quantized", "zero_fraction"] < 0.7  # about the ReLU zeros
    assert ((table["accuracy"] >= 0) & (table["accuracy"] <= 1)).all()
    for setting in ("clean", "noisy", "quantized"):
        assert re.search(rf"^\s*{setting}\b", out, flags=re.MULTILINE)


def test_binarization_warns_where_the_data_are_not_the_stores(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stored models evaluated on other data than they ran on: the numbers are of those data,
    and a line on stderr says so (here the store's record is made to differ)."""
    copy = tmp_path / "copy.sqlite"
    shutil.copy(store, copy)
    shutil.copytree(store.with_suffix(".checkpoints"), copy.with_suffix(".checkpoints"))
    args = ["binarization", str(copy), "--site", "3", "--out", str(tmp_path / "bin")]
    assert main(args) == 0
    assert "not the data" not in capsys.readouterr().err  # the data it ran on
    with Store(copy) as opened:
        (fingerprint,) = opened.fingerprints("data").values()
        other = ["labels sha256 0" if line.startswith("labels") else line for line in fingerprint]
        opened.save_fingerprints("data", {"digits": other}, replace=True)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: dataset 'digits': not the data {copy} recorded for its")
    assert "its labels differ" in err


def test_binarization_with_given_thresholds_and_sigma(
    store: Path, results: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    low = results[(results["placement"] == "walking:3")]
    low = low[low["sigma"].map(lambda s: s == 1.0)]
    key = low["hash"].iloc[0][:10]
    args = ["binarization", str(store), "--experiment", key, "--out", str(tmp_path)]
    assert main([*args, "--thresholds", "0.01", "10", "--sigma", "100", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "σ=100 at walking:3" in out
    table = pd.read_csv(tmp_path / f"{low['hash'].iloc[0][:12]}-site3-sigma100.csv")
    quantized = table[table["setting"] == "quantized"]
    assert list(quantized["threshold"]) == [0.01, 10.0]
    assert (table["repeats"].iloc[1:] == 1).all()
    assert not math.isnan(quantized["accuracy"].iloc[0])


def test_binarization_errors_are_one_line(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["binarization", str(store), "--experiment", "zzzz"]) == 2
    assert "study.sqlite: no finished experiment with a checkpoint has a hash" in _error(capsys)
    assert main(["binarization", str(store)]) == 2
    assert "differ in" in _error(capsys)
    assert main(["binarization", str(store), "--site", "3", "--thresholds", "1e30"]) == 2
    assert "zero cluster" in _error(capsys)
    assert main(["binarization", str(store), "--site", "40", "--where", "sigma=1e8"]) == 2
    assert "--site 40 does not exist" in _error(capsys)
    assert main(["binarization", str(store), "--site", "3", "--thresholds", "-1"]) == 2
    assert "--thresholds: -1.0 is no magnitude" in _error(capsys)
    assert main(["binarization", str(store), "--site", "3", "--out", str(store)]) == 2
    assert "is a file; give a folder for the output" in _error(capsys)


def test_binarization_of_a_store_without_finished_experiments_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.sqlite"
    Store(empty).close()
    assert main(["binarization", str(empty)]) == 2
    assert "empty.sqlite: no finished experiment with a checkpoint" in _error(capsys)


# -- mixed-map --------------------------------------------------------------------------------


def test_mixed_map_prints_one_table_per_order_and_writes_figures(
    store: Path, results: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mixed-map", str(store), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("σ_add=") == 4  # two rows in each of the two orders' tables
    assert "mul-first" in out
    assert "add-first" in out
    assert f"; 2 figures in {tmp_path} (PNG, SVG)" in out
    for order in ("mul-first", "add-first"):
        assert (tmp_path / f"mixed-map-{order}.png").stat().st_size > 0
        assert (tmp_path / f"mixed-map-{order}.svg").stat().st_size > 0
    points = pd.read_csv(tmp_path / "mixed-map.csv")
    mixed = results[results["noise"] == "mixed"]
    row = mixed[(mixed["order"] == "add_first") & mixed["sigma"].map(lambda s: s == [1.0, 0.1])]
    point = points[(points["order"] == "add_first") & (points["sigma_mul"] == 1.0)]
    point = point[point["sigma_add"] == 0.1]
    assert point["mean"].iloc[0] == pytest.approx(row["noisy_test_accuracy"].iloc[0])
    assert f"{100 * row['noisy_test_accuracy'].iloc[0]:.1f}" in out


def test_mixed_map_of_one_figure_says_figure(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["mixed-map", str(store), "--where", "order=mul_first", "--out", str(tmp_path)]) == 0
    )
    assert f"; 1 figure in {tmp_path} (PNG, SVG)" in capsys.readouterr().out


def test_mixed_map_without_mixed_results_is_an_error(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mixed-map", str(store), "--where", "noise=additive", "--out", str(tmp_path)]) == 2
    message = "study.sqlite: no finished mixed-noise experiments passing --where noise=additive"
    assert message in _error(capsys)


def test_the_report_compares_weights_at_the_noisy_sites_own_layer(
    store: Path, results: pd.DataFrame, tmp_path: Path
) -> None:
    """Walking noise at site 1 (after ``layers.1``): that layer's mean |w| over the models with
    noise there, unclamped against clamped, as computed from the stored weights."""
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "tables" / "weights_at_site.csv")
    assert table[["site", "layer"]].values.tolist() == [[1, "layers.1"]]
    assert table[["a", "b"]].values.tolist() == [["recipe.clamp=null", "recipe.clamp=1"]]
    clamped = results[results["placement"] == "walking:1"]
    groups = {"a": clamped["recipe.clamp"].isna(), "b": clamped["recipe.clamp"] == 1.0}
    for label, rows in groups.items():
        weights = clamped[rows]["weights"]
        mean = np.mean([w["layers.1"]["mean_abs"] for w in weights])
        assert table[f"mean_abs_{label}"].iloc[0] == pytest.approx(mean, rel=1e-3)
        assert table[f"models_{label}"].iloc[0] == len(weights) == 2
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "At the noisy site&#x27;s own layer" in page
