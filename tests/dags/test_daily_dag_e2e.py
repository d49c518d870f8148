"""End to end: the daily DAG through a real local Airflow (`airflow dags test`), two days, tiny FM."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import registry
from infra.airflow_local import prepare_airflow_home, run_dag_test
from infra.delta import partition_row_counts, read_partition
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
        fm_size="tiny",
        # A tiny FM after one 3k-event day is near the base rate: a loose absolute bar,
        # so that this test checks the wiring (the gate's logic has its own tests).
        gate_max_ne=1.5,
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

    # Day 1 trained and registered v1; day 2 gated v1 on day 2, then trained and registered v2.
    by_day = {ds: registry.find_version(settings, "gem-fm", "trained_through", ds) for ds in DAYS}
    assert [by_day[ds].version for ds in DAYS] == [1, 2]
    assert registry.champion(settings, "gem-fm") == by_day[DAYS[0]]
    assert registry.version_tags(settings, by_day[DAYS[0]])["gate"] == "passed"
    assert registry.version_tags(settings, by_day[DAYS[1]])["parent_checkpoint"].endswith(
        f"gem-fm/ds={DAYS[0]}/checkpoint.pt"
    )

    # Day 1 had no teacher trained before it (skipped); day 2 used the champion v1.
    outputs = settings.table_uri("teacher_outputs")
    assert partition_row_counts(outputs) == {DAYS[1]: examples[DAYS[1]]}
    day2 = read_partition(outputs, DAYS[1], columns=["teacher", "teacher_version", "teacher_trained_through"])
    assert set(zip(*day2.to_pydict().values(), strict=True)) == {("gem-fm", 1, DAYS[0])}
