"""Device choice and memory budgets: how many stacked models fit at once."""

from __future__ import annotations

import logging
import math
import os
import re

import torch

from walkingnoise.noise.instrument import NoisyModel

log = logging.getLogger(__name__)

#: Environment variable overriding the memory budget, in bytes or with a unit ("2GB", "512MiB").
BUDGET_ENV = "WALKINGNOISE_MEMORY_BUDGET"
#: Environment variable: the share of a GPU's memory one worker sizes its stacks to, in (0, 1]
#: (the process and Ray executors set it where workers share a GPU; default 1).
GPU_SHARE_ENV = "WALKINGNOISE_GPU_SHARE"
#: Environment variable: the share of this machine's available RAM one worker sizes its CPU
#: stacks to, in (0, 1] (the process executor sets 1/workers; default 1).
CPU_SHARE_ENV = "WALKINGNOISE_CPU_SHARE"
#: Environment variable: the device units compute on, ``cpu`` or ``cuda`` (default: CUDA when
#: available); the Ray executor sets it to match the GPUs its tasks ask for.
DEVICE_ENV = "WALKINGNOISE_DEVICE"
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
#: Model kinds (class, parameter count) whose need was warned of as above the budget, once each.
_SAID_BELOW: set[tuple[str, int]] = set()


def device_setting() -> str | None:
    """``$WALKINGNOISE_DEVICE``: ``cpu``, ``cuda`` or None (unset); a one-line ValueError
    names the variable if it is something else."""
    chosen = os.environ.get(DEVICE_ENV, "").strip().lower()
    if chosen and chosen not in ("cpu", "cuda"):
        raise ValueError(f"{DEVICE_ENV}: not a device: {chosen!r} (give cpu or cuda)")
    return chosen or None


def default_device() -> torch.device:
    """``$WALKINGNOISE_DEVICE`` if set, else CUDA when available, else the CPU; a one-line
    ValueError if the variable asks for CUDA where there is none."""
    chosen = device_setting()
    if chosen is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if chosen == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}=cuda: PyTorch finds no CUDA device here")
    return torch.device(chosen)


def device_label(device: torch.device) -> str:
    """``cpu``, or ``cuda:<index> (<GPU name>)``: a GPU draws other noise than the CPU and
    rounds otherwise (as can another GPU model), so results say which one computed them."""
    if device.type != "cuda":
        return str(device)
    index = torch.cuda.current_device() if device.index is None else device.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


#: How cuDNN and cuBLAS report a failed allocation: as a RuntimeError, not PyTorch's own
#: out-of-memory error.
_LIBRARY_ALLOCATION_FAILED = ("CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the GPU ran out of memory, in PyTorch's words or its libraries'
    (which smaller stacks fix, unlike an error of the model itself)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(
        marker in str(error) for marker in _LIBRARY_ALLOCATION_FAILED
    )


def parse_bytes(text: str) -> int:
    """Parse ``1500000``, ``2GB`` or ``512MiB`` into bytes (at least one)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(
            f"{BUDGET_ENV}: not a size: {text!r} (e.g. 2GB, 512MiB, 1000000; units B, KB, MB, "
            "GB, TB, KiB, MiB, GiB, TiB)"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size < 1:
        raise ValueError(f"{BUDGET_ENV}: {text!r} is no memory to compute in (give e.g. 2GB)")
    return size


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


#: Most memory a stack takes on the CPU by default: bigger stacks are no faster there.
CPU_BUDGET_CAP = 2**30
#: Most memory the clean prefixes that evaluations keep for their next pass take
#: (``KeptPrefixes``), whatever the budget.
KEPT_PREFIXES_CAP = 256 * 2**20


def gpu_share() -> float:
    """``$WALKINGNOISE_GPU_SHARE``: the share of the GPU's memory this worker may take (1 if
    unset); a one-line ValueError names the variable if it is not a number in (0, 1]."""
    return _share(GPU_SHARE_ENV)


def cpu_share() -> float:
    """``$WALKINGNOISE_CPU_SHARE``: the share of the available RAM this worker may size its
    stacks to (1 if unset); a one-line ValueError names the variable if it is no share."""
    return _share(CPU_SHARE_ENV)


def _share(variable: str) -> float:
    """The share in (0, 1] that ``variable`` holds, 1 if unset."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return 1.0
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not 0 < share <= 1:
        raise ValueError(f"{variable}: not a share in (0, 1]: {text!r} (e.g. 0.5)")
    return share


