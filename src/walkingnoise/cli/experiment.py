"""Commands for single experiments: ``train``, ``sites``, ``models``, ``quickstart``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from walkingnoise._cores import usable_cores
from walkingnoise.cli._common import add_data_options, add_progress_option, parse_sigma

if TYPE_CHECKING:
    from walkingnoise.data.dataset import InMemoryDataset
    from walkingnoise.experiment import Experiment
    from walkingnoise.training.distillation import Distillation
    from walkingnoise.training.run import ExperimentResult


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``sites``, ``models`` and ``quickstart`` commands."""

    train = commands.add_parser("train", help="train and evaluate one experiment")
    add_data_options(train)
    train.add_argument("--model", default="mlp", help="model name (see `walking-noise models`)")
    train.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use BatchNorm (default: on, as in sweeps)",
    )
    train.add_argument(
        "--noise",
        default=None,
        choices=["none", "additive", "multiplicative", "mixed"],
        help="activation noise model (default: additive; none when only weight noise or "
        "distillation is asked for, without --sigma)",
    )
    train.add_argument(
        "--order",
        default=None,
        choices=["mul_first", "add_first"],
        help="mixed: which noise acts first (default mul_first)",
    )
    train.add_argument("--ratio", type=float, default=None, help="mixed: σ is an amplitude A")
    train.add_argument(
        "--gradient",
        default="through_noise",
        choices=["forward_only", "through_noise"],
        help="backward pass of a noise site in noisy training: through the noisy expression "
        "(default, as the published code) or the identity (the papers' wording)",
    )
    train.add_argument(
        "--placement",
        default="global",
        help="global (every site, BatchNorm outputs included; the default) | global-except:KIND "
        "(global-except:batchnorm is the paper's global noise) | walking:INDEX | map:I=S;J=S",
    )
    train.add_argument("--sigma", type=parse_sigma, default=None, help="σ, or MUL,ADD for mixed")
    train.add_argument(
        "--train-noise", action="store_true", help="inject the noise during training too"
    )
    train.add_argument(
        "--weight-noise",
        type=float,
        default=0.0,
        metavar="ETA",
        help="Noisy Machines weight noise: every layer's weights get N(0, (ETA·range)²) on each "
        "forward pass, in evaluation and, with --train-noise, in training (default: 0)",
    )
    train.add_argument(
        "--distill",
        action="store_true",
        help="train by knowledge distillation from a teacher (implied by the three below)",
    )
    train.add_argument(
        "--temperature", type=float, default=None, help="distillation temperature T (default: 6)"
    )
    train.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of the soft-target loss; the labels get 1 - ALPHA (default: 0.9)",
    )
    train.add_argument(
        "--teacher",
        default=None,
        metavar="PATH",
        help="teacher checkpoint (from --save); default: train the clean model of the same "
        "dataset, model, recipe and seed first",
    )
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--clamp", type=float, default=None, help="clamp weights to [-C, C]")
    train.add_argument(
        "--augment",
        action="store_true",
        help="the dataset's published training augmentation (FashionMNIST, SVHN, CIFAR-10: "
        "random crop with padding 4 and horizontal flip; speech_commands: time shift and "
        "background noise on the waveforms)",
    )
    train.add_argument("--eval-repeats", type=int, default=5, help="noisy evaluations R")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", default=None, help="write the trained model to this file")
    add_progress_option(train)
    train.set_defaults(handler=_cmd_train)

    sites = commands.add_parser("sites", help="print the noise-site table of a model")
    sites.add_argument("model", help="model name (see `walking-noise models`)")
    add_data_options(sites)
    sites.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use BatchNorm (default: on, as in sweeps)",
    )
    sites.set_defaults(handler=_cmd_sites)

    models = commands.add_parser(
        "models", help="list the models: the built-in ones and yours (--import)"
    )
    models.set_defaults(handler=_cmd_models)

    quick = commands.add_parser(
        "quickstart", help="the walking-noise study on the bundled digits, written to a store"
    )
    quick.add_argument("--store", type=Path, default=Path("runs") / "quickstart.sqlite")
    cores = usable_cores()
    quick.add_argument(
        "--executor",
        default="process" if cores > 1 else "inprocess",
        choices=["inprocess", "process", "ray"],
        help="default: one process per core",
    )
    quick.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for --executor process (default: one per core)",
    )
    add_progress_option(quick)
    quick.set_defaults(handler=_cmd_quickstart)


