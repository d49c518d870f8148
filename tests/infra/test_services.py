"""End to end: `distillery up`, a three-day backfill through the REST API v2, the UIs, `distillery down`.

The real services (api-server, scheduler with LocalExecutor, DAG processor, triggerer,
MLflow server) run on free loopback ports from a temporary AIRFLOW_HOME; the backfill
is what the UI's Trigger -> Backfill creates. Tiny settings, as in the DAG's e2e test.
One backfill serves every slow test of this module (`backfilled`): during it, the
process running `train_fm` of the second day is SIGKILLed mid-run, and Airflow must
retry it. After it, headless Chromium screenshots the Airflow grid and MLflow's
registered models into `test-artifacts/`; the last test stops the services.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psutil
import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from infra import registry
from infra.airflow_api import AirflowAPIError, AirflowClient
from infra.airflow_local import airflow_environment
from infra.assets import REPORT_EXPERIMENT, daily_report_asset, table_asset
from infra.checkpoints import checkpoint_exists, checkpoint_uri, load_checkpoint
from infra.delta import partition_row_counts, read_partition
from infra.report_runs import find_report_runs
from infra.schema import DOMAINS, SURFACE_DOMAINS, SURFACES
from infra.services import (
    DAG_ID,
    REPORT_DAG_ID,
    STATE_FILE,
    admin_password,
    port_is_free,
    started_after_boot,
    stop_services,
)
from infra.settings import Settings
from pipeline.hierarchy import FM_NAME
from pipeline.lineage import walk_lineage

if TYPE_CHECKING:
    from playwright.sync_api import Page

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
KILLED_DAY = DAYS[1]  # warm-starts from day 1, so a retry must start from day 1's checkpoint again
DISTILLERY = str(Path(sys.executable).with_name("distillery"))
FM_TASKS = ("land_events", "ingest_events", "build_examples", "gate_fm", "train_fm", "register_fm")
UI_TIMEOUT_MS = 60_000


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
        {"name": "service", "pid": service.pid, "started_after_boot_s": started_after_boot(service)},
        # A recorded pid that now names another process (pid reuse): never signalled.
        {"name": "stale", "pid": bystander.pid, "started_after_boot_s": started_after_boot(bystander) - 100},
    ]
    (tmp_path / STATE_FILE).write_text(json.dumps({"processes": entries}))
    try:
        assert stop_services(tmp_path, timeout_s=10) == ["service"]
        assert not _group_members({service.pid})
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
        assert not (tmp_path / STATE_FILE).exists()
    finally:
        bystander.kill()


def test_down_finds_its_services_after_the_wall_clock_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux recomputes the boot time from the wall clock on each read: when NTP steps the clock, every
    `create_time()` moves with it, and `down` must still know the processes `up` recorded."""
    service = psutil.Process(subprocess.Popen(["sleep", "600"], start_new_session=True).pid)
    entry = {"name": "service", "pid": service.pid, "started_after_boot_s": started_after_boot(service)}
    (tmp_path / STATE_FILE).write_text(json.dumps({"processes": [entry]}))
    stepped_boot, stepped_start = psutil.boot_time() + 1.0, service.create_time() + 1.0
    monkeypatch.setattr(psutil, "boot_time", lambda: stepped_boot)
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: stepped_start)
    try:
        assert stop_services(tmp_path, timeout_s=10) == ["service"]
        assert not _group_members({service.pid})
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            service.kill()


class TaskInstanceClient(AirflowClient):
    """`AirflowClient` plus the run and task-instance reads of these tests (REST API v2)."""

    def run_id(self, dag_id: str, ds: str) -> str | None:
        """The run id of `dag_id` for the logical day `ds`, or None while it has no run."""
        params = {"logical_date_gte": f"{ds}T00:00:00Z", "logical_date_lte": f"{ds}T00:00:00Z"}
        runs = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)["dag_runs"]
        return runs[0]["dag_run_id"] if runs else None

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict:
        """The task instance (`id`, `state`, `try_number`, `pid`, ...) of an unmapped task."""
        return self._call("GET", _task_instance_path(dag_id, run_id, task_id))

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict]:
        """Every try of an unmapped task instance, the earlier ones from its history, by try number."""
        tries = self._call("GET", _task_instance_path(dag_id, run_id, task_id) + "/tries")["task_instances"]
        return sorted(tries, key=lambda t: t["try_number"])


def _task_instance_path(dag_id: str, run_id: str, task_id: str) -> str:
    """The API path of a task instance; run ids hold `:` and `+`, so they are quoted."""
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"


