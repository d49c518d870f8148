"""Joining `bench transfer` runs over disjoint datasets into one report, and what it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pipeline.bench_transfer import _undefined_as_null
from pipeline.bench_transfer_join import join_reports, read_run
from pipeline.bench_transfer_report import _judged_by, _runs
from pipeline.cli import main


def _run(datasets: tuple[str, ...], wall_seconds: float, seeds: list[int] | None = None) -> dict[str, Any]:
    """A report as `run_transfer_benchmark` writes it, reduced to what a join reads."""
    return {
        "machine": "x86_64, 2 cores, torch 2.13.0+cpu",
        "code": "c9c9de5",
        "models": {"gem-fm": {"parameters": 1000, "flops_per_example": 2000.0}},
        "wall_seconds": wall_seconds,
        "datasets": {
            name: {
                "setup": {
                    "seeds": seeds or [0, 1, 2],
                    "datasets": list(datasets),
                    "days_list": [name],  # each dataset's own days
                },
                "methods": {"alone": {"ne": 0.95, "transfer_ratio": math.nan}},
            }
            for name in datasets
        },
    }


def test_runs_over_disjoint_datasets_join_in_the_benchmarks_order_with_their_wall_times_summed() -> None:
    both_synthetic = _run(("synthetic", "synthetic_drift"), 90.0)
    joined = join_reports({"a": _run(("movielens",), 60.0), "b": both_synthetic})

    assert list(joined["datasets"]) == ["synthetic", "synthetic_drift", "movielens"]
    assert joined["wall_seconds"] == 150.0
    assert joined["code"] == "c9c9de5"
    assert joined["runs"] == [
        {"from": "a", "datasets": ["movielens"], "wall_seconds": 60.0},
        {"from": "b", "datasets": ["synthetic", "synthetic_drift"], "wall_seconds": 90.0},
    ]


def test_a_joined_report_joins_again_keeping_its_runs() -> None:
    first = join_reports({"a": _run(("synthetic",), 60.0), "b": _run(("movielens",), 30.0)})

    joined = join_reports({"reports": first, "c": _run(("synthetic_drift",), 90.0)})

    assert [run["from"] for run in joined["runs"]] == ["a", "b", "c"]
    assert joined["wall_seconds"] == 180.0
    assert list(joined["datasets"]) == ["synthetic", "synthetic_drift", "movielens"]


def test_runs_that_recorded_when_they_ran_give_the_elapsed_time_beside_the_sum() -> None:
    side_by_side = {
        "a": _run(("movielens",), 3600.0)
        | {"started": "2026-12-05T12:00:00+00:00", "finished": "2026-12-05T13:00:00+00:00"},
        "b": _run(("synthetic",), 5400.0)
        | {"started": "2026-12-05T12:00:05+00:00", "finished": "2026-12-05T13:30:05+00:00"},
    }

    joined = join_reports(side_by_side)

    assert joined["wall_seconds"] == 9000.0 and joined["elapsed_seconds"] == 5405.0
    assert joined["runs"][1]["started"] == "2026-12-05T12:00:05+00:00"
    assert _runs(joined).endswith("; 90.1 min elapsed from the first start to the last finish")
    again = join_reports({"reports": joined, "c": _run(("synthetic_drift",), 60.0)})
    assert "elapsed_seconds" not in again, "a run that did not record when it ran: the span is unknown"


def test_a_report_names_the_code_that_judged_its_claims_where_another_measured_it() -> None:
    measured = _run(("synthetic",), 60.0)  # code c9c9de5
    judged = _judged_by(measured | {"judged_by": "0123456789abcdef"})

    assert judged == ", claims judged by commit 0123456789ab"
    assert _judged_by(measured | {"judged_by": "c9c9de5"}) == ""
    assert _judged_by(measured) == ""


def test_runs_of_different_setups_or_one_dataset_twice_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"b: dataset 'synthetic' has setup \['seeds'\] unlike a's"):
        join_reports({"a": _run(("movielens",), 1.0), "b": _run(("synthetic",), 1.0, seeds=[0])})
    with pytest.raises(ValueError, match="b: dataset 'movielens' was measured by a too"):
        join_reports({"a": _run(("movielens",), 1.0), "b": _run(("movielens",), 1.0)})
    other_machine = _run(("synthetic",), 1.0)
    other_machine["machine"] = "arm64, 8 cores"
    with pytest.raises(ValueError, match="b: its machine differs from a's"):
        join_reports({"a": _run(("movielens",), 1.0), "b": other_machine})
    newer = _run(("synthetic",), 1.0)
    newer["code"] = "683bf4b"
    with pytest.raises(ValueError, match="b: its code differs from a's"):
        join_reports({"a": _run(("movielens",), 1.0), "b": newer})
    unrecorded = _run(("synthetic",), 1.0)
    del unrecorded["code"]
    with pytest.raises(ValueError, match="b: its code differs from a's"):
        join_reports({"a": _run(("movielens",), 1.0), "b": unrecorded})
    bigger = _run(("synthetic",), 1.0)
    bigger["models"]["gem-fm"]["parameters"] = 2000
    with pytest.raises(ValueError, match="b: its models differs"):
        join_reports({"a": _run(("movielens",), 1.0), "b": bigger})


def test_a_run_is_read_back_with_its_undefined_numbers_as_nan(tmp_path: Path) -> None:
    (tmp_path / "transfer.json").write_text(json.dumps(_undefined_as_null(_run(("synthetic",), 1.0))))

    ratio = read_run(str(tmp_path))["datasets"]["synthetic"]["methods"]["alone"]["transfer_ratio"]

    assert math.isnan(ratio)


def test_the_command_names_a_folder_without_a_report(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--join: .*nowhere/transfer.json: no transfer.json"):
        main(["bench", "transfer", "--join", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
