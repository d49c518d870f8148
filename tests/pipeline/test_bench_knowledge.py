"""`distillery bench knowledge` writes both reports: every figure finite and positive, every row written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from infra.settings import Settings
from pipeline.bench_knowledge import RATIO_TARGET, run_knowledge_benchmark


def _numbers(value: object) -> list[float]:
    """Every int or float in a JSON value (booleans aside)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


@pytest.mark.slow
def test_bench_knowledge_tiny(spark, tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "unused"), n_users=200, history_length=10)
    run_knowledge_benchmark(settings, examples=2_000, sizes=("tiny",), cores=(1, 2), out_dir=str(tmp_path))
    report = json.loads((tmp_path / "bench_knowledge.json").read_text())

    assert report["setup"]["examples"] == 2_000
    assert {"cpu_count", "torch_threads_default"} <= set(report["machine"])
    assert [(r["size"], r["cores"]) for r in report["results"]] == [("tiny", 1), ("tiny", 2)]
    for r in report["results"]:
        for run in (r["spark"], r["spark_cold"], *r["spark_runs"], r["pytorch"], *r["pytorch_runs"]):
            assert run["rows"] == 2_000, "every run covers the whole day, Spark's committed rows included"
            assert run["seconds"] > 0 and run["examples_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["spark"]["examples_per_s"] / r["pytorch"]["examples_per_s"])
        assert r["holds"] == (r["ratio"] >= RATIO_TARGET)
    assert report["sessions"]["1"]["cpus"] != report["sessions"]["2"]["cpus"], "one pinned process per count"
    scaling = report["scaling"]["tiny"]
    assert (scaling["from_cores"], scaling["to_cores"]) == (1, 2) and scaling["spark"] > 0 < scaling[
        "pytorch"
    ]
    assert report["claims"] == {"ratio_at_least_target": all(r["holds"] for r in report["results"])}
    numbers = _numbers({k: v for k, v in report.items() if k != "sessions"})
    assert all(math.isfinite(n) and n >= 0 for n in numbers)

    markdown = (tmp_path / "bench_knowledge.md").read_text()
    for heading in (
        "## Spark against the plain PyTorch loop",
        "## Scaling",
        "## What bounds it",
        "| tiny | 2 |",
    ):
        assert heading in markdown
    assert not (tmp_path / "unused").exists(), "the benchmark runs in its own temporary lake"


def test_cli_bench_knowledge_defaults() -> None:
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["bench", "knowledge"])
    assert (args.suite, args.examples, args.out) == ("knowledge", 100_000, "reports")
