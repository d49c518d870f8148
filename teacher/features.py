"""Examples (Arrow, `EXAMPLES_SCHEMA`) to model tensors, vectorised with numpy.

Ids are hashed into each feature's fixed bucket count with bucket 0 kept for
padding and null: new ads launch every day, so no vocabulary is ever built.
Categorical strings map through the catalogs of `infra.schema` (index + 1, 0 for
null or unknown), the country through a stable string hash. Histories are stored
most recent first, so truncating to `history_length` keeps a prefix.
"""

from __future__ import annotations

import zlib
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from infra.schema import AD_FORMATS, EVENT_TYPES, ITEM_KINDS, SURFACES
from teacher.config import FMConfig

_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_LOG_TIME_STEPS_PER_OCTAVE = 2.0  # buckets grow by sqrt(2): 1 s, 1.4 s, 2 s, ...


class FeatureBatch(TypedDict):
    """One batch of examples as tensors; B rows, L = config.history_length."""

    user: torch.Tensor  # (B,) int64 bucket
    age: torch.Tensor  # (B,) int64, 1 + user_age_bucket
    country: torch.Tensor  # (B,) int64 bucket
    item: torch.Tensor  # (B,) int64 bucket (same hash as hist_item)
    item_kind: torch.Tensor  # (B,) int64, 1 + index in ITEM_KINDS
    advertiser: torch.Tensor  # (B,) int64 bucket, 0 when null (organic)
    category: torch.Tensor  # (B,) int64 bucket
    ad_format: torch.Tensor  # (B,) int64, 1 + index in AD_FORMATS, 0 when null
    surface: torch.Tensor  # (B,) int64, index in SURFACES (selects the head)
    hist_len: torch.Tensor  # (B,) int64, valid history tokens after truncation
    hist_item: torch.Tensor  # (B, L) int64 bucket, 0 = padding
    hist_category: torch.Tensor  # (B, L) int64 bucket, 0 = padding
    hist_surface: torch.Tensor  # (B, L) int64, 1 + surface index, 0 = padding
    hist_event: torch.Tensor  # (B, L) int64 EVENT_TYPES code, 0 = padding
    hist_time: torch.Tensor  # (B, L) int64 log-time bucket of hist_dt_s, 0 = padding
    hist_dt_s: torch.Tensor  # (B, L) float32 seconds before the example, 0 = padding
    click: torch.Tensor  # (B,) float32
    conversion: torch.Tensor  # (B,) float32


def hash_ids(ids: np.ndarray, buckets: int) -> np.ndarray:
    """Deterministic `1 + mix(id) % (buckets - 1)` (a 64-bit multiply-xorshift mix), so 0 stays free."""
    x = ids.astype(np.int64, copy=False).view(np.uint64)
    with np.errstate(over="ignore"):
        x = x * _MIX_1
        x ^= x >> np.uint64(29)
        x *= _MIX_2
        x ^= x >> np.uint64(32)
    x %= np.uint64(buckets - 1)
    x += np.uint64(1)
    return x.view(np.int64)


