"""Executors: a process pool and a real local Ray give the numbers of an in-process run."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from walkingnoise.experiment import Experiment
from walkingnoise.sweep import Store, executors, load_results, make_executor, run_sweep
from walkingnoise.sweep.executors import (
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    RayExecutor,
    TaskError,
    check_ray_address,
    visible_gpus,
)
from walkingnoise.sweep.planner import WorkUnit
from walkingnoise.sweep.work import UnitOutcome, run_unit, unit_threads
from walkingnoise.training.memory import CPU_SHARE_ENV, DEVICE_ENV, GPU_SHARE_ENV

from .helpers import MIXED_SWEEP, eval_only_spec, spec, worker_gpu

pytestmark = pytest.mark.slow

ACCURACIES = [
    "clean_validation_accuracy",
    "clean_test_accuracy",
    "noisy_validation_accuracy",
    "noisy_validation_accuracy_std",
    "noisy_test_accuracy",
    "noisy_test_accuracy_std",
]
LOSSES = ["clean_validation_loss", "clean_test_loss", "noisy_validation_loss", "noisy_test_loss"]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(2) as executor:
        yield executor


#: A setting of this process that the Ray workers must see too (see test_settings_reach…).
SETTING = ("WALKINGNOISE_DATA", "/data/of/the/driver")


@pytest.fixture(scope="module")
def ray() -> Iterator[RayExecutor]:
    pytest.importorskip("ray")
    changed = {**RAY_ENV, SETTING[0]: SETTING[1]}
    saved = {key: os.environ.get(key) for key in changed}
    os.environ.update(changed)
    try:
        executor = RayExecutor(workers=2)
    finally:
        _restore(saved, SETTING[0])
    try:
        yield executor
    finally:
        executor.close()
        _restore(saved)
    import ray as ray_module

    assert not ray_module.is_initialized()


def _restore(saved: dict[str, str | None], *keys: str) -> None:
    """Put the environment variables ``keys`` (default: all of ``saved``) back as saved."""
    for key in keys or saved:
        if saved[key] is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved[key]


def _run(executor: Executor, path: Path) -> pd.DataFrame:
    summary = run_sweep(spec(MIXED_SWEEP), path, executor=executor, progress=False)
    assert (summary.ran, summary.failed) == (8, 0)
    with Store(path, create=False) as store:
        assert store.training_count() == 1
    return load_results(path).set_index("hash").sort_index()


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, pool: ProcessExecutor, ray: RayExecutor
) -> dict[str, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("executors")
    return {
        "inprocess": _run(InProcessExecutor(), folder / "inprocess.sqlite"),
        "process": _run(pool, folder / "process.sqlite"),
        "ray": _run(ray, folder / "ray.sqlite"),
    }


def test_every_executor_runs_the_same_experiments(results: dict[str, pd.DataFrame]) -> None:
    reference = results["inprocess"]
    assert len(reference) == 8
    assert reference["train_noise"].sum() == 4
    for name, frame in results.items():
        assert list(frame.index) == list(reference.index), name
        assert set(frame["status"]) == {"done"}, name
        assert list(frame["training"]) == list(reference["training"]), name
        assert [len(h) for h in frame["history"]] == [2] * 8, name
        assert frame["device"].notna().all(), name  # cpu here, cuda:0 (…) on a GPU
        assert set(frame["node"]) == {socket.gethostname()}, name


def test_process_pool_and_ray_give_identical_numbers(results: dict[str, pd.DataFrame]) -> None:
    columns = ACCURACIES + LOSSES
    pd.testing.assert_frame_equal(
        results["process"][columns], results["ray"][columns], check_exact=True
    )


@pytest.mark.parametrize("name", ["process", "ray"])
def test_workers_give_the_numbers_of_an_in_process_run(
    results: dict[str, pd.DataFrame], name: str
) -> None:
    """The same seeds give the same results whichever executor ran them (DESIGN: determinism)."""
    reference, other = results["inprocess"], results[name]
    pd.testing.assert_frame_equal(reference[ACCURACIES], other[ACCURACIES], check_exact=True)
    pd.testing.assert_frame_equal(reference[LOSSES], other[LOSSES], rtol=1e-5, atol=0)


def test_pool_workers_record_their_own_device_and_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node is the worker's host name, not the driver's (``host``): here the driver's is
    changed, and only the driver's."""
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    worker_host = socket.gethostname()
    monkeypatch.setattr(socket, "gethostname", lambda: "the-driver")
    path = tmp_path / "pool.sqlite"
    with ProcessExecutor(1) as pool:
        summary = run_sweep(eval_only_spec([0.1]), path, executor=pool, progress=False)
    assert (summary.ran, summary.failed) == (2, 0)
    frame = load_results(path)
    assert frame["device"].tolist() == ["cpu", "cpu"]
    assert frame["node"].tolist() == [worker_host] * 2
    assert frame["host"].tolist() == ["the-driver"] * 2


