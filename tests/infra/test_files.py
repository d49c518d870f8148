"""FileSource: Parquet and CSV round trips, schema errors that name file and column."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.settings import Settings
from infra.sources.files import RAW_EVENTS_SCHEMA, EventsFileError, FileSource
from infra.sources.select import open_source

DS = "2026-01-03"


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    """`n` events of DS (ads and organic alternating, one conversion), ids from `start`."""
    t0 = dt.datetime(2026, 1, 3, 8, tzinfo=dt.UTC)
    out = []
    for i in range(start, start + n):
        ad, ts = i % 2 == 0, t0 + dt.timedelta(seconds=61 * i, microseconds=i)
        out.append(
            {
                "event_id": f"e{i}", "ts": ts, "ds": DS, "user_id": i, "user_age_bucket": i % 7,
                "user_country": "NA" if i % 3 else "BR", "item_id": 10 * i,
                "item_kind": "ad" if ad else "organic", "surface": "facebook_feed",
                "advertiser_id": 7 if ad else None, "category_id": 2,
                "ad_format": "carousel" if ad else None, "click": int(i == 2), "conversion": int(i == 2),
                "conversion_ts": ts + dt.timedelta(hours=5) if i == 2 else None,
            }
        )  # fmt: skip
    return out


def day_dir(root: Path) -> Path:
    folder = root / f"ds={DS}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(path: Path, records: list[dict[str, object]], drop: str | None = None) -> None:
    """A CSV as a user might export it: ISO-8601 timestamps, empty field = null, an extra column."""
    names = [n for n in RAW_EVENTS_SCHEMA.names if n != drop] + ["note"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for r in records:
            cells = {**r, "note": "x"}
            writer.writerow(["" if cells[n] is None else _cell(cells[n]) for n in names])


def _cell(value: object) -> str:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else str(value)


def read_day(root: Path) -> pa.Table:
    return pa.Table.from_batches(list(FileSource(str(root)).day_batches(DS)), schema=RAW_EVENTS_SCHEMA)


def test_parquet_round_trip_widens_and_drops_extra_columns(tmp_path: Path) -> None:
    expected = pa.Table.from_pylist(rows(10), schema=RAW_EVENTS_SCHEMA)
    narrow = expected.set_column(3, "user_id", expected.column("user_id").cast(pa.int32()))
    narrow = narrow.set_column(8, "surface", narrow.column("surface").dictionary_encode())
    narrow = narrow.append_column("extra", pa.array(range(10)))
    pq.write_table(narrow, day_dir(tmp_path) / "part-0.parquet", row_group_size=4)
    batches = list(FileSource(str(tmp_path)).day_batches(DS))
    assert [b.num_rows for b in batches] == [4, 4, 2]  # one batch per row group
    assert all(b.schema == RAW_EVENTS_SCHEMA for b in batches)
    assert read_day(tmp_path).equals(expected)


def test_csv_and_parquet_files_are_read_in_name_order(tmp_path: Path) -> None:
    write_csv(day_dir(tmp_path) / "a.csv", rows(5))
    pq.write_table(
        pa.Table.from_pylist(rows(4, start=5), schema=RAW_EVENTS_SCHEMA), day_dir(tmp_path) / "b.parquet"
    )
    (day_dir(tmp_path) / "notes.txt").write_text("ignored")
    assert read_day(tmp_path).to_pylist() == rows(9)


def test_csv_timestamps_without_offset_are_utc(tmp_path: Path) -> None:
    path = day_dir(tmp_path) / "x.csv"
    write_csv(path, rows(3))
    text = path.read_text().replace("Z,", ",").replace("2026-01-03T08:00:00Z", "2026-01-03T09:00:00+01:00")
    path.write_text(text)
    assert read_day(tmp_path).to_pylist() == rows(3)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_missing_column_names_file_and_column(tmp_path: Path, suffix: str) -> None:
    path = day_dir(tmp_path) / f"events.{suffix}"
    if suffix == "csv":
        write_csv(path, rows(3), drop="item_kind")
    else:
        pq.write_table(
            pa.Table.from_pylist(rows(3), schema=RAW_EVENTS_SCHEMA).drop_columns(["item_kind"]), path
        )
    with pytest.raises(EventsFileError, match=rf"{path}: missing column\(s\) 'item_kind'"):
        read_day(tmp_path)


def test_parquet_wrong_type_names_file_and_column(tmp_path: Path) -> None:
    good = pa.Table.from_pylist(rows(3), schema=RAW_EVENTS_SCHEMA)
    path = day_dir(tmp_path) / "events.parquet"
    pq.write_table(good.set_column(3, "user_id", good.column("user_id").cast(pa.string())), path)
    with pytest.raises(EventsFileError, match=rf"{path}: column 'user_id' has type string, expected int64"):
        read_day(tmp_path)


def test_parquet_value_out_of_range_names_column_and_row(tmp_path: Path) -> None:
    good = pa.Table.from_pylist(rows(3), schema=RAW_EVENTS_SCHEMA)
    path = day_dir(tmp_path) / "events.parquet"
    pq.write_table(good.set_column(12, "click", pa.array([0, 300, 1], pa.int64())), path)
    with pytest.raises(EventsFileError, match=rf"{path}: column 'click', data row 2"):
        read_day(tmp_path)


def test_csv_unparseable_value_names_file_column_and_row(tmp_path: Path) -> None:
    path = day_dir(tmp_path) / "events.csv"
    records = rows(4)
    records[2]["user_id"] = "abc"
    write_csv(path, records)
    with pytest.raises(EventsFileError, match=rf"{path}: column 'user_id', data row 3: cannot read as int64"):
        read_day(tmp_path)


def test_no_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=rf"no \*.parquet or \*.csv event files in {tmp_path}/ds={DS}"
    ):
        read_day(tmp_path)
    day_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="event files in"):
        read_day(tmp_path)


def test_open_source_picks_the_files_source(tmp_path: Path) -> None:
    source = open_source(Settings(source="files", events_dir=str(tmp_path)))
    assert isinstance(source, FileSource) and source.events_dir == str(tmp_path)
