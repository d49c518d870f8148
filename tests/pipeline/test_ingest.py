"""land_events and ingest_events against real GX and real Delta tables in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from infra import delta
from infra.schema import EVENTS_SCHEMA
from infra.settings import Settings
from infra.sources.files import RAW_EVENTS_SCHEMA
from pipeline import ingest
from pipeline.ingest import QUARANTINE_SCHEMA, IngestRejected, ingest_events, land_events

DAY1, DAY2 = "2026-01-01", "2026-01-02"


def valid_rows(n: int, ds: str) -> list[dict[str, object]]:
    """`n` valid events of day `ds`: even rows are ads (every 4th clicks and converts)."""
    t0 = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)
    rows = []
    for i in range(n):
        ad, ts, click = i % 2 == 0, t0 + dt.timedelta(minutes=13 * i), int(i % 4 == 0)
        rows.append(
            {
                "event_id": f"{ds}-{i}", "ts": ts, "ds": ds, "user_id": i % 3, "user_age_bucket": 2,
                "user_country": "DE", "item_id": i, "item_kind": "ad" if ad else "organic",
                "surface": "messaging_inbox", "advertiser_id": 1 if ad else None, "category_id": 5,
                "ad_format": "image" if ad else None, "click": click, "conversion": click,
                "conversion_ts": ts + dt.timedelta(hours=2) if click else None,
            }
        )  # fmt: skip
    return rows


def broken_rows(ds: str) -> tuple[list[dict[str, object]], dict[int, list[str]]]:
    """20 rows of `ds`, 8 of them bad, and what GX must say about each bad row."""
    rows = valid_rows(20, ds)
    day_after = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
    rows[1]["surface"] = "tiktok"
    rows[2]["click"] = 2
    rows[3]["user_id"] = None
    rows[4].update(click=0)  # an ad converting without a click
    rows[6]["event_id"] = rows[5]["event_id"]  # both copies are flagged
    rows[9].update(ts=day_after)
    rows[10]["advertiser_id"] = None
    expected = {
        1: ["surface_in_set"],
        2: ["click_in_0_1"],
        3: ["user_id_not_null"],
        4: ["conversion_requires_click"],
        5: ["event_id_unique"],
        6: ["event_id_unique"],
        9: ["ts_within_day"],
        10: ["ad_has_advertiser_id"],
    }
    return rows, expected


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        lake=str(tmp_path / "lake"), events_dir=str(tmp_path / "events"), source="files", **overrides
    )


def landed(tmp_path: Path, rows: list[dict[str, object]], name: str) -> str:
    """A landing file holding `rows` (as land_events would write it)."""
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_EVENTS_SCHEMA), path)
    return str(path)


def sorted_rows(uri: str, ds: str) -> list[dict[str, object]]:
    return sorted(delta.read_partition(uri, ds).to_pylist(), key=lambda r: (r["event_id"] or "", str(r)))


def test_bad_rows_go_to_quarantine_with_gx_names(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_bad_share=0.5)
    rows, expected = broken_rows(DAY1)
    refs = ingest_events(settings, DAY1, landed(tmp_path, rows, "d1"), run_id="r1")
    assert (refs["good_rows"], refs["bad_rows"], refs["ds"]) == (12, 8, DAY1)
    good = [r for i, r in enumerate(rows) if i not in expected]
    events = delta.read_partition(refs["events"], DAY1)
    assert events.schema == EVENTS_SCHEMA
    assert sorted(events.to_pylist(), key=lambda r: r["event_id"]) == sorted(
        good, key=lambda r: r["event_id"]
    )
    quarantine = delta.read_partition(refs["quarantine"], DAY1).sort_by("row_index")
    assert quarantine.schema == QUARANTINE_SCHEMA
    got = quarantine.to_pylist()
    assert {q["row_index"]: q["failed_expectations"] for q in got} == expected
    assert {q["run_id"] for q in got} == {"r1"}
    assert [q["event_id"] for q in got] == [rows[i]["event_id"] for i in sorted(expected)]
    first = json.loads(got[0]["row_json"])
    assert first == {**rows[1], "ts": rows[1]["ts"].isoformat()}


def test_rejected_day_writes_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)  # max_bad_share 1%
    refs = ingest_events(settings, DAY1, landed(tmp_path, valid_rows(10, DAY1), "d1"), run_id="r1")
    before = {t: (delta.table_version(refs[t]), sorted_rows(refs[t], DAY1)) for t in ("events", "quarantine")}
    rows, _ = broken_rows(DAY2)
    with pytest.raises(IngestRejected) as caught:
        ingest_events(settings, DAY2, landed(tmp_path, rows, "d2"), run_id="r2")
    message = str(caught.value)
    assert "8/20 rows" in message and "event_id_unique (2/20 rows)" in message
    assert f"'event_id': '{DAY2}-5'" in message and "'surface': 'messaging_inbox'" in message
    for table, (version, content) in before.items():
        assert delta.table_version(refs[table]) == version
        assert delta.partitions(refs[table]) == [DAY1] or table == "quarantine"
        assert sorted_rows(refs[table], DAY1) == content
        assert delta.read_partition(refs[table], DAY2).num_rows == 0


def test_rerun_is_idempotent_and_clean_rerun_clears_quarantine(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_bad_share=0.5)
    rows, expected = broken_rows(DAY1)
    uri = landed(tmp_path, rows, "d1")
    first = ingest_events(settings, DAY1, uri, run_id="r1")
    events_once = sorted_rows(first["events"], DAY1)
    second = ingest_events(settings, DAY1, uri, run_id="r2")
    assert sorted_rows(second["events"], DAY1) == events_once
    assert len({r["event_id"] for r in events_once}) == len(events_once) == 12
    assert second["events_version"] == first["events_version"] + 1
    quarantined = sorted_rows(second["quarantine"], DAY1)
    assert len(quarantined) == len(expected) and {q["run_id"] for q in quarantined} == {"r2"}
    clean = ingest_events(settings, DAY1, landed(tmp_path, valid_rows(20, DAY1), "fixed"), run_id="r3")
    assert (clean["good_rows"], clean["bad_rows"]) == (20, 0)
    assert delta.read_partition(clean["quarantine"], DAY1).num_rows == 0


def write_day_files(settings: Settings, ds: str) -> list[dict[str, object]]:
    """A Parquet and a CSV file for day `ds` under the events dir."""
    rows = valid_rows(30, ds)
    folder = Path(settings.events_dir) / f"ds={ds}"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:20], schema=RAW_EVENTS_SCHEMA), folder / "a.parquet")
    pacsv.write_csv(pa.Table.from_pylist(rows[20:], schema=RAW_EVENTS_SCHEMA), folder / "b.csv")
    return rows


class LoggingSource:
    """Yields `batches` lazily, logging each hand-over."""

    def __init__(self, batches: list[pa.RecordBatch], log: list[str], fail: bool = False) -> None:
        self.batches, self.log, self.fail = batches, log, fail

    def day_batches(self, ds: str) -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(self.batches):
            self.log.append(f"read {i}")
            yield batch
        if self.fail:
            raise RuntimeError("source broke")


def test_land_events_is_idempotent(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rows = write_day_files(settings, DAY1)
    uri = land_events(settings, DAY1)
    assert uri == f"{settings.lake}/landing/ds={DAY1}/events.parquet"
    assert pq.read_schema(uri) == RAW_EVENTS_SCHEMA
    assert pq.read_table(uri).to_pylist() == rows
    assert land_events(settings, DAY1) == uri and pq.read_table(uri).to_pylist() == rows
    assert sorted(p.name for p in Path(uri).parent.iterdir()) == ["events.parquet"]


def test_land_events_streams_and_keeps_the_old_landing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, log = settings_for(tmp_path), []
    batches = [
        pa.RecordBatch.from_pylist(valid_rows(4, DAY1)[i : i + 2], schema=EVENTS_SCHEMA) for i in (0, 2)
    ]

    class LoggingWriter(pq.ParquetWriter):
        def write_batch(self, batch: pa.RecordBatch, row_group_size: int | None = None) -> None:
            log.append(f"write {batch.num_rows}")
            super().write_batch(batch, row_group_size)

    monkeypatch.setattr(pq, "ParquetWriter", LoggingWriter)
    monkeypatch.setattr(ingest, "open_source", lambda s: LoggingSource(batches, log))
    uri = land_events(settings, DAY1)
    assert log == ["read 0", "write 2", "read 1", "write 2"]  # one batch at a time
    assert pq.read_table(uri).to_pylist() == valid_rows(4, DAY1)

    monkeypatch.setattr(ingest, "open_source", lambda s: LoggingSource(batches[:1], log, fail=True))
    with pytest.raises(RuntimeError, match="source broke"):
        land_events(settings, DAY1)
    assert pq.read_table(uri).to_pylist() == valid_rows(4, DAY1)  # the earlier landing stands
    assert sorted(p.name for p in Path(uri).parent.iterdir()) == ["events.parquet"]


def test_synthetic_day_lands_and_passes_validation(tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"), events_per_day=3_000, n_users=200, max_bad_share=0.0)
    uri = land_events(settings, settings.start_date)
    refs = ingest_events(settings, settings.start_date, uri, run_id="synthetic")
    assert (refs["good_rows"], refs["bad_rows"]) == (3_000, 0)
    assert delta.read_partition(refs["events"], settings.start_date).num_rows == 3_000