def test_units_compute_with_a_fixed_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every executor runs a unit with the same thread count (what makes the numbers equal),
    and leaves the process's own setting as it was."""
    assert unit_threads() == 1
    monkeypatch.setenv("WALKINGNOISE_THREADS", "2")
    assert unit_threads() == 2
    monkeypatch.setenv("WALKINGNOISE_THREADS", "two")
    with pytest.raises(ValueError, match="WALKINGNOISE_THREADS"):
        unit_threads()
    monkeypatch.delenv("WALKINGNOISE_THREADS")
    before = torch.get_num_threads()
    with pytest.raises(FileNotFoundError):
        run_unit(_unit_without_data())
    assert torch.get_num_threads() == before


# -- failures inside tasks ---------------------------------------------------------------------


def _unit_without_data() -> WorkUnit:
    experiment = Experiment(dataset="mnist", noise="additive", sigma=0.1, train_noise=True)
    return WorkUnit((experiment,))


def _assert_missing_data(result: object) -> None:
    assert isinstance(result, TaskError)
    text = result.traceback
    assert "Traceback (most recent call last)" in text
    assert "DatasetNotFoundError" in text
    assert "mnist" in text
    assert "run_unit" in text  # the worker's frames are part of the text
    assert "\n" not in str(result)


def test_a_raising_task_in_a_process_pool_is_a_task_error(
    pool: ProcessExecutor, tmp_path: Path
) -> None:
    units = [_unit_without_data()]
    ((item, result),) = list(pool.run(run_unit, units, str(tmp_path)))
    assert item is units[0]
    _assert_missing_data(result)


def test_a_raising_task_on_ray_is_a_task_error(ray: RayExecutor, tmp_path: Path) -> None:
    units = [_unit_without_data()]
    ((item, result),) = list(ray.run(run_unit, units, str(tmp_path)))
    assert item is units[0]
    _assert_missing_data(result)


def test_settings_a_ray_job_gives_its_workers_are_not_given_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ray job submit --runtime-env-json`` puts its variables in the driver's environment
    too; handing them to ``ray.init`` again makes Ray refuse to start."""
    job = {"runtime_env": {"env_vars": {"WALKINGNOISE_DATA": "/shared/data"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    monkeypatch.setenv("WALKINGNOISE_DATA", "/shared/data")
    monkeypatch.setenv("WALKINGNOISE_THREADS", "2")
    forwarded = executors._settings_to_forward()
    assert forwarded["WALKINGNOISE_THREADS"] == "2"
    assert "WALKINGNOISE_DATA" not in forwarded
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "not json")
    assert executors._settings_to_forward()["WALKINGNOISE_DATA"] == "/shared/data"


def test_settings_reach_the_ray_workers(ray: RayExecutor) -> None:
    """The data folder, threads, memory budget and model modules of the process that starts
    Ray are the workers' too, as a process pool's inherit them: they are in the job's runtime
    environment, which every node's workers get (a local Ray's would inherit them anyway)."""
    import ray as ray_module

    job = ray_module.get_runtime_context().runtime_env
    assert job.get("env_vars", {}).get(SETTING[0]) == SETTING[1]
    assert os.environ.get(SETTING[0]) != SETTING[1]  # read below in a worker, not here
    assert list(ray.run(os.getenv, [SETTING[0]])) == [(SETTING[0], SETTING[1])]
    assert ray.workers == 2


def test_ray_tasks_on_a_cluster_without_gpus_ask_for_none(
    ray: RayExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the cluster has no GPU, a task takes one CPU and its stacks the GPU's whole
    memory (moot on a CPU); asking for GPU shares there is a warning (an autoscaler may add
    GPU nodes; a local Ray's refusal is in the test below)."""
    import ray as ray_module

    def resources(_item: int) -> tuple[dict, str | None, str | None]:
        assigned = ray_module.get_runtime_context().get_assigned_resources()
        return assigned, os.environ.get(GPU_SHARE_ENV), os.environ.get("WALKINGNOISE_DEVICE")

    assert (ray.gpus_per_task, ray.device) == (0, "cpu")
    ((_, (assigned, share, device)),) = list(ray.run(resources, [0]))
    # recent Ray leaves a GPU visible to a task that asks for none: the setting keeps it off
    assert (assigned, share, device) == ({"CPU": 1.0}, "1.0", "cpu")
    with caplog.at_level(logging.WARNING, logger="walkingnoise"):
        waiting = RayExecutor(gpus_per_task=0.5)
    assert "--gpus-per-task 0.5: the Ray cluster has no GPU now" in caplog.text
    assert (waiting.device, waiting.workers) == ("cuda", 1)


