"""Executors: where units of work run. In-process, a local process pool, or a Ray cluster.

Every executor only computes; results come back to the one process that writes the store.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Literal

from walkingnoise._signals import deferred
from walkingnoise.data.errors import one_line
from walkingnoise.training.memory import CPU_SHARE_ENV, DEVICE_ENV, GPU_SHARE_ENV

log = logging.getLogger(__name__)

ExecutorName = Literal["inprocess", "process", "ray"]


class TaskError(Exception):
    """A task that raised or whose worker died; carries the formatted traceback."""

    def __init__(self, text: str) -> None:
        super().__init__(text.strip().splitlines()[-1] if text.strip() else "task failed")
        self.traceback = text


class Executor:
    """Runs ``fn(item, *args)`` for each item and yields ``(item, result or TaskError)``."""

    name = "base"
    workers = 1
    #: The kind of device its tasks compute on, where that is not this machine's default.
    device: str | None = None

    def run(
        self, fn: Callable[..., Any], items: Sequence[Any], *args: Any
    ) -> Iterator[tuple[Any, Any]]:
        """Yield each item with its result as the results arrive."""
        raise NotImplementedError

    def close(self, *, abort: bool = False) -> None:
        """Release workers; ``abort`` (an error or an interrupt ended the sweep) ends the
        tasks still running too, whose results would not be recorded."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_exc: object) -> None:
        self.close(abort=error_type is not None)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (else by index);
    empty without CUDA."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [name.strip() for name in named.split(",") if name.strip()][:count]
    return [str(index) for index in range(count)]


class InProcessExecutor(Executor):
    """Runs every task in this process, one after another (the default)."""

    name = "inprocess"

    def run(
        self, fn: Callable[..., Any], items: Sequence[Any], *args: Any
    ) -> Iterator[tuple[Any, Any]]:
        """Yield each item with its result, in order."""
        for item in items:
            try:
                yield item, fn(item, *args)
            except Exception:
                yield item, TaskError(traceback.format_exc())


#: Run by each pool worker first (by ``exec``, so that it imports nothing of this package and
#: starts before the worker spends seconds importing PyTorch):
#: - a thread that ends the worker as soon as the process that started it, ``parent``, is gone.
#:   A sweep killed with SIGKILL cannot shut its pool down; its workers would otherwise live on,
#:   and their results were never going to be recorded anyway.
#: - Ctrl-C (SIGINT, sent to the whole process group): a worker waiting for work (or reading
#:   its next task, which may import PyTorch) exits at once and quietly,
#:   where Python would print the traceback of a KeyboardInterrupt in the pool's queue; a busy
#:   one is interrupted as usual, and the parent reports it.
#: - the share of a GPU's memory each worker sizes its stacks to, ``gpu_share`` (the workers
#:   of one GPU share it), and of the available RAM, ``cpu_share`` (all workers share it),
#:   unless the environment sets them.
#: - on a machine with several GPUs, ``gpus``: the next of them in turn (``slot``, a counter the
#:   workers share) becomes the worker's only visible GPU, before it initialises CUDA.
EXIT_WITH_PARENT = """
import concurrent.futures.process, multiprocessing.queues, os, signal, threading, time

os.environ.setdefault(share_variable, gpu_share)
os.environ.setdefault(cpu_share_variable, cpu_share)
if gpus:
    with slot.get_lock():
        turn, slot.value = slot.value, slot.value + 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[turn % len(gpus)]

def _watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)

def _interrupted(signum, frame):
    # the worker loop calls either the pool queue's get (waiting for or reading a task) or a task
    worker = concurrent.futures.process._process_worker.__code__
    callee = None
    while frame is not None and frame.f_code is not worker:
        callee, frame = frame, frame.f_back
    if callee is not None and callee.f_code is multiprocessing.queues.Queue.get.__code__:
        os._exit(128 + signum)
    raise KeyboardInterrupt

threading.Thread(target=_watch_parent, name="exit-with-parent", daemon=True).start()
signal.signal(signal.SIGINT, _interrupted)

# tqdm's first bar makes a multiprocessing lock, a named semaphore that a worker ended while
# it computes never unlinks: the resource tracker then warns of it when the sweep ends
import tqdm.std
tqdm.std.tqdm.set_lock(threading.RLock())
"""


