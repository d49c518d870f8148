"""The files source: event logs a user brings, as Parquet or CSV, one folder per day.

Reads `<events_dir>/ds=<ds>/*.parquet` and `*.csv` (sorted by file name) and yields
record batches in `RAW_EVENTS_SCHEMA` (the types of `EVENTS_SCHEMA`, every column
nullable: nulls in required columns are for validation to judge, not for the reader).
Each file is checked against the schema: a missing column or a value that cannot be
represented in the schema's type fails with the file and the column named; extra
columns are dropped. Memory stays bounded: one Parquet batch or CSV block at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from infra.schema import EVENTS_SCHEMA, TS_TYPE

RAW_EVENTS_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENTS_SCHEMA])
PARQUET_BATCH_ROWS = 65_536
CSV_BLOCK_BYTES = 4 << 20


class EventsFileError(ValueError):
    """An events file does not match EVENTS_SCHEMA (message names the file and the column)."""


def _castable(actual: pa.DataType, expected: pa.DataType) -> bool:
    """True when a Parquet column of type `actual` may be cast (value-checked) to `expected`."""
    if actual == expected or pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        return _castable(actual.value_type, expected)
    kinds = (pa.types.is_integer, pa.types.is_timestamp)
    if any(kind(actual) and kind(expected) for kind in kinds):
        return True
    if pa.types.is_string(expected):
        stringy = pa.types.is_string(actual) or pa.types.is_large_string(actual)
        return stringy or pa.types.is_string_view(actual) or pa.types.is_date(actual)
    return False


def _convert(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast with overflow/precision checks; CSV timestamp strings are parsed as UTC."""
    if target == TS_TYPE and pa.types.is_string(values.type):
        # ISO-8601 with an offset ('Z', '+01:00') or without one, meaning UTC.
        has_offset = pc.match_substring_regex(values, r"(Z|[+-]\d\d:?\d\d)$")
        values = pc.if_else(has_offset, values, pc.binary_join_element_wise(values, "Z", ""))
    return values.cast(target, safe=True)


def _cast(path: Path, name: str, values: pa.Array, target: pa.DataType, first_row: int) -> pa.Array:
    """One column cast to `target`; a failure names the file, the column and the row."""
    try:
        return _convert(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        row = _first_bad_row(values, target)
        where = f", data row {first_row + row + 1}" if row is not None else ""
        raise EventsFileError(f"{path}: column {name!r}{where}: cannot read as {target}: {err}") from err


def _first_bad_row(values: pa.Array, target: pa.DataType) -> int | None:
    """Position of the first value that fails to cast on its own (error path only)."""
    for row in range(len(values)):
        try:
            _convert(values.slice(row, 1), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return row
    return None


def _conform(path: Path, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
    """`batch` (holding every schema column) cast to RAW_EVENTS_SCHEMA, extras dropped."""
    arrays = [_cast(path, f.name, batch.column(f.name), f.type, first_row) for f in RAW_EVENTS_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=RAW_EVENTS_SCHEMA)


def _require_columns(path: Path, names: list[str]) -> None:
    missing = [f.name for f in RAW_EVENTS_SCHEMA if f.name not in names]
    if missing:
        raise EventsFileError(f"{path}: missing column(s) {', '.join(map(repr, missing))} of EVENTS_SCHEMA")


def write_day_events(events_dir: Path, ds: str, table: pa.Table) -> None:
    """Write `table` as `<events_dir>/ds=<ds>/events.parquet`, the layout `FileSource` reads: under a
    temporary name, then renamed, so a re-run replaces the file whole and a reader never sees half of it."""
    folder = events_dir / f"ds={ds}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".events.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(folder / "events.parquet")


def read_parquet_events(path: Path) -> Iterator[pa.RecordBatch]:
    """Batches of one Parquet events file, checked and cast to RAW_EVENTS_SCHEMA."""
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    _require_columns(path, schema.names)
    for field in RAW_EVENTS_SCHEMA:
        actual = schema.field(field.name).type
        if not _castable(actual, field.type):
            raise EventsFileError(f"{path}: column {field.name!r} has type {actual}, expected {field.type}")
    first_row = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=RAW_EVENTS_SCHEMA.names):
        yield _conform(path, batch, first_row)
        first_row += batch.num_rows


def read_csv_events(path: Path) -> Iterator[pa.RecordBatch]:
    """Blocks of one CSV events file (header row; empty field = null), cast to RAW_EVENTS_SCHEMA."""
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    _require_columns(path, header)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in RAW_EVENTS_SCHEMA.names},
        include_columns=RAW_EVENTS_SCHEMA.names,
        null_values=[""],  # only an empty field is null: "NA" is a country code
        strings_can_be_null=True,
    )
    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert
    )
    first_row = 0
    for batch in reader:
        yield _conform(path, batch, first_row)
        first_row += batch.num_rows


class FileSource:
    """Events from `<events_dir>/ds=<ds>/*.parquet|*.csv`."""

    def __init__(self, events_dir: str) -> None:
        self.events_dir = events_dir

    def day_files(self, ds: str) -> list[Path]:
        """The day's event files, sorted by name; FileNotFoundError when there are none."""
        folder = Path(self.events_dir) / f"ds={ds}"
        files = sorted(
            (p for p in folder.glob("*") if p.suffix in (".parquet", ".csv") and p.is_file()),
            key=lambda p: p.name,
        )
        if not files:
            raise FileNotFoundError(f"no *.parquet or *.csv event files in {folder}")
        return files

    def day_batches(self, ds: str) -> Iterator[pa.RecordBatch]:
        """Every batch of the day's files in RAW_EVENTS_SCHEMA, one file after another."""
        for path in self.day_files(ds):
            reader = read_parquet_events if path.suffix == ".parquet" else read_csv_events
            yield from reader(path)
