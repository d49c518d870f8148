"""Delta table I/O through delta-rs: every write replaces exactly one partition.

Tables live at `Settings.table_uri(name)`; any delta-rs URI works (local path,
s3://, abfss://). All tables here are partitioned by `ds` (YYYY-MM-DD string).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, create_table_with_add_actions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def table_exists(uri: str) -> bool:
    """True when a Delta table is committed at `uri`."""
    return DeltaTable.is_deltatable(uri)


def overwrite_partition(uri: str, data: pa.Table, ds: str) -> int:
    """Replace partition `ds` of the Delta table at `uri` with `data` in one commit.

    Creates the table (partitioned by `ds`) on first write. Every row of `data`
    must carry `ds`; a re-run with the same data leaves the same table content.
    Writers of other days may run at the same time (see `commit_with_retries`).
    Returns the committed table version.
    """
    if data.num_rows and set(data.column("ds").unique().to_pylist()) != {ds}:
        raise ValueError(f"rows written to {uri} for ds={ds} carry other ds values")

    # Always with the predicate, also when creating: a table created meanwhile by a
    # writer of another day must keep that day (a plain overwrite would replace it).
    def commit(_: bool) -> None:
        write_deltalake(uri, data, mode="overwrite", predicate=f"ds = '{ds}'", partition_by=["ds"])

    commit_with_retries(uri, f"partition ds={ds}", commit)
    return DeltaTable(uri).version()


def delete_partition(uri: str, ds: str, partition: Mapping[str, str] | None = None) -> int:
    """Remove partition `ds` of the Delta table at `uri` (narrowed by further partition columns, e.g.
    `{"teacher": "gem-fm"}`) in one commit; returns the committed table version."""
    clauses = [f"ds = '{ds}'", *(f"{column} = '{value}'" for column, value in (partition or {}).items())]
    commit_with_retries(
        uri, f"delete {' and '.join(clauses)}", lambda _: DeltaTable(uri).delete(" AND ".join(clauses))
    )
    return DeltaTable(uri).version()


# A lost race is retried a few times, after a short random pause (writers collide again otherwise).
COMMIT_ATTEMPTS = 5


class ConcurrentCommitError(RuntimeError):
    """Concurrent writers won every commit attempt: the partition was not written."""


def commit_with_retries(uri: str, what: str, commit: Callable[[bool], None]) -> None:
    """Run `commit(table_exists)`; when a concurrent writer commits first, run it again on the new table.

    Writes of different partitions do not conflict in delta-rs (it checks them itself);
    two races remain: two writers both creating the table (one finds it created), and a
    concurrent commit touching the partition read (CommitFailedError). A commit here
    replaces whole partitions, so committing again gives the content a re-run would.
    After `COMMIT_ATTEMPTS` lost races, ConcurrentCommitError names the table and `what`.
    """
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        existed = table_exists(uri)
        try:
            commit(existed)
            return
        except DeltaError as lost:
            created_meanwhile = not existed and table_exists(uri)
            if not (isinstance(lost, CommitFailedError) or created_meanwhile):
                raise
            if attempt == COMMIT_ATTEMPTS:
                raise ConcurrentCommitError(
                    f"{what} of {uri}: concurrent writers committed first {COMMIT_ATTEMPTS} times "
                    f"in a row, nothing written; last conflict: {lost}"
                ) from lost
            time.sleep(random.uniform(0.05, 0.25) * attempt)


def read_partition(
    uri: str, ds: str, columns: list[str] | None = None, partition: Mapping[str, str] | None = None
) -> pa.Table:
    """Read partition `ds` of the Delta table at `uri` (empty-partition safe).

    `partition` narrows it by further partition columns, e.g. `{"teacher": "gem-fm"}`.
    """
    # to_pyarrow_dataset, not to_pyarrow_table(filters=...): in deltalake 1.6.6 the
    # latter aborts the interpreter at exit ("terminate called without an active exception").
    dataset = DeltaTable(uri).to_pyarrow_dataset()
    where = pc.field("ds") == ds
    for column, value in (partition or {}).items():
        where &= pc.field(column) == value
    return dataset.to_table(columns=columns, filter=where)


def partitions(uri: str) -> list[str]:
    """The sorted `ds` values present in the Delta table at `uri` (empty if no table)."""
    if not table_exists(uri):
        return []
    return sorted({p["ds"] for p in DeltaTable(uri).partitions()})


def partition_row_counts(uri: str) -> dict[str, int]:
    """Rows per `ds` partition (sorted by ds) from the Delta log's file stats.

    No data is read, except that a partition with a file lacking a row count in the
    log is counted from its Parquet footers. Empty if there is no table.
    """
    if not table_exists(uri):
        return {}
    table = DeltaTable(uri)
    actions = pa.table(table.get_add_actions(flatten=True))
    counts: dict[str, int] = {}
    unknown: set[str] = set()
    for ds, rows in zip(
        actions.column("partition.ds").to_pylist(), actions.column("num_records").to_pylist(), strict=True
    ):
        counts[ds] = counts.get(ds, 0) + (rows or 0)
        if rows is None:
            unknown.add(ds)
    if unknown:
        dataset = table.to_pyarrow_dataset()
        counts.update({ds: dataset.count_rows(filter=pc.field("ds") == ds) for ds in unknown})
    return dict(sorted(counts.items()))


def table_version(uri: str) -> int:
    """The current version of the Delta table at `uri`."""
    return DeltaTable(uri).version()


# --- Spark output committed with delta-rs -------------------------------------------
# Spark computes, delta-rs commits: executors write Parquet files (exact Arrow schema)
# straight into the partition directory under a per-commit token, the driver collects
# only their metadata and commits them as partition `ds` in one transaction. Files of
# a failed commit (or of a failed task attempt) are never referenced, and are deleted.

_FILE_INFO_DDL = "path string, size long, rows long, stats string"

BatchTransform = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


@dataclass(frozen=True)
class PartitionCommit:
    """What `commit_spark_partition` committed: table version, rows and files of the partition."""

    version: int
    rows: int
    files: int


@dataclass(frozen=True)
class WrittenPartition:
    """Files written for one partition and not committed yet: what a pre-commit check sees."""

    uri: str
    paths: tuple[str, ...]  # relative to `uri`
    rows: int
    schema: pa.Schema  # the files' schema (partition columns excluded)

    def read(self) -> pa.Table:
        """All rows of the written files (an empty table if none)."""
        fs, root = pafs.FileSystem.from_uri(self.uri)
        if not self.paths:
            return self.schema.empty_table()
        return pq.read_table([f"{root}/{p}" for p in self.paths], filesystem=fs, schema=self.schema)


def read_spark_partition(spark: SparkSession, uri: str, ds: str, schema: pa.Schema) -> DataFrame:
    """Partition `ds` of the Delta table at `uri` as a Spark DataFrame with `schema`.

    Reads only the partition's live files (the directory also holds replaced ones);
    an absent table or partition gives an empty frame.
    """
    from infra.spark import read_parquet_files

    files = DeltaTable(uri).file_uris(file_pruning_predicate=[("ds", "=", ds)]) if table_exists(uri) else []
    return read_parquet_files(spark, uri, files, schema)


def commit_spark_partition(
    df: DataFrame,
    uri: str,
    ds: str,
    schema: pa.Schema,
    *,
    partition: Mapping[str, str] | None = None,
    before_commit: Callable[[WrittenPartition], None] | None = None,
    transform: BatchTransform | None = None,
) -> PartitionCommit:
    """Replace partition `ds` (and `partition`'s values) of the Delta table at `uri` with `df`, in one commit.

    The table is partitioned by `ds` and then by the keys of `partition` (e.g.
    `{"teacher": "gem-fm"}` replaces exactly `ds=<ds>/teacher=gem-fm`). `df` needs
    `schema`'s columns except the partition columns (their values come from the
    arguments, whatever the frame holds). With `transform`, `df` holds the
    transform's input instead and the rows written are what it yields for each Spark
    partition's Arrow batches, in the same Python worker as the writer: computed rows
    (a model's outputs) cross the JVM once, not twice. Creates the table on first write. Each
    Spark partition of `df` becomes at most one file; nothing but file metadata
    reaches the driver. `before_commit` sees the written, uncommitted files and may
    raise to abort. On any failure the table is left as it was and the files
    written so far are deleted (a task still running when a failed job is cancelled
    may land its file later: never referenced, invisible to readers, and removed by
    `vacuum`).
    """
    values = {"ds": ds, **(partition or {})}
    for key, value in values.items():
        if not value or any(c in value for c in "/=%\\ "):
            raise ValueError(f"partition value {key}={value!r} must be non-empty, without / = % or spaces")
    fs, root = pafs.FileSystem.from_uri(uri)
    part_dir = "/".join(f"{k}={v}" for k, v in values.items())
    token = uuid.uuid4().hex
    file_schema = pa.schema([f for f in schema if f.name not in values])
    write = _partition_file_writer(uri, part_dir, token, file_schema, transform)
    committed: set[str] = set()
    try:
        source = df if transform is not None else df.select(*file_schema.names)
        infos = source.mapInArrow(write, _FILE_INFO_DDL).collect()
        if before_commit is not None:
            paths = tuple(sorted(i.path for i in infos))
            before_commit(WrittenPartition(uri, paths, sum(i.rows for i in infos), file_schema))
        now_ms = int(time.time() * 1000)
        actions = [AddAction(i.path, i.size, values, now_ms, True, i.stats) for i in infos]
        _commit_partition(uri, schema, actions, values)
        committed = {i.path for i in infos}
    finally:
        _remove_uncommitted(fs, root, part_dir, token, committed)
    return PartitionCommit(table_version(uri), sum(i.rows for i in infos), len(infos))


def _commit_partition(uri: str, schema: pa.Schema, actions: list[AddAction], values: dict[str, str]) -> None:
    """One commit: create the table with `actions`, or overwrite the partition `values` with them."""
    partition_by = list(values)
    where = ", ".join(f"{k}={v}" for k, v in values.items())

    def commit(exists: bool) -> None:
        if not exists:
            create_table_with_add_actions(uri, Schema.from_arrow(schema), actions, partition_by=partition_by)
            return
        table = DeltaTable(uri)
        existing = pa.schema(table.schema().to_arrow()).names
        if existing != schema.names:
            raise ValueError(f"Delta table {uri} has columns {existing}, the data has {schema.names}")
        if (columns := list(table.metadata().partition_columns)) != partition_by:
            raise ValueError(f"Delta table {uri} is partitioned by {columns}, not {partition_by}")
        table.create_write_transaction(
            actions,
            mode="overwrite",
            schema=schema,
            partition_by=partition_by,
            partition_filters=[(k, "=", v) for k, v in values.items()],
        )

    commit_with_retries(uri, f"partition {where}", commit)


def _partition_file_writer(
    uri: str, part_dir: str, token: str, file_schema: pa.Schema, transform: BatchTransform | None
) -> BatchTransform:
    """The mapInArrow function: write a task's batches (through `transform`) to one file, yield its info."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        # Attempt number in the name: a retried task never overwrites a file in use.
        name = f"part-{ctx.partitionId():05d}-{token}-a{ctx.attemptNumber()}.parquet"
        rel_path = f"{part_dir}/{name}"
        fs, root = pafs.FileSystem.from_uri(uri)
        writer, stats = None, _FileStats(file_schema)
        for batch in batches if transform is None else transform(batches):
            # Spark's Arrow types differ in nullability and list field names: cast back.
            table = pa.Table.from_batches([batch]).select(file_schema.names).cast(file_schema)
            if writer is None:
                fs.create_dir(f"{root}/{part_dir}", recursive=True)
                writer = pq.ParquetWriter(f"{root}/{rel_path}", file_schema, filesystem=fs)
            writer.write_table(table)
            stats.update(table)
        if writer is None:
            return
        writer.close()
        size = fs.get_file_info(f"{root}/{rel_path}").size
        yield pa.RecordBatch.from_pylist(
            [{"path": rel_path, "size": size, "rows": stats.rows, "stats": stats.to_json()}]
        )

    return write


class _FileStats:
    """Delta file statistics: numRecords, and nullCount/min/max of flat int and string columns.

    Timestamps and floats get none (Delta truncates timestamp stats to ms, which a
    wrong rounding would turn into wrong file skipping); missing stats only mean
    a reader cannot skip the file.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.columns = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_string(f.type)]
        self.rows = 0
        self.nulls: dict[str, int] = dict.fromkeys(self.columns, 0)
        self.min: dict[str, object] = {}
        self.max: dict[str, object] = {}

    def update(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for name in self.columns:
            column = table.column(name)
            self.nulls[name] += column.null_count
            bounds = pc.min_max(column).as_py()
            if bounds["min"] is None:
                continue
            self.min[name] = min(bounds["min"], self.min.get(name, bounds["min"]))
            self.max[name] = max(bounds["max"], self.max.get(name, bounds["max"]))

    def to_json(self) -> str:
        stats = {
            "numRecords": self.rows,
            "minValues": self.min,
            "maxValues": self.max,
            "nullCount": self.nulls,
        }
        return json.dumps(stats)


def _remove_uncommitted(
    fs: pafs.FileSystem, root: str, part_dir: str, token: str, committed: set[str]
) -> None:
    """Delete files under `root/part_dir` written under `token` that the table does not reference."""
    selector = pafs.FileSelector(f"{root}/{part_dir}", allow_not_found=True)
    for info in fs.get_file_info(selector):
        if token in info.base_name and f"{part_dir}/{info.base_name}" not in committed:
            fs.delete_file(info.path)
