"""Malformed sweep files: only one-line errors naming the YAML path, and nothing written.

1,000 generated files go through what ``walking-noise run`` does before it opens a store
(``load_sweep``, then ``expand`` with the sites of the real models); a smaller number through
the command itself, in this process, which must exit with status 2 and one line on stderr.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from walkingnoise.cli import main
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, SweepError, expand, load_sweep
from walkingnoise.sweep.sites import SiteCounter
from walkingnoise.sweep.spec import DEFAULT_MAX_EXPERIMENTS

from ..sweep.helpers import write_sweep
from .malformed import BASE, KINDS, Malformed, dump, malformed_sweeps

EXAMPLES = 1000
CLI_EXAMPLES = 40


def _head(message: str) -> str:
    """The path a one-line error starts with (before the first ``": "``)."""
    return message.split(": ", 1)[0]


def _names_the_path(message: str, case: Malformed, source: Path) -> bool:
    """Whether the error starts with the broken path, after the file (or with the file alone,
    for whole-file errors)."""
    if not case.where:
        return _head(message) == str(source)
    head = _head(message.removeprefix(f"{source}: "))
    return head == case.where or head.startswith(case.where + ".")


def _validate(source: Path, sites: SiteCounter) -> None:
    """What ``walking-noise run`` does with a sweep file before it opens the store."""
    expand(load_sweep(source), site_count=sites, max_experiments=DEFAULT_MAX_EXPERIMENTS)


def _check_error(error: SweepError, case: Malformed, source: Path) -> None:
    message = str(error)
    assert "\n" not in message, (case, message)
    assert "\r" not in message, (case, message)
    assert _names_the_path(message, case, source), (case, message)


def test_the_base_sweep_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "base.yaml"
    path.write_bytes(dump(BASE))
    entries = expand(load_sweep(path), site_count=SiteCounter())
    assert len(entries) == 6


@pytest.mark.slow
def test_1000_malformed_sweep_files_give_one_line_errors_naming_the_path(tmp_path: Path) -> None:
    sites = SiteCounter()
    source = tmp_path / "bad.yaml"
    seen: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=malformed_sweeps())
    def check(case: Malformed) -> None:
        source.write_bytes(case.data)
        with pytest.raises(SweepError) as caught:
            _validate(source, sites)
        _check_error(caught.value, case, source)
        seen[case.kind] += 1

    check()
    assert sum(seen.values()) >= EXAMPLES
    assert set(seen) == set(KINDS), seen


@pytest.mark.slow
def test_malformed_sweep_files_through_the_command_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "existing" / "study.sqlite"
    with Store(existing) as store:
        store.add([(Experiment(noise="additive", sigma=0.1, placement="walking:1"), "root")])
    before = sorted((p.name, p.read_bytes()) for p in existing.parent.iterdir())
    absent = tmp_path / "absent" / "study.sqlite"
    source = tmp_path / "bad.yaml"
    runs = Counter[str]()

    @settings(max_examples=CLI_EXAMPLES, derandomize=True, deadline=None, database=None)
    @given(case=malformed_sweeps())
    def check(case: Malformed) -> None:
        source.write_bytes(case.data)
        for store in (existing, absent):
            code = main(["run", str(source), "--store", str(store), "--no-progress"])
            out, err = capsys.readouterr()
            assert code == 2, (case, out, err)
            assert out == "", case
            assert err.count("\n") == 1, (case, err)
            assert err.endswith("\n"), (case, err)
            assert err.startswith("walking-noise: error: "), (case, err)
            assert "Traceback" not in err, (case, err)
            message = err.removeprefix("walking-noise: error: ").rstrip("\n")
            assert _names_the_path(message, case, source), (case, message)
        assert not absent.parent.exists(), case
        assert sorted((p.name, p.read_bytes()) for p in existing.parent.iterdir()) == before
        runs[case.kind] += 1

    check()
    assert sum(runs.values()) >= CLI_EXAMPLES
    assert len(runs) >= 5, runs


# -- the experiment limit ---------------------------------------------------------------------

SIGMA_GRID = """
fixed: {dataset: digits, model: mlp, noise: additive, placement: "walking:1"}
grid:
  sigma: {type: logspace, min: -2, max: 2, num: %s}
"""


@pytest.mark.parametrize(
    ("num", "start"),
    [
        ("1e6", "{sweep}: grid.sigma.num: Input should be a valid integer"),  # 1e6 is text
        ("1000000", "{sweep}: the sweep has 1000000 experiments, more than the limit of 20000"),
        ("10000000000000000", "{sweep}: the sweep has 10000000000000000 experiments"),
    ],
)
def test_a_typo_in_a_grid_size_is_refused_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], num: str, start: str
) -> None:
    sweep = write_sweep(tmp_path, SIGMA_GRID % num)
    store = tmp_path / "runs" / "study.sqlite"
    code = main(["run", str(sweep), "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("walking-noise: error: " + start.format(sweep=sweep)), err
    assert not store.parent.exists()


def test_the_experiment_limit_is_an_option_and_yes_lifts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, SIGMA_GRID % 30)
    store = tmp_path / "study.sqlite"
    code = main(["run", str(sweep), "--store", str(store), "--max-experiments", "10"])
    err = capsys.readouterr().err
    assert code == 2
    assert "30 experiments, more than the limit of 10; check the grid sizes, or" in err
    assert "--yes" in err
    assert not store.exists()
    args = ["run", str(sweep), "--store", str(store), "--max-experiments", "10", "--yes"]
    assert main([*args, "--dry-run"]) == 0
    assert "30 experiments: 0 already done" in capsys.readouterr().out
    assert main(["run", str(sweep), "--store", str(store), "--max-experiments", "0"]) == 2
    assert "--max-experiments must be at least 1" in capsys.readouterr().err


def test_the_help_states_the_default_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert f"(default: {DEFAULT_MAX_EXPERIMENTS};" in " ".join(capsys.readouterr().out.split())
