"""Throughput of the sweep engine against the best simple one-model-at-a-time loop.

The standard sweep: real MNIST from ``../shared/data/mnist-t10k/`` (first 8,000 images train,
of which 800 are held out for validation, last 2,000 test), the MLP with BatchNorm, walking
additive noise at all 11 sites × 9 σ log-spaced 1e-2…1e2 × 3 seeds × {noisy training,
inference-only}, 5 epochs.

(a) the engine, through the normal ``run_sweep`` path (store, planner, stacked cohorts), with
    one worker process per core;
(b) a simple loop: one model at a time, in-memory tensors fed by a DataLoader, and one clean
    model per seed reused for every inference-only experiment.

Prints experiments/hour of both and their ratio, peak RSS, the share of an inference-only
experiment in the cost of a trained one, and the training phase's achieved GFLOP/s against a
roofline measured in the same run (matmul GFLOP/s and Gaussian samples/s of one core of this
machine, since the stored training times are the seconds of units computing with one thread
each: their sum is core-seconds).
Last, adaptive σ sampling against a dense 49-point grid (inference-only walking noise): the
number of experiments each needs and how far apart their midpoints are.

    python benchmarks/sweep_throughput.py                 # the standard sweep (~8 min on 2 cores)
    python benchmarks/sweep_throughput.py --quick         # 1 seed, 3 σ, 1 epoch: a quick look
    python benchmarks/sweep_throughput.py --skip-baseline --seeds 10 --epochs 20 --workers 4
                                                          # the engine at scale, e.g. on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from walkingnoise._cores import usable_cores
from walkingnoise.cli._common import one_line
from walkingnoise.data import InMemoryDataset, load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, load_results, make_executor, run_sweep
from walkingnoise.sweep.spec import SweepSpec, parse_sweep
from walkingnoise.sweep.work import unit_threads
from walkingnoise.training.cohort import evaluate_shared
from walkingnoise.training.evaluate import accuracy_and_loss
from walkingnoise.training.loop import make_optimizer
from walkingnoise.training.memory import check_budget, default_device
from walkingnoise.training.run import build_noisy_model, evaluate_experiment, train_experiment
from walkingnoise.training.stacked import _linear_readers

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist-t10k"


def sweep_text(args: argparse.Namespace) -> str:
    """The benchmark sweep as a sweep file."""
    return f"""
name: throughput
fixed:
  dataset: mnist-t10k
  model: mlp
  batchnorm: true
  noise: additive
  placement: "walking:*"
  eval_repeats: {args.repeats}
  recipe: {{epochs: {args.epochs}}}
grid:
  seed: {{type: range, min: 0, max: {args.seeds}}}
  sigma: {{type: logspace, min: -2, max: 2, num: {args.sigmas}}}
  train_noise: {{type: choice, options: [true, false]}}
"""


def simple_loop(experiments: list[Experiment], dataset: InMemoryDataset) -> dict[str, float]:
    """The best simple loop: one model at a time, a DataLoader, clean models reused."""
    train_seconds = eval_seconds = 0.0
    clean: dict[int, object] = {}
    for experiment in experiments:
        started = time.perf_counter()
        key = experiment.seed if not experiment.train_noise else None
        if key is not None and key in clean:
            model = clean[key]
        else:
            model = build_noisy_model(experiment, dataset)
            _train_with_dataloader(model, dataset, experiment)
            if key is not None:
                clean[key] = model
        trained = time.perf_counter()
        evaluate_experiment(experiment, model, dataset)
        train_seconds += trained - started
        eval_seconds += time.perf_counter() - trained
    return {"train": train_seconds, "evaluate": eval_seconds}


def _train_with_dataloader(model, dataset: InMemoryDataset, experiment: Experiment) -> None:
    """The recipe's training, as a careful user writes it: a DataLoader that gathers a whole
    batch per step (a batch sampler over in-memory tensors, no per-sample collation), the
    project's optimizer (fused Adam), and the clean validation pass of every epoch that the
    engine's history records too."""
    recipe = experiment.recipe
    generator = torch.Generator().manual_seed(experiment.seed)
    batches = BatchSampler(
        RandomSampler(range(len(dataset.train)), generator=generator), recipe.batch_size, False
    )
    loader = DataLoader(
        TensorDataset(dataset.train.x, dataset.train.y), sampler=batches, batch_size=None
    )
    optimizer, scheduler = make_optimizer(model.parameters(), recipe)
    for _ in range(recipe.epochs):
        model.train()
        for x, y in loader:
            if len(y) < 2:
                continue
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        with model.noise_disabled():
            accuracy_and_loss(model, dataset.validation, recipe.eval_batch_size)