#: Ray on a cluster whose node declares GPUs: the tasks ask for them (a task that asks for
#: none sees no GPU), by default a whole one each, or a share with --gpus-per-task.
GPU_CLUSTER = """
import json, os, ray
from walkingnoise.sweep.executors import RayExecutor

def seen(_item):
    assigned = ray.get_runtime_context().get_assigned_resources()
    share, device = os.environ.get("WALKINGNOISE_GPU_SHARE"), os.environ["WALKINGNOISE_DEVICE"]
    return assigned, share, os.environ["CUDA_VISIBLE_DEVICES"], device

ray.init(num_cpus=4, num_gpus=1, include_dashboard=False)
whole = RayExecutor()
quarter = RayExecutor(gpus_per_task=0.25)
report = {
    "device": whole.device,
    "whole": [whole.gpus_per_task, whole.workers, [r for _, r in whole.run(seen, [0])]],
    "quarter": [quarter.gpus_per_task, quarter.workers, [r for _, r in quarter.run(seen, [0])]],
    "capped": RayExecutor(workers=3, gpus_per_task=0.25).workers,
    "queued": RayExecutor(workers=3, gpus_per_task=1).workers,
}
ray.shutdown()
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a machine without GPUs
try:  # a local Ray that this executor starts
    RayExecutor(workers=1, gpus_per_task=0.5)
except ValueError as error:
    report["local"] = [str(error), ray.is_initialized()]
print(json.dumps(report))
"""


