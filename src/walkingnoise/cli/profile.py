"""The ``sqnr`` command: the signal-to-noise ratio of a trained model's activations per site."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from walkingnoise._files import check_folder, is_database
from walkingnoise.cli._common import parse_sigma, say_other_data

if TYPE_CHECKING:
    from walkingnoise.experiment import Experiment
    from walkingnoise.noise.instrument import NoisyModel


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``sqnr`` command."""
    sqnr = commands.add_parser(
        "sqnr",
        help="signal-to-noise ratio (dB) of the activations at every site of a trained model",
        description="Run the inputs through the model twice, clean and with the noise setting, "
        "and report per site SQNR = 10·log10(Σ clean² / Σ (noisy − clean)²) of what leaves the "
        "site (its own noise plus what earlier sites' noise became). The noise setting defaults "
        "to the experiment's own.",
    )
    sqnr.add_argument("source", type=Path, help="a checkpoint file, or a store with --experiment")
    sqnr.add_argument(
        "--experiment",
        default=None,
        metavar="HASH",
        help="with a store: the experiment (a unique prefix of its hash) whose model to use",
    )
    sqnr.add_argument(
        "--noise",
        default=None,
        choices=["additive", "multiplicative", "mixed"],
        help="noise model (default: the experiment's)",
    )
    sqnr.add_argument("--order", default=None, choices=["mul_first", "add_first"])
    sqnr.add_argument("--ratio", type=float, default=None, help="mixed: σ is an amplitude A")
    sqnr.add_argument(
        "--placement",
        default=None,
        help="global | global-except:KIND | walking:INDEX | map:I=S;J=S (default: the "
        "experiment's)",
    )
    sqnr.add_argument(
        "--sigma",
        type=parse_sigma,
        nargs="+",
        default=None,
        help="σ (MUL,ADD for mixed); several give one profile each (default: the experiment's)",
    )
    sqnr.add_argument(
        "--split", default="test", choices=["test", "validation", "train"], help="inputs used"
    )
    sqnr.add_argument(
        "--samples", type=int, default=None, help="use the first N inputs of the split (all)"
    )
    sqnr.add_argument("--repeats", type=int, default=3, help="noisy passes averaged (default 3)")
    sqnr.add_argument("--seed", type=int, default=0, help="seed of the noise")
    sqnr.add_argument(
        "--out", type=Path, default=None, help="write sqnr.csv, sqnr.png and sqnr.svg here"
    )
    sqnr.add_argument("--data-root", default=None, help="directory holding the dataset files")
    sqnr.set_defaults(handler=_cmd_sqnr)


def load_source(source: Path, experiment: str | None) -> tuple[Experiment, NoisyModel]:
    """(the experiment, its trained model) from a checkpoint file or a store and hash prefix.

    From a store the experiment is the one of the hash (its noise setting is the default); the
    model is its checkpoint (the shared clean model for inference-only experiments).
    """
    from walkingnoise.training.checkpoint import load_checkpoint, read_checkpoint

    if source.is_dir():
        raise ValueError(f"{source}: is a directory; give a checkpoint file or a store")
    if not source.is_file():
        raise ValueError(f"{source}: no such checkpoint or store")
    if not is_database(source):
        if experiment is not None:
            raise ValueError(f"{source}: --experiment needs a store, this is not one")
        return load_checkpoint(source)
    if experiment is None:
        raise ValueError(f"{source} is a store: choose the model with --experiment HASH")
    from walkingnoise.sweep import Store

    with Store(source, read_only=True) as store:
        matches = [e for e in store.experiments() if e.content_hash().startswith(experiment)]
        if not matches:
            raise ValueError(f"{source}: no experiment with a hash starting {experiment!r}")
        if len(matches) > 1:
            raise ValueError(
                f"{source}: {len(matches)} experiments have hashes starting {experiment!r}; "
                "give more characters"
            )
        chosen = matches[0]
        path = store.checkpoint_path(chosen.content_hash())
    if path is None or not path.is_file():
        raise ValueError(
            f"{source}: experiment {chosen.content_hash()[:12]} has no checkpoint (not finished?)"
        )
    _, model = read_checkpoint(path.read_bytes(), str(path))
    return chosen, model