@dataclass(frozen=True)
class KilledTask:
    """The task process SIGKILLed during the backfill, as it was seen when it died."""

    run_id: str
    try_number: int
    pid: int
    seconds_running: float  # since the process started (a fork of the supervisor)
    checkpoint_after_kill: bool  # whether the day's checkpoint existed once the process was gone


@dataclass(frozen=True)
class Backfilled:
    """The running services after the backfill, and what the setup saw on the way."""

    settings: Settings
    home: Path
    env: dict[str, str]
    airflow_port: int
    mlflow_port: int
    password: str
    up_output: str
    groups: set[int]  # the process groups `distillery up` recorded
    states: dict[str, str]  # each day's final run state
    killed: KilledTask

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def client(self) -> TaskInstanceClient:
        return TaskInstanceClient(self.airflow_url, "admin", self.password)


def _task_process(ti_id: str) -> psutil.Process | None:
    """The process running the task instance's code: Airflow titles it `airflow worker -- <ti id>`."""
    title = f"airflow worker -- {ti_id}"
    for process in psutil.process_iter(["cmdline"]):
        if title in " ".join(process.info["cmdline"] or ()):
            return process
    return None


def _task_instance_state(client: TaskInstanceClient, ds: str, task_id: str) -> tuple[str | None, dict]:
    """The run id of `ds` and its task instance `task_id`, `(None, {})` while either does not exist."""
    run_id = client.run_id(DAG_ID, ds)
    if run_id is None:
        return None, {}
    try:
        return run_id, client.task_instance(DAG_ID, run_id, task_id)
    except AirflowAPIError as missing:
        if missing.status != 404:
            raise
        return run_id, {}


def _task_log(home: Path, run_id: str, task_id: str, try_number: int) -> Path:
    """The log file of one try, under Airflow's default `log_filename_template`."""
    return (
        home
        / "logs"
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / f"task_id={task_id}"
        / f"attempt={try_number}.log"
    )


def _kill_on_log_line(worker: psutil.Process, log: Path, marker: str) -> float | None:
    """SIGKILL `worker` as soon as `log` holds `marker` (read every 20 ms while `worker` lives).

    Returns how long the process had run when killed, or None if it ended first.
    """
    with contextlib.suppress(psutil.NoSuchProcess):
        while worker.status() != psutil.STATUS_ZOMBIE:
            if log.exists() and marker in log.read_text(errors="replace"):
                seconds_running = time.time() - worker.create_time()
                worker.kill()
                worker.wait(timeout=30)
                return seconds_running
            time.sleep(0.02)
    return None


def _kill_training_mid_run(
    client: TaskInstanceClient, home: Path, lake: str, ds: str, timeout_s: float
) -> KilledTask:
    """SIGKILL the process running `train_fm` of `ds` once its log shows the training loop's progress.

    `infra.progress` logs `gem-fm <ds>: i/n batches` every 10% of the day's pass. The task
    instance (its id, and whether it ended) is read through the REST API every 2 s. Once it
    is scheduled, its process (the one Airflow titles with the task instance's id) is looked
    for in the process table every 0.1 s between reads: a read can take seconds on two busy
    cores, and an idle machine once ran the tiny day's whole task between two reads 2 s apart.
    """
    deadline, read_at = time.monotonic() + timeout_s, -math.inf
    run_id, ti = None, {}
    while time.monotonic() < deadline:
        if time.monotonic() - read_at >= 2.0:
            run_id, ti = _task_instance_state(client, ds, "train_fm")
            read_at = time.monotonic()
            state = ti.get("state")
            if state in ("success", "failed", "skipped", "upstream_failed"):
                raise AssertionError(f"train_fm of {ds} ended ({state}) before it could be killed")
        imminent = ti.get("state") in ("scheduled", "queued", "running")
        worker = _task_process(ti["id"]) if imminent else None
        if worker is None:
            time.sleep(0.1 if imminent else 2.0)
            continue
        try_number = ti["try_number"]  # Airflow counts the try when it schedules it
        log = _task_log(home, run_id, "train_fm", try_number)
        seconds_running = _kill_on_log_line(worker, log, f"{FM_NAME} {ds}: ")
        if seconds_running is None:
            raise AssertionError(f"train_fm of {ds} ended before {log} showed training progress")
        saved = checkpoint_exists(checkpoint_uri(lake, FM_NAME, ds))
        return KilledTask(run_id, try_number, worker.pid, seconds_running, saved)
    states = client.dag_run_states(DAG_ID, DAYS[0], DAYS[-1])
    raise TimeoutError(f"train_fm of {ds} did not run within {timeout_s:.0f} s; runs: {states}")


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory, tiny_dag_settings) -> Iterator[Backfilled]:
    """`distillery up --no-schedule`, then a 3-day backfill through the API with one training killed.

    Yields the running services; stops them afterwards if `test_down_stops_every_service` did not.
    """
    root = tmp_path_factory.mktemp("services")
    settings = tiny_dag_settings(root, DAYS[0])
    home, airflow_port, mlflow_port = root / "airflow", _free_port(), _free_port()
    env = airflow_environment(settings, home)  # the DISTILLERY_* settings, as the CLI reads them
    up_args = ["--home", str(home), "--airflow-port", str(airflow_port), "--mlflow-port", str(mlflow_port)]
    up = _distillery(["up", *up_args, "--no-schedule"], env, root)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        groups = {entry["pid"] for entry in json.loads((home / STATE_FILE).read_text())["processes"]}
        password = admin_password(home)
        client = TaskInstanceClient(f"http://127.0.0.1:{airflow_port}", "admin", password)
        assert client.wait_for_dag(DAG_ID, timeout_s=60)["is_paused"] is False
        backfill = client.create_backfill(DAG_ID, DAYS[0], DAYS[-1], reprocess_behavior="completed")
        # 78 task processes, each importing torch and mlflow: 15 to 40 minutes on two busy cores.
        killed = _kill_training_mid_run(client, home, settings.lake, KILLED_DAY, timeout_s=3_000)
        states = client.wait_for_backfill(backfill, timeout_s=3_600)
        yield Backfilled(
            settings, home, env, airflow_port, mlflow_port, password, up.stdout, groups, states, killed
        )
    finally:
        stop_services(home)


