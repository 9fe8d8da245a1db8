"""``walking-noise fit`` and ``walking-noise report`` on a synthetic store."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from walkingnoise.analysis.synthetic import write_synthetic_store
from walkingnoise.analysis.tables import AMPLITUDE_NOTE
from walkingnoise.cli import main
from walkingnoise.sweep import Store


def _changed_copy(store: Path, copy: Path, statements: list[tuple[str, tuple]]) -> Path:
    """A copy of ``store`` with these SQL statements (and their parameters) run on it."""
    shutil.copy(store, copy)
    with sqlite3.connect(copy) as db:
        for statement, parameters in statements:
            db.execute(statement, parameters)
    db.close()
    return copy


def test_fit_prints_the_mu_table(synthetic_store: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["fit", str(synthetic_store), "--a-min", "auto"]) == 0
    out = capsys.readouterr().out
    assert "μ ± err" in out
    assert "quality" in out
    assert "layers.10:Linear" in out  # site names
    assert "62 of 62 curves fitted in log σ," in out


def test_fit_and_the_report_do_not_read_the_per_epoch_history(
    synthetic_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # at 10^5 experiments of 100 epochs, decoding every row's history took 27 of fit's 45 s
    # and 4.7 of its 6.3 GB; neither command uses it, so a damaged one must not stop them
    store = _changed_copy(synthetic_store, tmp_path / "damaged.sqlite", [
        ("UPDATE experiments SET history = '[{not json'", ()),
    ])  # fmt: skip
    assert main(["fit", str(store), "--no-site-names", "--where", "noise=additive"]) == 0
    assert "curves fitted" in capsys.readouterr().out
    assert main(["status", str(store), "--where", "seed=0"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out), "--no-site-names"]) == 0
    assert (out / "index.html").is_file()


def test_fit_says_the_mu_of_mixed_noise_with_a_ratio_is_an_amplitude(
    synthetic_store: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["fit", str(synthetic_store), "--no-site-names"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "μ is" in lines[0]
    units = [line for line in lines[1:] if "walking:4" in line and "0.5" in line.split()]
    assert len(units) == 2  # mixed, both orders, r = 0.5
    assert all("amplitude A" in line for line in units)
    others = [line for line in lines if "global" in line]
    assert len(others) == 4
    assert all(" σ " in line and "amplitude" not in line for line in others)
    assert AMPLITUDE_NOTE in lines


def test_fit_marks_the_curves_that_drop_only_partly(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = write_synthetic_store(tmp_path / "partial.sqlite", floor=0.8)
    assert main(["fit", str(store), "--no-site-names", "--where", "noise=multiplicative"]) == 0
    lines = capsys.readouterr().out.splitlines()
    walking = [line for line in lines if "walking:" in line]
    marked = [line for line in walking if "†" in line]
    assert 0 < len(marked) < len(walking)  # the last three sites fall to chance
    assert any(line.startswith("† the curve drops only partly") for line in lines)


def test_fit_double_and_csv(
    synthetic_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv = tmp_path / "new" / "fits.csv"  # a folder that does not exist yet is made
    args = ["fit", str(synthetic_store), "--double", "--no-site-names", "--csv", str(csv)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "μ1 ± err" in out
    assert "plateau" in out
    assert csv.read_text().startswith("dataset,")


@pytest.mark.slow  # shares the tiny real sweep of test_report
def test_report_writes_the_folder(
    tiny_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    assert main(["report", str(tiny_store), "--out", str(out), "--link-figures"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'index.html'}" in printed
    assert (out / "index.html").is_file()
    assert (out / "report.md").is_file()
    assert any((out / "figures").glob("*site-mu*.svg"))
    assert f"figures: {out / 'figures'} (PNG, SVG)" in printed


def test_a_report_without_results_names_no_folders_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = tmp_path / "empty.sqlite"
    Store(store).close()
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == f"report: {out / 'index.html'}\n"
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "report.md"]


def test_report_goes_beside_the_store_by_default(tmp_path: Path) -> None:
    from walkingnoise.cli.analysis import default_report_dir

    assert default_report_dir(tmp_path / "runs" / "quickstart.sqlite") == (
        tmp_path / "runs" / "quickstart-report"
    )


@pytest.mark.parametrize("command", ["fit", "report"])
def test_a_missing_store_is_one_line_and_status_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "missing.sqlite"
    assert main([command, str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"walking-noise: error: {missing}: no such store\n"
    assert not missing.exists()


def test_fit_of_a_store_with_nothing_to_fit_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = tmp_path / "empty.sqlite"
    Store(store).close()
    assert main(["fit", str(store)]) == 2
    err = capsys.readouterr().err
    assert err == f"walking-noise: error: {store}: no finished experiments with a scalar σ to fit\n"


def test_fit_counts_curves_it_could_not_fit_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Two σ per curve cannot carry a logistic: the summary must not call them fitted."""
    from walkingnoise.sweep import run_sweep
    from walkingnoise.sweep.spec import parse_sweep

    text = """
name: two-sigma
fixed: {dataset: digits, noise: additive, placement: "walking:1", train_noise: false,
        eval_repeats: 1, recipe: {epochs: 1}}
grid: {sigma: {type: choice, options: [0.1, 10.0]}}
"""
    store = tmp_path / "two.sqlite"
    run_sweep(parse_sweep(text, source="two.yaml"), store, progress=False)
    assert main(["fit", str(store), "--no-site-names"]) == 0
    out = capsys.readouterr().out
    assert "0 of 1 curves fitted (1 could not be fitted), 1 with a quality flag" in out


def test_fit_says_unfinished_and_failed_experiments_are_in_no_curve(
    synthetic_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """μ fitted over a half-run store comes with a line saying what its curves lack."""
    done = "SELECT hash FROM experiments WHERE status = 'done' ORDER BY hash LIMIT ?"
    store = _changed_copy(synthetic_store, tmp_path / "unfinished.sqlite", [
        (f"UPDATE experiments SET status = 'pending' WHERE hash IN ({done})", (3,)),
        (f"UPDATE experiments SET status = 'failed' WHERE hash IN ({done})", (2,)),
    ])  # fmt: skip
    assert main(["fit", str(store), "--no-site-names"]) == 0
    out = capsys.readouterr().out
    assert "5 experiments in no curve (3 pending, 0 running, 2 failed)" in out
    assert main(["fit", str(synthetic_store), "--no-site-names"]) == 0
    assert "in no curve" not in capsys.readouterr().out