def _run_user_experiment(
    experiment: Experiment, dataset: InMemoryDataset, progress: bool | None
) -> ExperimentResult:
    """Run the experiment; what a model's own code raises while it trains or evaluates is
    one line naming the model (a ValueError: exit status 2), not a traceback."""
    from walkingnoise.training.run import run_experiment

    try:
        return run_experiment(experiment, dataset=dataset, progress=progress)
    except (ValueError, KeyError, OSError, ImportError):
        raise  # the command's own one-line errors
    except Exception as error:
        logging.getLogger(__name__).info("the model's error:", exc_info=True)  # shown with -v
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"model {experiment.model!r} failed while the experiment ran "
            f"({type(error).__name__}: {first}); run with -v for the whole error"
        ) from error


def _cmd_train(args: argparse.Namespace) -> None:
    from walkingnoise._files import check_writable
    from walkingnoise.data import load_dataset
    from walkingnoise.experiment import Experiment
    from walkingnoise.training.checkpoint import save_checkpoint
    from walkingnoise.training.memory import default_device, device_label
    from walkingnoise.training.recipe import Recipe

    if args.save and Path(args.save).is_dir():
        raise ValueError(f"--save {args.save}: is a directory; give a file name")
    if args.save:
        check_writable(Path(args.save))  # now, not after the training
    recipe = Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        clamp=args.clamp,
        augment=args.augment,
    )
    distillation = _distillation(args)
    noise = args.noise
    if noise == "none" and args.sigma is not None:
        raise ValueError(f"--sigma {args.sigma}: --noise none injects no activation noise")
    if noise is None:
        alone = args.sigma is None and (args.weight_noise > 0 or distillation is not None)
        noise = "none" if alone else "additive"
    if args.ratio is not None and noise != "mixed":
        raise ValueError(
            f"--ratio {args.ratio:g}: only --noise mixed reads a ratio (σ as an amplitude); "
            f"this is --noise {noise}"
        )
    if args.order is not None and noise != "mixed":
        raise ValueError(
            f"--order {args.order}: only --noise mixed has an order; this is --noise {noise}"
        )
    if args.ratio is not None and isinstance(args.sigma, tuple):
        raise ValueError(
            f"--ratio {args.ratio:g}: reads a scalar --sigma as an amplitude; with "
            "--sigma MUL,ADD leave it out"
        )
    experiment = Experiment(
        dataset=args.dataset,
        model=args.model,
        batchnorm=args.batchnorm,
        recipe=recipe,
        noise=noise,
        order=args.order or "mul_first",
        ratio=args.ratio,
        gradient=args.gradient,
        placement=args.placement,
        sigma=args.sigma,
        train_noise=args.train_noise,
        eval_repeats=args.eval_repeats,
        seed=args.seed,
        weight_noise=args.weight_noise,
        distillation=distillation,
    )
    device = default_device()  # the GPU when there is one, as a sweep's units
    dataset = load_dataset(experiment.dataset, root=args.data_root).to(device)
    result = _run_user_experiment(experiment, dataset, args.progress)
    m = result.metrics
    training = "noisy training" if experiment.train_noise else "inference-only"
    where = device_label(dataset.test.x.device)  # as a sweep's results name it
    print(f"experiment {experiment.content_hash()[:12]}  ({training}, on {where})")
    print(f"noise: {_describe_noise(experiment)}")
    if experiment.weight_noise > 0:
        print(f"weight noise: {_describe_weight_noise(experiment)}")
    if distillation is not None:
        print(
            f"distillation: T={distillation.temperature:g}, alpha={distillation.alpha:g}, "
            f"teacher={distillation.teacher}"
        )
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


def _describe_noise(experiment: Experiment) -> str:
    """The activation noise of ``experiment``, with mixed noise's order and which σ is σ_mul
    and which σ_add, so that a pair or an amplitude reads unambiguously."""
    if experiment.noise == "none":
        return "none (no activation noise)"
    if experiment.noise != "mixed":
        return f"{experiment.noise} {experiment.placement} sigma={experiment.sigma}"
    head = f"mixed {experiment.order} {experiment.placement}"
    sigma, ratio = experiment.sigma, experiment.ratio
    if sigma is None:
        return head  # a map: placement carries its own σ per site
    if isinstance(sigma, tuple):
        return f"{head} sigma_mul={sigma[0]:.6g} sigma_add={sigma[1]:.6g}"
    assert ratio is not None  # validated: a scalar σ of mixed noise needs a ratio
    return (
        f"{head}, amplitude A={sigma:.6g}, ratio r={ratio:.6g}: "
        f"sigma_mul=A·(1-r)={sigma * (1 - ratio):.6g}, sigma_add=A·r={sigma * ratio:.6g}"
    )