@pytest.mark.slow
def test_up_prints_the_login_and_requires_it(backfilled: Backfilled) -> None:
    home, password = backfilled.home, backfilled.password
    for shown in (backfilled.airflow_url, backfilled.mlflow_url, password):
        assert shown in backfilled.up_output
    credentials = (home / "credentials.txt").read_text()
    assert str(home / "simple_auth_manager_passwords.json.generated") in credentials
    # No token, or a wrong password, is refused.
    assert requests.get(f"{backfilled.airflow_url}/api/v2/dags", timeout=30).status_code in (401, 403)
    with pytest.raises(AirflowAPIError) as refused:
        AirflowClient(backfilled.airflow_url, "admin", "not-the-password")
    assert refused.value.status == 401


@pytest.mark.slow
def test_killed_training_is_retried_from_a_clean_state(backfilled: Backfilled) -> None:
    killed, settings = backfilled.killed, backfilled.settings
    assert killed.try_number == 1
    assert not killed.checkpoint_after_kill, "train_fm had already saved its checkpoint: not killed mid-run"
    assert backfilled.states == dict.fromkeys(DAYS, "success")

    client = backfilled.client()
    tries = client.task_tries(DAG_ID, killed.run_id, "train_fm")
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")]
    assert tries[0]["pid"] == killed.pid
    assert client.task_instance(DAG_ID, killed.run_id, "register_fm")["try_number"] == 1

    # The retry warm-started from day 1's checkpoint again and left no partial file behind.
    checkpoint = Path(checkpoint_uri(settings.lake, FM_NAME, KILLED_DAY))
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]
    assert load_checkpoint(str(checkpoint))["parent"] == checkpoint_uri(settings.lake, FM_NAME, DAYS[0])
    # One gem-fm version per day, none for the killed try.
    search = requests.get(
        f"{backfilled.mlflow_url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name = '{FM_NAME}'"},
        timeout=30,
    )
    versions = search.json()["model_versions"]
    trained = sorted(
        tag["value"] for v in versions for tag in v.get("tags", []) if tag["key"] == "trained_through"
    )
    assert trained == list(DAYS)


def _screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks blank"


def _log_in_to_airflow(page: Page, airflow_url: str, password: str) -> None:
    """Fill the simple auth manager's login form and wait to leave it."""
    page.goto(f"{airflow_url}/auth/login", timeout=UI_TIMEOUT_MS)
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=UI_TIMEOUT_MS)