def check_budget() -> None:
    """Raise a one-line ValueError now if ``$WALKINGNOISE_MEMORY_BUDGET`` is not a size,
    ``$WALKINGNOISE_GPU_SHARE`` or ``$WALKINGNOISE_CPU_SHARE`` not a share or
    ``$WALKINGNOISE_DEVICE`` not a device (which a Ray cluster's nodes, not this machine, may
    have)."""
    override = os.environ.get(BUDGET_ENV)
    if override:
        parse_bytes(override)
    gpu_share()
    cpu_share()
    device_setting()


def memory_budget(device: torch.device) -> int:
    """Bytes a stack may use: the override; on a GPU 70 % of its free memory (with what this
    process has cached), or of this worker's share of all of it (``gpu_share``) if that is
    less, so that workers sharing a GPU do not each size to what the others have not taken
    yet; on the CPU half of this worker's share of the available RAM (``cpu_share``: pool
    workers share it) but at most ``CPU_BUDGET_CAP``."""
    override = os.environ.get(BUDGET_ENV)
    if override:
        return parse_bytes(override)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # what this process's allocator holds but no tensor uses is free to it too
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(0.7 * min(free + cached, gpu_share() * total))
    return min(int(_available_ram() * cpu_share()) // 2, CPU_BUDGET_CAP)


def _prefixes_share(budget: int) -> int:
    """The part of ``budget`` kept clean prefixes may take: a quarter, at most the cap."""
    return min(KEPT_PREFIXES_CAP, budget // 4)


def kept_prefixes_bytes(device: torch.device) -> int:
    """Bytes the clean prefixes that evaluations keep for their next pass (``KeptPrefixes``)
    may take on ``device``: a quarter of the memory budget, at most ``KEPT_PREFIXES_CAP``;
    stacks that evaluate are sized to the rest."""
    return _prefixes_share(memory_budget(device))


def bytes_per_model(
    model: NoisyModel, batch_size: int, *, training: bool, weight_noise: bool = False
) -> int:
    """A generous estimate of one stacked model's memory for one batch.

    Parameters count 5 times in training (weights, gradients, two Adam moments, the stacked
    copy), activations 6 times (saved for backward, noise, gradients); evaluation keeps 3.
    ``weight_noise`` adds 3 for the weights read with noise (the draws, the noise, the sum).
    """
    params = sum(p.numel() for p in model.source.parameters())
    activations = sum(math.prod(info.shape[1:]) for info in model.site_table) * batch_size
    noisy = 3 * params if weight_noise else 0
    if training:
        return 4 * (5 * params + noisy + 6 * activations)
    return 4 * (params + noisy + 3 * activations)


def models_per_stack(
    model: NoisyModel,
    batch_size: int,
    device: torch.device,
    *,
    training: bool,
    weight_noise: bool = False,
) -> int:
    """How many models of this kind fit into one stack within the memory budget (≥ 1);
    ``weight_noise``: some read their weights with noise. An evaluating stack (``training``
    False) gets the budget less what its kept clean prefixes may take
    (``kept_prefixes_bytes``)."""
    budget = memory_budget(device)
    room = budget if training else budget - _prefixes_share(budget)
    need = max(1, bytes_per_model(model, batch_size, training=training, weight_noise=weight_noise))
    if room < need:
        _warn_below(model, budget, room, need)
    return max(1, room // need)


def _warn_below(model: NoisyModel, budget: int, room: int, need: int) -> None:
    """Warn that one model needs more than a stack's room: once per model kind (class,
    parameter count), whatever the batch or mode."""
    kind = (type(model.source).__qualname__, sum(p.numel() for p in model.source.parameters()))
    if kind not in _SAID_BELOW:
        _SAID_BELOW.add(kind)
        log.warning(
            "the memory budget of %s bytes%s is below one model's %s: one model per stack, "
            "which may not fit either (set %s to change the budget)",
            f"{budget:,}",
            "" if room == budget else f" (of which {room:,} for a stack that evaluates)",
            f"{need:,}",
            BUDGET_ENV,
        )
