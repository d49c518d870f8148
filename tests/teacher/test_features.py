"""Examples to tensors: hashing, catalogs, nulls, truncation of most-recent-first histories, speed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import torch

from infra.schema import AD_FORMATS, EVENT_TYPES, EXAMPLES_SCHEMA, ITEM_KINDS, SURFACES
from teacher import attention
from teacher.config import config_for
from teacher.features import hash_ids, log_time_bucket, random_batch, slice_batch, table_to_features

CONFIG = config_for("tiny", history_length=3)
T0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
AD_ID = 1_000_000_017


def example(i: int, *, ad: bool, history: list[tuple[int, int, int, int, float]]) -> dict[str, object]:
    """One EXAMPLES_SCHEMA row; history tokens (item, category, surface, event, dt_s), newest first."""
    items, cats, surfaces, events, dts = (
        (list(col) for col in zip(*history, strict=True)) if history else [[]] * 5
    )
    return {
        "example_id": f"e-{i}",
        "ts": T0,
        "ds": "2026-01-01",
        "user_id": 40 + i,
        "user_age_bucket": 3,
        "user_country": "NA" if i else "US",
        "item_id": AD_ID if ad else 77,
        "item_kind": "ad" if ad else "organic",
        "surface": SURFACES[i],
        "advertiser_id": 12 if ad else None,
        "category_id": 5,
        "ad_format": "video" if ad else None,
        "click": 1 if ad else 0,
        "conversion": 1 if ad else 0,
        "conversion_ts": T0 if ad else None,
        "hist_len": len(history),
        "hist_item_id": items,
        "hist_category_id": cats,
        "hist_surface": surfaces,
        "hist_event_type": events,
        "hist_dt_s": dts,
    }


@pytest.fixture
def table() -> pa.Table:
    click, view = EVENT_TYPES["ad_click"], EVENT_TYPES["organic_view"]
    five = [(AD_ID, 5, 1, click, 10.0), (77, 2, 0, view, 20.0), (3, 3, 4, view, 30.0)]
    five += [(4, 4, 2, view, 40.0), (5, 5, 3, view, 50.0)]
    rows = [
        example(0, ad=True, history=five),  # longer than history_length: keep the 3 most recent
        example(1, ad=False, history=[]),  # no history: all padding
        example(2, ad=True, history=[(9, 1, 2, click, 3600.0)]),  # shorter: padded
    ]
    return pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA)


def test_nulls_catalogs_and_labels(table: pa.Table) -> None:
    f = table_to_features(table, CONFIG)
    assert f["surface"].tolist() == [0, 1, 2]
    assert f["item_kind"].tolist() == [1 + ITEM_KINDS.index("ad"), 1 + ITEM_KINDS.index("organic"), 1]
    assert f["ad_format"].tolist() == [1 + AD_FORMATS.index("video"), 0, 1 + AD_FORMATS.index("video")]
    assert f["advertiser"][1] == 0 and f["advertiser"][0] == f["advertiser"][2] > 0
    assert f["age"].tolist() == [4, 4, 4]
    assert f["country"][0] != f["country"][1] and (f["country"] > 0).all()  # "NA" is Namibia, not null
    assert f["click"].dtype == torch.float32 and f["click"].tolist() == [1.0, 0.0, 1.0]
    assert f["conversion"].tolist() == [1.0, 0.0, 1.0]
    for name in ("user", "item", "category", "country"):
        assert f[name].dtype == torch.int64 and (f[name] > 0).all()


def test_truncation_keeps_the_most_recent_and_pads_with_zero(table: pa.Table) -> None:
    f = table_to_features(table, CONFIG)
    assert f["hist_len"].tolist() == [3, 0, 1]
    assert f["hist_item"].shape == (3, 3)
    expected_items = hash_ids(np.array([AD_ID, 77, 3]), CONFIG.item_buckets).tolist()
    assert f["hist_item"][0].tolist() == expected_items
    assert f["hist_item"][0, 0] == f["item"][0]  # the example's item and history share one hash
    assert f["hist_surface"][0].tolist() == [2, 1, 5]  # index + 1
    assert f["hist_event"][0].tolist() == [EVENT_TYPES["ad_click"], EVENT_TYPES["organic_view"], 4]
    assert f["hist_dt_s"][0].tolist() == [10.0, 20.0, 30.0]
    for name in ("hist_item", "hist_category", "hist_surface", "hist_event", "hist_time", "hist_dt_s"):
        assert (f[name][1] == 0).all() and (f[name][2, 1:] == 0).all(), name
        assert (f[name][2, 0] != 0).all(), name


def test_time_buckets_grow_with_log_time_and_match_the_torch_twin() -> None:
    seconds = np.array([0.0, 1.0, 10.0, 3600.0, 86_400.0, 1e12], dtype=np.float32)
    buckets = log_time_bucket(seconds, CONFIG.n_time_buckets)
    assert buckets[0] == 1 and buckets[-1] == CONFIG.n_time_buckets - 1
    assert (np.diff(buckets) > 0).all()
    twin = attention.log_time_bucket(torch.from_numpy(seconds), CONFIG.n_time_buckets)
    assert twin.tolist() == buckets.tolist()


def test_hash_is_deterministic_in_range_and_spreads_new_ads() -> None:
    ids = np.arange(1_000_000_000, 1_000_010_000, dtype=np.int64)
    a, b = hash_ids(ids, 1024), hash_ids(ids.copy(), 1024)
    assert (a == b).all() and a.min() >= 1 and a.max() <= 1023
    assert len(np.unique(a)) > 1000  # sequential ids do not collide into few buckets


def test_chunked_and_sliced_tables_give_the_same_tensors(table: pa.Table) -> None:
    whole = table_to_features(table, CONFIG)
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 2)])
    for key, value in table_to_features(chunked, CONFIG).items():
        assert torch.equal(value, whole[key]), key  # type: ignore[literal-required]
    tail = table_to_features(table.slice(1, 2), CONFIG)
    assert torch.equal(tail["hist_item"], whole["hist_item"][1:])
    assert torch.equal(slice_batch(whole, slice(1, 3))["hist_dt_s"], tail["hist_dt_s"])


def test_list_columns_with_their_own_offsets(table: pa.Table) -> None:
    whole = table_to_features(table, CONFIG)
    dt_column = table.schema.get_field_index("hist_dt_s")
    shifted = pa.concat_arrays(
        [pa.array([[1.0, 2.0]], pa.list_(pa.float32())), table.column(dt_column).chunk(0)]
    )
    moved = table.set_column(dt_column, "hist_dt_s", shifted.slice(1))  # same lists, offsets start at 2
    assert torch.equal(table_to_features(moved, CONFIG)["hist_dt_s"], whole["hist_dt_s"])
    other = pa.array([[1.0], [], [1.0, 2.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match="other lengths"):
        table_to_features(table.set_column(dt_column, "hist_dt_s", other), CONFIG)


def test_unknown_surface_is_an_error(table: pa.Table) -> None:
    bad = table.set_column(table.schema.get_field_index("surface"), "surface", pa.array(["x", "y", "z"]))
    with pytest.raises(ValueError, match="unknown surface"):
        table_to_features(bad, CONFIG)


def _big_table(n: int, per_row: int) -> pa.Table:
    rng = np.random.default_rng(0)
    total = n * per_row
    offsets = pa.array(np.arange(0, total + 1, per_row, dtype=np.int32))

    def lists(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    columns = {
        "user_id": pa.array(rng.integers(0, 2000, n)),
        "user_age_bucket": pa.array(rng.integers(0, 7, n).astype(np.int32)),
        "user_country": pa.array(rng.choice(["US", "BR", "NA"], n)),
        "item_id": pa.array(rng.integers(0, 2_000_000_000, n)),
        "item_kind": pa.array(rng.choice(ITEM_KINDS, n)),
        "surface": pa.array(rng.choice(SURFACES, n)),
        "advertiser_id": pa.array(rng.integers(0, 200, n)),
        "category_id": pa.array(rng.integers(0, 24, n).astype(np.int32)),
        "ad_format": pa.array(rng.choice(AD_FORMATS, n)),
        "click": pa.array(rng.integers(0, 2, n).astype(np.int8)),
        "conversion": pa.array(np.zeros(n, np.int8)),
        "hist_item_id": lists(rng.integers(0, 2_000_000_000, total)),
        "hist_category_id": lists(rng.integers(0, 24, total).astype(np.int32)),
        "hist_surface": lists(rng.integers(0, 5, total).astype(np.int8)),
        "hist_event_type": lists(rng.integers(1, 6, total).astype(np.int8)),
        "hist_dt_s": lists(rng.random(total, dtype=np.float32) * 1e6),
    }
    return pa.table(columns)


def test_a_hundred_thousand_rows_convert_as_their_slices_do() -> None:
    """One vectorised pass over the whole table (no timing here: on a shared machine a timed test
    fails on load, not on code): any slice converts to the same rows as the table does."""
    table = _big_table(100_000, per_row=20)
    config = config_for("tiny", history_length=16)
    batch = table_to_features(table, config)
    assert batch["hist_item"].shape == (100_000, 16) and (batch["hist_len"] == 16).all()
    part = table_to_features(table.slice(61_000, 7), config)
    for name, values in part.items():
        assert torch.equal(values, batch[name][61_000:61_007]), name


def test_random_batch_keeps_padding_zero() -> None:
    batch = random_batch(CONFIG, 32, seed=1)
    pad = torch.arange(CONFIG.history_length)[None, :] >= batch["hist_len"][:, None]
    for name in ("hist_item", "hist_category", "hist_surface", "hist_event", "hist_time", "hist_dt_s"):
        assert (batch[name][pad] == 0).all(), name  # type: ignore[literal-required]
