"""The GX events suite: a valid batch passes, each broken rule flags exactly its rows."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from infra.sources.files import RAW_EVENTS_SCHEMA
from infra.validation import ValidationError, events_expectations, validate_events

DS = "2026-01-05"
T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def valid_rows(n: int, ds: str = DS) -> list[dict[str, object]]:
    """`n` valid events of day `ds`: even rows are ads (every 4th clicks, every 8th converts)."""
    t0 = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)
    rows = []
    for i in range(n):
        ad, ts = i % 2 == 0, t0 + dt.timedelta(minutes=7 * i)
        click, conversion = int(i % 4 == 0), int(i % 8 == 0)
        rows.append(
            {
                "event_id": f"{ds}-{i}", "ts": ts, "ds": ds, "user_id": i % 5, "user_age_bucket": i % 7,
                "user_country": "NA", "item_id": 100 + i, "item_kind": "ad" if ad else "organic",
                "surface": "instagram_reels", "advertiser_id": 3 if ad else None, "category_id": i % 4,
                "ad_format": "video" if ad else None, "click": click, "conversion": conversion,
                "conversion_ts": ts + dt.timedelta(hours=30) if conversion else None,
            }
        )  # fmt: skip
    return rows


def table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_EVENTS_SCHEMA)


BREAKS: dict[str, tuple[dict[str, object], str]] = {
    # name of the case: (changes to one valid ad row, the expectation it must fail)
    "bad surface": ({"surface": "tiktok"}, "surface_in_set"),
    "bad kind": ({"item_kind": "story", "conversion": 0, "conversion_ts": None}, "item_kind_in_set"),
    "bad format": ({"ad_format": "banner"}, "ad_format_in_set"),
    "click=2": ({"click": 2}, "click_in_0_1"),
    "null user": ({"user_id": None}, "user_id_not_null"),
    "null surface": ({"surface": None}, "surface_not_null"),
    "null kind": ({"item_kind": None, "conversion": 0, "conversion_ts": None}, "item_kind_not_null"),
    "null event_id": ({"event_id": None}, "event_id_not_null"),
    "null ts": ({"ts": None, "conversion_ts": None}, "ts_not_null"),
    "conversion without click": ({"click": 0}, "conversion_requires_click"),
    "ts next day": ({"ts": T0 + dt.timedelta(days=1), "conversion_ts": None}, "ts_within_day"),
    "ts day before": ({"ts": T0 - dt.timedelta(microseconds=1), "conversion_ts": None}, "ts_within_day"),
    "other ds": ({"ds": "2026-01-04"}, "ds_matches_batch"),
    "ad without advertiser": ({"advertiser_id": None}, "ad_has_advertiser_id"),
    "ad without format": ({"ad_format": None}, "ad_has_ad_format"),
    "conversion before ts": ({"conversion_ts": T0 - dt.timedelta(seconds=1)}, "conversion_ts_not_before_ts"),
    "age 7": ({"user_age_bucket": 7}, "user_age_bucket_in_range"),
    "negative item": ({"item_id": -1}, "item_id_non_negative"),
    "negative advertiser": ({"advertiser_id": -2}, "advertiser_id_non_negative"),
}


def test_valid_batch_passes_every_expectation() -> None:
    verdict = validate_events(table(valid_rows(40)), DS)
    assert list(verdict.failures) == [e.meta["name"] for e in events_expectations()]
    assert verdict.bad_positions.size == 0 and verdict.n_rows == 40


def test_each_rule_flags_exactly_the_broken_row() -> None:
    rows = valid_rows(8 * len(BREAKS))
    expected: dict[int, list[str]] = {}
    for i, (changes, name) in enumerate(BREAKS.values()):
        rows[8 * i].update(changes)  # every 8th row is a converted ad click
        expected[8 * i] = [name]
    assert validate_events(table(rows), DS).failed_by_row() == expected


def test_organic_conversion_and_duplicates() -> None:
    rows = valid_rows(12)
    rows[3].update(click=1, conversion=1, conversion_ts=rows[3]["ts"])  # organic row
    rows[7]["event_id"] = rows[6]["event_id"]
    verdict = validate_events(table(rows), DS)
    # GX's uniqueness flags every row holding a duplicated id, not only the later one.
    assert verdict.failed_by_row() == {
        3: ["conversion_only_for_ads"],
        6: ["event_id_unique"],
        7: ["event_id_unique"],
    }
    assert verdict.worst_expectation() == ("event_id_unique", 2)


def test_row_failing_several_rules_lists_them_in_suite_order() -> None:
    rows = valid_rows(4)
    rows[0].update(surface="x", click=2, user_id=None)
    assert validate_events(table(rows), DS).failed_by_row() == {
        0: ["user_id_not_null", "surface_in_set", "click_in_0_1"]
    }


def test_empty_batch_and_missing_column() -> None:
    assert validate_events(table([]), DS).bad_positions.size == 0
    with pytest.raises(ValidationError, match="surface"):
        validate_events(table(valid_rows(3)).drop_columns(["surface"]), DS)
