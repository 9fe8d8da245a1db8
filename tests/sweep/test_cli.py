"""The study commands ``run``, ``status`` and ``retry`` of ``walking-noise``."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from walkingnoise.cli import main
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, load_results
from walkingnoise.training.memory import DEVICE_ENV

from .helpers import set_columns, status_counts, write_sweep

#: Two noisy trainings, two inference-only experiments, and one experiment that cannot train
#: (batches of one sample with BatchNorm).
SWEEP = """
name: tiny
fixed:
  dataset: digits
  model: mlp
  noise: additive
  placement: "walking:2"
  eval_repeats: 1
  recipe: {epochs: 1}
grid:
  sigma: {type: choice, options: [0.1, 1.0]}
  train_noise: {type: choice, options: [true, false]}
"""
BROKEN = """
broken:
  fixed:
    sigma: 0.5
    train_noise: true
    recipe: {epochs: 1, batch_size: 1}
"""


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_counts_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "runs" / "tiny.sqlite"
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--dry-run")
    assert code == 0, err
    assert f"store: {store}" in out
    assert "4 experiments: 0 already done, 0 failed before (use `retry`), 4 to run" in out
    assert "4 to run need 3 trainings (1 clean training shared" in out
    assert "adaptive" not in out
    assert "grid point" not in out
    assert not store.parent.exists()
    adaptive = write_sweep(
        tmp_path,
        SWEEP.replace("{type: choice, options: [0.1, 1.0]}", "{type: adaptive, min: -2, max: 2}"),
    )
    code, out, err = _run(capsys, "run", str(adaptive), "--store", str(store), "--dry-run")
    assert code == 0, err
    assert "adaptive σ: these are the rounds the store's results decide so far" in out
    clean = write_sweep(tmp_path, SWEEP.replace("noise: additive", "noise: none"))
    code, out, err = _run(capsys, "run", str(clean), "--store", str(store), "--dry-run")
    assert code == 0, err
    assert "1 experiment: 0 already done" in out
    assert (
        "3 grid points gave an experiment that another point already gives, counted once: "
        "e.g. train_noise True and False (block root) give the same experiment"
    ) in out


def test_the_default_store_is_under_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_sweep(tmp_path, SWEEP, "my_study.yaml")
    code, out, _ = _run(capsys, "run", "my_study.yaml", "--dry-run")
    assert code == 0
    assert "store: runs/my_study.sqlite" in out


def test_run_status_and_a_second_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "tiny.sqlite"
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    assert "ran 4 experiments (0 failed)" in out
    assert f"store: {store}  (4 done, 0 failed in total)" in out
    assert status_counts(store) == {"done": 4}

    code, out, _ = _run(capsys, "status", str(store))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{store}: 4 experiments"
    assert "  pending  0" in lines
    assert "  running  0" in lines
    assert "  done     4" in lines
    assert "  failed   0" in lines
    assert "  clean trainings stored: 1" in lines

    code, out, _ = _run(capsys, "run", str(sweep), "--store", str(store), "--dry-run")
    assert code == 0
    assert "4 experiments: 4 already done, 0 failed before (use `retry`), 0 to run" in out
    assert "0 to run need 0 trainings" in out
    code, out, _ = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0
    assert "ran " not in out
    assert status_counts(store) == {"done": 4}


def test_status_where_counts_the_experiments_of_a_setting_whatever_their_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "tiny.sqlite"
    assert _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")[0] == 0
    pending = Experiment(dataset="digits", noise="additive", sigma=0.1, placement="walking:2",
                         eval_repeats=1, recipe={"epochs": 2}, seed=5)  # fmt: skip
    with Store(store) as opened:
        opened.add([(pending, "later")])

    code, out, _ = _run(capsys, "status", str(store), "--where", "sigma=0.1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{store}: 3 experiments --where sigma=0.1"
    assert "  pending  1" in lines
    assert "  done     2" in lines
    assert "  others in the store: 2" in lines
    code, out, _ = _run(
        capsys, "status", str(store), "--where", "sigma=0.1", "--where", "train_noise=false"
    )
    assert out.splitlines()[0].startswith(f"{store}: 2 experiments --where sigma=0.1 --where")
    code, _, err = _run(capsys, "status", str(store), "--where", "sigmaa=0.1")
    assert code == 2
    assert err.startswith("walking-noise: error: ")
    assert "sigmaa" in err
    assert err.count("\n") == 1


def test_status_says_on_which_devices_the_experiments_computed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "tiny.sqlite"
    assert _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")[0] == 0
    code, out, _ = _run(capsys, "status", str(store))
    assert code == 0
    assert "  done on: cpu 4" in out.splitlines()

    results = load_results(store)
    small, large = results[results["sigma"] == 0.1], results[results["sigma"] == 1.0]
    set_columns(store, small["hash"].iloc[0], device="cuda:0 (NVIDIA H100 80GB HBM3)")
    set_columns(store, large["hash"].iloc[0], device=None)  # finished before devices were kept
    code, out, _ = _run(capsys, "status", str(store))
    assert "  done on: cpu 2, cuda:0 (NVIDIA H100 80GB HBM3) 1, not recorded 1" in out.splitlines()
    code, out, _ = _run(capsys, "status", str(store), "--where", "sigma=0.1")
    assert "  done on: cpu 1, cuda:0 (NVIDIA H100 80GB HBM3) 1" in out.splitlines()


def test_a_failed_experiment_and_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path, SWEEP + BROKEN)
    store = tmp_path / "tiny.sqlite"
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 1, err  # the sweep ran, and a batch job can tell that some of it failed
    assert "ran 1 experiment (1 failed)" in out
    assert f"see why with `walking-noise status {store} --errors`" in out
    assert f"walking-noise retry {store} --failed" in out
    assert status_counts(store) == {"failed": 1}
    code, out, _ = _run(capsys, "status", str(store), "--errors")
    assert code == 0
    lines = out.splitlines()
    reason = lines[lines.index("errors of the failed experiments:") + 1]
    assert reason.startswith("  1 × ValueError: ")
    assert "(e.g. block broken, experiment " in reason
    # run again: nothing to run, but the sweep is still not complete
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 1, err
    assert "1 failed before (use `retry`), 0 to run" in out

    code, out, _ = _run(capsys, "status", str(store))
    assert "  failed   1" in out.splitlines()

    code, out, _ = _run(capsys, "retry", str(store), "--failed")
    assert code == 0
    assert out.startswith("1 failed experiments put back to pending")
    assert status_counts(store) == {"pending": 1}
    code, out, _ = _run(capsys, "retry", str(store), "--failed")
    assert out.startswith("0 failed experiments")


def test_retry_needs_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["retry", str(tmp_path / "s.sqlite")])
    assert caught.value.code == 2
    assert "--failed" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["status", "retry"])
def test_a_missing_store_is_one_line_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    store = tmp_path / "absent.sqlite"
    args = [command, str(store)] + (["--failed"] if command == "retry" else [])
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err == f"walking-noise: error: {store}: no such store\n"
    assert not store.exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_bad_sweep_exits_2_with_the_yaml_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    sweep = write_sweep(tmp_path, SWEEP.replace("walking:2", "walking:11"))
    store = tmp_path / "runs" / "bad.sqlite"
    args = ["run", str(sweep), "--store", str(store)] + (["--dry-run"] if dry_run else [])
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"walking-noise: error: {sweep}: fixed.placement: site 11 is beyond")
    assert not store.parent.exists()


def test_a_sweep_over_the_limit_needs_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(
        tmp_path, "fixed: {noise: none}\ngrid: {seed: {type: range, min: 0, max: 30000}}\n"
    )
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(tmp_path / "s.sqlite"))
    assert code == 2
    assert "30000 experiments, more than the limit of 20000" in err
    assert "--yes" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_the_real_command_reports_a_bad_sweep_in_one_line(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "fixed:\n  noise: additive\n  sigmaa: 0.1\n", "typo.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "walkingnoise.cli", "run", str(sweep), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"walking-noise: error: {sweep}: fixed.sigmaa: unknown key;")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_wrong_ray_address_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dry_run: list[str]
) -> None:
    """Also in a dry run, which checks what the run would need."""
    pytest.importorskip("ray", reason="the ray executor needs the .[ray] extra")
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "tiny.sqlite"
    code, _, err = _run(
        capsys, "run", str(sweep), "--store", str(store), "--executor", "ray",
        "--ray-address", address, *dry_run,
    )  # fmt: skip
    assert code == 2
    assert err.startswith(f"walking-noise: error: --ray-address {address}: no Ray cluster")
    assert err.count("\n") == 1
    assert not store.exists()


USER_MODELS = """
from torch import nn
from walkingnoise.models import register_model


