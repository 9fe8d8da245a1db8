"""``--sweep`` and ``--where`` of ``status``, ``fit`` and ``report``: a study whose sweep file
was edited after a run, analysed as the file is now."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from walkingnoise.cli import main
from walkingnoise.sweep import run_sweep
from walkingnoise.sweep.spec import load_sweep

from ..sweep.helpers import EVAL_ONLY_SWEEP, write_sweep


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(store, first file, edited file): σ 0.1, 1, 10 run, then the file edited to 1, 10, 100
    and run again; the store holds 8 experiments, 6 of them in the edited file."""
    folder = tmp_path_factory.mktemp("edited")
    store = folder / "study.sqlite"
    first = write_sweep(folder, EVAL_ONLY_SWEEP % ([0.1, 1.0, 10.0],), "first.yaml")
    run_sweep(load_sweep(first), store, progress=False)
    now = write_sweep(folder, EVAL_ONLY_SWEEP % ([1.0, 10.0, 100.0],), "study.yaml")
    run_sweep(load_sweep(now), store, progress=False)
    return store, first, now


def _fit_rows(store: Path, tmp_path: Path, *options: str) -> list[dict[str, str]]:
    table = tmp_path / "fits.csv"
    assert main(["fit", str(store), "--no-site-names", "--csv", str(table), *options]) == 0
    with table.open() as file:
        return list(csv.DictReader(file))