def log_time_bucket(dt_s: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket 1..n_buckets-1 of `log2(1 + dt_s)` in half-octave steps (0 is left for padding)."""
    steps = np.floor(_LOG_TIME_STEPS_PER_OCTAVE * np.log2(1.0 + np.maximum(dt_s, 0.0)))
    return (1 + np.clip(steps, 0, n_buckets - 2)).astype(np.int64)


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _ints(table: pa.Table, name: str) -> np.ndarray:
    """Integer column as int64 numpy, nulls as -1."""
    return _column(table, name).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _hashed(table: pa.Table, name: str, buckets: int) -> np.ndarray:
    """Hashed id column, null -> 0."""
    raw = _ints(table, name)
    return np.where(raw < 0, 0, hash_ids(raw, buckets))


def _catalog_codes(table: pa.Table, name: str, catalog: tuple[str, ...]) -> np.ndarray:
    """1 + index of each value in `catalog`; null or unknown -> 0."""
    index = pc.index_in(_column(table, name), value_set=pa.array(catalog, pa.string()))
    return index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1


def _string_hashes(table: pa.Table, name: str, buckets: int) -> np.ndarray:
    """Stable crc32 hash of each string (computed once per distinct value), null -> 0."""
    encoded = _column(table, name).dictionary_encode()
    words = encoded.dictionary.to_pylist()
    codes = np.array([zlib.crc32(w.encode()) for w in words], dtype=np.int64)  # distinct values only
    per_word = hash_ids(codes, buckets) if len(words) else np.zeros(0, np.int64)
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(indices < 0, 0, per_word[np.maximum(indices, 0)])


def _prefix_index(lists: pa.Array, length: int) -> tuple[np.ndarray, np.ndarray]:
    """((B, L) positions in `lists.values` of each list's first L elements, -1 past its end; (B,) kept)."""
    offsets = lists.offsets.to_numpy().astype(np.int64)  # (B+1,), relative to `lists.values`
    kept = np.minimum(np.diff(offsets), length)  # (B,)
    position = np.arange(length)
    index = np.where(position[None, :] < kept[:, None], offsets[:-1, None] + position[None, :], -1)
    return index, kept


def _take_prefix(lists: pa.Array, index: np.ndarray, dtype: type) -> np.ndarray:
    """Values at `index` (B, L); positions where the index is -1 (padding) hold junk: mask them."""
    values = lists.values
    values = values.fill_null(0) if values.null_count else values
    flat = values.to_numpy(zero_copy_only=False)
    if not len(flat):
        return np.zeros(index.shape, dtype)
    return flat[np.maximum(index, 0)].astype(dtype, copy=False)  # gather, then cast only (B, L)


def _history(table: pa.Table, config: FMConfig) -> dict[str, np.ndarray]:
    """Padded, truncated history arrays (B, L); padding is 0 in every one of them."""
    columns = ("hist_item_id", "hist_category_id", "hist_surface", "hist_event_type", "hist_dt_s")
    lists = {name: _column(table, name) for name in columns}
    first = lists["hist_item_id"].offsets.to_numpy()
    index, kept = _prefix_index(lists["hist_item_id"], config.history_length)
    raw = {}
    for name, column in lists.items():
        offsets = column.offsets.to_numpy()
        own = index
        if not np.array_equal(offsets, first):  # same lengths, other buffers: index anew
            if not np.array_equal(np.diff(offsets), np.diff(first)):
                raise ValueError(f"{name} holds lists of other lengths than hist_item_id")
            own = _prefix_index(column, config.history_length)[0]
        raw[name] = _take_prefix(column, own, np.float32 if name == "hist_dt_s" else np.int64)
    valid = index >= 0  # (B, L)
    return {
        "hist_len": kept,
        "hist_item": np.where(valid, hash_ids(raw["hist_item_id"], config.item_buckets), 0),
        "hist_category": np.where(valid, hash_ids(raw["hist_category_id"], config.category_buckets), 0),
        "hist_surface": np.where(valid, raw["hist_surface"] + 1, 0),
        "hist_event": np.where(valid, raw["hist_event_type"], 0),
        "hist_time": np.where(valid, log_time_bucket(raw["hist_dt_s"], config.n_time_buckets), 0),
        "hist_dt_s": np.where(valid, raw["hist_dt_s"], np.float32(0.0)),
    }


def table_to_features(table: pa.Table, config: FMConfig) -> FeatureBatch:
    """Rows of `EXAMPLES_SCHEMA` (extra columns ignored) -> a `FeatureBatch` on CPU."""
    surface = _catalog_codes(table, "surface", SURFACES) - 1
    if (surface < 0).any():
        raise ValueError(f"unknown surface in {sorted(set(_column(table, 'surface').to_pylist()))}")
    arrays: dict[str, np.ndarray] = {
        "user": _hashed(table, "user_id", config.user_buckets),
        "age": np.clip(_ints(table, "user_age_bucket"), -1, config.n_age_buckets - 1) + 1,
        "country": _string_hashes(table, "user_country", config.country_buckets),
        "item": _hashed(table, "item_id", config.item_buckets),
        "item_kind": _catalog_codes(table, "item_kind", ITEM_KINDS),
        "advertiser": _hashed(table, "advertiser_id", config.advertiser_buckets),
        "category": _hashed(table, "category_id", config.category_buckets),
        "ad_format": _catalog_codes(table, "ad_format", AD_FORMATS),
        "surface": surface,
        **_history(table, config),
    }
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    for label in ("click", "conversion"):
        batch[label] = torch.from_numpy(_ints(table, label).astype(np.float32))
    return FeatureBatch(**batch)  # type: ignore[typeddict-item]


def slice_batch(batch: FeatureBatch, index: torch.Tensor | slice) -> FeatureBatch:
    """Rows `index` of every tensor (a minibatch, or a shuffled order)."""
    return FeatureBatch(**{k: v[index] for k, v in batch.items()})  # type: ignore[typeddict-item]


def random_batch(
    config: FMConfig, batch_size: int, seed: int = 0, full_history: bool = False
) -> FeatureBatch:
    """A synthetic `FeatureBatch` (valid codes, random labels) for tests and FLOP counts."""
    g = torch.Generator().manual_seed(seed)
    b, length = batch_size, config.history_length

    def ints(high: int, shape: tuple[int, ...], low: int = 1) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=g)

    hist_len = torch.full((b,), length) if full_history else ints(length + 1, (b,), low=0)
    valid = torch.arange(length)[None, :] < hist_len[:, None]  # (B, L)
    dt_s = torch.rand((b, length), generator=g) * 1e6
    batch = {
        "user": ints(config.user_buckets, (b,)),
        "age": ints(config.n_age_buckets + 1, (b,)),
        "country": ints(config.country_buckets, (b,)),
        "item": ints(config.item_buckets, (b,)),
        "item_kind": ints(len(ITEM_KINDS) + 1, (b,)),
        "advertiser": ints(config.advertiser_buckets, (b,), low=0),
        "category": ints(config.category_buckets, (b,)),
        "ad_format": ints(len(AD_FORMATS) + 1, (b,), low=0),
        "surface": ints(config.n_surfaces, (b,), low=0),
        "hist_len": hist_len,
        "hist_item": ints(config.item_buckets, (b, length)) * valid,
        "hist_category": ints(config.category_buckets, (b, length)) * valid,
        "hist_surface": ints(config.n_surfaces + 1, (b, length)) * valid,
        "hist_event": ints(len(EVENT_TYPES) + 1, (b, length)) * valid,
        "hist_time": torch.from_numpy(log_time_bucket(dt_s.numpy(), config.n_time_buckets)) * valid,
        "hist_dt_s": dt_s * valid,
        "click": torch.randint(0, 2, (b,), generator=g).float(),
        "conversion": torch.randint(0, 2, (b,), generator=g).float(),
    }
    return FeatureBatch(**batch)  # type: ignore[typeddict-item]
