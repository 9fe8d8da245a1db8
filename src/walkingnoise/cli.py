"""The ``walking-noise`` command: a thin layer that parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import pydantic

from walkingnoise import __version__

log = logging.getLogger("walkingnoise")


class UsageError(ValueError):
    """A command-line value that cannot be used."""


def _sigma(text: str) -> float | tuple[float, float]:
    """Parse ``0.5`` or a mixed-noise pair ``0.1,0.5`` (σ_mul, σ_add)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a pair 'MUL,ADD': {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"expected one σ or a pair 'MUL,ADD', got {text!r}")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    parser.add_argument("--data-root", default=None, help="directory holding the dataset files")


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: only on a terminal)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="walking-noise",
        description="Measure where and how much activation noise a neural network tolerates.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train and evaluate one experiment")
    _add_data_options(train)
    train.add_argument("--model", default="mlp", help="model name (see `walking-noise models`)")
    train.add_argument(
        "--batchnorm", action=argparse.BooleanOptionalAction, default=True, help="use BatchNorm"
    )
    train.add_argument(
        "--noise",
        default="additive",
        choices=["none", "additive", "multiplicative", "mixed"],
        help="noise model (default: additive)",
    )
    train.add_argument("--order", default="mul_first", choices=["mul_first", "add_first"])
    train.add_argument("--ratio", type=float, default=None, help="mixed: σ is an amplitude A")
    train.add_argument(
        "--gradient", default="forward_only", choices=["forward_only", "through_noise"]
    )
    train.add_argument(
        "--placement",
        default="global",
        help="global | global-except:KIND | walking:INDEX | map:I=S;J=S (default: global)",
    )
    train.add_argument("--sigma", type=_sigma, default=None, help="σ, or MUL,ADD for mixed")
    train.add_argument(
        "--train-noise", action="store_true", help="inject the noise during training too"
    )
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--clamp", type=float, default=None, help="clamp weights to [-C, C]")
    train.add_argument("--eval-repeats", type=int, default=5, help="noisy evaluations R")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", default=None, help="write the trained model to this file")
    _add_progress_option(train)

    sites = commands.add_parser("sites", help="print the noise-site table of a model")
    sites.add_argument("model", help="model name (see `walking-noise models`)")
    _add_data_options(sites)
    sites.add_argument(
        "--batchnorm", action=argparse.BooleanOptionalAction, default=True, help="use BatchNorm"
    )

    commands.add_parser("models", help="list the built-in models")

    quick = commands.add_parser(
        "quickstart", help="MLP on the bundled digits: accuracy vs σ, global and walking noise"
    )
    quick.add_argument("--epochs", type=int, default=30)
    quick.add_argument("--seed", type=int, default=0)
    _add_progress_option(quick)
    return parser


def _cmd_train(args: argparse.Namespace) -> None:
    from walkingnoise.data import load_dataset
    from walkingnoise.experiment import Experiment
    from walkingnoise.training.checkpoint import save_checkpoint
    from walkingnoise.training.recipe import Recipe
    from walkingnoise.training.run import run_experiment

    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, clamp=args.clamp)
    experiment = Experiment(
        dataset=args.dataset,
        model=args.model,
        batchnorm=args.batchnorm,
        recipe=recipe,
        noise=args.noise,
        order=args.order,
        ratio=args.ratio,
        gradient=args.gradient,
        placement=args.placement,
        sigma=args.sigma,
        train_noise=args.train_noise,
        eval_repeats=args.eval_repeats,
        seed=args.seed,
    )
    dataset = load_dataset(experiment.dataset, root=args.data_root)
    result = run_experiment(experiment, dataset=dataset, progress=args.progress)
    m = result.metrics
    training = "noisy training" if experiment.train_noise else "inference-only"
    print(f"experiment {experiment.content_hash()[:12]}  ({training})")
    print(f"noise: {experiment.noise} {experiment.placement} sigma={experiment.sigma}")
    print(f"clean test accuracy: {100 * m['clean_test_accuracy']:.2f} %")
    print(
        f"noisy test accuracy: {100 * m['noisy_test_accuracy']:.2f} "
        f"± {100 * m['noisy_test_accuracy_std']:.2f} %  (R={experiment.eval_repeats})"
    )
    if result.history.diverged:
        print("warning: training diverged (non-finite loss)")
    if args.save:
        path = save_checkpoint(args.save, result.model, experiment, dataset)
        print(f"saved model to {path}")


def _cmd_sites(args: argparse.Namespace) -> None:
    import pandas as pd

    from walkingnoise.data import load_dataset
    from walkingnoise.models import build_model
    from walkingnoise.noise import instrument

    dataset = load_dataset(args.dataset, root=args.data_root)
    model = build_model(
        args.model, dataset.input_shape, dataset.num_classes, batchnorm=args.batchnorm
    )
    table = instrument(model, dataset.train.x[:2]).site_frame()
    table["shape"] = table["shape"].map(lambda s: "×".join(str(d) for d in s[1:]))
    with pd.option_context("display.max_rows", None, "display.width", 120):
        print(f"{args.model} on {args.dataset}: {len(table)} noise sites (shape without batch)")
        print(table.to_string())


def _cmd_models(_args: argparse.Namespace) -> None:
    from walkingnoise.models import model_names

    for name in model_names():
        print(name)


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from walkingnoise.quickstart import accuracy_table, quickstart

    print("Walking Noise quickstart: MLP (3×64, BatchNorm) on scikit-learn's digits,")
    print("additive noise x + N(0, σ²); test accuracy in % (mean of 5 noisy evaluations).")
    frame = quickstart(epochs=args.epochs, seed=args.seed, progress=args.progress)
    print(f"\nclean test accuracy: {100 * frame.attrs['clean_accuracy']:.1f} %")
    for training, title in (
        ("inference-only", "Inference-only noise (trained clean, noise at evaluation)"),
        ("noisy", "Noisy training (the same noise in training and evaluation)"),
    ):
        print(f"\n{title}:")
        print(accuracy_table(frame, training).to_string(float_format=lambda v: f"{v:.1f}"))


COMMANDS = {
    "train": _cmd_train,
    "sites": _cmd_sites,
    "models": _cmd_models,
    "quickstart": _cmd_quickstart,
}


def _one_line(error: BaseException) -> str:
    """A single-line description of a user-facing error."""
    if isinstance(error, pydantic.ValidationError):
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"])
            parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        return "; ".join(parts)
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``walking-noise``; returns the exit status (2 for bad input)."""
    args = _build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, PermissionError) as error:
        print(f"walking-noise: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("walking-noise: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
