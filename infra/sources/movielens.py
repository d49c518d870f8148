"""MovieLens-100k as daily event files for the files source (`docs/movielens.md`).

The data are RecBole's atomic files `ml-100k.{inter,user,item}`, read straight from the
`recbole==1.2.1` wheel (`recbole/dataset_example/ml-100k/`), which `fetch_recbole_wheel`
downloads with pip into a cache once per machine. `movielens_events` maps them to
EVENTS_SCHEMA, one table per logical day; `write_movielens_events` writes them as
`<events_dir>/ds=<ds>/events.parquet`, so they enter the lake through the same
`FileSource` -> ingest -> examples path as anyone's own logs.

The mapping, per rating (user u, movie i, rating r, unix time t):

- one ad impression: `item_kind` "ad", `event_id` "ml100k-<u>-<i>-<t>";
- `click = r >= 4`; `conversion = r == 5` (a subset of clicks), `conversion_ts = ts + 1 s`;
- time: 7-day weeks counted from the UTC day of the first rating; week w is the day
  `ds = start_date + w`, and a rating `s` seconds into its week gets
  `ts = ds 00:00 UTC + s / 7` (µs), so order is kept and every ts lies inside its ds;
- the movie's primary genre is its genre listed first in `GENRE_SURFACE` (rarest genres
  first); `category_id` is that genre's position there and `surface` its slot;
- `advertiser_id` is the release decade (1990), 0 when the year is unknown;
  `ad_format` from the number of genres: 1 image, 2 video, 3+ carousel;
- `user_age_bucket` MovieLens-1M's age groups (<18, 18-24, 25-34, 35-44, 45-49, 50-55,
  56+ -> 0..6); `user_country` "US-<first ZIP digit>", or "CA" for a Canadian postal code.
  Gender and occupation have no column in EVENTS_SCHEMA and are not used.
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from infra.schema import EVENTS_SCHEMA, SURFACES, TS_TYPE
from infra.sources.files import write_day_events

RECBOLE = "recbole==1.2.1"
WHEEL_GLOB = "recbole-1.2.1-*.whl"
ML100K_DIR = "recbole/dataset_example/ml-100k"
WEEK_S = 7 * 86_400
CONVERSION_DELAY_US = 1_000_000

# Primary-genre priority (rarest first, by number of movies in ml-100k) -> surface slot.
# A genre's position is the movie's category_id. facebook: stories of people (drama,
# romance, war; comedy, musicals); instagram: spectacle (action, adventure, thrillers,
# sci-fi; animation, children's, fantasy, horror); messaging: the niche genres.
GENRE_SURFACE: dict[str, str] = {
    "unknown": "messaging_inbox",
    "Fantasy": "instagram_reels",
    "Film-Noir": "messaging_inbox",
    "Western": "messaging_inbox",
    "Animation": "instagram_reels",
    "Documentary": "messaging_inbox",
    "Musical": "facebook_stories",
    "Mystery": "messaging_inbox",
    "War": "facebook_feed",
    "Horror": "instagram_reels",
    "Sci-Fi": "instagram_feed",
    "Crime": "messaging_inbox",
    "Children's": "instagram_reels",
    "Adventure": "instagram_feed",
    "Romance": "facebook_feed",
    "Action": "instagram_feed",
    "Thriller": "instagram_feed",
    "Comedy": "facebook_stories",
    "Drama": "facebook_feed",
}
AGE_BUCKET_EDGES = (18, 25, 35, 45, 50, 56)  # lower bounds of buckets 1..6


def fetch_recbole_wheel(cache_dir: Path) -> Path:
    """The recbole 1.2.1 wheel in `cache_dir`, downloaded with pip unless already there."""
    cached = sorted(cache_dir.glob(WHEEL_GLOB))
    if cached:
        return cached[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", RECBOLE, "--no-deps", "--only-binary=:all:"]
    command += ["-d", str(cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    cached = sorted(cache_dir.glob(WHEEL_GLOB))
    if done.returncode != 0 or not cached:
        raise RuntimeError(
            f"could not download {RECBOLE} (exit {done.returncode}): {' '.join(command)}\n"
            f"{done.stdout}{done.stderr}"
        )
    return cached[0]


def _read_atomic(wheel: zipfile.ZipFile, name: str, types: dict[str, pa.DataType]) -> pa.Table:
    """A RecBole atomic file (tab-separated, `name:type` headers), headers stripped to names."""
    raw = wheel.read(f"{ML100K_DIR}/{name}")
    header = raw.split(b"\n", 1)[0].decode().rstrip("\r").split("\t")
    names = [column.split(":", 1)[0] for column in header]
    table = pacsv.read_csv(
        io.BytesIO(raw),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={n: types.get(n, pa.string()) for n in names}, strings_can_be_null=False
        ),
    )
    return table.rename_columns(["genres" if n == "class" else n for n in names])


def read_ml100k(wheel: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(interactions, users, items) of ml-100k, read from the recbole wheel's zip.

    interactions: user_id, item_id (int64), rating (float64), timestamp (int64, unix s);
    users: user_id (int64), age (int64), gender, occupation, zip_code;
    items: item_id (int64), movie_title, release_year, genres (space-separated).
    """
    ids = {"user_id": pa.int64(), "item_id": pa.int64()}
    with zipfile.ZipFile(wheel) as archive:
        interactions = _read_atomic(
            archive, "ml-100k.inter", ids | {"rating": pa.float64(), "timestamp": pa.int64()}
        )
        users = _read_atomic(archive, "ml-100k.user", ids | {"age": pa.int64()})
        items = _read_atomic(archive, "ml-100k.item", ids)
    return interactions, users, items


