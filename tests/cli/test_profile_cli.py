"""``walking-noise sqnr`` from a checkpoint and from a store, with its table and figure."""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from walkingnoise.cli import main
from walkingnoise.cli.profile import _setting
from walkingnoise.data.digits import load_digits
from walkingnoise.experiment import STORED, Experiment
from walkingnoise.sweep import parse_sweep, run_sweep
from walkingnoise.training.recipe import Recipe

from ..sweep.helpers import back_to_schema_1, columns

#: Standard errors allowed (as in tests/noise/stats.py).
Z = 6.0

#: One inference-only experiment: walking noise at site 3 of the MLP with BatchNorm.
SWEEP = """
name: sqnr-test
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:3"
  sigma: 0.3
  train_noise: false
  eval_repeats: 1
  recipe: {epochs: 1}
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqnr") / "clean.pt"
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--noise",
            "none",
            "--epochs",
            "1",
            "--no-progress",
            "--save",
            str(path),
        ]
    )
    assert code == 0
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqnr-store") / "study.sqlite"
    summary = run_sweep(parse_sweep(SWEEP, "sqnr.yaml"), path, progress=False)
    assert summary.ran == 1
    assert summary.failed == 0
    return path


def test_sqnr_of_a_checkpoint_at_one_site(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    sigma, repeats = 0.5, 3
    code = main(
        [
            "sqnr",
            str(checkpoint),
            "--noise",
            "additive",
            "--placement",
            "walking:2",
            "--sigma",
            str(sigma),
            "--repeats",
            str(repeats),
            "--out",
            str(out_dir),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "additive walking:2" in out
    assert "SQNR (dB) σ=0.5" in out
    table = pd.read_csv(out_dir / "sqnr.csv")
    assert table["site"].tolist() == list(range(11))
    assert (table.loc[:1, "sqnr_db"] == math.inf).all()
    assert table["injects"].tolist() == [site == 2 for site in range(11)]
    at = table.loc[2]
    # additive noise alone at the site: mean square σ², relative standard error √(2/N), which
    # 10·log10 turns into 10/ln 10 · √(2/N) dB
    relative = math.sqrt(2 / (at["values_per_input"] * len(load_digits().test) * repeats))
    expected_db = 10 * math.log10(at["signal_power"] / sigma**2)
    assert at["noise_power"] == pytest.approx(sigma**2, rel=Z * relative)
    assert at["sqnr_db"] == pytest.approx(expected_db, abs=Z * 10 / math.log(10) * relative)
    assert (out_dir / "sqnr.png").is_file()
    assert (out_dir / "sqnr.svg").is_file()


def test_several_sigmas_give_one_profile_each(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code = main(
        [
            "sqnr",
            str(checkpoint),
            "--noise",
            "multiplicative",
            "--placement",
            "global",
            "--sigma",
            "0.1",
            "1",
            "--samples",
            "50",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "50 test inputs" in out
    table = pd.read_csv(out_dir / "sqnr.csv")
    assert len(table) == 2 * 11
    low, high = (part["sqnr_db"].to_numpy() for _, part in table.groupby("sigma"))
    assert (low > high).all()  # ten times the noise std: a lower SQNR at every site


def test_sqnr_reads_a_store_without_changing_it(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store of an older schema stays as it is: an older walkingnoise can still run on it."""
    old = shutil.copytree(store.parent, tmp_path / "old") / store.name  # with its checkpoints
    back_to_schema_1(old)
    prefix = Experiment(
        dataset="digits", placement="walking:3", sigma=0.3, eval_repeats=1, recipe=Recipe(epochs=1)
    ).content_hash()[:10]
    assert main(["sqnr", str(old), "--experiment", prefix, "--samples", "100"]) == 0
    assert "SQNR (dB) σ=0.3" in capsys.readouterr().out
    assert "device" not in columns(old, "experiments")


def test_store_experiment_gives_model_and_setting(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = Experiment(
        dataset="digits", placement="walking:3", sigma=0.3, eval_repeats=1, recipe=Recipe(epochs=1)
    )
    prefix = experiment.content_hash()[:10]
    assert main(["sqnr", str(store), "--experiment", prefix, "--samples", "100"]) == 0
    out = capsys.readouterr().out
    assert "additive walking:3" in out
    assert "SQNR (dB) σ=0.3" in out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith(("2 ", "3 "))]
    assert lines[0][-1] == "inf"
    assert lines[1][-1] != "inf"


@pytest.mark.parametrize(
    ("which", "arguments", "message"),
    [
        ("checkpoint", [], "trained without noise: give --noise"),
        ("checkpoint", ["--experiment", "ab"], "--experiment needs a store"),
        ("checkpoint", ["--noise", "additive"], "needs sigma"),
        (
            "checkpoint",
            ["--noise", "additive", "--sigma", "1", "--placement", "walking:40"],
            "site index 40 out of range",
        ),
        ("store", [], "is a store: choose the model with --experiment"),
        ("missing", [], "missing.pt: no such checkpoint or store"),
        ("folder", [], ": is a directory; give a checkpoint file or a store"),
        ("checkpoint", ["--out", "{checkpoint}"], ": is a file; give a folder for the output"),
        ("store", ["--experiment", "zz"], "no experiment with a hash starting 'zz'"),
        (
            "checkpoint",
            ["--noise", "additive", "--sigma", "1", "--repeats", "0"],
            "--repeats must be ≥ 1",
        ),
        (
            "checkpoint",
            ["--noise", "additive", "--placement", "map:2=0.5", "--sigma", "1"],
            "map: placement carries its own σ",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(
    checkpoint: Path,
    store: Path,
    which: str,
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = {
        "checkpoint": checkpoint,
        "store": store,
        "missing": store.with_name("missing.pt"),
        "folder": store.parent,
    }
    arguments = [a.format(checkpoint=checkpoint) for a in arguments]
    assert main(["sqnr", str(sources[which]), *arguments]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("walking-noise: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert out == ""  # checked before any table is printed


def test_a_pair_of_sigma_drops_a_stored_ratio_the_user_did_not_give() -> None:
    """A store's mixed noise of an amplitude and a ratio, profiled at ``--sigma MUL,ADD``: the
    pair takes both σ, so the stored ratio goes; it was refused as if the user had given it
    (``Experiment`` refuses a pair with a ratio since experiment.STORED came)."""
    stored = Experiment(
        dataset="digits", noise="mixed", ratio=0.5, sigma=0.2, placement="walking:1"
    )
    no_options = argparse.Namespace(noise=None, order=None, ratio=None, placement=None)
    setting = _setting(no_options, stored, (0.1, 0.2))
    assert (setting.sigma, setting.ratio) == ((0.1, 0.2), None)
    # a pair stored beside a ratio before the check (read back with experiment.STORED)
    pair = Experiment.model_validate(stored.model_dump() | {"sigma": (0.1, 0.2)}, context=STORED)
    assert _setting(no_options, pair, None).ratio is None
    given = argparse.Namespace(noise=None, order=None, ratio=0.3, placement=None)
    with pytest.raises(ValueError, match=r"ratio 0\.3 would be ignored"):
        _setting(given, stored, (0.1, 0.2))


def test_a_map_placement_carries_its_own_sigmas(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--noise", "additive", "--placement", "map:2=0.5;5=1", "--samples", "100"]
    assert main(["sqnr", str(checkpoint), *arguments]) == 0
    out = capsys.readouterr().out
    assert "map:2=0.5;5=1" in out
