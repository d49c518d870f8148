"""Tasks start with the heavy libraries imported (the forkserver preload); reuse is by fingerprint.

A real `multiprocessing` forkserver, as the scheduler starts it, must import every module
of `TASK_PRELOAD` and hand them to the processes it forks (the LocalExecutor's workers,
which fork each task), whose torch must still run parallel work: importing only, never
running a torch op before the fork (libgomp's threads do not survive a fork).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from infra.services import TASK_PRELOAD, ServiceConfig, service_environment, services_fingerprint
from infra.settings import Settings

# Run as a script file: forkserver children re-import the parent's main module from its path.
FORKSERVER_CHECK = """
import multiprocessing
import sys


def loaded(modules, queue):
    preloaded = sorted(name for name in modules if name in sys.modules)
    import torch

    x = torch.randn(512, 512)
    (x @ x).sum()  # a parallel region: it hangs if a preloaded module ran one before the fork
    queue.put(preloaded)


if __name__ == "__main__":
    modules = sys.argv[1].split(",")
    multiprocessing.set_start_method("forkserver")
    multiprocessing.set_forkserver_preload(modules)
    queue = multiprocessing.SimpleQueue()
    child = multiprocessing.Process(target=loaded, args=(modules, queue))
    child.start()
    child.join(120)
    if child.exitcode != 0:
        child.kill()
        sys.exit(f"the forkserver's child hung or failed (exit code {child.exitcode})")
    print("loaded:", ",".join(queue.get()))
"""


def test_the_scheduler_preloads_the_task_libraries_in_its_forkserver(tmp_path: Path) -> None:
    env = service_environment(Settings(lake=str(tmp_path / "lake")), ServiceConfig(tmp_path / "airflow"))
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",") == list(TASK_PRELOAD)
    assert {"torch", "mlflow", "pyspark.sql", "airflow.sdk.execution_time.task_runner"} <= set(TASK_PRELOAD)


def test_each_of_the_parallel_tasks_runs_torch_on_one_thread(tmp_path: Path) -> None:
    env = service_environment(Settings(lake=str(tmp_path / "lake")), ServiceConfig(tmp_path / "airflow"))
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) == (os.cpu_count() or 2)
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env={**os.environ, "OMP_NUM_THREADS": env["OMP_NUM_THREADS"]}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert child.stdout.strip() == "1"


def test_a_queued_tasks_token_outlives_a_long_wait_for_a_slot(tmp_path: Path) -> None:
    env = service_environment(Settings(lake=str(tmp_path / "lake")), ServiceConfig(tmp_path / "airflow"))
    # Minted at queueing; the demo saw mapped tasks wait ~20 minutes for one of two slots.
    assert int(env["AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME"]) >= 3 * 3600


def test_a_forkserver_child_has_every_preloaded_module(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(FORKSERVER_CHECK)
    done = subprocess.run(
        [sys.executable, str(script), ",".join(TASK_PRELOAD)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]  # after whatever the libraries log while importing
    assert last == "loaded: " + ",".join(sorted(TASK_PRELOAD)), done.stderr[-3000:]


def test_fingerprint_changes_with_settings_ports_and_schedule(tmp_path: Path) -> None:
    settings, config = Settings(lake=str(tmp_path / "lake")), ServiceConfig(tmp_path / "airflow")
    same = services_fingerprint(settings, config)
    assert services_fingerprint(Settings(lake=str(tmp_path / "lake")), config) == same
    others = [
        services_fingerprint(dataclasses.replace(settings, lake=str(tmp_path / "other")), config),
        services_fingerprint(dataclasses.replace(settings, fm_size="tiny"), config),
        services_fingerprint(settings, dataclasses.replace(config, airflow_port=8081)),
        services_fingerprint(settings, dataclasses.replace(config, schedule=False)),
    ]
    assert same not in others and len(set(others)) == len(others)
