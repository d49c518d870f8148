"""Delta partition I/O: delta-rs overwrites, and Spark output committed by delta-rs."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from infra import delta

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("ds", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("flag", pa.int8(), nullable=False),
        pa.field("seq", pa.list_(pa.float32()), nullable=False),
        pa.field("codes", pa.list_(pa.int8()), nullable=False),
    ]
)


def rows(ds: str, n: int, offset: int = 0) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"id": f"{ds}-{i}", "ds": ds, "n": i + offset, "flag": i % 2, "seq": [0.5] * i, "codes": [i % 3]}
            for i in range(n)
        ],
        schema=SCHEMA,
    )


def sorted_rows(uri: str, ds: str) -> list[dict]:
    return sorted(delta.read_partition(uri, ds).to_pylist(), key=lambda r: r["id"])


def parquet_files(uri: str) -> set[str]:
    """Every Parquet file under the table root, live or not, relative to it."""
    root = Path(uri)
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet")}


def live_files(uri: str) -> set[str]:
    return {os.path.relpath(f, uri) for f in DeltaTable(uri).file_uris()}


def test_overwrite_partition_is_idempotent_and_keeps_other_partitions(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.overwrite_partition(uri, rows("2026-01-01", 3), "2026-01-01")
    delta.overwrite_partition(uri, rows("2026-01-02", 4), "2026-01-02")
    first = sorted_rows(uri, "2026-01-02")

    version = delta.overwrite_partition(uri, rows("2026-01-02", 4), "2026-01-02")

    assert version == delta.table_version(uri) == 2
    assert sorted_rows(uri, "2026-01-02") == first
    assert len(sorted_rows(uri, "2026-01-01")) == 3
    assert delta.partitions(uri) == ["2026-01-01", "2026-01-02"]
    assert delta.partition_row_counts(uri) == {"2026-01-01": 3, "2026-01-02": 4}
    assert delta.partition_row_counts(str(tmp_path / "absent")) == {}
    with pytest.raises(ValueError, match="other ds"):
        delta.overwrite_partition(uri, rows("2026-01-03", 1), "2026-01-02")


def test_commit_spark_partition_creates_replaces_and_keeps_the_arrow_schema(spark, tmp_path: Path) -> None:
    from infra.spark import spark_schema

    uri = str(tmp_path / "t")
    day1, day2 = rows("2026-01-01", 5), rows("2026-01-02", 7)
    frame = spark.createDataFrame(day1.to_pylist(), spark_schema(SCHEMA)).repartition(3)

    first = delta.commit_spark_partition(frame, uri, "2026-01-01", SCHEMA)

    assert (first.version, first.rows) == (0, 5)
    assert pa.schema(DeltaTable(uri).schema().to_arrow()).types == SCHEMA.types  # int8, float32 lists
    assert sorted_rows(uri, "2026-01-01") == day1.to_pylist()

    delta.commit_spark_partition(
        spark.createDataFrame(day2.to_pylist(), spark_schema(SCHEMA)), uri, "2026-01-02", SCHEMA
    )
    replaced = rows("2026-01-01", 2, offset=100)
    frame = spark.createDataFrame(replaced.to_pylist(), spark_schema(SCHEMA))
    again = delta.commit_spark_partition(frame, uri, "2026-01-01", SCHEMA)

    assert (again.version, again.rows) == (2, 2)
    assert sorted_rows(uri, "2026-01-01") == replaced.to_pylist()
    assert sorted_rows(uri, "2026-01-02") == day2.to_pylist()
    assert delta.partition_row_counts(uri) == {"2026-01-01": 2, "2026-01-02": 7}  # from our stats
    back = delta.read_spark_partition(spark, uri, "2026-01-01", SCHEMA)  # live files only
    assert sorted(r.n for r in back.collect()) == [100, 101]


def tenfold(batches):
    """A writer transform: (id, n) batches -> SCHEMA rows with n * 10, in the writer's worker."""
    for batch in batches:
        ids, ns = batch.column("id").to_pylist(), batch.column("n").to_pylist()
        if -1 in ns:
            raise ValueError("n = -1 is not allowed")
        yield pa.RecordBatch.from_pylist(
            [
                {"id": i, "n": n * 10, "flag": 1, "seq": [float(n)], "codes": []}
                for i, n in zip(ids, ns, strict=True)
            ],
            pa.schema([f for f in SCHEMA if f.name != "ds"]),
        )


