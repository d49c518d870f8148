"""End to end: `distillery up`, a three-day backfill through the REST API v2, `distillery down`.

The real services (api-server, scheduler with LocalExecutor, DAG processor, triggerer,
MLflow server) run on free loopback ports from a temporary AIRFLOW_HOME; the backfill
is what the UI's Trigger -> Backfill creates. Tiny settings, as in the DAG's e2e test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from infra import registry
from infra.airflow_api import AirflowAPIError, AirflowClient
from infra.airflow_local import airflow_environment
from infra.delta import partition_row_counts, read_partition
from infra.schema import DOMAINS, SURFACE_DOMAINS, SURFACES
from infra.services import DAG_ID, STATE_FILE, admin_password, port_is_free, stop_services
from infra.settings import Settings
from pipeline.lineage import walk_lineage

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
DISTILLERY = str(Path(sys.executable).with_name("distillery"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _group_members(groups: set[int]) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is one of `groups`."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def _distillery(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DISTILLERY, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def test_port_is_free_sees_a_listening_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_down_stops_the_recorded_groups_and_nothing_else(tmp_path: Path) -> None:
    def start(script: str) -> psutil.Process:
        process = subprocess.Popen(["bash", "-c", script], start_new_session=True)
        return psutil.Process(process.pid)

    service = start("sleep 600 & wait")  # a group of two: bash and its sleep
    bystander = start("sleep 600")
    entries = [
        {"name": "service", "pid": service.pid, "create_time": service.create_time()},
        # A recorded pid that now names another process (pid reuse): never signalled.
        {"name": "stale", "pid": bystander.pid, "create_time": bystander.create_time() - 100},
    ]
    (tmp_path / STATE_FILE).write_text(json.dumps({"processes": entries}))
    try:
        assert stop_services(tmp_path, timeout_s=10) == ["service"]
        assert not _group_members({service.pid})
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
        assert not (tmp_path / STATE_FILE).exists()
    finally:
        bystander.kill()


@pytest.mark.slow
def test_up_backfill_through_rest_api_down(tmp_path: Path) -> None:
    settings = Settings(
        lake=str(tmp_path / "lake"),
        mlflow_uri=f"sqlite:///{tmp_path}/mlruns.db",
        events_per_day=3_000,
        n_users=300,
        history_length=20,
        start_date=DAYS[0],
        fm_size="tiny",
        gate_max_ne=1.5,  # loose bars: this test checks the wiring, not the gate
        gate_max_regression=0.5,
    )
    home, airflow_port, mlflow_port = tmp_path / "airflow", _free_port(), _free_port()
    airflow_url, mlflow_url = f"http://127.0.0.1:{airflow_port}", f"http://127.0.0.1:{mlflow_port}"
    env = airflow_environment(settings, home)  # the DISTILLERY_* settings, as the CLI reads them
    up_args = ["--home", str(home), "--airflow-port", str(airflow_port), "--mlflow-port", str(mlflow_port)]
    up = _distillery(["up", *up_args, "--no-schedule"], env, tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        groups = {entry["pid"] for entry in json.loads((home / STATE_FILE).read_text())["processes"]}
        password = admin_password(home)
        assert airflow_url in up.stdout and mlflow_url in up.stdout and password in up.stdout
        assert (
            str(home / "simple_auth_manager_passwords.json.generated")
            in (home / "credentials.txt").read_text()
        )

        # Login is required: no token, or a wrong password, is refused.
        assert requests.get(f"{airflow_url}/api/v2/dags", timeout=30).status_code in (401, 403)
        with pytest.raises(AirflowAPIError) as refused:
            AirflowClient(airflow_url, "admin", "not-the-password")
        assert refused.value.status == 401

        client = AirflowClient(airflow_url, "admin", password)
        assert client.wait_for_dag(DAG_ID, timeout_s=60)["is_paused"] is False
        backfill = client.create_backfill(DAG_ID, DAYS[0], DAYS[-1], reprocess_behavior="completed")
        # 78 task processes, each importing torch and mlflow: 15 to 40 minutes on two busy cores.
        assert client.wait_for_backfill(backfill, timeout_s=3_600) == dict.fromkeys(DAYS, "success")

        # The MLflow server serves the product's registry.
        search = requests.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/search", timeout=30)
        assert "gem-fm" in {model["name"] for model in search.json()["registered_models"]}
    finally:
        down = _distillery(["down", "--home", str(home)], env, tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not _group_members(groups), "a service process survived `distillery down`"
    assert port_is_free(airflow_port) and port_is_free(mlflow_port)

    # Every partition of every day, and teacher_outputs per teacher.
    events = partition_row_counts(settings.table_uri("events"))
    assert list(events) == list(DAYS)
    assert partition_row_counts(settings.table_uri("examples")) == events
    outputs = settings.table_uri("teacher_outputs")
    assert list(partition_row_counts(outputs)) == list(DAYS[1:]), "day 1 has no teacher"
    teachers = {
        ds: set(read_partition(outputs, ds, columns=["teacher"])["teacher"].to_pylist()) for ds in DAYS[1:]
    }
    assert teachers == {DAYS[1]: {"gem-fm"}, DAYS[2]: {"gem-fm"} | {f"domain-fm-{d}" for d in DOMAINS}}

    # Every model of the hierarchy is registered: gem-fm daily, domain FMs from day 2, VMs on day 3.
    for ds in DAYS:
        assert registry.find_version(settings, "gem-fm", "trained_through", ds) is not None
    for domain in DOMAINS:
        for ds in DAYS[1:]:
            assert registry.find_version(settings, f"domain-fm-{domain}", "trained_through", ds) is not None
    for surface in SURFACES:
        vm = registry.find_version(settings, f"vm-{surface}", "trained_through", DAYS[2])
        assert vm is not None, f"vm-{surface} was not registered on day 3"
    chain = walk_lineage(settings, vm.uri)
    assert [step.ref.name for step in chain] == [vm.name, f"domain-fm-{SURFACE_DOMAINS[surface]}", "gem-fm"]
