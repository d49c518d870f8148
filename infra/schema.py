"""The data contract: surfaces and domains, and the Arrow schemas of the tables.

`EVENTS_SCHEMA` is what every event source produces and what `docs/events.md`
documents for users who bring their own logs.
"""

from __future__ import annotations

import pyarrow as pa

# Surfaces in a fixed order: a surface's index here is its integer code in examples.
SURFACE_DOMAINS: dict[str, str] = {
    "facebook_feed": "facebook",
    "facebook_stories": "facebook",
    "instagram_feed": "instagram",
    "instagram_reels": "instagram",
    "messaging_inbox": "messaging",
}
SURFACES: tuple[str, ...] = tuple(SURFACE_DOMAINS)
DOMAINS: tuple[str, ...] = tuple(dict.fromkeys(SURFACE_DOMAINS.values()))
ITEM_KINDS: tuple[str, ...] = ("ad", "organic")
AD_FORMATS: tuple[str, ...] = ("image", "video", "carousel")

# History event types (code 0 is padding). A conversion counts in a history only
# once it has arrived (conversion_ts strictly before the example's ts).
EVENT_TYPES: dict[str, int] = {
    "ad_impression": 1,
    "ad_click": 2,
    "ad_conversion": 3,
    "organic_view": 4,
    "organic_engage": 5,
}

TS_TYPE = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("ds", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("user_age_bucket", pa.int32(), nullable=False),
        pa.field("user_country", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("item_kind", pa.string(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("advertiser_id", pa.int64()),  # null for organic items
        pa.field("category_id", pa.int32(), nullable=False),
        pa.field("ad_format", pa.string()),  # null for organic items
        pa.field("click", pa.int8(), nullable=False),  # ads: click; organic: engagement
        pa.field("conversion", pa.int8(), nullable=False),  # eventual conversion (ads only)
        pa.field("conversion_ts", TS_TYPE),  # when the conversion arrived; null if none
    ]
)

REQUIRED_EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in EVENTS_SCHEMA if not f.nullable)

# Examples: an event's own features and labels, plus the user's history strictly
# before `ts`, most recent first (so a shorter history is a prefix), at most
# `history_length` long. `example_id` is the event's `event_id`.
EXAMPLES_SCHEMA = pa.schema(
    [pa.field("example_id", pa.string(), nullable=False)]
    + [f for f in EVENTS_SCHEMA if f.name != "event_id"]
    + [
        pa.field("hist_len", pa.int32(), nullable=False),
        pa.field("hist_item_id", pa.list_(pa.int64()), nullable=False),
        pa.field("hist_category_id", pa.list_(pa.int32()), nullable=False),
        pa.field("hist_surface", pa.list_(pa.int8()), nullable=False),  # index into SURFACES
        pa.field("hist_event_type", pa.list_(pa.int8()), nullable=False),  # EVENT_TYPES codes
        pa.field("hist_dt_s", pa.list_(pa.float32()), nullable=False),  # seconds before ts, > 0
    ]
)

# Per-user history state as of the end of a built day `ds`: the user's last
# `history_length` events as raw tokens, one row per token. Raw (click,
# conversion, conversion_ts) rather than event types, because a token's type
# depends on the ts of the example that looks back at it.
USER_STATE_SCHEMA = pa.schema(
    [
        pa.field("ds", pa.string(), nullable=False),  # the built day this state closes
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),  # tie-break among equal ts
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category_id", pa.int32(), nullable=False),
        pa.field("surface", pa.int8(), nullable=False),  # index into SURFACES
        pa.field("is_ad", pa.bool_(), nullable=False),
        pa.field("click", pa.int8(), nullable=False),
        pa.field("conversion", pa.int8(), nullable=False),
        pa.field("conversion_ts", TS_TYPE),
    ]
)

# Logged teacher outputs (ExFM's DAS): one row per (example, teacher version), the
# teacher's logit per task from the example's own surface head and its `embed()`.
# Partitioned by (ds, teacher): a re-run replaces exactly one teacher's day.
TEACHER_OUTPUTS_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("ds", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),  # registered model name
        pa.field("teacher_version", pa.int32(), nullable=False),
        pa.field("teacher_trained_through", pa.string(), nullable=False),  # YYYY-MM-DD, < ds
        pa.field("surface", pa.string(), nullable=False),
        pa.field("logit_click", pa.float32(), nullable=False),
        pa.field("logit_conversion", pa.float32(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),  # GemFM.embed(), (embed_dim,)
    ]
)
