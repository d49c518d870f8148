"""Airflow and the MLflow UI as local services: what `distillery up` and `distillery down` run.

`start_services` prepares a self-contained AIRFLOW_HOME (`infra.airflow_local`: this
repo's `dags/`, an SQLite metadata DB, the `DISTILLERY_*` settings exported so tasks
see the same lake), then starts Airflow's api-server, scheduler (LocalExecutor), DAG
processor and triggerer, and `mlflow server` on `Settings.mlflow_uri` with artifacts
under `<lake>/mlartifacts` (where `infra.registry` puts them), each in a process group
of its own, every one bound to 127.0.0.1.

Airflow requires a login (simple auth manager, user `admin`): the api-server generates
the password into `<home>/simple_auth_manager_passwords.json.generated`, and
`<home>/credentials.txt` says so. `<home>/services.json` records each process group;
`stop_services` signals exactly those groups and their descendants, nothing else;
`ensure_services` reuses services that run with the same settings and restarts others.

Each task is forked from a LocalExecutor worker that already imported the heavy
libraries (`TASK_PRELOAD`, through the scheduler's forkserver), so a task pays for
its own work, not for importing torch and MLflow again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from infra.airflow_api import AirflowClient
from infra.airflow_local import airflow_environment, prepare_airflow_home
from infra.settings import Settings

LOOPBACK = "127.0.0.1"
DAG_ID = "distillery_daily"
REPORT_DAG_ID = "distillery_report"  # scheduled on the daily DAG's Assets
ADMIN = "admin"
STATE_FILE = "services.json"
CREDENTIALS_FILE = "credentials.txt"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Imported once by the scheduler's forkserver: the LocalExecutor's workers fork from it and
# fork each task from themselves, so a task starts with these already imported (5 to 16 s of
# imports per task otherwise, more on a busy machine). Libraries only: this repo's modules are
# imported fresh by each task, so an edit takes effect without a restart. Importing must run
# no torch op (libgomp's threads do not survive a fork). great_expectations imports Spark
# Connect, whose dependency check exits a process whose `__main__` has no file (the
# forkserver's) unless pyspark's `connect` extra is installed: pyproject.toml installs it.
TASK_PRELOAD = (
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",  # each task parses its DAG file into a DagBag
    "torch",
    "torchmetrics",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.store.tracking.sqlalchemy_store",  # the SQLite registry's store: alembic, SQLAlchemy
    "pandas",
    "pyarrow.parquet",
    "deltalake",
    "pyspark.sql",
    "great_expectations",  # the ingest and knowledge tasks' validation (5 s of imports)
)


class ServiceError(RuntimeError):
    """A service could not start, or is already running."""


@dataclass(frozen=True)
class ServiceConfig:
    """Where the services keep their state and which loopback ports they listen on."""

    home: Path  # AIRFLOW_HOME; also holds services.json, credentials.txt and service-logs/
    airflow_port: int = 8080
    mlflow_port: int = 5000
    schedule: bool = True  # False: only backfills and manual triggers create runs

    @property
    def airflow_url(self) -> str:
        """The Airflow UI and REST API, on the loopback interface."""
        return f"http://{LOOPBACK}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow UI, on the loopback interface."""
        return f"http://{LOOPBACK}:{self.mlflow_port}"


@dataclass(frozen=True)
class RunningServices:
    """What `start_services` started: the two URLs and Airflow's login."""

    airflow_url: str
    mlflow_url: str
    username: str
    password: str
    credentials: Path  # the file naming the login and where Airflow generated the password