class ProcessExecutor(Executor):
    """A pool of local worker processes (started with ``spawn``, safe with PyTorch threads).

    The workers end with the process that started them, even when it is killed. On a machine
    with several GPUs the workers take them in turn (``gpus``: the GPUs to use, by default
    every one visible), each seeing only its own; each sizes its stacks to its share of its
    GPU's memory, 1/(the workers on that GPU) (``$WALKINGNOISE_GPU_SHARE`` overrides), and
    on the CPU to 1/workers of the available RAM (``$WALKINGNOISE_CPU_SHARE`` overrides).
    """

    name = "process"

    def __init__(self, workers: int, *, gpus: Sequence[str] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        spread = self.gpus if len(self.gpus) > 1 else []
        per_gpu = math.ceil(self.workers / max(len(spread), 1))
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=exec,
            initargs=(
                EXIT_WITH_PARENT,
                {
                    "parent": os.getpid(),
                    "share_variable": GPU_SHARE_ENV,
                    "gpu_share": repr(1 / per_gpu),
                    "cpu_share_variable": CPU_SHARE_ENV,
                    "cpu_share": repr(1 / self.workers),
                    "gpus": spread,
                    "slot": context.Value("i", 0),
                },
            ),
        )

    def run(
        self, fn: Callable[..., Any], items: Sequence[Any], *args: Any
    ) -> Iterator[tuple[Any, Any]]:
        """Yield each item with its result as workers finish; keep 2 tasks per worker queued.

        A worker that dies (killed by the out-of-memory killer, a crash) breaks the whole pool
        and fails every task in it. The pool is then started anew and each of those tasks runs
        again, one at a time: a task that kills its worker when it runs alone is the one that
        failed, and the others go on.
        """
        pending: dict[Future, tuple[Any, bool]] = {}
        queue = iter(items)
        suspects: deque[Any] = deque()
        limit = 2 * self.workers

        def submit() -> None:
            with deferred():  # a submit may start a worker: not to be cut by a SIGTERM
                if suspects:
                    if not pending:
                        item = suspects.popleft()
                        pending[self._pool.submit(fn, item, *args)] = (item, True)
                    return
                for item in queue:
                    pending[self._pool.submit(fn, item, *args)] = (item, False)
                    if len(pending) >= limit:
                        return

        broken = False  # the pool broke; it is started anew once its last task is back
        submit()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item, alone = pending.pop(future)
                try:
                    yield item, future.result()
                except BrokenProcessPool as error:
                    broken = True
                    if not alone:
                        suspects.append(item)
                        continue
                    text = "".join(traceback.format_exception(error))
                    yield item, TaskError(f"{text}the worker process running this task died\n")
                except Exception as error:
                    text = "".join(traceback.format_exception(error))
                    yield item, TaskError(text)
            if broken and not pending:
                log.warning(
                    "a worker process died; the pool starts again and runs the %d task(s) it "
                    "had again, one at a time",
                    len(suspects),
                )
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                broken = False
            submit()

    def close(self, *, abort: bool = False) -> None:
        """Shut the pool down, cancelling queued tasks; ``abort`` ends the workers at once
        rather than waiting minutes for tasks whose results nobody will record."""
        if abort:  # the pool has no public way to end its workers before Python 3.14
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Tasks on a Ray cluster: ``address`` of an existing one, or a local Ray on this machine.

    ``workers`` caps the tasks that run at once (a local Ray gets that many CPUs); without it,
    as many as the cluster's CPUs and GPU shares allow. Each task takes one CPU and
    ``gpus_per_task`` of a GPU: by default a whole one where the cluster has GPUs, else none;
    a share such as 0.25 runs four tasks on each GPU, each sizing its stacks to a quarter of
    its memory (unless ``$WALKINGNOISE_GPU_SHARE`` says otherwise). Tasks with a GPU compute on
    it, tasks without on CPUs (``$WALKINGNOISE_DEVICE``: recent Ray leaves the GPUs visible to
    a task that asks for none). The workers get this process's ``WALKINGNOISE_*`` settings
    (data folder, threads, memory budget, model modules), as a process pool's inherit them.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_task: float | None = None,
    ) -> None:
        if gpus_per_task is not None:
            check_gpus_per_task(gpus_per_task)
        try:
            import ray
        except ImportError:
            raise ValueError(
                "the ray executor needs Ray: pip install 'walkingnoise[ray]'"
            ) from None
        self._ray = ray
        self._started = not ray.is_initialized()
        joining = address is not None or bool(os.environ.get("RAY_ADDRESS"))
        if self._started and address is not None:
            check_ray_address(address)
        if self._started:
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            settings = _settings_to_forward()
            if settings:  # the workers find data, threads and models as this process does
                options["runtime_env"] = {"env_vars": settings}
            if not joining and workers is not None:
                options["num_cpus"] = workers
            with _signal_handlers_kept():
                try:
                    ray.init(address=address, **options)
                except (ConnectionError, ValueError, RuntimeError) as error:
                    raise ValueError(f"{_ray_target(address)} ({one_line(error)})") from None
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 0))
        gpus = float(resources.get("GPU", 0))
        if gpus_per_task is None:
            gpus_per_task = 1.0 if gpus >= 1 else 0.0
        self.gpus_per_task = gpus_per_task
        self.device = "cuda" if gpus_per_task > 0 else "cpu"
        if cpus == 0:
            log.warning(
                "the Ray cluster has no CPU: its tasks wait until a node with CPUs joins "
                "(Ray's autoscaler says which resources it cannot find)"
            )
        slots = cpus
        if gpus_per_task > 0:
            if gpus < gpus_per_task:
                self._refuse_missing_gpus(gpus_per_task, gpus, local=self._started and not joining)
            on_gpus = int(gpus / gpus_per_task + 1e-9)
            if workers is not None and workers > on_gpus > 0 and on_gpus < cpus:
                log.warning(
                    "--workers %d: the cluster's GPUs run %d task(s) at once at "
                    "--gpus-per-task %g; --gpus-per-task %g runs %d",
                    workers,
                    on_gpus,
                    gpus_per_task,
                    _share_for(workers, gpus),
                    workers,
                )
            slots = min(cpus, on_gpus)
        self.workers = workers or slots or 1
        # a local Ray of ``workers`` CPUs runs no more at once; elsewhere only the tasks
        # handed to Ray at a time can cap them
        own_cpus = self._started and not joining
        self._in_flight = self.workers if workers is not None and not own_cpus else 2 * self.workers

    def _refuse_missing_gpus(self, wanted: float, gpus: float, *, local: bool) -> None:
        """A local Ray without the GPUs a task asks for is an error (its tasks would never
        run); a cluster's is a warning, since its autoscaler may add GPU nodes."""
        has = "no GPU" if gpus == 0 else f"{gpus:g} GPU"
        if local:
            self.close()
            raise ValueError(
                f"--gpus-per-task {wanted:g}: this machine's Ray has {has}; give 0 to run on CPUs"
            )
        log.warning(
            "--gpus-per-task %g: the Ray cluster has %s now: its tasks wait until a node with "
            "GPUs joins (give 0 to run on CPUs)",
            wanted,
            has,
        )

    def run(
        self, fn: Callable[..., Any], items: Sequence[Any], *args: Any
    ) -> Iterator[tuple[Any, Any]]:
        """Yield each item with its result as tasks finish; keep 2 tasks per worker in flight
        (1 where ``workers`` caps the tasks of a cluster this executor did not start).

        A task whose worker process died (killed, out of memory) runs once more, as the
        process pool reruns a crashed unit; a task that raised is not retried."""
        ray = self._ray
        placement = (self.device, repr(self.gpus_per_task or 1.0))
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task, max_retries=1)(_on_device)
        shared = [ray.put(arg) for arg in (placement, fn, *args)]
        pending: dict[Any, Any] = {}
        queue = iter(items)
        limit = self._in_flight

        def submit() -> None:
            for item in itertools.islice(queue, max(0, limit - len(pending))):
                pending[remote.remote(item, *shared)] = item

        submit()
        while pending:
            with deferred():  # a SIGTERM inside Ray's C++ wait would become a SystemError
                done, _ = ray.wait(list(pending), num_returns=1, timeout=RAY_WAIT_SECONDS)
            for ref in done:
                item = pending.pop(ref)
                try:
                    yield item, ray.get(ref)
                except Exception as error:
                    yield item, TaskError("".join(traceback.format_exception(error)))
            submit()

    def close(self, *, abort: bool = False) -> None:
        """Shut down the local Ray this executor started (a cluster it joined stays up and
        ends the tasks of this driver when it leaves)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def _on_device(item: Any, placement: tuple[str, str], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(item, *args)`` in a Ray worker that computes on the device its task asked for,
    ``placement`` = (device, share of the GPU's memory its stacks take unless set)."""
    device, share = placement
    os.environ[DEVICE_ENV] = device
    os.environ.setdefault(GPU_SHARE_ENV, share)
    return fn(item, *args)


