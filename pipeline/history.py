"""Point-in-time user histories: the pure core of `build_examples` (no Spark, no I/O).

A *token* is one past event in raw form (USER_STATE_SCHEMA without `ds`). Tokens
are totally ordered by (user_id, ts, event_id); an example at time t sees its
user's tokens with ts < t (ties excluded), most recent first, at most L of them.
Every function works on any number of users at once, so Spark may call it per
user (a grouped map) and tests may call it on a whole data set.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra.schema import EVENT_TYPES, EXAMPLES_SCHEMA, SURFACES, USER_STATE_SCHEMA

TOKEN_SCHEMA = pa.schema([f for f in USER_STATE_SCHEMA if f.name != "ds"])
HIST_COLUMNS = ("hist_item_id", "hist_category_id", "hist_surface", "hist_event_type", "hist_dt_s")
_NEVER = np.iinfo(np.int64).max  # conversion_ts of a token without conversion


def events_to_tokens(events: pa.Table) -> pa.Table:
    """EVENTS_SCHEMA rows -> TOKEN_SCHEMA rows (surface as its SURFACES index)."""
    surface = pc.index_in(events.column("surface"), value_set=pa.array(SURFACES))
    if surface.null_count:
        unknown = pc.filter(events.column("surface"), pc.is_null(surface)).unique().to_pylist()
        raise ValueError(f"unknown surfaces {unknown}; expected one of {SURFACES}")
    columns = {
        "user_id": events.column("user_id"),
        "event_id": events.column("event_id"),
        "ts": events.column("ts"),
        "item_id": events.column("item_id"),
        "category_id": events.column("category_id"),
        "surface": surface,
        "is_ad": pc.equal(events.column("item_kind"), "ad"),
        "click": events.column("click"),
        "conversion": events.column("conversion"),
        "conversion_ts": events.column("conversion_ts"),
    }
    return _conform(columns, TOKEN_SCHEMA)


def build_histories(events: pa.Table, prior: pa.Table, history_length: int) -> pa.Table:
    """Examples (EXAMPLES_SCHEMA) for `events` (EVENTS_SCHEMA rows of one day).

    `prior` holds the users' tokens from earlier days (TOKEN_SCHEMA columns; a
    `ds` column is ignored). Histories draw on prior tokens and the day's own
    events, strictly before each example's ts. Rows keep the order of `events`.
    """
    tokens = _sorted_tokens(prior, events)
    user = tokens.column("user_id").to_numpy()
    tok_ts = _micros(tokens.column("ts"))
    ex_user = events.column("user_id").to_numpy()
    ex_ts = _micros(events.column("ts"))

    # end: index (in sorted tokens) just past the example's last visible token.
    end = _count_tokens_before(user, tok_ts, ex_user, ex_ts)
    start = np.searchsorted(user, ex_user, side="left")  # the user's first token
    hist_len = np.minimum(end - start, history_length)  # (E,)
    offsets = np.concatenate([[0], np.cumsum(hist_len)]).astype(np.int32)  # (E+1,)
    # Flattened (example, position) pairs, most recent first: idx = end-1, end-2, ...
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], hist_len)
    idx = np.repeat(end, hist_len) - 1 - within  # (H,) token index per pair
    pair_ts = np.repeat(ex_ts, hist_len)  # (H,) the looking example's ts

    event_type = _event_types(tokens, idx, pair_ts)
    dt_s = ((pair_ts - tok_ts[idx]) / 1e6).astype(np.float32)
    values = {
        "hist_item_id": tokens.column("item_id").to_numpy()[idx],
        "hist_category_id": tokens.column("category_id").to_numpy()[idx],
        "hist_surface": tokens.column("surface").to_numpy()[idx],
        "hist_event_type": event_type,
        "hist_dt_s": dt_s,
    }
    columns = {name: events.column(name) for name in events.column_names if name != "event_id"}
    columns["example_id"] = events.column("event_id")
    columns["hist_len"] = pa.array(hist_len, pa.int32())
    for name in HIST_COLUMNS:
        element = EXAMPLES_SCHEMA.field(name).type.value_type
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[name], element))
    return _conform(columns, EXAMPLES_SCHEMA)


def advance_state(prior: pa.Table, events: pa.Table, history_length: int, ds: str) -> pa.Table:
    """USER_STATE_SCHEMA as of the end of `ds`: each user's last L tokens of prior + events.

    Users with prior tokens and no events carry them over unchanged.
    """
    tokens = _sorted_tokens(prior, events)
    user = tokens.column("user_id").to_numpy()
    user_end = np.searchsorted(user, user, side="right")  # (T,) one past the user's last token
    keep = user_end - np.arange(len(user)) <= history_length
    kept = tokens.filter(pa.array(keep))
    columns = {name: kept.column(name) for name in kept.column_names}
    columns["ds"] = pa.array([ds] * kept.num_rows, pa.string())
    return _conform(columns, USER_STATE_SCHEMA)


def _sorted_tokens(prior: pa.Table, events: pa.Table) -> pa.Table:
    """Prior tokens and the day's events as one TOKEN_SCHEMA table in token order."""
    prior = _conform({n: prior.column(n) for n in TOKEN_SCHEMA.names}, TOKEN_SCHEMA)
    tokens = pa.concat_tables([prior, events_to_tokens(events)])
    order = pc.sort_indices(
        tokens,
        sort_keys=[("user_id", "ascending"), ("ts", "ascending"), ("event_id", "ascending")],
    )
    return tokens.take(order)


