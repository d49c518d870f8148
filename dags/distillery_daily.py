"""
# distillery_daily

The daily knowledge-transfer pipeline for one logical day `ds` (the data interval
`[ds, ds+1)`, processed after the day closes).

1. **land_events**: generate the day from the synthetic ads world, or import it
   from files (`DISTILLERY_SOURCE=files`), into the landing zone `<lake>/landing/ds=<ds>/`.
2. **ingest_events**: validate the batch with Great Expectations; failing rows go to
   Delta `quarantine`, good rows replace the `ds` partition of Delta `events`. A batch
   whose bad share passes `DISTILLERY_MAX_BAD_SHARE` fails without retries and writes nothing.
3. **build_examples**: Spark builds Delta `examples` for `ds` (each event plus the
   user's history strictly before it), carrying a per-user history state forward
   from the previous day. It runs in date order (`depends_on_past`): a backfill builds
   day 1, then day 2, and a failed day holds the later ones until it is cleared.

Tasks pass table URIs and partitions, never data. Every step replaces exactly its
partition, so clearing and re-running a day is safe. The same steps run without
Airflow: `distillery ingest --ds <ds>`, `distillery examples --ds <ds>`.
Settings come from `DISTILLERY_*` environment variables (see the README).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from infra.settings import Settings

SETTINGS = Settings.from_env()


@dag(
    dag_id="distillery_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.parse(SETTINGS.start_date, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["distillery", "daily"],
    default_args={"owner": "distillery", "retries": 2, "retry_delay": timedelta(minutes=1)},
)
def distillery_daily() -> None:
    @task
    def land_events(ds: str) -> str:
        """Generate or import the day into the landing zone; returns its URI."""
        from airflow.sdk.exceptions import AirflowFailException

        from infra.sources.files import EventsFileError
        from pipeline.ingest import land_events

        try:
            return land_events(Settings.from_env(), ds)
        except EventsFileError as bad_file:  # a file that breaks the schema: retrying will not help
            raise AirflowFailException(str(bad_file)) from bad_file

    @task
    def ingest_events(landing_uri: str, ds: str, run_id: str) -> dict:
        """Validate the landed day; good rows to `events`, bad rows to `quarantine`."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline.ingest import IngestRejected, ingest_events

        try:
            return ingest_events(Settings.from_env(), ds, landing_uri, run_id)
        except IngestRejected as rejected:  # bad data: retrying will not help
            raise AirflowFailException(str(rejected)) from rejected

    @task(depends_on_past=True)
    def build_examples(ingested: dict) -> dict:
        """Build the day's `examples` partition with Spark; returns its table reference."""
        from pipeline.examples import build_examples

        return build_examples(Settings.from_env(), ingested["ds"])

    landed = land_events(ds="{{ ds }}")
    build_examples(ingest_events(landed, ds="{{ ds }}", run_id="{{ run_id }}"))


distillery_daily()