#: The finest GPU share Ray accepts.
GPU_SHARE_STEP = 1e-4


def _share_for(tasks: int, gpus: float) -> float:
    """The GPU share that runs ``tasks`` tasks at once on ``gpus`` GPUs, in Ray's steps."""
    return max(GPU_SHARE_STEP, math.floor(min(1.0, gpus / tasks) / GPU_SHARE_STEP) * GPU_SHARE_STEP)


def check_gpus_per_task(gpus: float) -> None:
    """Raise a one-line ValueError unless ``gpus`` is a GPU share a unit can use: 0 (none),
    a fraction in Ray's steps of 0.0001, or 1 (a unit computes on one GPU)."""
    if not (gpus == 0 or GPU_SHARE_STEP <= gpus <= 1):
        raise ValueError(
            f"--gpus-per-task {gpus:g}: give 0 (CPUs only), a share such as 0.5 (units share "
            "a GPU; at least 0.0001) or 1; a unit computes on one GPU"
        )


def _ray_target(address: str | None) -> str:
    """What Ray was asked to start or join, naming the option or variable of the address."""
    if address is not None:
        return f"--ray-address {address}: Ray could not start"
    if os.environ.get("RAY_ADDRESS"):
        return f"RAY_ADDRESS={os.environ['RAY_ADDRESS']}: Ray could not start"
    return "a local Ray could not start"