def test_a_transform_computes_the_rows_in_the_writer(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    inputs = spark.createDataFrame([(f"k{i}", i) for i in range(6)], "id string, n long").repartition(2)

    written = delta.commit_spark_partition(inputs, uri, "2026-01-01", SCHEMA, transform=tenfold)

    assert (written.rows, written.files) == (6, 2)
    assert sorted_rows(uri, "2026-01-01") == [
        {"id": f"k{i}", "ds": "2026-01-01", "n": 10 * i, "flag": 1, "seq": [float(i)], "codes": []}
        for i in range(6)
    ]
    before = (delta.table_version(uri), sorted_rows(uri, "2026-01-01"), parquet_files(uri))
    failing = spark.createDataFrame([("a", 1), ("b", -1)], "id string, n long").repartition(2, "id")
    with pytest.raises(Exception, match="n = -1 is not allowed"):
        delta.commit_spark_partition(failing, uri, "2026-01-01", SCHEMA, transform=tenfold)
    assert (delta.table_version(uri), sorted_rows(uri, "2026-01-01"), parquet_files(uri)) == before


def test_a_failed_commit_leaves_the_table_and_no_files(spark, tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    from infra.spark import spark_schema

    uri = str(tmp_path / "t")
    frame = spark.createDataFrame(rows("2026-01-01", 4).to_pylist(), spark_schema(SCHEMA))
    delta.commit_spark_partition(frame, uri, "2026-01-01", SCHEMA)
    before = (delta.table_version(uri), sorted_rows(uri, "2026-01-01"), parquet_files(uri))

    # One Spark partition writes its file, the other fails (a null in a non-null column).
    broken = frame.repartition(2, "id").withColumn("n", F.when(F.col("n") == 3, None).otherwise(F.col("n")))
    with pytest.raises(Exception, match="non-nullable"):
        delta.commit_spark_partition(broken, uri, "2026-01-01", SCHEMA)

    assert (delta.table_version(uri), sorted_rows(uri, "2026-01-01"), parquet_files(uri)) == before
    assert parquet_files(uri) == live_files(uri)


def test_an_empty_frame_empties_the_partition(spark, tmp_path: Path) -> None:
    from infra.spark import spark_schema

    uri = str(tmp_path / "t")
    frame = spark.createDataFrame(rows("2026-01-01", 3).to_pylist(), spark_schema(SCHEMA))
    delta.commit_spark_partition(frame, uri, "2026-01-01", SCHEMA)

    empty = delta.commit_spark_partition(
        spark.createDataFrame([], spark_schema(SCHEMA)), uri, "2026-01-01", SCHEMA
    )

    assert (empty.rows, empty.files) == (0, 0)
    assert delta.read_partition(uri, "2026-01-01").num_rows == 0
    assert delta.partition_row_counts(uri) == {}


KEYED = pa.schema([*SCHEMA, pa.field("key", pa.string(), nullable=False)])


def keyed_frame(spark, ds: str, n: int, offset: int = 0):
    from infra.spark import spark_schema

    table = rows(ds, n, offset).append_column("key", pa.array(["ignored"] * n))
    return spark.createDataFrame(table.to_pylist(), spark_schema(KEYED)).repartition(2)


def test_a_two_level_partition_is_replaced_alone(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    for key in ("a", "b"):
        delta.commit_spark_partition(
            keyed_frame(spark, "2026-01-01", 3), uri, "2026-01-01", KEYED, partition={"key": key}
        )

    again = delta.commit_spark_partition(
        keyed_frame(spark, "2026-01-01", 2, offset=10), uri, "2026-01-01", KEYED, partition={"key": "a"}
    )

    assert (again.version, again.rows) == (2, 2)
    table = delta.read_partition(uri, "2026-01-01")
    by_key = {k: sorted(r["n"] for r in table.to_pylist() if r["key"] == k) for k in ("a", "b")}
    assert by_key == {"a": [10, 11], "b": [0, 1, 2]}
    assert DeltaTable(uri).metadata().partition_columns == ["ds", "key"]
    live_a = {p for p in live_files(uri) if p.startswith("ds=2026-01-01/key=a/")}
    assert len(live_a) == again.files and len(live_files(uri)) == again.files + 2
    assert delta.partition_row_counts(uri) == {"2026-01-01": 5}
    with pytest.raises(ValueError, match="partitioned by"):
        delta.commit_spark_partition(keyed_frame(spark, "2026-01-01", 1), uri, "2026-01-01", KEYED)


def test_delete_partition_removes_one_two_level_partition_and_keeps_the_rest(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    for ds in ("2026-01-01", "2026-01-02"):
        for key in ("a", "b"):
            delta.commit_spark_partition(keyed_frame(spark, ds, 2), uri, ds, KEYED, partition={"key": key})

    before = DeltaTable(uri).version()
    version = delta.delete_partition(uri, "2026-01-01", {"key": "a"})

    assert version == before + 1 == DeltaTable(uri).version(), "one commit"
    kept = delta.read_partition(uri, "2026-01-01").to_pylist()
    assert {r["key"] for r in kept} == {"b"} and len(kept) == 2
    assert len(delta.read_partition(uri, "2026-01-02")) == 4, "the other day stands"
    assert len(delta.read_partition(uri, "2026-01-01", partition={"key": "a"})) == 0
    delta.delete_partition(uri, "2026-01-03", {"key": "a"})  # nothing to remove
    assert delta.partition_row_counts(uri) == {"2026-01-01": 2, "2026-01-02": 4}


def test_a_refusing_pre_commit_check_leaves_the_table_and_no_files(spark, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.commit_spark_partition(
        keyed_frame(spark, "2026-01-01", 3), uri, "2026-01-01", KEYED, partition={"key": "a"}
    )
    before = (delta.table_version(uri), parquet_files(uri))
    seen: list[pa.Table] = []

    def refuse(written: delta.WrittenPartition) -> None:
        assert written.rows == 4
        seen.append(written.read())
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        delta.commit_spark_partition(
            keyed_frame(spark, "2026-01-01", 4),
            uri,
            "2026-01-01",
            KEYED,
            partition={"key": "a"},
            before_commit=refuse,
        )

    assert seen[0].num_rows == 4 and not {"ds", "key"} & set(seen[0].column_names)
    assert (delta.table_version(uri), parquet_files(uri)) == before
