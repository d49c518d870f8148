"""`distillery bench teacher` writes both reports, every figure finite, every verdict consistent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from infra.schema import SURFACES
from infra.settings import Settings
from pipeline.bench_teacher import TIME_RATIO_TARGET, run_teacher_benchmark
from teacher.config import SIZES


@pytest.mark.slow
def test_bench_teacher_tiny(spark, tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "unused"), n_users=200, history_length=10)
    run_teacher_benchmark(
        settings,
        days=3,
        events_per_day=2_000,
        fm_size="tiny",
        alone_size="tiny",
        mfu_sizes=("tiny",),
        out_dir=str(tmp_path),
    )
    report = json.loads((tmp_path / "bench_teacher.json").read_text())
    assert report["setup"]["train_days"] == ["2026-01-01", "2026-01-02"]
    assert report["setup"]["test_day"] == "2026-01-03"

    alone = report["fm_vs_alone"]["surfaces"]
    assert set(alone) == set(SURFACES)
    for s in alone.values():
        assert math.isfinite(s["fm_click_ne"]) and math.isfinite(s["alone_click_ne"])
        assert s["fm_beats_alone"] == (s["fm_click_ne"] < s["alone_click_ne"])
        # Progressive: measured on day 2 (trained through day 1) and on the test day.
        assert list(s["by_day"]) == ["2026-01-02", "2026-01-03"]
        assert s["by_day"]["2026-01-03"] == {
            "fm_click_ne": s["fm_click_ne"],
            "alone_click_ne": s["alone_click_ne"],
        }
        window = s["window"]
        assert window["days"] == ["2026-01-03"], "two measured days: the window keeps the test day"
        assert window["ne_advantage_mean"] == pytest.approx(s["ne_advantage"])
        assert window["fm_better_days"] == int(s["fm_beats_alone"])
    assert report["fm_vs_alone"]["holds"] == all(s["window"]["ne_advantage_mean"] > 0 for s in alone.values())
    assert report["fm_vs_alone"]["holds_on_test_day"] == all(s["fm_beats_alone"] for s in alone.values())
    assert report["fm_vs_alone"]["alone_learning_rate"] == report["setup"]["train_config"]["learning_rate"]
    assert (
        report["fm_vs_alone"]["alone_embedding_learning_rate"]
        == report["setup"]["train_config"]["embedding_learning_rate"]
    )

    frozen = report["continual_vs_frozen"]["slices"]
    assert set(frozen) == {"overall", *SURFACES}
    for s in frozen.values():
        assert math.isfinite(s["continual_click_ne"]) and math.isfinite(s["frozen_click_ne"])
        assert s["continual_beats_frozen"] == (s["continual_click_ne"] < s["frozen_click_ne"])
    assert report["continual_vs_frozen"]["holds"] == frozen["overall"]["continual_beats_frozen"]

    timing = report["training_time"]
    assert [d["ds"] for d in timing["days"]] == report["setup"]["train_days"]
    assert all(d["seconds"] > 0 and d["cpu_seconds"] > 0 and d["examples"] > 0 for d in timing["days"])
    ratio = timing["days"][-1]["seconds"] / timing["days"][0]["seconds"]
    assert timing["ratio_last_first"] == pytest.approx(ratio)
    assert timing["holds"] == (ratio <= TIME_RATIO_TARGET)

    peak = report["throughput"]["matmul"]["best_flops_per_s"]
    tiny = report["throughput"]["sizes"]["tiny"]
    assert peak > 0 and tiny["examples_per_s"] > 0
    assert tiny["achieved_flops_per_s"] == pytest.approx(
        3 * tiny["forward_flops_per_example"] * tiny["examples_per_s"]
    )
    assert 0 < tiny["mfu"] <= 1 and tiny["mfu"] == pytest.approx(tiny["achieved_flops_per_s"] / peak)
    assert set(report["models"]) == set(SIZES)
    assert all(m["parameters"] > 0 and m["forward_flops_per_example"] > 0 for m in report["models"].values())

    assert report["claims"] == {
        "fm_beats_alone_on_every_surface": report["fm_vs_alone"]["holds"],
        "fm_beats_alone_on_test_day": report["fm_vs_alone"]["holds_on_test_day"],
        "continual_beats_frozen": report["continual_vs_frozen"]["holds"],
        "training_time_flat": timing["holds"],
    }
    markdown = (tmp_path / "bench_teacher.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "MFU", *SURFACES):
        assert heading in markdown
    assert not (tmp_path / "unused").exists(), "the benchmark runs in its own temporary lake"


def test_cli_bench_teacher_defaults() -> None:
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["bench", "teacher"])
    assert (args.suite, args.days, args.out) == ("teacher", None, "reports")  # None: the suite's own (14)
    args = build_parser().parse_args(
        ["bench", "transfer", "--quick", "--methods", "alone", "kd", "--days", "5"]
    )
    assert (args.quick, args.methods, args.days) == (True, ["alone", "kd"], 5)
