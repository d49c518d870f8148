"""Assets name where the product really writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.assets import daily_report_asset, models_asset, table_asset
from infra.settings import Settings


def test_local_locations_become_file_uris(tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"), mlflow_uri=f"sqlite:///{tmp_path}/mlruns.db")
    assert table_asset(settings, "events").uri == f"file://{tmp_path}/lake/events"
    assert models_asset(settings).uri == f"file://{tmp_path}/mlruns.db"
    assert daily_report_asset(settings).uri == f"file://{tmp_path}/lake/mlartifacts/distillery-reports"
    assert table_asset(settings, "teacher_outputs").name == "distillery.teacher_outputs"


def test_a_remote_lake_keeps_its_uri() -> None:
    settings = Settings(lake="s3://bucket/lake", mlflow_uri="http://127.0.0.1:5000")
    assert table_asset(settings, "examples").uri == "s3://bucket/lake/examples"
    assert models_asset(settings).uri == "http://127.0.0.1:5000/"


def test_an_unknown_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown table 'clicks'"):
        table_asset(Settings(lake=str(tmp_path)), "clicks")
