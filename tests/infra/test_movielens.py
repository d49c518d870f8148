"""MovieLens-100k: the mapping on hand-made tables, and the real wheel through ingest and examples."""

from __future__ import annotations

import datetime as dt
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from infra import delta
from infra.schema import EVENTS_SCHEMA
from infra.settings import Settings
from infra.sources.files import RAW_EVENTS_SCHEMA, FileSource
from infra.sources.movielens import (
    ML100K_DIR,
    fetch_recbole_wheel,
    movielens_events,
    read_ml100k,
    write_movielens_events,
)

START = "2026-01-01"
T0 = int(dt.datetime(2021, 3, 1, tzinfo=dt.UTC).timestamp())  # the first rating's UTC day
REPO_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "recbole"

# (user, item, rating, unix s), not in time order: week 0 has three ratings (two at the same
# second), week 1 none, week 2 one.
RATINGS = [
    (1, 20, 4, T0 + 7 * 86_400 - 1),
    (2, 20, 3, T0 + 10 * 3600),
    (1, 10, 5, T0 + 10 * 3600),
    (2, 30, 1, T0 + 14 * 86_400 + 1),
]
USERS = [(1, 17, "F", "student", "55414"), (2, 56, "M", "retired", "T8H1N")]
ITEMS = [
    (10, "A", "1995", "Action Drama"),
    (20, "B", "unkonwn", "Children's Comedy Horror"),  # ml-100k's own spelling of an unknown year
    (30, "C", "1970", "Documentary"),
]


def tables() -> tuple[pa.Table, pa.Table, pa.Table]:
    """The hand-made (interactions, users, items), as `read_ml100k` returns them."""
    interactions = pa.table(
        {
            "user_id": pa.array([r[0] for r in RATINGS], pa.int64()),
            "item_id": pa.array([r[1] for r in RATINGS], pa.int64()),
            "rating": pa.array([float(r[2]) for r in RATINGS]),
            "timestamp": pa.array([r[3] for r in RATINGS], pa.int64()),
        }
    )
    users = pa.Table.from_pylist(
        [dict(zip(["user_id", "age", "gender", "occupation", "zip_code"], u, strict=True)) for u in USERS]
    )
    items = pa.Table.from_pylist(
        [dict(zip(["item_id", "movie_title", "release_year", "genres"], i, strict=True)) for i in ITEMS]
    )
    return interactions, users, items


