"""Run this repository's DAGs through a local Airflow (the demo and the end-to-end tests).

A self-contained `AIRFLOW_HOME` with an SQLite metadata DB (absolute path), this
repo's `dags/` as the DAG folder, and the caller's `Settings` exported as
`DISTILLERY_*` so that the tasks see the same lake and seed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "dags"

# The scheduler, DAG processor, triggerer and api-server all write the one SQLite file. sqlite3's
# default 5 s busy timeout lets a writer fail with "database is locked" on a loaded machine (the
# api-server answers a backfill with HTTP 503); each connection waits up to 60 s for the lock instead.
SQLITE_CONNECT_ARGS: dict[str, object] = {"timeout": 60}


def airflow_environment(settings: Settings, airflow_home: Path) -> dict[str, str]:
    """The process environment for Airflow commands run against `airflow_home`."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home.resolve()}/airflow.db",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        }
    )
    for field in dataclasses.fields(settings):
        env[f"DISTILLERY_{field.name.upper()}"] = str(getattr(settings, field.name))
    return env


def _airflow(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run the `airflow` CLI of this interpreter's environment; raise with the log's tail on failure."""
    airflow_bin = Path(sys.executable).with_name("airflow")
    with log.open("a") as out:
        done = subprocess.run([str(airflow_bin), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {done.returncode}); log {log}:\n{tail}")


def prepare_airflow_home(settings: Settings, airflow_home: Path) -> dict[str, str]:
    """Create `airflow_home` and migrate its metadata DB (idempotent); returns the environment."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = airflow_environment(settings, airflow_home)
    _airflow(["db", "migrate"], env, airflow_home / "distillery-airflow.log")
    return env


def run_dag_test(dag_id: str, ds: str, env: dict[str, str]) -> None:
    """Execute one run of `dag_id` for logical date `ds` in-process (`airflow dags test`)."""
    _airflow(["dags", "test", dag_id, ds], env, Path(env["AIRFLOW_HOME"]) / "distillery-airflow.log")