def test_status_counts_the_sweep_as_it_is_now(
    edited: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, now = edited
    assert main(["status", str(store)]) == 0
    assert f"{store}: 8 experiments\n" in capsys.readouterr().out
    assert main(["status", str(store), "--sweep", str(now)]) == 0
    out = capsys.readouterr().out
    assert f"{store}: 6 experiments of {now} as it is now\n" in out
    assert "  done     6\n" in out
    assert f"  others in the store: 2 (not defined by {now} now; " in out
    assert "  clean trainings stored: 1 (whole store)\n" in out


def test_status_counts_what_the_file_defines_but_the_store_lacks(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    grown = write_sweep(tmp_path, EVAL_ONLY_SWEEP % ([1.0, 10.0, 100.0, 1000.0],))
    assert main(["status", str(store), "--sweep", str(grown)]) == 0
    out = capsys.readouterr().out
    assert f"{store}: 6 experiments of {grown} as it is now\n" in out
    assert "(2 more it defines are not stored yet" in out


def test_fit_with_sweep_leaves_out_what_only_the_earlier_file_defined(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, first, now = edited
    everything = _fit_rows(store, tmp_path)
    assert [(r["n_points"], r["sigma_min"]) for r in everything] == [("4", "0.1")] * 2
    assert "of 8 experiments" not in capsys.readouterr().out
    chosen = _fit_rows(store, tmp_path, "--sweep", str(now))
    assert [(r["n_points"], r["sigma_min"], r["sigma_max"]) for r in chosen] == [
        ("3", "1.0", "100.0")
    ] * 2
    assert (
        f"6 of 8 experiments (6 finished): those of {now} as it is now\n" in capsys.readouterr().out
    )
    earlier = _fit_rows(store, tmp_path, "--sweep", str(first))
    assert [(r["sigma_min"], r["sigma_max"]) for r in earlier] == [("0.1", "10.0")] * 2


def test_fit_where_selects_by_any_column_and_combines_with_sweep(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, now = edited
    rows = _fit_rows(store, tmp_path, "--where", "site=7")
    assert [r["placement"] for r in rows] == ["walking:7"]
    assert "4 of 8 experiments (4 finished): finished ones that pass --where site=7\n" in (
        capsys.readouterr().out
    )
    rows = _fit_rows(store, tmp_path, "--sweep", str(now), "--where", "placement=walking:0")
    assert [(r["placement"], r["n_points"]) for r in rows] == [("walking:0", "3")]
    out = capsys.readouterr().out
    assert (
        f"3 of 8 experiments (3 finished): those of {now} as it is now; finished ones that "
        "pass --where placement=walking:0\n"
    ) in out


def test_a_key_given_twice_selects_either_value(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    rows = _fit_rows(store, tmp_path, "--where", "sigma=0.1", "--where", "sigma=100")
    assert [(r["n_points"], r["sigma_min"], r["sigma_max"]) for r in rows] == [
        ("2", "0.1", "100.0")
    ] * 2
    assert "4 of 8 experiments (4 finished): finished ones that pass --where sigma=0.1 " in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("command", ["fit", "report"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--where", "colour=red"], "no column 'colour' to filter on; settings: block, "),
        (["--where", "sede=0"], "no column 'sede' to filter on; did you mean seed?"),
        (["--where", "site=3"], "no finished experiment passes --where site=3; site takes 0, 7"),
        # values as --where takes them: unclamped is null, a moot setting ''
        (["--where", "recipe.clamp=1"], "recipe.clamp takes null\n"),
        (["--where", "gradient=forward_only"], "gradient takes '' ('' where it does not apply)"),
        (["--where", "site"], "a filter must look like KEY=VALUE, got 'site'"),
        (["--sweep", "missing.yaml"], "missing.yaml: no such sweep file"),
    ],
)
def test_a_selection_that_cannot_be_made_is_one_line(
    command: str,
    options: list[str],
    message: str,
    edited: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, _ = edited
    out = tmp_path / "report"
    extra = ["--out", str(out)] if command == "report" else []
    assert main([command, str(store), "--no-site-names", *extra, *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("walking-noise: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_a_sweep_with_none_of_the_store_is_an_error(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    other = write_sweep(tmp_path, EVAL_ONLY_SWEEP % ([3.0],), "other.yaml")
    assert main(["fit", str(store), "--sweep", str(other)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"walking-noise: error: {store}: none of its experiments is in {other} as it is now\n"
    )


def test_report_with_sweep_reports_the_selection(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, now = edited
    out = tmp_path / "report"
    options = ["--out", str(out), "--no-site-names", "--sweep", str(now)]
    assert main(["report", str(store), *options]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "6 experiments: 0 pending, 0 running, 6 done, 0 failed" in page
    assert f"Selected 6 of the 8 experiments in the store: those of {now} as it is now." in page
    assert "1 shared clean training stored (whole store)" in page
    assert "running `walking-noise report` again with the same selection regenerates" in page
    assert f"<h3>{now}</h3>" in page  # the file given, as it is now, not the stored versions
    assert page.count("<pre>") == 1
    with (out / "tables" / "midpoints.csv").open() as file:
        fits = list(csv.DictReader(file))
    assert sorted(r["sigma_min"] for r in fits) == ["1.0", "1.0"]


def test_a_report_into_the_same_folder_removes_the_tables_it_no_longer_writes(
    edited: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A table an earlier, wider report wrote (here global.csv, listed as the reports list
    theirs) goes; a file of the user's in the folder stays."""
    from walkingnoise.report.html import TABLE_MANIFEST

    store, _, now = edited
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out), "--no-site-names"]) == 0
    tables = out / "tables"
    written = sorted(p.name for p in tables.iterdir() if not p.name.startswith("."))
    assert (tables / TABLE_MANIFEST).read_text().split() == written
    for name in ("global.csv", "global.md"):
        (tables / name).write_text("from a wider report\n")
    with (tables / TABLE_MANIFEST).open("a") as listing:
        listing.write("global.csv\nglobal.md\n")
    (tables / "mine.csv").write_text("a user's own file\n")
    options = ["--sweep", str(now)]
    assert main(["report", str(store), "--out", str(out), "--no-site-names", *options]) == 0
    left = sorted(p.name for p in tables.iterdir() if not p.name.startswith("."))
    assert left == sorted([*written, "mine.csv"])


def test_an_error_in_the_sweep_file_names_the_file(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = edited
    typo = write_sweep(tmp_path, "fixed: {dataset: digits, sigmaa: 1}\n", "typo.yaml")
    for command in ("fit", "status"):
        assert main([command, str(store), "--sweep", str(typo)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith(f"walking-noise: error: {typo}: fixed.sigmaa: unknown key")


def test_an_error_found_while_the_sweep_file_is_read_names_the_file(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An axis the file's parser refuses (before any experiment is built) names the file too,
    as an unknown key of an experiment does."""
    store, _, _ = edited
    text = "grid: {sigma: {type: logspace, min: -1, max: 1, num: 0}}\n"
    empty = write_sweep(tmp_path, text, "empty.yaml")
    for command in ("fit", "status", "report"):
        assert main([command, str(store), "--sweep", str(empty)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith(f"walking-noise: error: {empty}: grid.sigma.num: "), err
        assert err.count("\n") == 1


def test_fit_says_nothing_of_a_selection_it_cannot_fit(
    edited: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep file whose experiments are stored but none has finished yet."""
    from walkingnoise.sweep import Store
    from walkingnoise.sweep.spec import expand

    store = tmp_path / "copy.sqlite"
    shutil.copy(edited[0], store)
    later = write_sweep(tmp_path, EVAL_ONLY_SWEEP % ([1000.0],), "later.yaml")
    with Store(store) as opened:
        opened.add((e.experiment, e.block) for e in expand(load_sweep(later)))
    assert main(["fit", str(store), "--sweep", str(later)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"walking-noise: error: {store}: no finished experiments with a scalar σ to fit among "
        "the 2 selected (0 finished)\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "{store}", "--no-site-names", "--csv", "{store}"],
        ["multiexec", "evaluate", "{store}", "--sigma", "1", "--csv", "{store}"],
        ["train", "--dataset", "digits", "--sigma", "0.1", "--epochs", "1", "--save", "{store}"],
    ],
)
def test_an_output_file_that_is_the_store_is_refused_and_the_store_kept(
    command: list[str],
    edited: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A slip such as ``fit STORE --csv STORE`` would replace every stored result."""
    store = tmp_path / "study.sqlite"
    shutil.copy(edited[0], store)
    before = store.read_bytes()
    assert main([part.format(store=store) for part in command]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"walking-noise: error: {store}: is a SQLite database (a store?); not overwriting it "
        "with this output\n"
    )
    assert store.read_bytes() == before


@pytest.mark.parametrize("command", ["fit", "report", "noisy-machines"])
def test_where_help_names_device_among_the_keys(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--where device=cuda`` selects by where experiments computed (README); the help's
    list of keys beyond the settings names it."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "block, device" in help_text
