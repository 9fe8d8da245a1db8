"""``--sweep`` and ``--where`` of ``noisy-machines``, as ``fit`` and ``report`` select: a Noisy
Machines study whose sweep file was edited after a run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from walkingnoise.analysis.noisy_machines import ETA_ZERO_NOTE
from walkingnoise.cli import main
from walkingnoise.sweep import run_sweep
from walkingnoise.sweep.spec import load_sweep

from ..sweep.helpers import write_sweep

#: Inference-only and noise-injection training of the MLP on digits, 2 seeds, at these η.
SWEEP = """
name: noisy-machines-cli
fixed:
  dataset: digits
  model: mlp
  noise: none
  eval_repeats: 2
  recipe: {epochs: 2}
grid:
  weight_noise: {type: choice, options: %s}
  seed: {type: choice, options: [0, 1]}
inference_only:
  fixed: {train_noise: false}
noise_injection:
  fixed: {train_noise: true}
"""


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(store, first file, edited file): η 0 and 0.1 run, then the file edited to η 0 and 0.2
    and run again; the store holds 10 experiments (η = 0 is one clean model per seed), 6 of
    them in the edited file."""
    folder = tmp_path_factory.mktemp("edited")
    store = folder / "study.sqlite"
    first = write_sweep(folder, SWEEP % ([0.0, 0.1],), "first.yaml")
    run_sweep(load_sweep(first), store, progress=False)
    now = write_sweep(folder, SWEEP % ([0.0, 0.2],), "study.yaml")
    run_sweep(load_sweep(now), store, progress=False)
    return store, first, now


def _table(store: Path, tmp_path: Path, *options: str) -> pd.DataFrame:
    table = tmp_path / "table.csv"
    assert main(["noisy-machines", str(store), "--csv", str(table), *options]) == 0
    return pd.read_csv(table)


def test_without_a_selection_every_eta_is_tabulated(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    table = _table(store, tmp_path)
    assert sorted(set(table["weight_noise"])) == [0.0, 0.1, 0.2]
    assert set(table["seeds"]) == {2}
    out = capsys.readouterr().out
    assert "of 10 experiments" not in out
    assert f"\n{ETA_ZERO_NOTE}\n" in out  # the η = 0 rows of both columns are one model


def test_the_note_on_eta_zero_is_left_out_where_no_row_is_shared(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    _table(store, tmp_path, "--where", "weight_noise=0.1")
    assert "η = 0" not in capsys.readouterr().out


def test_sweep_leaves_out_what_only_the_earlier_file_defined(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, first, now = edited
    table = _table(store, tmp_path, "--sweep", str(now))
    assert sorted(set(table["weight_noise"])) == [0.0, 0.2]
    out = capsys.readouterr().out
    assert out.startswith(f"6 of 10 experiments (6 finished): those of {now} as it is now\n\n")
    earlier = _table(store, tmp_path, "--sweep", str(first))
    assert sorted(set(earlier["weight_noise"])) == [0.0, 0.1]


def test_where_selects_by_any_column_and_combines_with_sweep(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, now = edited
    table = _table(store, tmp_path, "--where", "seed=1")
    assert set(table["seeds"]) == {1}
    assert sorted(set(table["weight_noise"])) == [0.0, 0.1, 0.2]
    out = capsys.readouterr().out
    assert out.startswith(
        "5 of 10 experiments (5 finished): finished ones that pass --where seed=1\n"
    )
    table = _table(store, tmp_path, "--sweep", str(now), "--where", "seed=0")
    assert sorted(set(table["weight_noise"])) == [0.0, 0.2]
    assert set(table["seeds"]) == {1}
    assert (
        f"3 of 10 experiments (3 finished): those of {now} as it is now; finished ones that "
        "pass --where seed=0\n"
    ) in capsys.readouterr().out


def test_a_key_given_twice_selects_either_value(
    edited: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    store, _, _ = edited
    table = _table(store, tmp_path, "--where", "weight_noise=0.1", "--where", "weight_noise=0.2")
    assert sorted(set(table["weight_noise"])) == [0.1, 0.2]
    assert set(table["seeds"]) == {2}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--where", "colour=red"], "no column 'colour' to filter on; settings: block, "),
        (["--where", "sede=0"], "no column 'sede' to filter on; did you mean seed?"),
        (["--where", "seed=3"], "no finished experiment passes --where seed=3; seed takes 0, 1"),
        (["--where", "seed"], "a filter must look like KEY=VALUE, got 'seed'"),
        (["--sweep", "missing.yaml"], "missing.yaml: no such sweep file"),
    ],
)
def test_a_selection_that_cannot_be_made_is_one_line(
    options: list[str],
    message: str,
    edited: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, _ = edited
    table = tmp_path / "table.csv"
    assert main(["noisy-machines", str(store), "--csv", str(table), *options]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("walking-noise: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not table.exists()


def test_a_selection_without_weight_noise_says_so(
    edited: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    options = ["--where", "weight_noise=0"]
    assert main(["noisy-machines", str(store), *options]) == 2
    assert capsys.readouterr().err == (
        f"walking-noise: error: {store}: no experiment among the 2 selected has weight noise "
        "(weight_noise > 0)\n"
    )


def test_a_store_without_finished_experiments_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As every other analysis command says it: the line names the store it read."""
    from walkingnoise.sweep.store import Store

    store = tmp_path / "empty.sqlite"
    Store(store).close()
    assert main(["noisy-machines", str(store)]) == 2
    assert capsys.readouterr().err == (
        f"walking-noise: error: {store}: no finished experiments to tabulate\n"
    )
