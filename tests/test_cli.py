"""The ``walking-noise`` command: real runs, the site table, and one-line errors for bad input."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from walkingnoise.cli import main
from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import model_names, register_model
from walkingnoise.models import registry as model_registry
from walkingnoise.training import Recipe, evaluate_clean
from walkingnoise.training.checkpoint import load_checkpoint
from walkingnoise.training.memory import DEVICE_ENV
from walkingnoise.training.run import run_experiment

TRAIN_ARGS = [
    "train",
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--batchnorm",
    "--noise",
    "additive",
    "--placement",
    "walking:3",
    "--sigma",
    "0.5",
    "--train-noise",
    "--epochs",
    "3",
    "--seed",
    "0",
]
CLEAN = re.compile(r"^clean test accuracy: (\d+\.\d+) %$", re.MULTILINE)
NOISY = re.compile(r"^noisy test accuracy: (\d+\.\d+) ± (\d+\.\d+) %", re.MULTILINE)


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "walkingnoise.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _accuracies(out: str) -> tuple[float, float, float]:
    clean, noisy = CLEAN.search(out), NOISY.search(out)
    assert clean is not None, out
    assert noisy is not None, out
    values = float(clean.group(1)), float(noisy.group(1)), float(noisy.group(2))
    assert all(0.0 <= v <= 100.0 for v in values)
    return values


# --- train ----------------------------------------------------------------------------------


def test_train_prints_accuracies_of_the_library_run_and_saves_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out" / "model.pt"
    assert main([*TRAIN_ARGS, "--save", str(path)]) == 0
    captured = capsys.readouterr()
    clean, noisy, _std = _accuracies(captured.out)
    assert "noisy training" in captured.out
    assert str(path) in captured.out
    # The same numbers as the library gives for the same experiment.
    experiment = Experiment(
        placement="walking:3", sigma=0.5, train_noise=True, recipe=Recipe(epochs=3), seed=0
    )
    result = run_experiment(experiment, dataset=load_dataset("digits"), progress=False)
    assert f"{clean:.2f}" == f"{100 * result.metrics['clean_test_accuracy']:.2f}"
    assert f"{noisy:.2f}" == f"{100 * result.metrics['noisy_test_accuracy']:.2f}"
    # The checkpoint holds that experiment and a model with the printed clean accuracy.
    loaded, model = load_checkpoint(path)
    assert loaded == experiment
    accuracy = evaluate_clean(model, load_dataset("digits").test).accuracy
    assert f"{100 * accuracy:.2f}" == f"{clean:.2f}"


def test_train_says_it_computes_on_the_cpu_as_the_device_setting_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(TRAIN_ARGS) == 0  # tests/conftest.py sets WALKINGNOISE_DEVICE=cpu
    assert "(noisy training, on cpu)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (
            ["--noise", "mixed", "--sigma", "10", "--ratio", "0.1", "--order", "add_first"],
            "noise: mixed add_first walking:10, amplitude A=10, ratio r=0.1: "
            "sigma_mul=A·(1-r)=9, sigma_add=A·r=1",
        ),
        (
            ["--noise", "mixed", "--sigma", "0,3"],
            "noise: mixed mul_first walking:10 sigma_mul=0 sigma_add=3",
        ),
        (["--noise", "additive", "--sigma", "0.5"], "noise: additive walking:10 sigma=0.5"),
    ],
)
def test_train_names_the_order_ratio_and_each_sigma_of_mixed_noise(
    arguments: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--dataset", "digits", "--placement", "walking:10", "--epochs", "1"]
    assert main([*base, *arguments]) == 0
    assert f"\n{line}\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["--train-noise"], "weight noise: eta=0.1, in training and evaluation"),
        ([], "weight noise: eta=0.1, in evaluation only"),
    ],
)
def test_train_says_whether_weight_noise_is_on_in_training(
    arguments: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--weight-noise", "0.1", "--epochs", "1", *arguments]) == 0
    assert f"\n{line}\n" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests a machine without CUDA")
def test_train_asked_for_cuda_where_there_is_none_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train`` computes where the device setting says, as a sweep's units do."""
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    assert main(TRAIN_ARGS) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"walking-noise: error: {DEVICE_ENV}=cuda: PyTorch finds no CUDA")
    assert err.count("\n") == 1


@pytest.mark.parametrize("module", ["walkingnoise", "walkingnoise.cli"])
def test_python_dash_m_runs_the_command(module: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "models"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) >= {"mlp", "lenet5", "cnn_s"}