def test_ray_tasks_on_a_cluster_with_gpus_ask_for_them() -> None:
    pytest.importorskip("ray")
    done = subprocess.run(
        [sys.executable, "-c", GPU_CLUSTER],
        env={**os.environ, **RAY_ENV},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    gpus, workers, ((assigned, share, visible, device),) = report["whole"]
    assert (gpus, workers, share, device) == (1.0, 1, "1.0", "cuda")
    assert assigned == {"CPU": 1.0, "GPU": 1.0}
    assert visible == "0"
    gpus, workers, ((assigned, share, visible, _),) = report["quarter"]
    assert (gpus, workers, share) == (0.25, 4, "0.25")  # 4 GPU shares, 4 CPUs
    assert assigned == {"CPU": 1.0, "GPU": 0.25}
    assert visible == "0"
    assert report["capped"] == 3
    assert report["queued"] == 3  # as asked, but the GPUs run one at a time, which it says
    assert (
        "--workers 3: the cluster's GPUs run 1 task(s) at once at --gpus-per-task 1; "
        "--gpus-per-task 0.3333 runs 3" in done.stderr
    )
    assert report["device"] == "cuda"  # the planner plans for the tasks' GPUs
    message, still_up = report["local"]
    assert message.startswith("--gpus-per-task 0.5: this machine's Ray has no GPU")
    assert not still_up  # the local Ray it started is shut down again


def test_pool_workers_share_the_gpu_equally_unless_told(
    pool: ProcessExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {share for _, share in pool.run(os.getenv, [GPU_SHARE_ENV] * 4)} == {"0.5"}
    monkeypatch.setenv(GPU_SHARE_ENV, "0.3")
    with ProcessExecutor(2) as told:
        assert [share for _, share in told.run(os.getenv, [GPU_SHARE_ENV])] == ["0.3"]


def test_pool_workers_share_the_available_ram_equally_unless_told(
    pool: ProcessExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {share for _, share in pool.run(os.getenv, [CPU_SHARE_ENV] * 4)} == {"0.5"}
    monkeypatch.setenv(CPU_SHARE_ENV, "0.3")
    with ProcessExecutor(2) as told:
        assert [share for _, share in told.run(os.getenv, [CPU_SHARE_ENV])] == ["0.3"]


def test_pool_workers_on_a_machine_with_several_gpus_take_them_in_turn(tmp_path: Path) -> None:
    """4 workers over GPUs "3" and "5" (as ``CUDA_VISIBLE_DEVICES`` names them): each worker
    sees one of them, two workers each, and sizes its stacks to half of it."""
    (tmp_path / "tasks").write_text("4")
    with ProcessExecutor(4, gpus=["3", "5"]) as pool:
        seen = [result for _, result in pool.run(worker_gpu, [str(tmp_path)] * 4)]
    assert len({pid for pid, _, _ in seen}) == 4  # one task per worker
    assert sorted(gpu for _, gpu, _ in seen) == ["3", "3", "5", "5"]
    assert {share for _, _, share in seen} == {"0.5"}


def test_the_gpus_a_pool_spreads_over_are_those_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == []


def test_a_ray_task_whose_worker_died_runs_once_more(ray: RayExecutor, tmp_path: Path) -> None:
    """As the process pool reruns a crashed unit: killed once, the task runs again."""
    marker = tmp_path / "died-once"

    def die_once(path: str) -> str:
        if not os.path.exists(path):
            Path(path).touch()
            os._exit(1)
        return "ran again"

    assert list(ray.run(die_once, [str(marker)])) == [(str(marker), "ran again")]


def test_a_raising_task_in_process_is_a_task_error(tmp_path: Path) -> None:
    ((_, result),) = list(InProcessExecutor().run(run_unit, [_unit_without_data()], str(tmp_path)))
    _assert_missing_data(result)


def test_a_pool_returns_results_of_good_and_bad_tasks(
    pool: ProcessExecutor, tmp_path: Path
) -> None:
    good = WorkUnit(
        (Experiment(noise="additive", sigma=0.1, eval_repeats=1, recipe={"epochs": 1}),),
        shared_training=Experiment(noise="none", recipe={"epochs": 1}),
    )
    bad = [_unit_without_data(), _unit_without_data()]
    units = [bad[0], good, bad[1]]
    results = {id(item): result for item, result in pool.run(run_unit, units, str(tmp_path))}
    assert len(results) == 3
    outcome = results[id(good)]
    assert isinstance(outcome, UnitOutcome)
    assert outcome.training is not None
    assert outcome.training.checkpoint
    assert outcome.members[0].error is None
    assert 0 <= outcome.members[0].metrics["noisy_test_accuracy"] <= 1
    _assert_missing_data(results[id(bad[0])])
    _assert_missing_data(results[id(bad[1])])


# -- construction ------------------------------------------------------------------------------


INTERRUPT_IDLE_WORKERS = """
import multiprocessing, os, signal, time
from walkingnoise.sweep.executors import ProcessExecutor

if __name__ == "__main__":
    with ProcessExecutor(2) as pool:
        list(pool.run(time.sleep, [0.5, 0.5]))
        time.sleep(1.0)  # every worker now waits for work
        workers = multiprocessing.active_children()
        for worker in workers:
            os.kill(worker.pid, signal.SIGINT)
        time.sleep(1.0)
        print(len(workers))
"""


INTERRUPT_A_BUSY_WORKER = """
import multiprocessing, os, signal, threading, time
from walkingnoise.sweep.executors import ProcessExecutor

def get(seconds):  # a task named like the pool queue's method that marks an idle worker
    time.sleep(seconds)
    return seconds

if __name__ == "__main__":
    with ProcessExecutor(1) as pool:
        list(pool.run(time.sleep, [0.1]))
        (worker,) = multiprocessing.active_children()
        threading.Timer(1.5, os.kill, (worker.pid, signal.SIGINT)).start()
        try:
            print(list(pool.run(get, [4.0])))
        except KeyboardInterrupt:
            print("interrupted")
"""


KILLED_WORKERS = """
import os, signal, sys, time
from pathlib import Path
from walkingnoise.sweep.executors import ProcessExecutor, TaskError

def task(item):
    name, marker = item
    if name == "once" and not Path(marker).exists():  # killed the first time only
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if name == "always":  # as a task the out-of-memory killer ends every time
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return name

if __name__ == "__main__":
    names = ["a", "once", "b", "always", "c", "d", "e"]
    with ProcessExecutor(2) as pool:
        for (name, _), result in pool.run(task, [(n, sys.argv[1]) for n in names]):
            died = isinstance(result, TaskError) and "worker process running" in result.traceback
            print(name, "died" if died else result)
"""


ABORTED_POOL = """
import sys, time
from pathlib import Path
from walkingnoise.sweep.executors import ProcessExecutor

def task(item):
    name, folder = item
    started = Path(folder, "started")
    if name == "slow":
        started.touch()
        time.sleep(20)
        Path(folder, "finished").touch()
    while not started.exists():
        time.sleep(0.05)
    return name

if __name__ == "__main__":
    try:
        with ProcessExecutor(2) as pool:
            for _ in pool.run(task, [("slow", sys.argv[1]), ("quick", sys.argv[1])]):
                raise RuntimeError("the store cannot be written")
    except RuntimeError:
        print("aborted")
"""


def _run_script(folder: Path, text: str) -> subprocess.CompletedProcess:
    script = folder / "interrupt.py"
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )


def test_ctrl_c_prints_no_traceback_from_idle_pool_workers(tmp_path: Path) -> None:
    done = _run_script(tmp_path, INTERRUPT_IDLE_WORKERS)
    assert int(done.stdout) >= 1
    assert "Traceback" not in done.stderr


def test_ctrl_c_interrupts_the_task_of_a_busy_pool_worker(tmp_path: Path) -> None:
    """The parent sees the task's KeyboardInterrupt, not a pool broken by a worker gone."""
    done = _run_script(tmp_path, INTERRUPT_A_BUSY_WORKER)
    assert done.stdout.strip() == "interrupted"


def test_an_error_ends_the_running_tasks_instead_of_waiting_for_them(tmp_path: Path) -> None:
    """Their results would not be recorded: the pool ends them rather than wait minutes."""
    script = tmp_path / "aborted.py"
    script.write_text(ABORTED_POOL)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "aborted"
    assert (tmp_path / "started").exists()
    assert not (tmp_path / "finished").exists()  # the slow task was ended, not awaited


def test_make_executor_by_name() -> None:
    assert isinstance(make_executor(), InProcessExecutor)
    assert isinstance(make_executor("inprocess"), InProcessExecutor)
    with pytest.raises(ValueError, match="unknown executor 'dask'; choose inprocess, process"):
        make_executor("dask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers must be ≥ 1, got 0"):
        make_executor("process", workers=0)


def test_a_killed_worker_fails_only_the_task_that_kills_it(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WORKERS)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "marker")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results = dict(line.split() for line in done.stdout.splitlines())
    assert results == {name: name for name in ["a", "once", "b", "c", "d", "e"]} | {
        "always": "died"
    }
    assert "a worker process died" in done.stderr


def test_a_ray_address_where_nothing_listens_is_a_one_line_error() -> None:
    """ray.init would retry it for minutes; the check answers at once."""
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match=rf"--ray-address 127.0.0.1:{port}: no Ray cluster"):
        check_ray_address(f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="no Ray cluster"):
        check_ray_address(f"ray://127.0.0.1:{port}")
    with pytest.raises(ValueError, match="'x' is not a port number"):
        check_ray_address("127.0.0.1:x")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_ray_address(f"127.0.0.1:{listening.getsockname()[1]}")  # something answers
    check_ray_address("auto")
