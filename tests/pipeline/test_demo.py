"""The demo's progress, failure report and summary, from task instances shaped as the REST API returns them.

The full `run_demo` (services, a three-day backfill through the scheduler) is measured by
hand; `tests/infra/test_services.py` runs the same backfill end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.services import RunningServices
from pipeline.demo import (
    DemoResult,
    day_progress,
    demo_days,
    failure_message,
    format_elapsed,
    last_error,
    summary_lines,
    task_label,
    task_log_path,
    task_url,
)

RUN_ID = "backfill__2026-01-03T00:00:00+00:00"
AIRFLOW = "http://127.0.0.1:8080"


def _ti(task_id: str, state: str | None, map_index: int = -1, try_number: int = 1) -> dict:
    return {
        "dag_id": "distillery_daily",
        "dag_run_id": RUN_ID,
        "task_id": task_id,
        "map_index": map_index,
        "state": state,
        "try_number": try_number,
    }


def test_demo_days_from_start() -> None:
    assert demo_days("2026-01-01", 3, "2026-01-01") == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert demo_days("2026-01-31", 2, "2026-01-01") == ["2026-01-31", "2026-02-01"]


@pytest.mark.parametrize(
    ("start", "days", "message"),
    [
        ("2026-1-1", 3, "start must be YYYY-MM-DD"),
        ("2026-01-01", 0, "days must be at least 1"),
        ("2025-12-31", 3, "before the DAG's start date 2026-01-01 (DISTILLERY_START_DATE)"),
    ],
)
def test_demo_days_rejects(start: str, days: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        demo_days(start, days, "2026-01-01")


def test_progress_counts_final_states_and_names_running_retrying_failed() -> None:
    tis = [
        _ti("land_events", "success"),
        _ti("gate_fm", "skipped"),
        _ti("train_fm", "running"),
        _ti("register_fm", None),
        _ti("domain_fm.distill_student", "up_for_retry", map_index=1, try_number=2),
        _ti("vertical_model.gate_student", "failed", map_index=4),
        _ti("vertical_model.distill_student", "upstream_failed", map_index=4),
    ]
    day = day_progress("2026-01-03", {"state": "running"}, tis)
    assert (day.done, day.total) == (4, 7)
    assert day.describe() == (
        "2026-01-03 running 4/7 (train_fm) retrying: domain_fm.distill_student[1] "
        "failed: vertical_model.gate_student[4]"
    )
    assert day_progress("2026-01-04", None, []).describe() == "2026-01-04 not created 0/0"


def test_task_log_path_follows_airflows_log_filename_template(tmp_path: Path) -> None:
    from airflow.configuration import conf
    from jinja2 import Template

    template = Template(conf.get("logging", "log_filename_template"))
    for ti in (_ti("train_fm", "failed", try_number=3), _ti("vertical_model.distill_student", "failed", 2)):
        fields = SimpleNamespace(**ti, run_id=RUN_ID)
        expected = tmp_path / "logs" / template.render(ti=fields, try_number=ti["try_number"])
        assert task_log_path(tmp_path, ti) == expected


def test_task_url_and_label_of_a_mapped_instance() -> None:
    ti = _ti("vertical_model.gate_student", "failed", map_index=2)
    assert task_label(ti) == "vertical_model.gate_student[2]"
    assert task_url(AIRFLOW, ti) == (
        f"{AIRFLOW}/dags/distillery_daily/runs/backfill__2026-01-03T00%3A00%3A00%2B00%3A00"
        "/tasks/vertical_model.gate_student/mapped/2"
    )
    assert task_url(AIRFLOW, _ti("train_fm", "failed")).endswith("/tasks/train_fm")


def _write_log(path: Path, events: list[dict]) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps(event) for event in events) + "\nnot json\n")


def test_failure_message_names_the_task_its_error_log_and_page(tmp_path: Path) -> None:
    failed = _ti("train_fm", "failed", try_number=3)
    _write_log(
        task_log_path(tmp_path, failed),
        [
            {"level": "info", "event": "::group::Pre Execute"},
            {
                "level": "error",
                "event": "Task failed with exception",
                "error_detail": [
                    {"exc_type": "MissingCheckpointError", "exc_value": "no checkpoint of 01-02"}
                ],
            },
        ],
    )
    tis = [_ti("land_events", "success"), failed, _ti("register_fm", "upstream_failed")]
    message = failure_message("2026-01-03", tis, tmp_path, AIRFLOW)
    assert "distillery_daily failed on 2026-01-03." in message
    assert "train_fm failed (attempt 3)" in message
    assert "error: MissingCheckpointError: no checkpoint of 01-02" in message
    assert str(task_log_path(tmp_path, failed)) in message
    assert task_url(AIRFLOW, failed) in message
    assert "register_fm" not in message, "the cause, not the tasks it held"


def test_failure_message_without_a_failed_task_points_at_the_scheduler_log(tmp_path: Path) -> None:
    message = failure_message("2026-01-02", [_ti("land_events", "success")], tmp_path, AIRFLOW)
    assert str(tmp_path / "service-logs" / "scheduler.log") in message


def test_last_error_of_a_missing_or_clean_log(tmp_path: Path) -> None:
    assert last_error(tmp_path / "absent.log") is None
    clean = tmp_path / "a" / "attempt=1.log"
    _write_log(clean, [{"level": "info", "event": "Done."}])
    assert last_error(clean) is None


def test_summary_names_urls_login_and_timings(tmp_path: Path) -> None:
    services = RunningServices(
        AIRFLOW, "http://127.0.0.1:5000", "admin", "s3cret", tmp_path / "credentials.txt"
    )
    lines = summary_lines(DemoResult(services, 48.2, 412.9), ["2026-01-01", "2026-01-02", "2026-01-03"])
    text = "\n".join(lines)
    assert "2026-01-01 .. 2026-01-03" in text and "in 6:52" in text and "after 0:48" in text
    assert AIRFLOW in text and "http://127.0.0.1:5000" in text
    assert "user admin, password s3cret" in text and str(tmp_path / "credentials.txt") in text
    assert format_elapsed(3725) == "62:05"