def roofline(device: torch.device, threads: int) -> tuple[float, float]:
    """Matmul GFLOP/s and Gaussian samples/s with ``threads`` threads, measured now."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _roofline(device)
    finally:
        torch.set_num_threads(previous)


def _roofline(device: torch.device, trials: int = 3) -> tuple[float, float]:
    """The best of ``trials`` timings of each, so a busy moment does not lower the peak."""
    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    for _ in range(2):
        a @ b
    buffer = torch.empty(16_000_000, device=device)
    buffer.normal_()
    gflops = normals = 0.0
    for _ in range(trials):
        _sync(device)
        started, runs = time.perf_counter(), 8
        for _ in range(runs):
            a @ b
        _sync(device)
        gflops = max(gflops, runs * 2 * 2048**3 / (time.perf_counter() - started) / 1e9)
        started = time.perf_counter()
        for _ in range(4):
            buffer.normal_()
        _sync(device)
        normals = max(normals, 4 * buffer.numel() / (time.perf_counter() - started))
    return gflops, normals


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_work(experiments: list[Experiment], dataset: InMemoryDataset) -> tuple[float, float]:
    """(FLOPs, Gaussian samples) of training the noisy-training experiments.

    FLOPs: those PyTorch's flop counter sees in one training step of the model and in one clean
    forward pass, per sample: every training sample of every epoch, plus the clean validation
    pass of each epoch's record (measured inside the training phase). The step counts what
    autograd computes: no input gradient for a first layer whose input needs none, so the
    count is below the rule of thumb of 3 × the forward pass.
    Samples: one per element of the noisy site's activation, per training sample and epoch.
    """
    model = build_noisy_model(experiments[0], dataset)
    model.clear_noise()
    model.train()
    batch = 16
    x, y = dataset.train.x[:batch], dataset.train.y[:batch]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    step = counter.get_total_flops() / batch
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    forward = counter.get_total_flops() / batch
    sizes = {info.index: math.prod(info.shape[1:]) for info in model.site_table}
    flops = normals = 0.0
    for experiment in experiments:
        if not experiment.train_noise:
            continue
        samples = len(dataset.train) * experiment.recipe.epochs
        flops += step * samples
        flops += forward * len(dataset.validation) * experiment.recipe.epochs
        normals += sizes[experiment.placement_spec().site] * samples
    return flops, normals


def inference_work(experiments: list[Experiment], dataset: InMemoryDataset) -> tuple[float, float]:
    """(FLOPs, Gaussian samples) of the noisy passes of the inference-only experiments.

    Per pass over the validation and test samples: 2 × the multiply-adds of the Linear layers
    after the noisy site (the part before it is computed once for all σ and repeats), and one
    sample per element of the site's activation, drawn once for the experiments that share
    their draws (those that differ only in σ: ``Experiment.evaluation_seed``). A Linear layer
    that alone reads the site (through ``Flatten``) maps the clean input and the draw once
    for those experiments, not each one's noisy input (additive noise: one direction).
    """
    model = build_noisy_model(experiments[0], dataset)
    modules = dict(model.net.named_modules())
    sizes = {info.index: math.prod(info.shape[1:]) for info in model.site_table}
    readers = _linear_readers(model.net.graph, modules)  # as the engine finds them
    after: dict[int, int] = {}
    reader: dict[int, int] = {}
    linear = 0
    for node in reversed(list(model.net.graph.nodes)):
        if node.op != "call_module":
            continue
        module = modules[str(node.target)]
        if isinstance(module, torch.nn.Linear):
            linear += module.in_features * module.out_features
        elif str(node.target).startswith("noise_sites."):
            site = int(str(node.target).split(".")[1])
            after[site] = linear
            path = readers.get(str(node.target))
            layer = modules[path[-1]] if path else None  # counted where a Linear layer
            linear_reader = type(layer) is torch.nn.Linear
            reader[site] = layer.in_features * layer.out_features if linear_reader else 0
    samples = len(dataset.validation) + len(dataset.test)
    flops = normals = 0.0
    drawn = set()
    for experiment in experiments:
        if experiment.train_noise:
            continue
        site = experiment.placement_spec().site
        passes = samples * experiment.eval_repeats
        flops += 2 * (after[site] - reader[site]) * passes
        seed = experiment.evaluation_seed()
        if seed not in drawn:
            drawn.add(seed)
            normals += sizes[site] * passes
            flops += 2 * 2 * reader[site] * passes  # the clean input and the draw
    return flops, normals


def descendant_peak_rss() -> list[float]:
    """Peak RSS (MiB, ``VmHWM``) of every live process descended from this one, largest
    first: the engine's workers, read before they exit. Empty where there is no ``/proc``."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    peaks = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, os.getpid()):
            ancestor = parents.get(ancestor)
        if ancestor != os.getpid():
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return sorted(peaks, reverse=True)


