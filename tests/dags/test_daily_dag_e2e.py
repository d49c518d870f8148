"""End to end: the daily DAG through a real local Airflow (`airflow dags test`), two days."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.airflow_local import prepare_airflow_home, run_dag_test
from infra.delta import partition_row_counts
from infra.settings import Settings

DAYS = ("2026-01-01", "2026-01-02")


@pytest.mark.slow
def test_two_days_through_airflow(tmp_path: Path) -> None:
    settings = Settings(
        lake=str(tmp_path / "lake"),
        mlflow_uri=f"sqlite:///{tmp_path}/mlruns.db",
        events_per_day=3_000,
        n_users=300,
        history_length=20,
        start_date=DAYS[0],
    )
    env = prepare_airflow_home(settings, tmp_path / "airflow")
    for ds in DAYS:
        run_dag_test("distillery_daily", ds, env)

    events = partition_row_counts(settings.table_uri("events"))
    examples = partition_row_counts(settings.table_uri("examples"))
    assert list(events) == list(DAYS)
    assert examples == events, "every ingested event becomes exactly one example"
    assert all(n > 2_500 for n in events.values()), "a clean synthetic day keeps (nearly) every row"
    assert list(partition_row_counts(settings.table_uri("user_state"))) == list(DAYS)
