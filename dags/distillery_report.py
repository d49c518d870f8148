"""
# distillery_report

Data-aware: no clock. Airflow runs this DAG once the daily DAG `distillery_daily` has
updated all three of its Assets since the last run: the Delta tables `examples` and
`teacher_outputs` and the daily report (`infra.assets`; on a fresh lake the first run
comes on day 2, the first day with teacher outputs).

1. **render_recent_report**: the report of the 28 days ending at the newest `ds` among
   the triggering daily-report events (an asset-triggered run has no logical date: each
   event carries its `ds` in `extra`; several days may arrive batched in one run). It reads
   the model registry and the tables' rows per day (`pipeline.run_report`) and logs
   Markdown + PNG plots to MLflow, experiment `distillery-reports`, in the run tagged
   `report=recent, ds=<ds>` (reused on a re-run); the day's model versions get the tag
   `recent_report` linking to it.

Any other range, by hand: `distillery report --from YYYY-MM-DD --to YYYY-MM-DD [--out DIR]`.
Settings come from `DISTILLERY_*` environment variables (see the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from infra.assets import DS_KEY, daily_report_asset, table_asset
from infra.settings import Settings

SETTINGS = Settings.from_env()
DAILY_REPORT = daily_report_asset(SETTINGS)


@dag(
    dag_id="distillery_report",
    schedule=(table_asset(SETTINGS, "examples") & table_asset(SETTINGS, "teacher_outputs") & DAILY_REPORT),
    start_date=pendulum.parse(SETTINGS.start_date, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["distillery", "report"],
    default_args={"owner": "distillery", "retries": 2, "retry_delay": timedelta(minutes=1)},
)
def distillery_report() -> None:
    """The recent days' report, once the daily DAG's Assets are updated (its doc: the module docstring)."""

    @task
    def render_recent_report(triggering_asset_events: Mapping | None = None) -> dict:
        """Log the report of the 28 days ending at the newest day the daily DAG reported."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline.run_report import RECENT, log_report

        events = (triggering_asset_events or {}).get(DAILY_REPORT, [])
        days = [event.extra[DS_KEY] for event in events if DS_KEY in event.extra]
        if not days:
            raise AirflowFailException(
                f"no {DAILY_REPORT.name} event with a {DS_KEY!r} triggered this run; "
                "for a range by hand run `distillery report --from ... --to ...`"
            )
        return log_report(Settings.from_env(), max(days), RECENT)

    render_recent_report()


distillery_report()
