"""`distillery bench data` writes a JSON and a Markdown report with every stage measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.settings import Settings
from pipeline.bench_data import STAGES, run_data_benchmark


@pytest.mark.slow
def test_bench_writes_both_reports(spark, tmp_path: Path) -> None:
    run_data_benchmark(Settings(lake=str(tmp_path / "unused"), history_length=10), [1_500], str(tmp_path))
    report = json.loads((tmp_path / "bench_data.json").read_text())
    result = report["results"]["1500"]
    for stage in STAGES:
        assert result[f"{stage}_events_per_s"] > 0
        assert result[f"{stage}_events_per_s"] == pytest.approx(1_500 / result[f"{stage}_seconds"])
    markdown = (tmp_path / "bench_data.md").read_text()
    assert "| 1500 |" in markdown and all(stage in markdown for stage in STAGES)
    assert not (tmp_path / "unused").exists(), "the benchmark runs in its own temporary lake"
