"""``walking-noise multiexec plan`` and ``evaluate`` end to end on a tiny real sweep."""

from __future__ import annotations

import math
import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from walkingnoise.analysis.multiexec import execution_plan
from walkingnoise.cli import main
from walkingnoise.sweep import parse_sweep, run_sweep

#: The MLP without BatchNorm (8 sites) trained clean once; walking additive noise at every
#: site over 7 σ, and global noise at 5 σ: 61 inference-only experiments, one training.
SWEEP = """
name: multiexec-test
fixed:
  dataset: digits
  model: mlp
  batchnorm: false
  noise: additive
  train_noise: false
  eval_repeats: 2
  seed: 0
  recipe: {epochs: 10}
walking:
  fixed: {placement: "walking:*"}
  grid:
    sigma: {type: logspace, min: -1, max: 2, num: 7}
global:
  fixed: {placement: global}
  grid:
    sigma: {type: logspace, min: -1.5, max: 0.5, num: 5}
"""
SITES = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("multiexec") / "study.sqlite"
    summary = run_sweep(parse_sweep(SWEEP, "multiexec.yaml"), path, progress=False)
    assert summary.failed == 0
    assert summary.ran == SITES * 7 + 5
    return path


def test_plan_prints_and_writes_plans_that_spend_the_budget(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "plan.csv"
    code = main(
        ["multiexec", "plan", str(store), "--budget", "20", "--power", "1", "2", "--csv", str(csv)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "digits · mlp · no BN · additive · inference-only" in out
    assert "budget n_t = 20 executions over the 8 sites" in out
    assert "global inference-only noise of this model: global: μ =" in out
    table = pd.read_csv(csv)
    assert table["site"].tolist() == list(range(SITES))
    assert table["site_name"].iloc[0] == "input"
    for column in ("uniform", "n(p=1)", "n(p=2)"):
        assert table[column].sum() == 20
        assert table[column].min() >= 1
    mu = dict(zip(table["site"], table["mu"], strict=True))
    assert dict(zip(table["site"], table["n(p=1)"], strict=True)) == execution_plan(mu, 20, 1.0)
    ranked = table.sort_values("mu")
    assert ranked["n(p=2)"].is_monotonic_decreasing


def test_plan_of_power_zero_is_told_apart_from_the_uniform_plan(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["multiexec", "plan", str(store), "--budget", "19", "--power", "0", "1"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "μ ± err" in line).split()
    assert header[-3:] == ["uniform", "1/μ^0", "1/μ"]
    assert "uniform: leftover executions to the lowest site index" in out
    assert "1/μ^0: to the smallest μ" in out


def test_plan_default_budget_is_twice_the_sites(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--no-site-names", "--inference-only", "--where", "batchnorm=false"]
    assert main(["multiexec", "plan", str(store), *arguments]) == 0
    assert f"budget n_t = {2 * SITES} executions" in capsys.readouterr().out


def test_evaluate_compares_uniform_and_guided_plans(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_csv, csv = tmp_path / "plan.csv", tmp_path / "evaluate.csv"
    assert (
        main(
            [
                "multiexec",
                "plan",
                str(store),
                "--budget",
                "16",
                "--power",
                "1",
                "--csv",
                str(plan_csv),
            ]
        )
        == 0
    )
    code = main(
        [
            "multiexec",
            "evaluate",
            str(store),
            "--sigma",
            "0.5",
            "--budget",
            "16",
            "--repeats",
            "5",
            "--csv",
            str(csv),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "R=5" in out
    table = pd.read_csv(csv)
    assert table["plan"].tolist() == ["single", "uniform", "guided 1/μ"]
    assert table["budget"].tolist() == [SITES, 16, 16]
    assert table["repeats"].tolist() == [5, 5, 5]
    assert table["accuracy"].between(0, 1).all()
    assert (table["accuracy_std"] > 0).all()  # fresh noise in every repeat
    plan = pd.read_csv(plan_csv)
    guided = " ".join(f"{s}:{n}" for s, n in zip(plan["site"], plan["n(p=1)"], strict=True))
    assert table.loc[2, "executions"] == guided
    # σ = 0.5 is near this model's global μ: executing every site twice (noise std / √2)
    # lifts the accuracy by more than 6 standard errors of the difference
    margin = 6 * math.hypot(table.loc[0, "accuracy_sem"], table.loc[1, "accuracy_sem"])
    assert table.loc[1, "accuracy"] > table.loc[0, "accuracy"] + margin


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["plan", "--budget", "3"], "budget 3 is smaller than the number of sites (8)"),
        (["plan", "--noise", "multiplicative"], "no walking-noise group matches"),
        (["plan", "--train-noise"], "no walking-noise group matches train_noise=True"),
        (["plan", "--power", "-1"], "power must be a finite number ≥ 0"),
        (["plan", "--where", "recipe.epochs"], "must look like KEY=VALUE, got 'recipe.epochs'"),
        (["plan", "--where", "recipe.epochs=5"], "passes --where recipe.epochs=5; recipe.epochs"),
        (["plan", "--where", "recipe.clamp=1"], "passes --where recipe.clamp=1"),
        (["plan", "--where", "seeds=0"], "no column 'seeds' to filter on; did you mean seed?"),
        (["plan", "--placement", "walking:2"], "--placement 'walking:2': use global"),
        (["plan", "--where", "placement_kind=global"], "study.sqlite: no walking-noise curve"),
        (["evaluate", "--sigma", "0.5", "--seed", "4"], "--seed 4: no clean model of that seed"),
        (["evaluate", "--sigma", "0.5", "--repeats", "0"], "--repeats must be ≥ 1"),
    ],
)
def test_bad_input_is_a_one_line_error(
    store: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    action, *rest = arguments
    assert main(["multiexec", action, str(store), *rest]) == 2
    err = capsys.readouterr().err
    assert err.startswith("walking-noise: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_where_selects_experiments_by_any_setting_before_the_fit(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    every, epochs, site = tmp_path / "every.csv", tmp_path / "epochs.csv", tmp_path / "site.csv"
    assert main(["multiexec", "plan", str(store), "--csv", str(every)]) == 0
    # a setting every experiment shares (no group column) keeps them all
    where = ["--where", "recipe.epochs=10", "--where", "seed=0"]
    assert main(["multiexec", "plan", str(store), *where, "--csv", str(epochs)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(epochs), pd.read_csv(every))
    # a site keeps that site's curve only: the other sites have no μ to plan with
    assert main(["multiexec", "plan", str(store), "--where", "site=2"]) == 2
    assert "site(s) 0, 1, 3, 4, 5, 6, 7 get noise under global" in capsys.readouterr().err
    # a key given again adds values, as in `fit`: the sites global-except:linear covers
    sites = [f"--where=site={index}" for index in (0, 2, 4, 6)]
    arguments = [*sites, "--placement", "global-except:linear", "--csv", str(site)]
    assert main(["multiexec", "plan", str(store), *arguments]) == 0
    assert pd.read_csv(site)["site"].tolist() == [0, 2, 4, 6]


def test_evaluate_without_a_checkpoint_says_so(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.parent, copy)
    shutil.rmtree(copy / "study.checkpoints")
    assert main(["multiexec", "evaluate", str(copy / "study.sqlite"), "--sigma", "0.5"]) == 2
    assert "no clean trained model (checkpoint) of the group" in capsys.readouterr().err


def test_missing_store_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multiexec", "plan", str(tmp_path / "none.sqlite")]) == 2
    assert "none.sqlite: no such store" in capsys.readouterr().err


#: Walking additive noise at every site of the MLP without BatchNorm, trained with the noise
#: and inference-only: plans from the noise-trained models' midpoints, one clean model.
TRAINED_SWEEP = """
name: multiexec-trained
fixed:
  dataset: digits
  model: mlp
  batchnorm: false
  noise: additive
  placement: "walking:*"
  eval_repeats: 1
  seed: 0
  recipe: {epochs: 2}
grid:
  train_noise: {type: choice, options: [true, false]}
  sigma: {type: logspace, min: -1, max: 2, num: 5}
"""


def test_evaluating_plans_of_noise_trained_midpoints_on_the_clean_model_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trained.sqlite"
    assert run_sweep(parse_sweep(TRAINED_SWEEP, "t.yaml"), path, progress=False).failed == 0
    command = ["multiexec", "evaluate", str(path), "--sigma", "1", "--repeats", "1"]
    assert main([*command, "--train-noise"]) == 0
    err = capsys.readouterr().err
    assert "warning: the plans follow the midpoints of models trained with noise" in err
    assert main([*command, "--inference-only"]) == 0
    assert "warning: the plans follow" not in capsys.readouterr().err


#: Walking noise at every site and global noise that spares the activations (the ReLUs): the
#: global μ was measured under global-except:activation, not under the plan's default, global.
EXCEPT_SWEEP = """
name: multiexec-except
fixed:
  dataset: digits
  model: mlp
  batchnorm: false
  noise: additive
  train_noise: false
  eval_repeats: 1
  seed: 0
  recipe: {epochs: 2}
walking:
  fixed: {placement: "walking:*"}
  grid:
    sigma: {type: logspace, min: -1, max: 2, num: 5}
global:
  fixed: {placement: "global-except:activation"}
  grid:
    sigma: {type: logspace, min: -1.5, max: 1, num: 6}
"""


def test_plan_suggests_evaluating_under_the_placement_of_the_global_midpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "except.sqlite"
    assert run_sweep(parse_sweep(EXCEPT_SWEEP, "e.yaml"), path, progress=False).failed == 0
    plan = ["multiexec", "plan", str(path), "--no-site-names", "--where", "seed=0"]
    assert main([*plan, "--budget", "12", "--power", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "over the 8 sites that get noise under global;" in out
    measured = re.search(r"global-except:activation: μ = ([0-9.e+-]+)", out)
    assert measured is not None
    suggested = re.search(
        r"  (walking-noise multiexec evaluate \S+ --placement (\S+) --sigma (\S+) "
        r"--where=seed=0 --budget=12 --power 1 2)\n"
        r"    \(this plans the sites of global-except:activation, not those of global above\)",
        out,
    )
    assert suggested is not None, out
    assert suggested[2] == "global-except:activation"
    assert float(suggested[3]) == pytest.approx(float(measured[1]), rel=0.05)
    # the suggestion runs as printed, with the plan's budget and powers
    assert main([*shlex.split(suggested[1])[1:], "--repeats", "1"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"guided 1/μ\s+12 ", table)
    assert re.search(r"guided 1/μ\^2\s+12 ", table)


#: Walking noise at every site, the ReLU sites (2, 4, 6) only at σ too small to lower the
#: accuracy: their curves cannot be fitted, and a placement that spares them does not need them.
SPARED_SWEEP = """
name: multiexec-spared
fixed:
  dataset: digits
  model: mlp
  batchnorm: false
  noise: additive
  train_noise: false
  eval_repeats: 1
  seed: 0
  recipe: {epochs: 2}
others:
  grid:
    placement: {type: choice, options: ["walking:0", "walking:1", "walking:3", "walking:5",
                                        "walking:7"]}
    sigma: {type: logspace, min: -1, max: 2, num: 5}
relu:
  grid:
    placement: {type: choice, options: ["walking:2", "walking:4", "walking:6"]}
    sigma: {type: logspace, min: -4, max: -3, num: 3}
"""


def test_plans_need_no_midpoint_at_the_sites_the_placement_spares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spared.sqlite"
    assert run_sweep(parse_sweep(SPARED_SWEEP, "s.yaml"), path, progress=False).failed == 0
    spared = ["--placement", "global-except:activation", "--no-site-names"]
    assert main(["multiexec", "plan", str(path), *spared]) == 0
    assert "over the 5 sites that get noise under global-except:activation" in (
        capsys.readouterr().out
    )
    command = ["multiexec", "evaluate", str(path), *spared, "--sigma", "0.3", "--repeats", "1"]
    assert main(command) == 0
    assert "0:2 1:2 3:2 5:2 7:2" in capsys.readouterr().out
    assert main(["multiexec", "plan", str(path)]) == 2
    assert "no usable μ at site(s) 2, 4, 6" in capsys.readouterr().err
