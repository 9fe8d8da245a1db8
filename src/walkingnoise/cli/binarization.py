"""Study commands over a store: ``weights`` (Table 2), ``binarization`` (self-binarization),
``mixed-map`` (Fig. 6).

Each reads a finished study's store and calls the library: the weight comparison of
:mod:`walkingnoise.analysis.tables`, the quantization test of
:mod:`walkingnoise.analysis.binarization` with the histograms of
:mod:`walkingnoise.report.histograms`, and the maps of :mod:`walkingnoise.report.maps`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from walkingnoise._files import check_folder
from walkingnoise._words import counted
from walkingnoise.cli._common import WHERE_HELP, parse_sigma, say_other_data, write_csv


def study_dir(store: Path, study: str) -> Path:
    """Where a study's files go without ``--out``: ``<store dir>/<store name>-<study>``."""
    return store.with_name(f"{store.stem}-{study}")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``weights``, ``binarization`` and ``mixed-map`` commands."""
    weights = commands.add_parser(
        "weights",
        help="compare per-layer weight statistics of two groups (e.g. clamped vs unclamped)",
    )
    weights.add_argument("store", type=Path, help="the study's store (.sqlite)")
    weights.add_argument(
        "--compare",
        required=True,
        metavar="FIELD",
        help="a config field with exactly two values in the selection, e.g. recipe.clamp",
    )
    weights.add_argument("--where", action="append", metavar="KEY=VALUE", help=WHERE_HELP)
    weights.add_argument(
        "--by",
        nargs="+",
        default=None,
        metavar="FIELD",
        help="one table per value of these fields (default: those of dataset, model, "
        "batchnorm, noise, train_noise that vary)",
    )
    weights.add_argument(
        "--stat",
        default="mean_abs",
        choices=["mean_abs", "max_abs", "std"],
        help="the per-layer statistic (default: mean |w|)",
    )
    weights.add_argument("--csv", type=Path, default=None, help="also write the full table here")
    weights.set_defaults(handler=_cmd_weights)

    binarization = commands.add_parser(
        "binarization",
        help="self-binarization test: activation histograms and accuracy with the activations "
        "after one site quantized to 2 or 3 levels",
    )
    binarization.add_argument("store", type=Path, help="the study's store (.sqlite)")
    binarization.add_argument(
        "--experiment",
        default=None,
        metavar="HASH",
        help="the experiment (a prefix of its hash); default: the one with the largest σ "
        "(then smallest seed) among those --where and --site select",
    )
    binarization.add_argument(
        "--site",
        type=int,
        default=None,
        help="the site to record and quantize (default: the experiment's walking site)",
    )
    binarization.add_argument("--where", action="append", metavar="KEY=VALUE", help=WHERE_HELP)
    binarization.add_argument(
        "--sigma",
        type=parse_sigma,
        default=None,
        help="evaluate at this σ instead of the experiment's (MUL,ADD for mixed)",
    )
    binarization.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="magnitudes below which values become 0, one quantization each (default: Otsu's "
        "threshold on log10|x| of the noisy validation activations)",
    )
    binarization.add_argument(
        "--repeats", type=int, default=None, help="noisy evaluations (default: the experiment's)"
    )
    binarization.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the histograms and the table (default: <store>-binarization beside it)",
    )
    binarization.add_argument("--data-root", default=None, help="directory holding the datasets")
    binarization.set_defaults(handler=_cmd_binarization)

    mixed = commands.add_parser(
        "mixed-map",
        help="accuracy over σ_mul × σ_add of mixed noise: tables and one heatmap per order",
    )
    mixed.add_argument("store", type=Path, help="the study's store (.sqlite)")
    mixed.add_argument("--where", action="append", metavar="KEY=VALUE", help=WHERE_HELP)
    mixed.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the figures and mixed-map.csv (default: <store>-mixed-map beside it)",
    )
    mixed.set_defaults(handler=_cmd_mixed_map)


def _results(store: Path, where: list[str] | None, *, weights: bool = False) -> Any:
    from walkingnoise.analysis.selection import parse_filters, select_results
    from walkingnoise.sweep import load_results

    filters = parse_filters(where)
    results = load_results(store, history=False, weights=weights)
    selected = select_results(results, filters)
    if selected.empty:
        shown = " ".join(f"--where {key}={value}" for key, value in filters.items())
        raise ValueError(f"{store}: no finished experiments" + (f" pass {shown}" if shown else ""))
    return selected


def _print_frame(frame: Any) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 250):
        print(frame.to_string(index=False))


# -- weights ----------------------------------------------------------------------------------


def _cmd_weights(args: argparse.Namespace) -> None:
    from walkingnoise.analysis.tables import format_mu, weight_comparison_table
    from walkingnoise.report.markdown import cell_text

    results = _results(args.store, args.where, weights=True)
    table = weight_comparison_table(results, args.compare, by=args.by, stat=args.stat)
    first, second = ("null" if v is None else cell_text(v) for v in table.attrs["values"])
    by = table.attrs["by"]
    stat = {"mean_abs": "mean |w|", "max_abs": "max |w|", "std": "std w"}[args.stat]
    label_a, label_b = f"{args.compare}={first}", f"{args.compare}={second}"
    if args.csv is not None:  # which group each of the _a and _b columns is
        write_csv(table.assign(a=label_a, b=label_b), args.csv)
    groups = table.groupby(by, dropna=False, sort=False) if by else [((), table)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        if by:
            print(", ".join(f"{c}={cell_text(v)}" for c, v in zip(by, key, strict=True)))
        shown = part[["layer"]].copy()
        for label, side in ((label_a, "a"), (label_b, "b")):
            shown[f"{stat} {label}"] = [
                format_mu(m, e)
                for m, e in zip(
                    part[f"{args.stat}_{side}"], part[f"{args.stat}_{side}_sem"], strict=True
                )
            ]
        shown["ratio"] = [
            format_mu(r, e) for r, e in zip(part["ratio"], part["ratio_err"], strict=True)
        ]
        shown["models"] = [
            f"{a}/{b}" for a, b in zip(part["models_a"], part["models_b"], strict=True)
        ]
        _print_frame(shown)
        print()
    print(
        f"ratio = {label_a} / {label_b} over the configurations (σ, site, other settings) "
        "that both have; ± is the standard error over the models of a group (? for one model)"
    )


# -- binarization ------------------------------------------------------------------------------


def _cmd_binarization(args: argparse.Namespace) -> None:
    from walkingnoise.analysis.binarization import binarization_study
    from walkingnoise.analysis.selection import (
        choose_experiment,
        load_stored_model,
        parse_filters,
    )
    from walkingnoise.analysis.tables import format_mu
    from walkingnoise.data import load_dataset
    from walkingnoise.noise.placement import WalkingPlacement
    from walkingnoise.report.histograms import activation_histogram_figure
    from walkingnoise.sweep import Store, load_results

    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    for threshold in args.thresholds or []:
        if not 0 < threshold < math.inf:
            raise ValueError(f"--thresholds: {threshold} is no magnitude (give numbers > 0)")
    with Store(args.store, read_only=True) as db:
        results = load_results(db, history=False, weights=False)
        try:
            row = choose_experiment(
                results, prefix=args.experiment, site=args.site, filters=parse_filters(args.where)
            )
        except ValueError as error:
            raise ValueError(f"{args.store}: {error}") from None
        experiment, model = load_stored_model(db, str(row["hash"]))
    placement = experiment.placement_spec()
    site = args.site
    if site is None:
        if experiment.noise_model() is None:
            raise ValueError("--site is needed: the experiment has no activation noise")
        if not isinstance(placement, WalkingPlacement):
            raise ValueError(f"--site is needed: the experiment's placement is {placement}")
        site = placement.site
    if site not in range(len(model.sites)):
        raise ValueError(
            f"--site {site} does not exist; the model has sites 0..{len(model.sites) - 1}"
        )
    sigma = experiment.sigma if args.sigma is None else args.sigma
    if args.sigma is not None:
        if experiment.noise_model() is None:
            raise ValueError("--sigma: the experiment has no noise")
        model.set_noise(experiment.noise_model(), placement, sigma)
    out = args.out or study_dir(args.store, "binarization")
    check_folder(out)  # before the study, and before anything is printed
    dataset = load_dataset(experiment.dataset, root=args.data_root)
    say_other_data(args.store, dataset)
    key = experiment.content_hash()
    print(f"experiment {key[:12]}: {_describe(experiment)}")
    site_name = model.site_table[site].name
    noise = f"{experiment.noise} σ={_sigma_text(sigma, ',')}"
    print(f"site {site} ({site_name}); noise {noise} at {placement}")
    study = binarization_study(
        model,
        site,
        dataset.validation,
        dataset.test,
        thresholds=args.thresholds,
        repeats=args.repeats or experiment.eval_repeats,
        seed=experiment.evaluation_seed(),
        batch_size=experiment.recipe.eval_batch_size,
    )
    name = f"{key[:12]}-site{site}" + ("" if args.sigma is None else f"-sigma{_sigma_text(sigma)}")
    title = f"{_describe(experiment)} · site {site} {site_name} · {noise}"
    activation_histogram_figure(
        study.clean,
        study.noisy,
        quantizers=[q for _, q in study.quantizers],
        title=title,
        out=out,
        name=f"{name}-histograms",
    )
    out.mkdir(parents=True, exist_ok=True)
    study.table.assign(experiment=key, site=site).to_csv(out / f"{name}.csv", index=False)
    table = study.table
    shown = table[["setting"]].copy()
    shown["threshold"] = [_number(t) for t in table["threshold"]]
    shown["levels"] = table["levels"]
    shown["zero %"] = [_number(100 * z, ".1f") for z in table["zero_fraction"]]
    shown["accuracy %"] = [
        format_mu(100 * a, 100 * s)
        for a, s in zip(table["accuracy"], table["accuracy_std"], strict=True)
    ]
    shown["/ noisy"] = [_number(r, ".3f") for r in table["relative"]]
    _print_frame(shown)
    print(
        f"\nthresholds and levels from the validation split ({len(dataset.validation)} samples), "
        f"accuracies on the test split ({len(dataset.test)}); ± is the std over the noisy repeats"
    )
    print(f"histograms: {out / (name + '-histograms.png')} (and .svg)")
    print(f"table: {out / (name + '.csv')}")


def _describe(experiment: Any) -> str:
    parts = [experiment.dataset, experiment.model, "BN" if experiment.batchnorm else "no BN"]
    parts.append("noisy training" if experiment.trains_with_noise else "inference-only")
    parts.append(f"seed {experiment.seed}")
    return " · ".join(parts)


def _number(value: float, spec: str = ".3g") -> str:
    import math

    return "-" if value is None or math.isnan(value) else format(value, spec)


def _sigma_text(sigma: Any, separator: str = "_") -> str:
    if sigma is None:
        return "per-site"
    parts = sigma if isinstance(sigma, tuple) else (sigma,)
    return separator.join(f"{float(p):g}" for p in parts)


# -- mixed-map --------------------------------------------------------------------------------


def _cmd_mixed_map(args: argparse.Namespace) -> None:
    import pandas as pd

    from walkingnoise.analysis.curves import describe_group
    from walkingnoise.report.maps import (
        iter_maps,
        mixed_map_pivot,
        mixed_map_points,
        write_mixed_maps,
    )
    from walkingnoise.report.markdown import cell_text

    points = mixed_map_points(_results(args.store, args.where))
    if points.empty:
        selected = "".join(f" passing --where {text}" for text in args.where or ())
        raise ValueError(f"{args.store}: no finished mixed-noise experiments{selected} to map")
    out = args.out or study_dir(args.store, "mixed-map")
    written = write_mixed_maps(points, out)
    for configuration, order, part in iter_maps(points):
        print(f"{describe_group(configuration)} · {order.replace('_', '-')}")
        pivot = mixed_map_pivot(part)
        shown = (100 * pivot).map(lambda v: cell_text(round(float(v), 1)))
        row, column = ("r", "A") if pivot.index.name == "ratio" else ("σ_add", "σ_mul")
        shown.index = [f"{row}={v:.3g}" for v in shown.index]
        shown.columns = [f"{v:.3g}" for v in shown.columns]
        shown.index.name = f"{column} →"
        with pd.option_context("display.max_rows", None, "display.width", 250):
            print(shown.to_string())
        print()
    figures = counted(len(written) - 1, "figure")  # the rest are the maps, one figure each
    print(f"test accuracy in % (mean over seeds); {figures} in {out} (PNG, SVG)")
    print(f"points with standard errors: {written['points'][0]}")