#: Runs the console script's entry with the import of the command line held up (as PyTorch's
#: takes a second or more on a cold start), saying on stdout when it is held.
SLOW_IMPORT = """
import importlib.abc, sys, time
class Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "walkingnoise.cli":
            print("importing", flush=True)
            time.sleep(60)
sys.meta_path.insert(0, Slow())
from walkingnoise._command import main
sys.exit(main())
"""


def test_ctrl_c_while_the_command_imports_is_an_interruption_not_a_traceback(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_IMPORT, "models"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline() == "importing\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err, out) == (130, "walking-noise: interrupted\n", "")


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``walking-noise models | head -0``: the reader is gone before anything is written; the
    command stops with 128 + SIGPIPE, as ``cat`` does, and prints no error."""
    process = subprocess.Popen(
        [sys.executable, "-m", "walkingnoise.cli", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGPIPE, err
    assert err == b""
    done = _run_module("models", cwd=tmp_path)  # and with a reader, the list and status 0
    assert done.returncode == 0
    assert set(done.stdout.split()) >= set(model_names())


def test_a_broken_pipe_that_is_not_the_output_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a closed standard output ends quietly; another pipe that breaks is reported."""
    import walkingnoise.cli.experiment as commands

    def broken(_args: object) -> None:
        print("a line before")
        raise BrokenPipeError(32, "Broken pipe (a worker's)")

    monkeypatch.setattr(commands, "_cmd_models", broken)
    assert main(["models"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "a line before\n"
    assert captured.err == "walking-noise: error: [Errno 32] Broken pipe (a worker's)\n"


def test_train_into_a_place_it_cannot_write_stops_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "notes"
    blocker.write_text("a file, not a folder")
    path = blocker / "model.pt"
    assert main([*TRAIN_ARGS, "--save", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"walking-noise: error: {path}: cannot be written ({blocker} is a file, not a folder)"
    ]
    assert "accuracy" not in captured.out  # nothing trained
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.slow
def test_python_dash_m_runs_the_real_command(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    done = _run_module(*TRAIN_ARGS, "--save", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _accuracies(done.stdout)
    experiment, _model = load_checkpoint(path)
    assert (experiment.placement, experiment.sigma, experiment.train_noise) == (
        "walking:3",
        0.5,
        True,
    )
    assert experiment.recipe.epochs == 3


# --- sites and models -----------------------------------------------------------------------


def _site_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"^\d+\s", line)]


def test_sites_prints_the_mlp_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "mlp", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    rows = _site_rows(out)
    assert len(rows) == 11
    assert "11 noise sites" in out
    assert rows[0].split()[:3] == ["0", "input", "input"]
    assert rows[1].split() == ["1", "layers.1:Linear", "linear", "64"]
    assert rows[-1].split() == ["10", "layers.10:Linear", "linear", "10"]


def test_sites_without_batchnorm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "mlp", "--dataset", "digits", "--no-batchnorm"]) == 0
    out = capsys.readouterr().out
    rows = _site_rows(out)
    assert len(rows) == 8
    assert "BatchNorm" not in out
    assert [row.split()[2] for row in rows] == [
        "input",
        "linear",
        "activation",
        "linear",
        "activation",
        "linear",
        "activation",
        "linear",
    ]


def test_models_lists_the_registered_names_and_marks_the_users(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["models"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == model_names()
    assert {"mlp", "mlp256", "mlp1024", "lenet5", "cnn_s"} <= set(listed)
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("aaa_mine")(lambda shape, classes, *, batchnorm: _flat(classes))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "aaa_mine  (yours)"
    assert "mlp" in lines


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "walking-noise: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["train", "--noise", "gauss"], "walking-noise train: error: argument --noise: invalid"),
        (["fitt"], "walking-noise: error: argument COMMAND: invalid choice: 'fitt'"),
        (["run", "study.yaml", "--workers", "two"], "walking-noise run: error: argument --workers"),
        # an option the command does not have: its own --help lists the options, not the top one
        (["train", "--bogus", "3"], "walking-noise train: error: unrecognized arguments: --bogus"),
        (
            ["data", "download", "mnist", "--bogus"],
            "walking-noise data download: error: unrecognized arguments: --bogus",
        ),
        (["fit", "a.sqlite", "b.sqlite"], "walking-noise fit: error: unrecognized arguments: b."),
        (["--bogus", "models"], "walking-noise: error: unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_argument_is_one_line_naming_the_help(
    argv: list[str], start: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse printed the usage first: 14 lines for ``train`` before the one that matters."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(start)
    assert lines[0].endswith(f"(see {start.split(':')[0]} --help)")


# --- bad input ------------------------------------------------------------------------------


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("walking-noise: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--dataset", "nope-ds"], "nope-ds"),
        (["--model", "nope-model"], "nope-model"),
        (["--sigma=-0.5"], "-0.5"),
        (["--sigma", "nan"], "nan"),
        (["--placement", "walking:99"], "99"),
        (["--placement", "walk:3"], "walk:3"),
        (["--noise", "mixed", "--sigma", "0.5"], "ratio"),
        (["--model", "lenet5"], "lenet5"),
        (["--noise", "none", "--sigma", "0.5"], "--sigma 0.5: --noise none injects no"),
        (["--ratio", "0.5"], "--ratio 0.5: only --noise mixed"),
        (["--noise", "multiplicative", "--ratio", "0.5"], "--ratio 0.5: only --noise mixed"),
        (
            ["--noise", "mixed", "--sigma", "0.5,0.1", "--ratio", "0.5"],
            "--ratio 0.5: reads a scalar --sigma as an amplitude",
        ),
        (["--order", "add_first"], "--order add_first: only --noise mixed has an order"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_train_input_exits_2_with_one_line_and_writes_nothing(
    change: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TRAIN_ARGS, "--save", str(tmp_path / "model.pt"), "--epochs", "1", *change]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert fragment in _one_error_line(captured.err)
    assert "accuracy" not in captured.out
    assert list(tmp_path.iterdir()) == []


def test_lenet5_on_digits_sites_names_model_and_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "lenet5", "--dataset", "digits"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "lenet5" in line
    assert "(1, 8, 8)" in line


def _flat(classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))


@pytest.mark.parametrize(
    ("builder", "args", "fragment"),
    [
        (lambda shape, classes, *, batchnorm: "not a model", [], "returned str"),
        (lambda shape, classes, *, batchnorm: _flat(3), ["--no-batchnorm"], "(2, 10)"),
        (lambda shape, classes, *, batchnorm: _flat(10), [], "no BatchNorm layer"),
    ],
    ids=["not-a-module", "wrong-classes", "ignores-batchnorm"],
)
def test_sites_of_a_model_that_is_not_a_classifier_of_the_data_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, builder, args, fragment
) -> None:
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("mine")(builder)
    flat = ["--dataset", "digits", *args]
    assert main(["sites", "mine", *flat]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'mine'" in line
    assert fragment in line


class _FailsInTraining(nn.Module):
    """A model whose forward raises only in training mode (the example pass is in eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("boom only in training")
        return self.fc(x.flatten(1))


def test_train_of_a_model_that_fails_while_training_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("fails")(lambda shape, classes, *, batchnorm: _FailsInTraining())
    args = ["train", "--dataset", "digits", "--model", "fails", "--no-batchnorm", "--noise", "none"]
    saved = tmp_path / "model.pt"
    assert main([*args, "--save", str(saved)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "model 'fails' failed while the experiment ran (RuntimeError: boom only in" in line
    assert not saved.exists()
    with caplog.at_level("INFO", logger="walkingnoise.cli"):
        assert main(["-v", *args]) == 2
    assert "in forward" in caplog.text  # -v: the whole error, where it was raised


def test_training_a_model_with_nothing_to_train_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    register_model("nothing")(  # logits of 10 pooled pixels each, and no parameter at all
        lambda shape, classes, *, batchnorm: nn.Sequential(
            nn.Flatten(), nn.AdaptiveAvgPool1d(classes)
        )
    )
    args = ["train", "--dataset", "digits", "--model", "nothing", "--no-batchnorm"]
    assert main([*args, "--noise", "none", "--epochs", "1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("walking-noise: error: model 'nothing' has no parameter to train")


def test_unknown_model_for_sites(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "nope-model"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "nope-model" in line
    assert "mlp" in line  # the known names are listed


def test_error_from_the_real_command_is_one_line(tmp_path: Path) -> None:
    done = _run_module("sites", "lenet5", "--dataset", "digits", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    line = _one_error_line(done.stderr)
    assert "lenet5" in line
    assert "(1, 8, 8)" in line
