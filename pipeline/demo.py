"""`distillery demo`: the daily DAG through the real scheduler for a few days, then where everything is.

`run_demo` starts the local services (`infra.services`, without the daily schedule; those of
an earlier `make demo` or `make up` in the same home are reused when they run with the same
settings, restarted otherwise), creates one backfill of the days through the REST API v2 (what
the UI's Trigger -> Backfill does), prints each day's progress from the same API, and once every
day has succeeded prints the URLs, the login, the tables and the models. The services keep
running for the user to browse; `distillery down` stops them. A failed day stops the demo with
the failed task, its log file and its page in the UI.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from infra.airflow_api import AirflowAPIError, AirflowClient
from infra.services import DAG_ID, RunningServices, ServiceConfig, ensure_services
from infra.settings import Settings
from pipeline.cli import describe_models, describe_tables

DONE = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})


class DemoFailed(RuntimeError):
    """A day of the demo failed, or the backfill could not be created or did not finish in time."""


@dataclass(frozen=True)
class DemoConfig:
    """Where the services run (their AIRFLOW_HOME and loopback ports) and how the demo watches them."""

    home: Path = Path(".airflow")
    airflow_port: int = 8080
    mlflow_port: int = 5000
    poll_s: float = 5.0
    timeout_s: float = 3600.0  # the whole backfill


@dataclass(frozen=True)
class DayProgress:
    """One day's run as the REST API reports it: its state and its task instances."""

    ds: str
    state: str  # the run's state (queued, running, success, failed), or "not created"
    done: int  # task instances in a final state
    total: int  # task instances so far (a mapped task counts once until it is expanded)
    running: tuple[str, ...] = ()
    retrying: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def describe(self) -> str:
        """`2026-01-02 running 9/18 (train_fm, gate_fm)`, plus retrying and failed tasks."""
        text = f"{self.ds} {self.state} {self.done}/{self.total}"
        if self.running:
            text += f" ({', '.join(self.running)})"
        if self.retrying:
            text += f" retrying: {', '.join(self.retrying)}"
        if self.failed:
            text += f" failed: {', '.join(self.failed)}"
        return text


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` leaves running, and how long its two phases took."""

    services: RunningServices
    services_s: float  # starting (or reusing) the services
    backfill_s: float  # the backfill, from its creation until every day succeeded


def demo_days(start: str, days: int, first_day: str) -> list[str]:
    """The `days` logical days from `start`, checked against the DAG's first day `first_day`."""
    try:
        first = dt.date.fromisoformat(start)
    except ValueError as err:
        raise ValueError(f"start must be YYYY-MM-DD, got {start!r}") from err
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if start < first_day:
        raise ValueError(f"start {start} is before the DAG's start date {first_day} (DISTILLERY_START_DATE)")
    return [(first + dt.timedelta(days=offset)).isoformat() for offset in range(days)]


def task_label(ti: dict) -> str:
    """`task_id`, or `task_id[map_index]` for one instance of a mapped task."""
    return f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]


def day_progress(ds: str, run: dict | None, tis: list[dict]) -> DayProgress:
    """Count a day's task instances (`GET .../taskInstances`) by state; `run` None: not created yet."""
    if run is None:
        return DayProgress(ds, "not created", 0, 0)

    def labelled(state: str) -> tuple[str, ...]:
        return tuple(task_label(ti) for ti in tis if ti["state"] == state)

    done = sum(ti["state"] in DONE for ti in tis)
    return DayProgress(
        ds, run["state"], done, len(tis), labelled("running"), labelled("up_for_retry"), labelled("failed")
    )


def format_elapsed(seconds: float) -> str:
    """`m:ss`."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def task_log_path(home: Path, ti: dict) -> Path:
    """The attempt's log file under `<home>/logs`, named by Airflow's default `log_filename_template`."""
    run = home / "logs" / f"dag_id={ti['dag_id']}" / f"run_id={ti['dag_run_id']}"
    path = run / f"task_id={ti['task_id']}"
    if ti["map_index"] >= 0:
        path = path / f"map_index={ti['map_index']}"
    return path / f"attempt={max(ti['try_number'], 1)}.log"


def task_url(airflow_url: str, ti: dict) -> str:
    """The task instance's page in the Airflow UI."""
    run = quote(ti["dag_run_id"], safe="")
    url = f"{airflow_url}/dags/{ti['dag_id']}/runs/{run}/tasks/{ti['task_id']}"
    return url + (f"/mapped/{ti['map_index']}" if ti["map_index"] >= 0 else "")


def last_error(log: Path) -> str | None:
    """The exception that ended a task log (Airflow writes one JSON event per line), if any."""
    if not log.exists():
        return None
    found = None
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        for detail in event.get("error_detail") or []:
            found = f"{detail.get('exc_type')}: {detail.get('exc_value')}"
    return found


def failure_message(ds: str, tis: list[dict], home: Path, airflow_url: str) -> str:
    """Which task of the failed day `ds` failed, its last error, its log file and its page in the UI."""
    failed = [ti for ti in tis if ti["state"] == "failed"] or [
        ti for ti in tis if ti["state"] == "upstream_failed"
    ]
    lines = [f"{DAG_ID} failed on {ds}."]
    for ti in failed:
        log = task_log_path(home, ti)
        lines.append(f"  {task_label(ti)} {ti['state']} (attempt {ti['try_number']})")
        if error := last_error(log):
            lines.append(f"    error: {error}")
        lines += [f"    log:   {log}", f"    UI:    {task_url(airflow_url, ti)}"]
    if not failed:
        lines.append(f"  no task failed: see {home / 'service-logs' / 'scheduler.log'}")
    lines.append(
        "The services keep running: clear the task in the UI once fixed and the later days go on, "
        "or stop them with `distillery down`."
    )
    return "\n".join(lines)


def summary_lines(result: DemoResult, days: list[str]) -> list[str]:
    """Where to look once the demo is done: the two URLs, the login, the timings."""
    services = result.services
    return [
        f"{DAG_ID} ran {days[0]} .. {days[-1]} through the Airflow scheduler in "
        f"{format_elapsed(result.backfill_s)} (services ready after {format_elapsed(result.services_s)}).",
        f"Airflow  {services.airflow_url}  (user {services.username}, password {services.password}; "
        f"also in {services.credentials})",
        f"MLflow   {services.mlflow_url}",
    ]


def _open_backfill(client: AirflowClient, days: list[str]) -> dict:
    """A new backfill of `days` (every day run again), or the active one of the same days."""
    try:
        return client.create_backfill(DAG_ID, days[0], days[-1], reprocess_behavior="completed")
    except AirflowAPIError as refused:
        active = [b for b in client.backfills(DAG_ID) if b["completed_at"] is None]
        same = [b for b in active if (b["from_date"][:10], b["to_date"][:10]) == (days[0], days[-1])]
        if refused.status != 409 or not same:
            raise DemoFailed(
                f"could not create the backfill of {days[0]} .. {days[-1]}: {refused}; active backfills: "
                f"{[(b['id'], b['from_date'][:10], b['to_date'][:10]) for b in active]} "
                "(cancel one in the UI, Browse -> Backfills)"
            ) from refused
        print(f"watching backfill {same[-1]['id']} of the same days, already running", flush=True)
        return same[-1]


def watch_days(
    client: AirflowClient, days: list[str], home: Path, airflow_url: str, config: DemoConfig
) -> None:
    """Print each day's progress whenever it changes until every day succeeded; `DemoFailed` otherwise."""
    start, shown = time.monotonic(), ""
    while True:
        runs = {run["logical_date"][:10]: run for run in client.dag_runs(DAG_ID, days[0], days[-1])}
        tis = {ds: client.task_instances(DAG_ID, run["dag_run_id"]) for ds, run in runs.items()}
        progress = [day_progress(ds, runs.get(ds), tis.get(ds, [])) for ds in days]
        line = " | ".join(day.describe() for day in progress)
        if line != shown:
            print(f"[{format_elapsed(time.monotonic() - start)}] {line}", flush=True)
            shown = line
        for day in progress:
            if day.state == "failed":
                raise DemoFailed(failure_message(day.ds, tis[day.ds], home, airflow_url))
        if all(day.state == "success" for day in progress):
            return
        if time.monotonic() - start > config.timeout_s:
            raise DemoFailed(f"not done after {config.timeout_s:.0f} s: {line}")
        time.sleep(config.poll_s)


def run_demo(settings: Settings, start: str, days: int, config: DemoConfig | None = None) -> DemoResult:
    """Run `days` days of the daily DAG from `start` through the scheduler; print progress, then the results.

    Writes what the DAG writes (the Delta tables under `settings.lake`, models in
    `settings.mlflow_uri`) and the services' state under `config.home`. Raises `DemoFailed`
    naming the failed task and its log; the services keep running either way.
    """
    config = config or DemoConfig()
    dates = demo_days(start, days, settings.start_date)
    service_config = ServiceConfig(config.home, config.airflow_port, config.mlflow_port, schedule=False)
    began = time.monotonic()
    print(f"starting Airflow and MLflow on 127.0.0.1 (home {config.home.resolve()}) ...", flush=True)
    services = ensure_services(settings, service_config)
    ready = time.monotonic()
    client = AirflowClient(services.airflow_url, services.username, services.password)
    backfill = _open_backfill(client, dates)
    print(f"backfill {backfill['id']}, {dates[0]} .. {dates[-1]}: {services.airflow_url}/dags/{DAG_ID}")
    watch_days(client, dates, config.home.resolve(), services.airflow_url, config)
    result = DemoResult(services, ready - began, time.monotonic() - ready)
    print("\n".join(["", *summary_lines(result, dates), "", "Tables:", *describe_tables(settings)]))
    print("\n".join(["", f"Models in MLflow ({settings.mlflow_uri}):", *describe_models(settings)]))
    print("\nThe services keep running for you to browse; `make down` (`distillery down`) stops them.")
    return result
