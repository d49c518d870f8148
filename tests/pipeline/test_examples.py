"""build_examples: the pure history core against hand-made timelines, and the Spark
step against a brute-force re-scan of all events over several days."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from infra import delta
from infra.schema import EVENT_TYPES, EVENTS_SCHEMA, SURFACES
from infra.settings import Settings
from pipeline.examples import MissingHistoryError, build_examples
from pipeline.history import TOKEN_SCHEMA, advance_state, build_histories

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
IMP, CLICK, CONV = EVENT_TYPES["ad_impression"], EVENT_TYPES["ad_click"], EVENT_TYPES["ad_conversion"]
VIEW, ENGAGE = EVENT_TYPES["organic_view"], EVENT_TYPES["organic_engage"]


def event(
    event_id: str,
    seconds: float,
    *,
    user: int = 1,
    kind: str = "ad",
    click: int = 0,
    converted_at: float | None = None,
    item: int = 0,
    surface: str = "facebook_feed",
) -> dict[str, object]:
    """One EVENTS_SCHEMA row at T0 + `seconds`; `converted_at` (seconds) makes it convert."""
    ts = T0 + dt.timedelta(seconds=seconds)
    is_ad = kind == "ad"
    return {
        "event_id": event_id,
        "ts": ts,
        "ds": ts.date().isoformat(),
        "user_id": user,
        "user_age_bucket": 2,
        "user_country": "US",
        "item_id": item,
        "item_kind": kind,
        "surface": surface,
        "advertiser_id": 7 if is_ad else None,
        "category_id": item % 5,
        "ad_format": "image" if is_ad else None,
        "click": click,
        "conversion": int(converted_at is not None),
        "conversion_ts": None if converted_at is None else T0 + dt.timedelta(seconds=converted_at),
    }


def events_table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


# --- the pure core ------------------------------------------------------------------


def test_histories_of_a_hand_made_timeline() -> None:
    day1 = [
        event("a", 100, item=1, click=1, converted_at=86_400 + 50),  # converts during day 2
        event("b", 200, item=2, kind="organic"),
        event("c", 300, item=3, kind="organic", click=1),
    ]
    day2 = [
        event("d", 86_400 + 10, item=4),
        event("f", 86_400 + 60, item=6, surface="instagram_reels"),
        event("e", 86_400 + 60, item=5, click=1),  # same ts as f: neither sees the other
        event("g", 86_400 + 70, item=7),
    ]
    prior = advance_state(TOKEN_SCHEMA.empty_table(), events_table(day1), 10, DAYS[0])
    out = build_histories(events_table(day2), prior, history_length=3).to_pylist()

    assert [r["example_id"] for r in out] == ["d", "f", "e", "g"]  # input order kept
    by_id = {r["example_id"]: r for r in out}
    assert by_id["d"]["hist_item_id"] == [3, 2, 1]  # most recent first, across days
    assert by_id["d"]["hist_event_type"] == [ENGAGE, VIEW, CLICK]  # conversion not arrived yet
    assert by_id["d"]["hist_dt_s"] == [86_110.0, 86_210.0, 86_310.0]
    for tied in ("e", "f"):  # ties excluded; truncated to L = 3
        assert by_id[tied]["hist_item_id"] == [4, 3, 2]
        assert by_id[tied]["hist_dt_s"] == [50.0, 86_160.0, 86_260.0]
    # Equal ts order by event_id (later id first); the conversion has arrived by now.
    assert by_id["g"]["hist_item_id"] == [6, 5, 4]
    assert by_id["g"]["hist_event_type"] == [IMP, CLICK, IMP]
    assert by_id["g"]["hist_surface"] == [SURFACES.index("instagram_reels"), 0, 0]
    assert by_id["g"]["hist_len"] == 3

    longer = build_histories(events_table(day2[:1]), prior, history_length=10).to_pylist()
    assert longer[0]["hist_item_id"] == [3, 2, 1]  # shorter than L: the whole past
    late = build_histories(events_table([event("h", 86_400 + 51)]), prior, 10).to_pylist()
    assert late[0]["hist_event_type"] == [ENGAGE, VIEW, CONV]  # conversion arrived at +50


def test_state_keeps_the_last_tokens_and_carries_absent_users() -> None:
    day1 = [event(f"u1-{i}", i, item=i) for i in range(5)] + [event("u2", 3, user=2)]
    state1 = advance_state(TOKEN_SCHEMA.empty_table(), events_table(day1), 3, DAYS[0])
    assert state1.column("event_id").to_pylist() == ["u1-2", "u1-3", "u1-4", "u2"]

    day2 = [event("u1-9", 86_400 + 9, item=9)]
    state2 = advance_state(state1, events_table(day2), 3, DAYS[1])
    assert state2.column("event_id").to_pylist() == ["u1-3", "u1-4", "u1-9", "u2"]
    assert set(state2.column("ds").to_pylist()) == {DAYS[1]}
    assert state2.column("surface").to_pylist() == [0, 0, 0, 0]


# --- brute force: every history recomputed from all events of all days ---------------


def random_days(seed: int, n_users: int = 12, per_day: int = 60) -> dict[str, pa.Table]:
    """Events over DAYS with ts on a 10-minute grid (many ties) and late conversions.

    User 0 skips the second day: its state must carry over to the third.
    """
    rng = np.random.default_rng(seed)
    days: dict[str, pa.Table] = {}
    for d, ds in enumerate(DAYS):
        rows = []
        for i in range(per_day):
            seconds = d * 86_400 + 600 * int(rng.integers(0, 144))
            kind = "ad" if rng.random() < 0.6 else "organic"
            click = int(rng.random() < 0.4)
            converts = kind == "ad" and click and rng.random() < 0.5
            converted_at = seconds + float(rng.integers(1, 86_400 * 2)) if converts else None
            rows.append(
                event(
                    f"{ds}-{i:03d}",
                    seconds,
                    user=int(rng.integers(1 if d == 1 else 0, n_users)),
                    kind=kind,
                    click=click,
                    converted_at=converted_at,
                    item=int(rng.integers(0, 1000)),
                    surface=SURFACES[int(rng.integers(0, len(SURFACES)))],
                )
            )
        days[ds] = events_table(rows)
    return days


def brute_force_history(example: dict, all_events: list[dict], length: int) -> dict[str, list]:
    """The history of `example` straight from the definition, by a scan of every event."""
    past = [e for e in all_events if e["user_id"] == example["user_id"] and e["ts"] < example["ts"]]
    past.sort(key=lambda e: (e["ts"], e["event_id"]), reverse=True)
    past = past[:length]

    def event_type(e: dict) -> int:
        if e["item_kind"] == "organic":
            return ENGAGE if e["click"] else VIEW
        if not e["click"]:
            return IMP
        arrived = e["conversion"] == 1 and e["conversion_ts"] < example["ts"]
        return CONV if arrived else CLICK

    return {
        "hist_item_id": [e["item_id"] for e in past],
        "hist_category_id": [e["category_id"] for e in past],
        "hist_surface": [SURFACES.index(e["surface"]) for e in past],
        "hist_event_type": [event_type(e) for e in past],
        "hist_dt_s": [(example["ts"] - e["ts"]).total_seconds() for e in past],
    }


@pytest.fixture(scope="module")
def built_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, pa.Table]]:
    """Three days of random events, all built in order with history_length 4."""
    settings = Settings(lake=str(tmp_path_factory.mktemp("lake")), history_length=4)
    days = random_days(seed=3)
    for ds, table in days.items():
        delta.overwrite_partition(settings.table_uri("events"), table, ds)
    for ds in DAYS:
        build_examples(settings, ds, spark)
    return settings, days


def test_histories_equal_a_full_rescan_and_never_leak(built_lake) -> None:
    settings, days = built_lake
    all_events = pa.concat_tables(days.values()).to_pylist()
    for ds in DAYS:
        examples = delta.read_partition(settings.table_uri("examples"), ds).to_pylist()
        assert len(examples) == days[ds].num_rows
        for ex in examples:
            ex["event_id"] = ex["example_id"]
            expected = brute_force_history(ex, all_events, settings.history_length)
            assert all(d > 0 for d in ex["hist_dt_s"])  # strictly before the example
            assert ex["hist_len"] == len(expected["hist_item_id"])
            for name, values in expected.items():
                assert ex[name] == pytest.approx(values, rel=1e-6), (ds, ex["example_id"], name)


def test_state_holds_every_users_last_tokens(built_lake) -> None:
    settings, days = built_lake
    seen: list[dict] = []
    for ds in DAYS:
        seen += days[ds].to_pylist()
        state = delta.read_partition(settings.table_uri("user_state"), ds).to_pylist()
        expected = []
        for user in sorted({e["user_id"] for e in seen}):
            tokens = sorted((e["ts"], e["event_id"]) for e in seen if e["user_id"] == user)
            expected += [(user, eid) for _, eid in tokens[-settings.history_length :]]
        assert sorted((r["user_id"], r["event_id"]) for r in state) == sorted(expected)
    assert 0 in {r["user_id"] for r in state}  # absent on day 2, carried to day 3


def test_rerunning_a_day_replaces_it_with_the_same_content(spark, built_lake) -> None:
    settings, days = built_lake
    uris = [settings.table_uri("examples"), settings.table_uri("user_state")]
    before = [_sorted_partition(uri, DAYS[1]) for uri in uris]
    untouched = [_sorted_partition(uri, DAYS[2]) for uri in uris]

    result = build_examples(settings, DAYS[1], spark)

    assert result["rows"] == days[DAYS[1]].num_rows
    assert [_sorted_partition(uri, DAYS[1]) for uri in uris] == before
    assert [_sorted_partition(uri, DAYS[2]) for uri in uris] == untouched
    ids = delta.read_partition(uris[0], DAYS[1], columns=["example_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == days[DAYS[1]].num_rows


def _sorted_partition(uri: str, ds: str) -> list[dict]:
    rows = delta.read_partition(uri, ds).to_pylist()
    key = "example_id" if "example_id" in rows[0] else "event_id"
    return sorted(rows, key=lambda r: (r["user_id"], r[key]))


def test_a_day_before_its_predecessor_is_refused(spark, tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"), history_length=4)
    for ds, table in random_days(seed=5, n_users=3, per_day=5).items():
        delta.overwrite_partition(settings.table_uri("events"), table, ds)

    with pytest.raises(MissingHistoryError, match="2026-01-01"):
        build_examples(settings, DAYS[1], spark)  # day 1 never built
    build_examples(settings, DAYS[0], spark)
    with pytest.raises(MissingHistoryError, match="2026-01-02"):
        build_examples(settings, DAYS[2], spark)
    assert delta.partitions(settings.table_uri("examples")) == [DAYS[0]]