def _settings_to_forward() -> dict[str, str]:
    """This process's ``WALKINGNOISE_*`` variables, less those a Ray job (``ray job submit
    --runtime-env-json``) already gives every worker: Ray refuses a key given twice."""
    try:
        job = json.loads(os.environ.get(RAY_JOB_CONFIG, "") or "{}")
        given = set((job.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        given = set()
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith(SETTINGS_PREFIX) and key not in given
    }


#: Where a Ray job's driver finds the job's configuration (its runtime environment included).
RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"


#: Prefix of the environment variables that configure walkingnoise, passed on to Ray workers.
SETTINGS_PREFIX = "WALKINGNOISE_"

#: Seconds between two looks for a finished Ray task (a signal is handled in between).
RAY_WAIT_SECONDS = 0.5


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Keep this process's SIGTERM and SIGHUP handlers across the block: ``ray.init`` installs
    its crash reporter for them, which dumps a stack and aborts instead of letting the command
    end as it does without Ray."""
    main = threading.current_thread() is threading.main_thread()
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)} if main else {}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


#: Seconds to wait for a Ray cluster's head to accept a connection.
RAY_CONNECT_TIMEOUT = 10.0


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Raise ValueError unless something accepts connections at a Ray ``host:port`` address
    (also ``ray://host:port``); ``auto`` and ``local`` are Ray's to resolve. Without this,
    ``ray.init`` retries a wrong address for minutes, printing warnings."""
    target = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--ray-address {address}: {port!r} is not a port number") from None
    try:
        socket.create_connection((host.strip("[]"), number), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(
            f"--ray-address {address}: no Ray cluster answers there ({reason}); start one "
            "with `ray start --head` or check the address"
        ) from None


def make_executor(
    name: ExecutorName = "inprocess",
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    gpus_per_task: float | None = None,
) -> Executor:
    """An executor by name: ``inprocess``, ``process`` (``workers`` processes, default 1) or
    ``ray`` (at most ``workers`` tasks at once, default every CPU of the cluster; each task
    with ``gpus_per_task`` of a GPU, default one where the cluster has GPUs)."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "process":
        return ProcessExecutor(1 if workers is None else workers)
    if name == "ray":
        return RayExecutor(ray_address, workers, gpus_per_task)
    raise ValueError(f"unknown executor {name!r}; choose inprocess, process or ray")