def port_is_free(port: int) -> bool:
    """Whether a server could bind `127.0.0.1:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def admin_password(home: Path) -> str:
    """The admin password the api-server generated into `PASSWORDS_FILE` under `home`."""
    return json.loads((home / PASSWORDS_FILE).read_text())[ADMIN]


def service_environment(settings: Settings, config: ServiceConfig) -> dict[str, str]:
    """Every service's environment: `airflow_environment` plus loopback binding, login and local sizing."""
    home = config.home.resolve()
    env = airflow_environment(settings, home)
    env.update(
        {
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(config.airflow_port),
            # Tasks reach the execution API at <base_url>/execution/.
            "AIRFLOW__API__BASE_URL": config.airflow_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
            # One task per core: each task imports torch and may start a Spark JVM ...
            "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 2),
            # ... and runs torch on one thread (read when the forkserver imports torch): intra-op
            # threads wait for each other at every operator, so a task with two threads beside
            # another task on two cores runs slower than with one (day 1's train_fm at demo scale
            # beside a busy core: 81 s with two threads, 41 s with one).
            "OMP_NUM_THREADS": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(config.schedule),
            # A task's execution-API token is minted when the scheduler queues it: on two busy
            # cores a mapped task can wait in the executor longer than the 10-minute default,
            # then fails to start ("Invalid auth token") and waits for a retry. The API is loopback.
            "AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME": str(24 * 3600),
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(TASK_PRELOAD),
            # MLflow's job runner (GenAI jobs, seven worker processes) is unused here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    return env


def service_commands(settings: Settings, config: ServiceConfig) -> dict[str, list[str]]:
    """The command line of each service, by name (the log servers are off: logs are local files)."""
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    return {
        "api-server": [airflow, "api-server", "--host", LOOPBACK, "--port", str(config.airflow_port),
                       "--workers", "1"],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
        "mlflow": [str(bin_dir / "mlflow"), "server", "--backend-store-uri", settings.mlflow_uri,
                   "--default-artifact-root", settings.artifact_root(), "--no-serve-artifacts",
                   "--host", LOOPBACK, "--port", str(config.mlflow_port), "--workers", "1"],
    }  # fmt: skip


def _log_tail(log: Path, lines: int = 30) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def _wait_until_serving(
    urls: dict[str, str], started: dict[str, subprocess.Popen], logs: Path, deadline: float
) -> None:
    """Wait until every URL answers HTTP 200; fail early, with its log, if a service exits."""
    waiting = dict(urls)
    while waiting:
        for name, process in started.items():
            if process.poll() is not None:
                log = logs / f"{name}.log"
                raise ServiceError(f"{name} exited with {process.returncode}; {log}:\n{_log_tail(log)}")
        for name, url in list(waiting.items()):
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=5).status_code == 200:
                    del waiting[name]
        if waiting and time.monotonic() > deadline:
            raise ServiceError(f"no answer from {', '.join(waiting.values())}; logs in {logs}")
        time.sleep(1)


def _write_credentials(config: ServiceConfig, password: str) -> Path:
    """`<home>/credentials.txt` (owner-only): the login, where Airflow keeps it, the URLs."""
    path = config.home / CREDENTIALS_FILE
    path.touch(mode=0o600)
    path.chmod(0o600)  # an older file may have other modes
    path.write_text(
        f"Airflow  {config.airflow_url}\nuser     {ADMIN}\npassword {password}\n"
        f"(generated by Airflow's simple auth manager into {config.home / PASSWORDS_FILE})\n"
        f"MLflow   {config.mlflow_url}\n"
    )
    return path


def start_services(settings: Settings, config: ServiceConfig, timeout_s: float = 300.0) -> RunningServices:
    """Start Airflow and the MLflow UI, wait until both answer and the DAGs are registered, unpause them.

    Reads and writes `<home>` (AIRFLOW_HOME): the SQLite metadata DB, `services.json`,
    `credentials.txt`, `service-logs/<service>.log`. Raises `ServiceError` when the
    services already run, a port is taken, or a service does not come up (stopping
    what it started).
    """
    config = dataclasses.replace(config, home=config.home.resolve())
    home = config.home
    if _live_processes(home):
        raise ServiceError(f"services already running from {home}: run `distillery down` first")
    for port in (config.airflow_port, config.mlflow_port):
        if not port_is_free(port):
            raise ServiceError(f"port {LOOPBACK}:{port} is in use")
    prepare_airflow_home(settings, home)
    env = service_environment(settings, config)
    logs = home / "service-logs"
    logs.mkdir(exist_ok=True)
    started: dict[str, subprocess.Popen] = {}
    for name, command in service_commands(settings, config).items():
        with (logs / f"{name}.log").open("a") as log:
            started[name] = subprocess.Popen(
                command, env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    records = [
        {"name": name, "pid": p.pid, "started_after_boot_s": started_after_boot(psutil.Process(p.pid))}
        for name, p in started.items()
    ]
    state = {"fingerprint": services_fingerprint(settings, config), "processes": records}
    (home / STATE_FILE).write_text(json.dumps(state, indent=2))
    try:
        _wait_until_serving(_health_urls(config), started, logs, time.monotonic() + timeout_s)
        (home / PASSWORDS_FILE).chmod(0o600)  # Airflow writes it readable by all
        return _log_in_and_unpause(config, timeout_s)
    except BaseException:  # Ctrl-C included: leave nothing running
        stop_services(home)
        raise


def ensure_services(settings: Settings, config: ServiceConfig, timeout_s: float = 300.0) -> RunningServices:
    """The services of `config.home` as `start_services` starts them, reusing those already running.

    Running services are reused when every recorded process is alive and answering and
    they were started with the same commands and environment (settings, ports, schedule);
    otherwise they are stopped (`stop_services`) and started afresh.
    """
    config = dataclasses.replace(config, home=config.home.resolve())
    if _reusable(settings, config):
        return _log_in_and_unpause(config, timeout_s)
    stop_services(config.home)
    return start_services(settings, config, timeout_s)


def services_fingerprint(settings: Settings, config: ServiceConfig) -> str:
    """A digest of what the services run: their commands and their Airflow, MLflow and Spark environment."""
    env = service_environment(settings, config)
    prefixes = ("AIRFLOW", "DISTILLERY_", "MLFLOW_", "SPARK_")
    relevant = {name: value for name, value in env.items() if name.startswith(prefixes)}
    blob = json.dumps({"commands": service_commands(settings, config), "env": relevant}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _health_urls(config: ServiceConfig) -> dict[str, str]:
    return {"airflow": f"{config.airflow_url}/api/v2/monitor/health", "mlflow": f"{config.mlflow_url}/health"}


def _reusable(settings: Settings, config: ServiceConfig) -> bool:
    """Whether the services recorded under `config.home` all run, answer and match `settings`, `config`."""
    state = config.home / STATE_FILE
    if not state.exists():
        return False
    if json.loads(state.read_text()).get("fingerprint") != services_fingerprint(settings, config):
        return False
    if set(_live_processes(config.home)) != set(service_commands(settings, config)):
        return False
    try:
        return all(requests.get(url, timeout=5).status_code == 200 for url in _health_urls(config).values())
    except requests.RequestException:
        return False


def _log_in_and_unpause(config: ServiceConfig, timeout_s: float) -> RunningServices:
    """Log in as admin, wait until both DAGs are registered, unpause them; write `credentials.txt`."""
    password = admin_password(config.home)
    client = AirflowClient(config.airflow_url, ADMIN, password)
    for dag_id in (DAG_ID, REPORT_DAG_ID):
        client.wait_for_dag(dag_id, timeout_s)
        client.set_paused(dag_id, paused=False)
    return RunningServices(
        config.airflow_url, config.mlflow_url, ADMIN, password, _write_credentials(config, password)
    )


def started_after_boot(process: psutil.Process) -> float:
    """Seconds from boot to `process`'s start. Unlike `create_time()` (this plus the boot time, which
    Linux derives afresh from the wall clock on each read, so it jumps when NTP steps the clock) it
    never moves, and so it tells a recorded process from a later one that reused its pid."""
    return process.create_time() - psutil.boot_time()


def _recorded(entry: dict) -> psutil.Process | None:
    """The recorded process if it still runs (same pid and start: never a reused pid)."""
    try:
        process = psutil.Process(entry["pid"])
        same = abs(started_after_boot(process) - entry.get("started_after_boot_s", math.nan)) < 0.01
    except psutil.NoSuchProcess:
        return None
    return process if same and _alive(process) else None


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a zombie waits for a parent that is not us to reap it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _live_processes(home: Path) -> dict[str, psutil.Process]:
    """The services recorded in `<home>/services.json` that still run, by name."""
    state = home / STATE_FILE
    if not state.exists():
        return {}
    entries = json.loads(state.read_text())["processes"]
    return {e["name"]: p for e in entries if (p := _recorded(e)) is not None}


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to `timeout_s` for the processes to exit; returns those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in processes if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if _alive(p)]
    return alive


def stop_services(home: Path, timeout_s: float = 30.0) -> list[str]:
    """Stop the services recorded in `<home>/services.json`; returns the names of those that ran.

    SIGTERM to each recorded process group, then SIGKILL to the groups and to any
    descendant (a task in a group of its own, a Spark JVM) still alive after `timeout_s`.
    """
    home = home.resolve()
    leaders = _live_processes(home)
    everyone = list(leaders.values())
    for leader in leaders.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            everyone += leader.children(recursive=True)
    for leader in leaders.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGTERM)
    survivors = _wait_gone(everyone, timeout_s)
    if survivors:
        for leader in leaders.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader.pid, signal.SIGKILL)
        for process in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        _wait_gone(survivors, 5.0)
    (home / STATE_FILE).unlink(missing_ok=True)
    return list(leaders)
