"""The `distillery` command runs the DAG's steps without Airflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.delta import partition_row_counts
from infra.settings import Settings
from pipeline.cli import build_parser, main


def test_ds_must_be_a_date(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--ds", "2026-13-01"])
    assert "--ds must be YYYY-MM-DD" in capsys.readouterr().err


def test_knowledge_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["knowledge", "--ds", "2026-01-03", "--delay-days", "1", "--version", "2"]
    )
    assert (args.teacher, args.ds, args.delay_days, args.version, args.alias) == (
        "gem-fm",
        "2026-01-03",
        1,
        2,
        None,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["knowledge", "--ds", "2026-01-03", "--version", "2", "--alias", "champion"]
        )
    assert "not allowed with argument" in capsys.readouterr().err


def test_day_runs_every_step_then_tables(spark, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DISTILLERY_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("DISTILLERY_EVENTS_PER_DAY", "2000")
    monkeypatch.setenv("DISTILLERY_N_USERS", "200")
    monkeypatch.setenv("DISTILLERY_HISTORY_LENGTH", "10")
    monkeypatch.setenv("DISTILLERY_FM_SIZE", "tiny")
    monkeypatch.setenv("DISTILLERY_MLFLOW_URI", f"sqlite:///{tmp_path}/mlflow.db")

    main(["day", "--ds", "2026-01-01"])
    printed = capsys.readouterr().out
    ingested = json.loads(printed[: printed.index("}\n") + 1])
    assert ingested["good_rows"] + ingested["bad_rows"] == 2000

    settings = Settings.from_env()
    assert partition_row_counts(settings.table_uri("examples")) == {"2026-01-01": ingested["good_rows"]}
    assert '"passed": null' in printed, "the first day has no earlier FM to gate"
    assert '"model_uri": "models:/gem-fm/1"' in printed
    day_one_skip = "no eligible teacher: gem-fm has no version that passed the gate"
    assert day_one_skip in printed, "day 1 has no teacher yet"
    main(["tables"])
    listing = capsys.readouterr().out
    assert f"examples    {settings.table_uri('examples')}" in listing
    assert f"2026-01-01: {ingested['good_rows']}" in listing