def _setting(
    args: argparse.Namespace, experiment: Experiment, sigma: float | tuple[float, float] | None
) -> Experiment:
    """The experiment with the noise options of the command line (and ``sigma``) put in."""
    changes = {
        key: value
        for key, value in {
            "noise": args.noise,
            "order": args.order,
            "ratio": args.ratio,
            "placement": args.placement,
            "sigma": sigma,
        }.items()
        if value is not None
    }
    fields = experiment.model_dump() | changes | {"train_noise": False}
    if str(fields["placement"]).startswith("map:"):
        if sigma is not None:
            raise ValueError(f"--sigma {sigma}: a map: placement carries its own σ values")
        fields["sigma"] = None
    if isinstance(fields["sigma"], tuple | list) and args.ratio is None:
        fields["ratio"] = None  # a pair takes both σ: a stored amplitude's ratio does not apply
    if fields["noise"] == "none":
        raise ValueError("the model was trained without noise: give --noise, --placement, --sigma")
    from walkingnoise.experiment import Experiment

    return Experiment.model_validate(fields)


def _cmd_sqnr(args: argparse.Namespace) -> None:
    import pandas as pd

    from walkingnoise.analysis.sqnr import sqnr_profile
    from walkingnoise.data import load_dataset
    from walkingnoise.report.profiles import setting_label, sqnr_figure
    from walkingnoise.training.run import seeded_generator

    if args.repeats < 1:
        raise ValueError(f"--repeats must be ≥ 1, got {args.repeats}")
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be ≥ 1, got {args.samples}")
    if args.out is not None:
        check_folder(args.out)  # before the profiles, not after the table
    experiment, model = load_source(args.source, args.experiment)
    settings = [_setting(args, experiment, sigma) for sigma in args.sigma or [None]]
    first = settings[0]
    dataset = load_dataset(first.dataset, root=args.data_root)
    if is_database(Path(args.source)):  # a store: its models ran on the data it recorded
        say_other_data(args.source, dataset)
    split = dataset.split(args.split)
    x = split.x[: args.samples]
    profiles = []
    for setting in settings:
        noise = setting.noise_model()
        assert noise is not None
        profiles.append(
            sqnr_profile(
                model,
                x,
                noise,
                setting.placement_spec(),
                setting.sigma,
                repeats=args.repeats,
                batch_size=setting.recipe.eval_batch_size,
                generator=seeded_generator(args.seed),
            )
        )
    profile = pd.concat(profiles, ignore_index=True)
    setting_text = f"{profiles[0].loc[0, 'noise']} {profiles[0].loc[0, 'placement']}"
    print(
        f"{first.model} on {first.dataset}, {setting_text}: {len(x)} {args.split} inputs, "
        f"R={args.repeats}"
    )
    shown = profiles[0][["site", "site_name", "injects", "signal_power"]].copy()
    shown["injects"] = shown["injects"].map({True: "yes", False: ""})
    shown["signal_power"] = shown["signal_power"].map(lambda v: f"{v:.4g}")
    shown.columns = ["site", "name", "noise here", "signal power"]
    for part in profiles:
        level = setting_label({"sigma": part.loc[0, "sigma"]})
        shown[f"SQNR (dB) {level}"] = part["sqnr_db"].map(lambda v: f"{v:.2f}")
    with pd.option_context("display.max_rows", None, "display.width", 250):
        print(shown.to_string(index=False))
    print("\nSQNR = 10·log10(Σ clean² / Σ (noisy − clean)²) of each site's output; inf: no noise")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table = profile.assign(sigma=profile["sigma"].map(str))
        table.to_csv(args.out / "sqnr.csv", index=False)
        title = f"{first.model} on {first.dataset}: SQNR per site"
        sqnr_figure(profile, title=title, out=args.out, name="sqnr")
        print(f"written: {args.out / 'sqnr.csv'}, sqnr.png, sqnr.svg")