class UserNet(nn.Module):
    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.hidden, self.act, self.out = nn.Linear(inputs, 16), nn.ReLU(), nn.Linear(16, classes)

    def forward(self, x):
        return self.out(self.act(self.hidden(x.flatten(1))))


@register_model("usernet")
def build(input_shape, num_classes, *, batchnorm):
    size = 1
    for n in input_shape:
        size *= n
    return UserNet(size, num_classes)
"""


def test_a_users_own_model_runs_in_the_pool_workers_with_import(tmp_path: Path) -> None:
    """The model exists where its module is imported: --import names it for the workers too."""
    (tmp_path / "usermodels.py").write_text(USER_MODELS)
    sweep = write_sweep(
        tmp_path,
        SWEEP.replace("model: mlp", "model: usernet\n  batchnorm: false").replace(
            "walking:2", "walking:1"
        ),
    )
    script = Path(sys.executable).with_name("walking-noise")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "walkingnoise.cli"]
    run = [*command, "--import", "usermodels", "run", str(sweep), "--store", "user.sqlite"]
    run += ["--executor", "process", "--workers", "2", "--no-progress"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert status_counts(tmp_path / "user.sqlite") == {"done": 4}
    missing = subprocess.run(
        [*command, "run", str(sweep), "--store", "other.sqlite", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "unknown model 'usernet'" in missing.stderr
    absent = subprocess.run(
        [*command, "--import", "nosuchmodule", "sites", "mlp"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert absent.returncode == 2
    assert absent.stderr.startswith("walking-noise: error: --import nosuchmodule: No module")


@pytest.mark.parametrize(
    ("options", "chosen"),
    [
        ({}, "inprocess"),
        ({"workers": 2}, "process"),
        ({"ray_address": "10.0.0.1:6379"}, "ray"),
        ({"executor": "ray", "workers": 4}, "ray"),
        ({"executor": "process"}, "process"),
        ({"gpus_per_task": 0.5}, "ray"),
    ],
)
def test_the_executor_follows_the_options_given(options: dict, chosen: str) -> None:
    from walkingnoise.cli.sweep import _executor_name

    given = {"executor": None, "workers": 1, "ray_address": None, "gpus_per_task": None}
    args = argparse.Namespace(**(given | options))
    assert _executor_name(args) == chosen


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--executor", "inprocess", "--workers", "2"], "--workers 2: the inprocess executor"),
        (["--executor", "process", "--ray-address", "h:1"], "--ray-address needs --executor ray"),
        (["--workers", "2", "--executor", "process", "--gpus-per-task", "0.5"], "--gpus-per-task"),
        (["--gpus-per-task", "2"], "--gpus-per-task 2: give 0 (CPUs only)"),
        (["--gpus-per-task", "-0.5"], "--gpus-per-task -0.5: give 0"),
        (["--gpus-per-task", "0.00001"], "--gpus-per-task 1e-05: give 0"),
    ],
)
def test_options_the_executor_would_ignore_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "tiny.sqlite"
    code, _, err = _run(capsys, "run", str(sweep), "--store", str(store), *options)
    assert code == 2
    assert err.startswith(f"walking-noise: error: {message}")
    assert err.count("\n") == 1
    assert not store.exists()


def test_dry_run_and_status_tell_dead_claims_from_live_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed run leaves rows running: the next run does them (dead), another live run keeps
    its own; both a dry run and status say which is which."""
    sweep, store, keys = _three_claimed(tmp_path)  # by this live process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    set_columns(store, keys[0], pid=int(dead.stdout))
    set_columns(store, keys[1], pid=int(dead.stdout))  # keys[2] stays claimed by this process
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--dry-run")
    assert code == 0, err
    assert (
        "4 experiments: 0 already done, 0 failed before (use `retry`), "
        "1 being run by another process (left to it), 3 to run"
    ) in out
    code, out, err = _run(capsys, "status", str(store))
    assert code == 0, err
    assert (
        "  running  3  (1 by live processes on this host; 2 by processes that are gone: "
        "the next run puts them back to pending)"
    ) in out