def test_ratings_map_to_events_of_consecutive_days() -> None:
    days = movielens_events(*tables(), START)
    assert list(days) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [t.num_rows for t in days.values()] == [3, 0, 1]  # week 1 is an empty day
    assert all(t.schema == EVENTS_SCHEMA for t in days.values())
    rows = [r for t in days.values() for r in t.to_pylist()]
    assert [r["event_id"] for r in rows] == [
        f"ml100k-1-10-{T0 + 36_000}",  # same second as the next: ordered by user
        f"ml100k-2-20-{T0 + 36_000}",
        f"ml100k-1-20-{T0 + 7 * 86_400 - 1}",
        f"ml100k-2-30-{T0 + 14 * 86_400 + 1}",
    ]
    assert [(r["click"], r["conversion"]) for r in rows] == [(1, 1), (0, 0), (1, 0), (0, 0)]
    assert rows[0]["conversion_ts"] == rows[0]["ts"] + dt.timedelta(seconds=1)
    assert [r["conversion_ts"] for r in rows[1:]] == [None] * 3
    midnight = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert [r["ts"] for r in rows] == [
        midnight + dt.timedelta(microseconds=36_000 * 10**6 // 7),
        midnight + dt.timedelta(microseconds=36_000 * 10**6 // 7),
        midnight + dt.timedelta(microseconds=(7 * 86_400 - 1) * 10**6 // 7),  # still inside its day
        midnight + dt.timedelta(days=2, microseconds=10**6 // 7),
    ]
    for r in rows:
        assert dt.date.fromisoformat(r["ds"]) == r["ts"].date()
    picked = ["surface", "category_id", "advertiser_id", "ad_format", "item_kind"]
    assert [tuple(r[c] for c in picked) for r in rows] == [
        ("instagram_feed", 15, 1990, "video", "ad"),  # Action before Drama
        ("instagram_reels", 9, 0, "carousel", "ad"),  # Horror first; unknown year
        ("instagram_reels", 9, 0, "carousel", "ad"),
        ("messaging_inbox", 5, 1970, "image", "ad"),
    ]
    users = [(r["user_id"], r["user_age_bucket"], r["user_country"]) for r in rows]
    assert users == [(1, 0, "US-5"), (2, 6, "CA"), (1, 0, "US-5"), (2, 6, "CA")]


def test_the_events_pass_the_suite() -> None:
    from infra.validation import validate_events

    for ds, table in movielens_events(*tables(), START).items():
        assert validate_events(table, ds).bad_positions.size == 0


def _fake_wheel(cache: Path) -> None:
    """A wheel holding only the hand-made tables as RecBole atomic files."""
    cache.mkdir()
    files = {
        "ml-100k.inter": ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
        + ["\t".join(map(str, r)) for r in RATINGS],
        "ml-100k.user": ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
        + ["\t".join(map(str, u)) for u in USERS],
        "ml-100k.item": ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
        + ["\t".join(map(str, i)) for i in ITEMS],
    }
    with zipfile.ZipFile(cache / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
        for name, lines in files.items():
            wheel.writestr(f"{ML100K_DIR}/{name}", "\n".join(lines) + "\n")


def test_written_days_read_back_through_the_files_source(tmp_path: Path) -> None:
    _fake_wheel(tmp_path / "cache")
    assert (
        read_ml100k(fetch_recbole_wheel(tmp_path / "cache"))[0]
        .sort_by("timestamp")
        .equals(tables()[0].sort_by("timestamp"))
    )
    expected = movielens_events(*tables(), START)
    for _ in range(2):  # a re-run rewrites the same files
        written = write_movielens_events(tmp_path / "events", START, tmp_path / "cache", max_days=2)
        assert written == list(expected)[:2]
    for ds in written:
        batches = FileSource(str(tmp_path / "events")).day_batches(ds)
        read = pa.Table.from_batches(list(batches), schema=RAW_EVENTS_SCHEMA)
        assert read.cast(EVENTS_SCHEMA).equals(expected[ds])
    assert not (tmp_path / "events" / "ds=2026-01-03").exists()


def test_a_failed_download_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "false")
    with pytest.raises(RuntimeError, match=r"\(exit 1\): false -m pip download recbole==1.2.1"):
        fetch_recbole_wheel(tmp_path)


@pytest.mark.slow
def test_the_first_three_weeks_run_through_ingest_and_examples(spark, tmp_path: Path) -> None:
    from pipeline.examples import build_examples
    from pipeline.ingest import ingest_events, land_events

    interactions = read_ml100k(fetch_recbole_wheel(REPO_CACHE))[0]
    seconds = interactions.column("timestamp").to_numpy()
    week = (seconds - seconds.min() // 86_400 * 86_400) // (7 * 86_400)
    settings = Settings(lake=str(tmp_path / "lake"), source="files", events_dir=str(tmp_path / "events"))
    days = write_movielens_events(tmp_path / "events", START, REPO_CACHE, max_days=3)
    assert days == ["2026-01-01", "2026-01-02", "2026-01-03"]
    for w, ds in enumerate(days):
        ingested = ingest_events(settings, ds, land_events(settings, ds), run_id="test")
        assert (ingested["good_rows"], ingested["bad_rows"]) == (int((week == w).sum()), 0)
        assert build_examples(settings, ds, spark)["rows"] == ingested["good_rows"]
    examples = pa.concat_tables(
        delta.read_partition(settings.table_uri("examples"), ds, columns=["click", "hist_len"]) for ds in days
    )
    ratings = interactions.column("rating").to_numpy()[week < 3]
    assert examples.num_rows == ratings.size
    assert pc.mean(examples.column("click")).as_py() == pytest.approx(np.mean(ratings >= 4))
    assert pc.max(examples.column("hist_len")).as_py() > 0  # histories carry across the weeks
