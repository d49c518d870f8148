"""End to end: the daily DAG through a real local Airflow (`airflow dags test`), three days, tiny models.

Day 1 trains gem-fm; day 2 adds its knowledge and the domain FMs learning from it;
day 3 adds the domain FMs' knowledge and the VMs learning from it (the hierarchical
path): the first day on which every model of the hierarchy exists. Each day ends with
its report logged to MLflow.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from infra import registry
from infra.airflow_local import prepare_airflow_home, run_dag_test
from infra.delta import partition_row_counts, read_partition
from infra.report_runs import find_report_runs
from infra.schema import DOMAINS, SURFACES
from pipeline.lineage import walk_lineage
from pipeline.run_report import DAILY, PLOTS

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


@pytest.mark.slow
def test_three_days_through_airflow(tmp_path: Path, tiny_dag_settings) -> None:
    settings = tiny_dag_settings(tmp_path, DAYS[0])
    env = prepare_airflow_home(settings, tmp_path / "airflow")
    for ds in DAYS:
        run_dag_test("distillery_daily", ds, env)

    events = partition_row_counts(settings.table_uri("events"))
    examples = partition_row_counts(settings.table_uri("examples"))
    assert list(events) == list(DAYS)
    assert examples == events, "every ingested event becomes exactly one example"
    assert all(n > 2_500 for n in events.values()), "a clean synthetic day keeps (nearly) every row"
    assert list(partition_row_counts(settings.table_uri("user_state"))) == list(DAYS)

    # Each day trained and registered a version; day 2 gated v1 on day 2, day 3 v2 on day 3.
    by_day = {ds: registry.find_version(settings, "gem-fm", "trained_through", ds) for ds in DAYS}
    assert [by_day[ds].version for ds in DAYS] == [1, 2, 3]
    assert registry.version_tags(settings, by_day[DAYS[0]])["gate"] == "passed"
    assert registry.version_tags(settings, by_day[DAYS[1]])["parent_checkpoint"].endswith(
        f"gem-fm/ds={DAYS[0]}/checkpoint.pt"
    )

    # Day 1 had no teacher trained before it (skipped); day 2 used the champion v1.
    outputs = settings.table_uri("teacher_outputs")
    assert partition_row_counts(outputs) == {DAYS[1]: examples[DAYS[1]], DAYS[2]: 2 * examples[DAYS[2]]}
    columns = ["teacher", "teacher_version", "teacher_trained_through"]
    day2 = read_partition(outputs, DAYS[1], columns=columns)
    assert set(zip(*day2.to_pydict().values(), strict=True)) == {("gem-fm", 1, DAYS[0])}

    # Domain FMs learned on days 2 and 3 from gem-fm; on day 3 each taught its domain's VMs.
    day3 = read_partition(outputs, DAYS[2], columns=columns)
    teachers = {t for t, _, _ in zip(*day3.to_pydict().values(), strict=True)}
    assert teachers == {"gem-fm"} | {f"domain-fm-{d}" for d in DOMAINS}
    for domain in DOMAINS:
        versions = [
            registry.find_version(settings, f"domain-fm-{domain}", "trained_through", ds) for ds in DAYS[1:]
        ]
        assert all(versions), f"domain-fm-{domain} was not registered on days 2 and 3"
        assert registry.version_tags(settings, versions[0])["teacher"] == "gem-fm/1"
        assert registry.champion(settings, f"domain-fm-{domain}") == versions[0]

    # Every VM learned on day 3 from its domain FM; its lineage leads to the exact gem-fm version.
    for surface in SURFACES:
        vm = registry.find_version(settings, f"vm-{surface}", "trained_through", DAYS[2])
        assert vm is not None, f"vm-{surface} was not registered on day 3"
        chain = walk_lineage(settings, vm.uri)
        assert [step.ref.name for step in chain][1:] == [f"domain-fm-{surface.split('_')[0]}", "gem-fm"]
        assert chain[1].ref.version == 1 and chain[2].ref.version == 1
        assert chain[0].tags["teacher_trained_through"] == DAYS[1]

    # Each day's report is logged once, in one run, and linked from the day's versions.
    client = registry.configure_mlflow(settings)
    for ds in DAYS:
        runs = find_report_runs(settings, DAILY.experiment, {"report": DAILY.kind, "ds": ds})
        assert len(runs) == 1, f"the report of {ds} is in {len(runs)} runs"
    last = runs[0]
    assert sorted(a.path for a in client.list_artifacts(last)) == sorted(["report.md", *PLOTS])
    report = (Path(client.download_artifacts(last, "report.md", str(tmp_path)))).read_text()
    for name in ["gem-fm", *(f"domain-fm-{d}" for d in DOMAINS), *(f"vm-{s}" for s in SURFACES)]:
        assert name in report
    fm_ne = registry.run_metrics(settings, by_day[DAYS[1]])["click/ne"]
    assert client.get_run(last).data.metrics["ne/gem-fm"] == pytest.approx(fm_ne)
    vm = registry.find_version(settings, f"vm-{SURFACES[0]}", "trained_through", DAYS[2])
    assert registry.version_tags(settings, vm)["daily_report"] == f"runs:/{last}/report.md"

    # The tasks' Assets: each event carries its ds; distillery_report is scheduled on three of them.
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as db:
        events = db.execute("SELECT a.name, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id")
        days_by_asset: dict[str, set[str]] = {}
        for name, extra in events.fetchall():
            days_by_asset.setdefault(name, set()).add(json.loads(extra)["ds"])
        consumed = db.execute(
            "SELECT a.name FROM dag_schedule_asset_reference r JOIN asset a ON a.id = r.asset_id "
            "WHERE r.dag_id = 'distillery_report'"
        ).fetchall()
    assert days_by_asset["distillery.daily_report"] == set(DAYS)
    assert days_by_asset["distillery.examples"] == set(DAYS)
    assert days_by_asset["distillery.teacher_outputs"] == set(DAYS[1:]), "no knowledge on day 1: no event"
    assert sorted(n for (n,) in consumed) == [
        "distillery.daily_report",
        "distillery.examples",
        "distillery.teacher_outputs",
    ]