@pytest.mark.slow
def test_airflow_grid_shows_the_backfill(backfilled: Backfilled, page: Page, artifacts: Path) -> None:
    client = backfilled.client()
    run_ids = {ds: client.run_id(DAG_ID, ds) for ds in DAYS}
    _log_in_to_airflow(page, backfilled.airflow_url, backfilled.password)
    page.goto(f"{backfilled.airflow_url}/dags/{DAG_ID}", timeout=UI_TIMEOUT_MS)
    # The grid: a row per task, a column per run, one cell per task instance (`grid-<run id>-<task>`).
    killed_cell = page.get_by_test_id(f"grid-{backfilled.killed.run_id}-train_fm")
    try:
        for run_id, task in itertools.product(run_ids.values(), FM_TASKS):
            page.get_by_test_id(f"grid-{run_id}-{task}").wait_for(timeout=UI_TIMEOUT_MS)
        killed_cell.hover()  # its tooltip: the task instance's state and run
        page.get_by_role("tooltip").filter(has_text="train_fm").wait_for(timeout=UI_TIMEOUT_MS)
    finally:
        _screenshot(page, artifacts / "airflow-grid.png")
    tooltip = page.get_by_role("tooltip").filter(has_text="train_fm").inner_text()
    assert "State: Success" in tooltip and backfilled.killed.run_id in tooltip
    assert set(page.locator("[data-run-id]").evaluate_all("cells => cells.map(c => c.dataset.runId)")) == set(
        run_ids.values()
    )
    grid_text = page.inner_text("body")
    for task in (*FM_TASKS, "generate_knowledge", "domain_fm", "vertical_model"):
        assert task in grid_text, f"{task} is not in the grid"


def _dismiss_mlflow_overlays(page: Page) -> None:
    """Close what MLflow's UI opens over the models on a first visit: a promotion dialog, the assistant."""
    dialog = page.get_by_role("dialog")
    with contextlib.suppress(PlaywrightTimeoutError):  # shown once per browser profile
        dialog.wait_for(timeout=5_000)
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden", timeout=5_000)
    with contextlib.suppress(PlaywrightTimeoutError):  # the assistant's side panel, when open
        page.get_by_role("button", name="Close", exact=True).click(timeout=5_000)


@pytest.mark.slow
def test_mlflow_lists_the_registered_models(backfilled: Backfilled, page: Page, artifacts: Path) -> None:
    page.goto(f"{backfilled.mlflow_url}/#/models", timeout=UI_TIMEOUT_MS)
    try:
        page.get_by_text(FM_NAME, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        _dismiss_mlflow_overlays(page)
    finally:
        _screenshot(page, artifacts / "mlflow-models.png")
    text = page.inner_text("body")
    expected = [FM_NAME, *(f"domain-fm-{d}" for d in DOMAINS), *(f"vm-{s}" for s in SURFACES)]
    assert [name for name in expected if name not in text] == []


@pytest.mark.slow
def test_backfill_wrote_every_table_and_model(backfilled: Backfilled) -> None:
    settings = backfilled.settings
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


@pytest.mark.slow
def test_each_day_reports_and_the_report_dag_has_its_asset_events_queued(backfilled: Backfilled) -> None:
    settings = backfilled.settings
    for ds in DAYS:
        assert find_report_runs(settings, REPORT_EXPERIMENT, {"report": "daily", "ds": ds}), ds
    client = backfilled.client()
    assert client.wait_for_dag(REPORT_DAG_ID, timeout_s=60)["is_paused"] is False, "`up` unpauses it"
    # Every Asset the report DAG is scheduled on got an event from the backfill, queued for it;
    # `--no-schedule` holds the scheduler's own runs (clock and Assets alike) until a restart with it.
    queued = client._call("GET", f"/api/v2/dags/{REPORT_DAG_ID}/assets/queuedEvents")["queued_events"]
    uris = {client._call("GET", f"/api/v2/assets/{event['asset_id']}")["uri"] for event in queued}
    assets = (table_asset(settings, "examples"), table_asset(settings, "teacher_outputs"))
    assert uris == {asset.uri for asset in (*assets, daily_report_asset(settings))}
    assert client._call("GET", f"/api/v2/dags/{REPORT_DAG_ID}/dagRuns")["dag_runs"] == []


@pytest.mark.slow
def test_down_stops_every_service(backfilled: Backfilled) -> None:
    """Last in this module: the tests above need the services."""
    down = _distillery(["down", "--home", str(backfilled.home)], backfilled.env, backfilled.home.parent)
    assert down.returncode == 0, down.stdout + down.stderr
    survivors = _group_members(backfilled.groups)
    assert not survivors, f"{survivors} survived `distillery down`, which said: {down.stdout}"
    assert port_is_free(backfilled.airflow_port) and port_is_free(backfilled.mlflow_port)
