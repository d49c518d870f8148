"""Ingest one day: land the source's events, validate them with GX, split good from bad.

Reads:  the event source named by the settings (synthetic world or `<events_dir>/ds=<ds>/`).
Writes: `<lake>/landing/ds=<ds>/events.parquet` (RAW_EVENTS_SCHEMA, replaced atomically),
        Delta `events` partition `ds` (EVENTS_SCHEMA: the rows passing every expectation),
        Delta `quarantine` partition `ds` (QUARANTINE_SCHEMA: every other row, with the
        names of the expectations it failed). Both partitions are replaced on every run,
        so a re-run gives the same content (quarantine's `run_id` aside).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from infra.delta import overwrite_partition
from infra.schema import EVENTS_SCHEMA
from infra.settings import Settings
from infra.sources.files import RAW_EVENTS_SCHEMA
from infra.sources.select import open_source

if TYPE_CHECKING:
    from infra.validation import EventsVerdict

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("ds", pa.string(), nullable=False),
        pa.field("row_index", pa.int64(), nullable=False),  # position in the landing file
        pa.field("event_id", pa.string()),  # as landed; may be null or duplicated
        pa.field("failed_expectations", pa.list_(pa.string()), nullable=False),  # suite order
        pa.field("row_json", pa.string(), nullable=False),  # the landed row, JSON object
        pa.field("run_id", pa.string(), nullable=False),
    ]
)


class IngestRejected(ValueError):
    """Too large a share of the day failed validation; nothing was written."""


def landing_uri_for(settings: Settings, ds: str) -> str:
    """`<lake>/landing/ds=<ds>/events.parquet`."""
    return f"{settings.lake.rstrip('/')}/landing/ds={ds}/events.parquet"


def land_events(settings: Settings, ds: str) -> str:
    """Stream day `ds` from the configured source into the landing zone; return its URI.

    Writes RAW_EVENTS_SCHEMA batch by batch (bounded memory) to a temporary name in
    `<lake>/landing/ds=<ds>/`, then renames it to `events.parquet`, replacing any earlier
    landing of the day.
    """
    uri = landing_uri_for(settings, ds)
    fs, path = pafs.FileSystem.from_uri(uri)
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.events.{uuid.uuid4().hex}.parquet.tmp"
    try:
        with pq.ParquetWriter(tmp, RAW_EVENTS_SCHEMA, filesystem=fs) as writer:
            for batch in open_source(settings).day_batches(ds):
                writer.write_batch(batch.select(RAW_EVENTS_SCHEMA.names).cast(RAW_EVENTS_SCHEMA))
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise
    return uri


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def row_as_json(events: pa.Table, position: int) -> str:
    """Row `position` of `events` as a JSON object (timestamps ISO-8601 with offset)."""
    return json.dumps(events.slice(position, 1).to_pylist()[0], default=_json_value)


def build_quarantine(events: pa.Table, failed_by_row: dict[int, list[str]], ds: str, run_id: str) -> pa.Table:
    """QUARANTINE_SCHEMA rows for the landed rows in `failed_by_row` (position -> names)."""
    positions = sorted(failed_by_row)
    bad = events.take(pa.array(positions, pa.int64()))
    columns = {
        "ds": [ds] * len(positions),
        "row_index": positions,
        "event_id": bad.column("event_id"),
        "failed_expectations": [failed_by_row[p] for p in positions],
        "row_json": [row_as_json(bad, i) for i in range(len(positions))],
        "run_id": [run_id] * len(positions),
    }
    return pa.table(columns, schema=QUARANTINE_SCHEMA)


def _rejection(events: pa.Table, verdict: EventsVerdict, ds: str, max_bad_share: float) -> IngestRejected:
    """The error for a day whose bad share exceeds `max_bad_share`."""
    n_bad, n = int(verdict.bad_positions.size), verdict.n_rows
    name, count = verdict.worst_expectation()
    example = json.loads(row_as_json(events, int(verdict.failures[name][0])))
    return IngestRejected(
        f"ds={ds}: {n_bad}/{n} rows ({n_bad / n:.2%}) fail validation, above max_bad_share="
        f"{max_bad_share:g}; most failures: {name} ({count}/{n} rows), e.g. {example}"
    )


def ingest_events(settings: Settings, ds: str, landing_uri: str, run_id: str) -> dict[str, Any]:
    """Validate the landed day with GX and replace partition `ds` of `events` and `quarantine`.

    Reads `landing_uri` (RAW_EVENTS_SCHEMA; the whole day in memory). Raises IngestRejected,
    writing nothing, when the share of rows failing an expectation exceeds
    `settings.max_bad_share`. Returns references to what was written.
    """
    from infra.validation import validate_events  # imports great_expectations (~4 s)

    events = pq.read_table(landing_uri, schema=RAW_EVENTS_SCHEMA)
    verdict = validate_events(events, ds)
    bad = verdict.bad_positions
    if events.num_rows and bad.size / events.num_rows > settings.max_bad_share:
        raise _rejection(events, verdict, ds, settings.max_bad_share)
    keep = np.ones(events.num_rows, dtype=bool)
    keep[bad] = False
    good = events.filter(pa.array(keep)).cast(EVENTS_SCHEMA)
    quarantine = build_quarantine(events, verdict.failed_by_row(), ds, run_id)
    events_uri, quarantine_uri = settings.table_uri("events"), settings.table_uri("quarantine")
    events_version = overwrite_partition(events_uri, good, ds)
    quarantine_version = overwrite_partition(quarantine_uri, quarantine, ds)
    return {
        "events": events_uri,
        "quarantine": quarantine_uri,
        "ds": ds,
        "good_rows": good.num_rows,
        "bad_rows": quarantine.num_rows,
        "events_version": events_version,
        "quarantine_version": quarantine_version,
    }
