"""Commands for single experiments: ``train``, ``sites``, ``models``, ``quickstart``."""

from __future__ import annotations

import argparse

from walkingnoise.cli._common import add_data_options, add_progress_option, parse_sigma


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``sites``, ``models`` and ``quickstart`` commands."""

    train = commands.add_parser("train", help="train and evaluate one experiment")
    add_data_options(train)
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
    train.add_argument("--sigma", type=parse_sigma, default=None, help="σ, or MUL,ADD for mixed")
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
    add_progress_option(train)
    train.set_defaults(handler=_cmd_train)

    sites = commands.add_parser("sites", help="print the noise-site table of a model")
    sites.add_argument("model", help="model name (see `walking-noise models`)")
    add_data_options(sites)
    sites.add_argument(
        "--batchnorm", action=argparse.BooleanOptionalAction, default=True, help="use BatchNorm"
    )
    sites.set_defaults(handler=_cmd_sites)

    models = commands.add_parser("models", help="list the built-in models")
    models.set_defaults(handler=_cmd_models)

    quick = commands.add_parser(
        "quickstart", help="MLP on the bundled digits: accuracy vs σ, global and walking noise"
    )
    quick.add_argument("--epochs", type=int, default=30)
    quick.add_argument("--seed", type=int, default=0)
    add_progress_option(quick)
    quick.set_defaults(handler=_cmd_quickstart)


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