def _describe_weight_noise(experiment: Experiment) -> str:
    """η of the weight noise and whether training sees it too, not only evaluation."""
    when = "in training and evaluation" if experiment.train_noise else "in evaluation only"
    return f"eta={experiment.weight_noise:g}, {when}"


def _distillation(args: argparse.Namespace) -> Distillation | None:
    """The distillation settings the train options ask for, or None."""
    from walkingnoise.training.distillation import Distillation

    given = {
        name: value
        for name, value in (
            ("temperature", args.temperature),
            ("alpha", args.alpha),
            ("teacher", args.teacher),
        )
        if value is not None
    }
    if not args.distill and not given:
        return None
    return Distillation(**given)


def _cmd_sites(args: argparse.Namespace) -> None:
    import pandas as pd

    from walkingnoise.data import load_dataset
    from walkingnoise.models import build_model, check_logits
    from walkingnoise.noise import instrument

    dataset = load_dataset(args.dataset, root=args.data_root)
    model = build_model(
        args.model, dataset.input_shape, dataset.num_classes, batchnorm=args.batchnorm
    )
    noisy = instrument(model, dataset.train.x[:2])
    check_logits(args.model, noisy, dataset.train.x[:2], dataset.num_classes)
    table = noisy.site_frame()
    table["shape"] = table["shape"].map(lambda s: "×".join(str(d) for d in s[1:]))
    with pd.option_context("display.max_rows", None, "display.width", 120):
        print(f"{args.model} on {args.dataset}: {len(table)} noise sites (shape without batch)")
        print(table.to_string())


def _cmd_models(_args: argparse.Namespace) -> None:
    from walkingnoise.models import model_names, own_model_names

    own = set(own_model_names())
    for name in model_names():
        print(f"{name}  (yours)" if name in own else name)


def _quickstart_workers(args: argparse.Namespace) -> int:
    """``--workers`` (default: one per core), refused where the executor would ignore it, as
    ``run`` refuses it."""
    if args.workers is None:
        return usable_cores()
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1 and args.executor == "inprocess":
        raise ValueError(
            f"--workers {args.workers}: the inprocess executor runs one unit at a time; "
            "use --executor process"
        )
    return int(args.workers)


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from walkingnoise.cli.analysis import default_report_dir
    from walkingnoise.experiment import Experiment
    from walkingnoise.quickstart import crossing_table, quickstart
    from walkingnoise.report import write_report
    from walkingnoise.sweep import make_executor
    from walkingnoise.sweep.sites import SiteCounter

    print("Walking Noise quickstart: the paper's MLP on scikit-learn's digits, additive and")
    print("multiplicative noise at one site at a time, noisy training and inference-only.")
    workers = _quickstart_workers(args)
    with make_executor(args.executor, workers=workers) as executor:
        summary, results = quickstart(args.store, executor=executor, progress=args.progress)
    print(summary.describe())
    if not (results["status"] == "done").any():
        raise ValueError(
            f"no experiment in {args.store} finished: see why with `walking-noise status "
            f"{args.store} --errors`, then `walking-noise retry {args.store} --failed`"
        )
    sites = SiteCounter()
    for batchnorm in (True, False):
        model = Experiment(dataset="digits", model="mlp", batchnorm=batchnorm, noise="none")
        names = {info.index: info.name for info in sites.table(model)}
        table = crossing_table(results, batchnorm=batchnorm, names=names)
        print(f"\nMLP {'with' if batchnorm else 'without'} BatchNorm: σ at which test accuracy")
        print("falls half way to chance (higher = more robust site), mean of seeds:")
        print(table.to_string(float_format=lambda v: f"{v:9.3g}"))
    print("(inf: accuracy never fell that far within the σ grid)")
    print(f"\nresults: {args.store}  (walkingnoise.sweep.load_results reads them into pandas)")
    print(f"report: {write_report(args.store, default_report_dir(args.store))}")