def test_claims_of_a_run_killed_on_another_host_go_back_with_retry_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed on one cluster node leaves its claims running; a run on another node
    cannot see that process is gone, so `status` says how to give them back, and `retry
    --running` does, keeping the claims of live processes on this host."""
    sweep, store, keys = _three_claimed(tmp_path)  # by this live process
    for key in keys[:2]:
        set_columns(store, key, host="node17", pid=4321)
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    assert status_counts(store) == {"running": 3, "done": 1}  # left to the dead run
    code, out, err = _run(capsys, "status", str(store))
    assert code == 0, err
    assert (
        "  running  3  (1 by live processes on this host; 2 on other hosts: if their runs "
        f"have ended, `walking-noise retry {store} --running` puts them back to pending)"
    ) in out.splitlines()
    code, out, err = _run(capsys, "retry", str(store), "--running")
    assert code == 0, err
    assert out.startswith("2 running experiments put back to pending")
    assert status_counts(store) == {"pending": 2, "running": 1, "done": 1}
    code, out, err = _run(capsys, "run", str(sweep), "--store", str(store), "--no-progress")
    assert code == 0, err
    assert "ran 2 experiments (0 failed)" in out
    assert status_counts(store) == {"running": 1, "done": 3}


def _three_claimed(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The tiny sweep's file, a store of its experiments, and their keys, the first three
    claimed by this process."""
    from walkingnoise.sweep.spec import expand, load_sweep

    sweep = write_sweep(tmp_path, SWEEP)
    store = tmp_path / "tiny.sqlite"
    with Store(store) as opened:
        experiments = [e.experiment for e in expand(load_sweep(sweep))]
        opened.add((e, "tiny") for e in experiments)
        keys = [e.content_hash() for e in experiments]
        opened.claim(keys[:3])
    return sweep, store, keys