def _count_tokens_before(
    user: np.ndarray, ts: np.ndarray, q_user: np.ndarray, q_ts: np.ndarray
) -> np.ndarray:
    """For each query (user, ts): how many tokens sort strictly before it by (user, ts).

    Merge-sorts tokens and queries with queries first among equal keys, so a
    token at the query's own ts is not counted (ties are excluded).
    """
    n_tok = len(user)
    is_token = np.concatenate([np.zeros(len(q_user), np.int8), np.ones(n_tok, np.int8)])
    order = np.lexsort(
        (is_token, np.concatenate([q_ts, ts]), np.concatenate([q_user, user]))
    )  # last key sorts first
    tokens_so_far = np.cumsum(is_token[order])  # tokens at or before each merged position
    counts = np.empty(len(q_user), np.int64)
    query_pos = is_token[order] == 0
    counts[order[query_pos]] = tokens_so_far[query_pos]
    return counts


def _event_types(tokens: pa.Table, idx: np.ndarray, pair_ts: np.ndarray) -> np.ndarray:
    """EVENT_TYPES code of token `idx` as seen at `pair_ts` (a conversion only once arrived)."""
    is_ad = tokens.column("is_ad").to_numpy(zero_copy_only=False)[idx]
    click = tokens.column("click").to_numpy()[idx] == 1
    conv_ts = pc.fill_null(pc.cast(tokens.column("conversion_ts"), pa.int64()), _NEVER).to_numpy()
    converted = (tokens.column("conversion").to_numpy()[idx] == 1) & (conv_ts[idx] < pair_ts)
    ad_type = np.where(
        click,
        np.where(converted, EVENT_TYPES["ad_conversion"], EVENT_TYPES["ad_click"]),
        EVENT_TYPES["ad_impression"],
    )
    organic_type = np.where(click, EVENT_TYPES["organic_engage"], EVENT_TYPES["organic_view"])
    return np.where(is_ad, ad_type, organic_type).astype(np.int8)


def _micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch."""
    return pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()


def _conform(columns: dict[str, pa.Array | pa.ChunkedArray], schema: pa.Schema) -> pa.Table:
    """Columns cast to `schema`'s types, in its order (whatever types the caller had)."""
    arrays = [pc.cast(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