def clean_training_seconds(store: Store, experiments: list[Experiment]) -> float:
    """Seconds of the clean trainings the inference-only experiments share (one per seed)."""
    keys = {e.clean_training().content_hash() for e in experiments if not e.train_noise}
    seconds = 0.0
    for key in keys:
        record = store.training(key)
        if record is None or "train" not in record.timings:
            raise SystemExit(f"the store has no timed clean training {key}")
        seconds += record.timings["train"]
    return seconds


def evaluation_by_repeats(
    experiments: list[Experiment], dataset: InMemoryDataset, repeats: list[int], threads: int
) -> dict[int, float]:
    """Seconds per inference-only experiment of one seed, at each number of noisy
    repeats, side by side in this process: one clean model trained here, the experiments
    evaluated through ``evaluate_shared`` as the engine does, with ``threads`` threads, each R
    timed after a warm-up on a quarter of the experiments."""
    first = [e for e in experiments if not e.train_noise and e.seed == experiments[0].seed]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, _ = train_experiment(first[0].clean_training(), dataset, progress=False)
        model.clear_noise()
        seconds: dict[int, float] = {}
        for r in repeats:
            members = [e.model_copy(update={"eval_repeats": r}) for e in first]
            evaluate_shared(model, members[: max(1, len(members) // 4)], dataset)
            started = time.perf_counter()
            evaluate_shared(model, members, dataset)
            seconds[r] = (time.perf_counter() - started) / len(members)
        return seconds
    finally:
        torch.set_num_threads(previous)


def adaptive_comparison(args: argparse.Namespace) -> None:
    """Inference-only walking noise: adaptive σ against a dense 49-point log grid."""
    import math

    from walkingnoise.analysis.midpoint import fit_midpoint

    dense_axis = "{type: logspace, min: -2, max: 4, num: 49}"
    adaptive_axis = "{type: adaptive, min: -2, max: 4, initial: 5, max_points: 16}"
    fits, counts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, axis in (("dense", dense_axis), ("adaptive", adaptive_axis)):
            text = f"""
name: {name}
fixed: {{dataset: mnist-t10k, model: mlp, noise: additive, placement: "walking:*",
        eval_repeats: {args.repeats}, recipe: {{epochs: {args.epochs}}}}}
grid:
  seed: {{type: range, min: 0, max: {max(args.seeds, 2)}}}
  sigma: {axis}
"""
            store = Path(tmp) / f"{name}.sqlite"
            run_sweep(parse_sweep(text, name), store, data_root=args.root, progress=False)
            results = load_results(store)
            counts[name] = len(results)
            fits[name] = {}
            for placement, curve in results.groupby("placement"):
                grouped = curve.groupby("sigma")["noisy_test_accuracy"]
                sem = (grouped.std() / grouped.count() ** 0.5).fillna(0)
                fits[name][placement] = fit_midpoint(
                    grouped.mean().index, grouped.mean(), sem, a_min=0.1, space="log"
                )
    print(f"\nadaptive σ: {counts['adaptive']} experiments against {counts['dense']} for the grid")
    print("  site         log10 μ adaptive      log10 μ dense      |Δ| / combined error")
    worst = 0.0
    for placement in sorted(fits["dense"], key=lambda p: int(p.split(":")[1])):
        a, d = fits["adaptive"][placement], fits["dense"][placement]
        inflate = [math.sqrt(max(1.0, f.chi2_red)) * f.log10_mu_err for f in (a, d)]
        ratio = abs(a.log10_mu - d.log10_mu) / math.hypot(*inflate)
        worst = max(worst, ratio)
        print(
            f"  {placement:11s}  {a.log10_mu:7.3f} ± {inflate[0]:.3f}    "
            f"{d.log10_mu:7.3f} ± {inflate[1]:.3f}    {ratio:.1f}"
        )
    print(f"  (errors inflated by √(χ²/dof) where above 1; largest |Δ|/error {worst:.1f})")


#: The standard sweep's and ``--quick``'s seeds, σ and epochs, where not given.
STANDARD = {"seeds": 3, "sigmas": 9, "epochs": 5}
QUICK = {"seeds": 1, "sigmas": 3, "epochs": 1}


def _positive(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def options() -> argparse.Namespace:
    """The command line: ``--quick`` sets the seeds, σ and epochs not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=_positive, help="training epochs (default 5)")
    parser.add_argument("--seeds", type=_positive, help="seeds per point (default 3)")
    parser.add_argument("--sigmas", type=_positive, help="σ log-spaced over 1e-2…1e2 (default 9)")
    parser.add_argument(
        "--repeats", type=_positive, default=3, help="noisy evaluations per experiment (default 3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 3 σ, 1 epoch (those not given otherwise)"
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=usable_cores(),
        help="engine processes, each computing with $WALKINGNOISE_THREADS threads, default 1 "
        "(default: one process per core)",
    )
    parser.add_argument(
        "--skip-baseline", action="store_true", help="run the engine only, not the simple loop"
    )
    parser.add_argument(
        "--skip-adaptive", action="store_true", help="leave out adaptive σ against the dense grid"
    )
    parser.add_argument(
        "--root", type=Path, default=MNIST, help=f"folder of the MNIST test set (default {MNIST})"
    )
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else STANDARD).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main() -> int:
    """Run both paths and print the comparison; a bad option, setting or data folder is one
    line on stderr and exit status 2."""
    args = options()
    try:
        threads = unit_threads()
        check_budget()
        device = default_device()
        spec = parse_sweep(sweep_text(args), "throughput.yaml")
        dataset = load_dataset("mnist-t10k", root=args.root)
    except (ValueError, OSError) as error:  # the settings', the sweep's and the data's errors
        print(f"sweep_throughput.py: error: {one_line(error)}", file=sys.stderr)
        return 2
    return compare(args, threads, device, spec, dataset)


def compare(
    args: argparse.Namespace,
    threads: int,
    device: torch.device,
    spec: SweepSpec,
    dataset: InMemoryDataset,
) -> int:
    """The engine against the simple loop, side by side, and the figures of both."""
    loop = "" if args.skip_baseline else f"; simple loop: {torch.get_num_threads()} threads"
    print(f"device: {device}; engine: {args.workers} process(es) × {threads} thread(s){loop}")
    if args.quick:
        print(
            f"--quick: {args.seeds} seed(s), {args.sigmas} σ, {args.epochs} epoch(s); its shares "
            "are not those of the standard sweep"
        )
    gflops, normals = roofline(device, threads)
    print(
        f"roofline ({threads} thread(s), as a unit computes): matmul {gflops:.1f} GFLOP/s, "
        f"normal sampling {normals / 1e6:.0f} M/s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.sqlite"
        started = time.perf_counter()
        with make_executor(
            "process" if args.workers > 1 else "inprocess", workers=args.workers
        ) as executor:
            summary = run_sweep(spec, store, data_root=args.root, executor=executor, progress=False)
            worker_peaks = descendant_peak_rss()
            engine_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        engine_seconds = time.perf_counter() - started
        results = load_results(store)
        with Store(store, create=False) as opened:
            experiments = opened.experiments("done")
            failed = len(opened.experiments()) - len(experiments)
            clean_seconds = clean_training_seconds(opened, experiments)
    n = len(experiments)
    if failed:
        print(f"{failed} experiments failed; the figures below are of the others", file=sys.stderr)
    results = results[results["status"] == "done"]
    trained = results[results["train_noise"]]
    evaluated = results[~results["train_noise"]]
    if trained.empty or evaluated.empty:
        print("no finished noisy-training or inference-only experiment to compare", file=sys.stderr)
        return 1
    train_phase = trained["seconds_train"].sum()
    per_trained = (trained["seconds_train"] + trained["seconds_evaluate"]).mean()
    per_eval = evaluated["seconds_evaluate"].mean()
    flops, samples = training_work(experiments, dataset)
    bound = flops / (gflops * 1e9) + samples / normals
    epochs = f"{args.epochs} epoch{'' if args.epochs == 1 else 's'}"
    print(f"\n{n} experiments ({summary.trainings} trainings), {epochs}")
    print(
        f"engine:      {engine_seconds:8.1f} s   {n / engine_seconds * 3600:10.0f} experiments/hour"
    )
    print(
        f"  training phase {train_phase:.1f} unit-seconds: {flops / train_phase / 1e9:.1f} "
        f"GFLOP/s per unit, {bound / train_phase:.0%} of the roofline "
        f"(which would take {bound:.1f} s)"
    )
    print(
        f"  inference-only experiment: {per_eval * 1000:.1f} ms = "
        f"{per_eval / per_trained:.2%} of a trained one ({per_trained * 1000:.0f} ms)"
    )
    shared = clean_seconds / len(evaluated)
    print(
        f"  with its share of the seeds' clean trainings ({clean_seconds:.1f} s in all): "
        f"{(per_eval + shared) * 1000:.1f} ms = {(per_eval + shared) / per_trained:.2%}"
    )
    eval_flops, eval_normals = inference_work(experiments, dataset)
    floor = (eval_flops / (gflops * 1e9) + eval_normals / normals) / len(evaluated)
    print(
        f"  its floor at the roofline (noise draws and matmuls after the site): "
        f"{floor * 1000:.1f} ms = {floor / per_trained:.2%} of a trained one"
    )
    by_repeats = evaluation_by_repeats(experiments, dataset, sorted({1, args.repeats}), threads)
    print(
        "  in-process, one seed: "
        + ", ".join(
            f"R={r} {t * 1000:.1f} ms = {t / per_trained:.2%}" for r, t in by_repeats.items()
        )
        + " of a trained one (R=1: one noisy pass, as in the papers)"
    )
    if not args.skip_baseline:
        started = time.perf_counter()
        simple = simple_loop(experiments, dataset)
        simple_seconds = time.perf_counter() - started
        rate = n / simple_seconds * 3600
        print(f"simple loop: {simple_seconds:8.1f} s   {rate:10.0f} experiments/hour")
        print(f"  training phase {simple['train']:.1f} s, evaluation {simple['evaluate']:.1f} s")
        print(f"speed-up (engine vs simple loop): {simple_seconds / engine_seconds:.1f}x")
    if not args.skip_adaptive:
        adaptive_comparison(args)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {own:.0f} MiB (the whole benchmark)")
    if worker_peaks:
        print(
            f"  engine phase: this process {engine_peak:.0f} MiB, its child processes (workers "
            "and multiprocessing's resource tracker) "
            + ", ".join(f"{w:.0f}" for w in worker_peaks)
            + f" MiB: at most {engine_peak + sum(worker_peaks):.0f} MiB in all"
        )
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