def _item_features(items: pa.Table) -> dict[str, np.ndarray]:
    """Per item row: category_id, surface index, advertiser_id (decade) and ad_format index."""
    priority = list(GENRE_SURFACE)
    category, surface, advertiser, fmt = [], [], [], []
    for genres, year in zip(
        items.column("genres").to_pylist(), items.column("release_year").to_pylist(), strict=True
    ):
        names = genres.split()
        unknown = [g for g in names if g not in GENRE_SURFACE]
        if unknown or not names:
            raise ValueError(f"movie genres {genres!r}: not in GENRE_SURFACE ({unknown})")
        primary = min(names, key=priority.index)
        category.append(priority.index(primary))
        surface.append(SURFACES.index(GENRE_SURFACE[primary]))
        advertiser.append(int(year) // 10 * 10 if year.isdigit() else 0)
        fmt.append(min(len(names), 3) - 1)  # image, video, carousel
    return {
        "category": np.array(category, np.int32),
        "surface": np.array(surface, np.int8),
        "advertiser": np.array(advertiser, np.int64),
        "format": np.array(fmt, np.int8),
    }


def _user_features(users: pa.Table) -> dict[str, np.ndarray]:
    """Per user row: age bucket 0..6 and a region code for user_country."""
    age = users.column("age").to_numpy()
    zips = users.column("zip_code").to_pylist()
    country = [f"US-{z[0]}" if z[:1].isdigit() else "CA" for z in zips]
    return {
        "age_bucket": np.searchsorted(AGE_BUCKET_EDGES, age, side="right").astype(np.int32),
        "country": np.array(country, dtype=object),
    }


def _positions(keys: pa.ChunkedArray, table: pa.Table, what: str) -> np.ndarray:
    """Row of `table` (by `what`) for every key; ValueError naming a missing one."""
    found = pc.index_in(keys, value_set=table.column(what))
    if found.null_count:
        missing = keys.filter(pc.is_null(found))[0].as_py()
        raise ValueError(f"{what} {missing} of a rating is not in the {what.split('_')[0]}s table")
    return found.to_numpy()


def movielens_events(
    interactions: pa.Table, users: pa.Table, items: pa.Table, start_date: str
) -> dict[str, pa.Table]:
    """The ratings as EVENTS_SCHEMA tables, one per week mapped to a day (ds -> table, in order).

    Every week from the first rating's to the last one's gets its day, an empty table if
    it has no rating, so the days are consecutive from `start_date`.
    """
    if interactions.num_rows == 0:
        raise ValueError("no ratings to map")
    order = pc.sort_indices(
        interactions,
        sort_keys=[("timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")],
    )
    ratings = interactions.take(order)
    seconds = ratings.column("timestamp").to_numpy()
    item_row = _positions(ratings.column("item_id"), items, "item_id")
    user_row = _positions(ratings.column("user_id"), users, "user_id")
    movie, person = _item_features(items), _user_features(users)
    anchor = seconds[0] // 86_400 * 86_400  # the UTC midnight of the first rating's day
    week, into_week = np.divmod(seconds - anchor, WEEK_S)
    first_day = dt.date.fromisoformat(start_date)
    start_us = (first_day - dt.date(1970, 1, 1)).days * 86_400 * 1_000_000
    ts_us = start_us + week * 86_400 * 1_000_000 + into_week * 1_000_000 // 7
    rating = ratings.column("rating").to_numpy()
    click, conversion = (rating >= 4).astype(np.int8), (rating == 5).astype(np.int8)
    ids = [pc.cast(ratings.column(c), pa.string()) for c in ("user_id", "item_id", "timestamp")]
    n_weeks = int(week[-1]) + 1
    day_names = [(first_day + dt.timedelta(days=w)).isoformat() for w in range(n_weeks)]
    arrays = [
        pc.binary_join_element_wise("ml100k", *ids, "-"),
        pa.array(ts_us, TS_TYPE),
        pa.array(day_names, pa.string()).take(pa.array(week)),
        ratings.column("user_id"),
        pa.array(person["age_bucket"][user_row], pa.int32()),
        pa.array(person["country"][user_row], pa.string()),
        ratings.column("item_id"),
        pa.repeat(pa.scalar("ad"), len(seconds)),
        pa.array(SURFACES).take(pa.array(movie["surface"][item_row])),
        pa.array(movie["advertiser"][item_row], pa.int64()),
        pa.array(movie["category"][item_row], pa.int32()),
        pa.array(("image", "video", "carousel")).take(pa.array(movie["format"][item_row])),
        pa.array(click, pa.int8()),
        pa.array(conversion, pa.int8()),
        pa.array(ts_us + CONVERSION_DELAY_US, TS_TYPE, mask=conversion == 0),
    ]
    events = pa.Table.from_arrays(arrays, schema=EVENTS_SCHEMA)
    bounds = np.searchsorted(week, np.arange(n_weeks + 1))
    return {ds: events.slice(bounds[w], bounds[w + 1] - bounds[w]) for w, ds in enumerate(day_names)}


def write_movielens_events(
    events_dir: Path, start_date: str, cache_dir: Path, max_days: int | None = None
) -> list[str]:
    """Write `<events_dir>/ds=<ds>/events.parquet` (EVENTS_SCHEMA) for ml-100k's weeks; return the days.

    Fetches the wheel into `cache_dir` if needed; `max_days` keeps the first weeks only.
    Each file is written by `write_day_events`, so a re-run replaces it.
    """
    days = movielens_events(*read_ml100k(fetch_recbole_wheel(cache_dir)), start_date)
    written = list(days)[:max_days]
    for ds in written:
        write_day_events(events_dir, ds, days[ds])
    return written
