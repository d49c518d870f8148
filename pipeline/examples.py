"""Build the `examples` table for one day: events plus point-in-time user histories.

Day N reads only `events` partition N and the `user_state` partition of the
previous built day (each user's last `history_length` raw events), never earlier
events; it writes `examples` partition N and `user_state` partition N. Carrying
the state equals a full re-scan as long as each event's `ds` is the UTC date of
its `ts` (then every earlier day's event is strictly older than day N's).

Days must be built in date order: a re-run of day N replaces exactly partition N
of both tables, but leaves day N+1 (built from the old state N) stale until it is
re-run too. The daily DAG runs the days in order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyarrow as pa

from infra import delta
from infra.schema import EVENTS_SCHEMA, EXAMPLES_SCHEMA, USER_STATE_SCHEMA
from infra.settings import Settings
from pipeline.history import TOKEN_SCHEMA, advance_state, build_histories

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.pandas.group_ops import PandasCogroupedOps


# Bound on one grouped-map call's work: its history elements (events x (1 + L))
# plus prior tokens; ~2e6 history elements are ~40 MB of Arrow output.
WORK_PER_BUCKET = 2_000_000
_BUCKET = "_user_bucket"


class MissingHistoryError(RuntimeError):
    """An earlier day with events has no `user_state` yet: build it first."""


def build_examples(settings: Settings, ds: str, spark: SparkSession | None = None) -> dict[str, object]:
    """Replace partition `ds` of `examples` and `user_state`; return their references.

    Reads `settings.table_uri("events")` (EVENTS_SCHEMA) partition `ds` and
    `settings.table_uri("user_state")` (USER_STATE_SCHEMA) at the latest built day
    before `ds`. Writes `settings.table_uri("examples")` (EXAMPLES_SCHEMA) and
    `user_state`, partition `ds` of each, examples first: a `user_state` partition
    marks its day as built. Raises MissingHistoryError when an earlier day with
    events is not built yet.
    """
    from infra.spark import get_spark, spark_schema

    spark = spark or get_spark(settings)
    events_uri, examples_uri, state_uri = (
        settings.table_uri(n) for n in ("events", "examples", "user_state")
    )
    prior_ds = find_prior_state(events_uri, state_uri, ds)
    events = delta.read_spark_partition(spark, events_uri, ds, EVENTS_SCHEMA)
    prior = _read_prior_tokens(spark, state_uri, prior_ds)
    work = delta.partition_row_counts(events_uri).get(ds, 0) * (1 + settings.history_length)
    work += delta.partition_row_counts(state_uri).get(prior_ds, 0) if prior_ds else 0
    grouped = _cogroup_by_user_bucket(events, prior, _bucket_count(spark, work))
    length = settings.history_length

    def histories(day_events: pa.Table, tokens: pa.Table) -> pa.Table:
        return build_histories(day_events, tokens, length)

    def next_state(day_events: pa.Table, tokens: pa.Table) -> pa.Table:
        return advance_state(tokens, day_events, length, ds)

    examples = grouped.applyInArrow(histories, spark_schema(EXAMPLES_SCHEMA))
    written = delta.commit_spark_partition(examples, examples_uri, ds, EXAMPLES_SCHEMA)
    state = grouped.applyInArrow(next_state, spark_schema(USER_STATE_SCHEMA))
    state_written = delta.commit_spark_partition(state, state_uri, ds, USER_STATE_SCHEMA)
    return {
        "examples": examples_uri,
        "user_state": state_uri,
        "ds": ds,
        "prior_state_ds": prior_ds,
        "rows": written.rows,
        "version": written.version,
        "user_state_version": state_written.version,
    }


def find_prior_state(events_uri: str, state_uri: str, ds: str) -> str | None:
    """The `user_state` partition that day `ds` builds on: the latest one before `ds`.

    None when no earlier day was built and no earlier events exist (history
    starts empty). Raises MissingHistoryError naming every day before `ds` whose
    events exist but whose state does not come before it.
    """
    prior = max((p for p in delta.partitions(state_uri) if p < ds), default=None)
    unbuilt = [p for p in delta.partitions(events_uri) if p < ds and (prior is None or p > prior)]
    if unbuilt:
        since = f"after the last built day {prior}" if prior else "and no day is built yet"
        raise MissingHistoryError(
            f"cannot build examples for {ds}: events of {', '.join(unbuilt)} have no user_state "
            f"({since}); build examples for {unbuilt[0]} first, days in date order"
        )
    return prior


def _read_prior_tokens(spark: SparkSession, state_uri: str, prior_ds: str | None) -> DataFrame:
    """The prior day's tokens (TOKEN_SCHEMA columns), or an empty frame with that schema."""
    from infra.spark import spark_schema

    if prior_ds is None:
        return spark.createDataFrame([], spark_schema(TOKEN_SCHEMA))
    state = delta.read_spark_partition(spark, state_uri, prior_ds, USER_STATE_SCHEMA)
    return state.select(*TOKEN_SCHEMA.names)


def _cogroup_by_user_bucket(events: DataFrame, prior: DataFrame, buckets: int) -> PandasCogroupedOps:
    """Events and prior tokens cogrouped by a hash bucket of user_id.

    Buckets, not users: the core is vectorised over users, and a grouped-map call
    per user cost ~1.5 ms each (20k users: a minute a day); a bucket holds whole
    users, so each call still sees every user's complete data.
    """
    from pyspark.sql import functions as F

    bucket = F.pmod(F.xxhash64("user_id"), F.lit(buckets))
    left = events.withColumn(_BUCKET, bucket).groupBy(_BUCKET)
    return left.cogroup(prior.withColumn(_BUCKET, bucket).groupBy(_BUCKET))


def _bucket_count(spark: SparkSession, work: int) -> int:
    """Enough buckets to spread over the shuffle partitions and to bound one call's output."""
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or 1)
    return max(4 * partitions, math.ceil(work / WORK_PER_BUCKET))
