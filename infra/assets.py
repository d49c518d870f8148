"""The Airflow Assets of what the daily DAG writes: its Delta tables, the model registry, the reports.

An Asset names a location, so each URI is where the product really writes (the lake
of `Settings`): `file:///.../lake/events` for a local lake, the lake's own URI
otherwise. Airflow is imported only to build an Asset, so `pipeline` can read the
names here without importing it. Producers stamp each event's `extra` with the `ds` it wrote
(`DS_KEY`): an asset-triggered run has no logical date of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from infra.settings import Settings

if TYPE_CHECKING:
    from airflow.sdk import Asset

TABLES = ("events", "quarantine", "examples", "user_state", "teacher_outputs")
REPORT_EXPERIMENT = "distillery-reports"
DS_KEY = "ds"


def _location_uri(location: str) -> str:
    """A URI for a local path or a `sqlite:///` database, or `location` when it already is one."""
    location = location.removeprefix("sqlite:///")
    return location if "://" in location else Path(location).resolve().as_uri()


def table_asset(settings: Settings, table: str) -> Asset:
    """The Delta table `table` under the lake."""
    from airflow.sdk import Asset

    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: expected one of {TABLES}")
    return Asset(name=f"distillery.{table}", uri=_location_uri(settings.table_uri(table)))


def models_asset(settings: Settings) -> Asset:
    """The MLflow model registry at `settings.mlflow_uri` (every registered version)."""
    from airflow.sdk import Asset

    return Asset(name="distillery.models", uri=_location_uri(settings.mlflow_uri))


def daily_report_asset(settings: Settings) -> Asset:
    """The daily reports: artifacts of the MLflow experiment `distillery-reports` under the lake."""
    from airflow.sdk import Asset

    location = f"{settings.lake.rstrip('/')}/mlartifacts/{REPORT_EXPERIMENT}"
    return Asset(name="distillery.daily_report", uri=_location_uri(location))
