"""Delta writes under faults: a writer killed mid-way, concurrent writers, commit races.

Killed writers run in child processes that SIGKILL themselves at a chosen point
(deterministic): with data files written and no commit yet. Readers must see the
previous partition exactly, and the re-run must land with no leftover file counted.
Concurrent writers start together at a file barrier and must all land.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from infra import delta

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("ds", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
    ]
)
D1, D2, D3 = "2026-01-01", "2026-01-02", "2026-01-03"

CHILD_PRELUDE = """
import os, signal, sys, time
from pathlib import Path

import pyarrow as pa

from infra import delta

SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("ds", pa.string(), nullable=False),
    pa.field("n", pa.int64(), nullable=False),
])


def rows(ds, n, offset):
    return pa.table({"id": [f"{ds}-{i}" for i in range(n)], "ds": [ds] * n,
                     "n": list(range(offset, offset + n))}, schema=SCHEMA)


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def barrier(folder, name, parties):
    Path(folder, name).touch()
    while len(list(Path(folder).iterdir())) < parties:
        time.sleep(0.001)
"""

# delta-rs streams the rows in and writes files as it goes: after 4 of 8 batches, wait
# until its first data file is on disk, then die.
KILLED_DELTA_RS_WRITE = """
uri, ds = sys.argv[1], sys.argv[2]
real_write = delta.write_deltalake


def write_then_die(uri, data, **kwargs):
    before = set(Path(uri).rglob("*.parquet"))

    def batches():
        for i, batch in enumerate(data.to_batches(max_chunksize=data.num_rows // 8)):
            if i == 4:
                deadline = time.monotonic() + 30
                while set(Path(uri).rglob("*.parquet")) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                die()
            yield batch

    reader = pa.RecordBatchReader.from_batches(data.schema, batches())
    real_write(uri, reader, target_file_size=50_000, **kwargs)


delta.write_deltalake = write_then_die
delta.overwrite_partition(uri, rows(ds, 40_000, 1_000), ds)
"""

CONCURRENT_WRITER = """
uri, ds, folder = sys.argv[1], sys.argv[2], sys.argv[3]
table = rows(ds, 50, 0)
barrier(folder, ds, 2)
delta.overwrite_partition(uri, table, ds)
"""


def rows(ds: str, n: int, offset: int = 0) -> pa.Table:
    return pa.table(
        {"id": [f"{ds}-{i}" for i in range(n)], "ds": [ds] * n, "n": list(range(offset, offset + n))},
        schema=SCHEMA,
    )


def start(code: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + code, *args], env=env, stderr=subprocess.PIPE, text=True
    )


def parquet_files(uri: str) -> set[str]:
    return {str(p.relative_to(uri)) for p in Path(uri).rglob("*.parquet")}


def live_files(uri: str) -> set[str]:
    return {os.path.relpath(f, uri) for f in DeltaTable(uri).file_uris()}


def snapshot(uri: str) -> tuple[int, list[dict], dict[str, int]]:
    """Version, the rows of D2 by id, rows per day: what readers see."""
    day = sorted(delta.read_partition(uri, D2).to_pylist(), key=lambda r: r["id"])
    return delta.table_version(uri), day, delta.partition_row_counts(uri)


def test_a_delta_rs_write_killed_mid_way_leaves_the_previous_partition(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.overwrite_partition(uri, rows(D1, 3), D1)
    delta.overwrite_partition(uri, rows(D2, 5), D2)
    before, files_before = snapshot(uri), parquet_files(uri)

    killed = start(KILLED_DELTA_RS_WRITE, uri, D2)
    assert killed.wait(timeout=120) == -signal.SIGKILL, killed.stderr.read()

    orphans = parquet_files(uri) - files_before
    assert orphans, "killed with data files written"
    assert snapshot(uri) == before, "readers see the previous partition exactly"
    assert not orphans & live_files(uri)

    delta.overwrite_partition(uri, rows(D2, 7, 100), D2)
    version, day, counts = snapshot(uri)
    assert version == before[0] + 1
    assert sorted(r["n"] for r in day) == list(range(100, 107))
    assert counts == {D1: 3, D2: 7}, "the killed writer's files are not counted"
    assert DeltaTable(uri).to_pyarrow_dataset().count_rows() == 10


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["creating", "existing"])
def test_concurrent_writers_of_different_days_both_land(tmp_path: Path, existing: bool) -> None:
    for trial in range(3):
        uri, folder = str(tmp_path / f"t{trial}"), tmp_path / f"barrier{trial}"
        folder.mkdir()
        if existing:
            delta.overwrite_partition(uri, rows(D1, 3), D1)
        writers = [start(CONCURRENT_WRITER, uri, ds, str(folder)) for ds in (D2, D3)]
        for writer in writers:
            assert writer.wait(timeout=120) == 0, writer.stderr.read()
        expected = {D1: 3} if existing else {}
        assert delta.partition_row_counts(uri) == {**expected, D2: 50, D3: 50}, f"trial {trial}"
        assert parquet_files(uri) == live_files(uri)


def _write_from(table: DeltaTable, ds: str, n: int) -> None:
    write_deltalake(table, rows(ds, n), mode="overwrite", predicate=f"ds = '{ds}'")


def test_a_lost_commit_race_is_committed_again_on_the_new_table(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.overwrite_partition(uri, rows(D2, 3), D2)
    stale = DeltaTable(uri)  # what a writer read before another one committed
    delta.overwrite_partition(uri, rows(D2, 4), D2)
    attempts: list[bool] = []

    def commit(exists: bool) -> None:
        attempts.append(exists)
        _write_from(stale if len(attempts) == 1 else DeltaTable(uri), D2, 6)

    delta.commit_with_retries(uri, f"partition ds={D2}", commit)

    assert attempts == [True, True]
    assert delta.partition_row_counts(uri) == {D2: 6}


def test_commit_races_lost_every_time_end_in_a_clear_error(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.overwrite_partition(uri, rows(D2, 3), D2)
    stale = DeltaTable(uri)
    delta.overwrite_partition(uri, rows(D2, 4), D2)

    with pytest.raises(delta.ConcurrentCommitError, match=rf"partition ds={D2} of {uri}: .* 5 times"):
        delta.commit_with_retries(uri, f"partition ds={D2}", lambda _: _write_from(stale, D2, 6))

    assert delta.partition_row_counts(uri) == {D2: 4}


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    delta.overwrite_partition(uri, rows(D2, 3), D2)
    attempts: list[bool] = []

    def commit(exists: bool) -> None:
        attempts.append(exists)
        bad = rows(D2, 1).append_column("extra", pa.array([1]))
        write_deltalake(uri, bad, mode="overwrite", predicate=f"ds = '{D2}'")

    with pytest.raises(Exception, match=r"(?i)schema"):
        delta.commit_with_retries(uri, "a bad schema", commit)
    assert attempts == [True]


SPARK_COMMIT_KILLED = """
from infra.settings import Settings
from infra.spark import get_spark, spark_schema

uri, ds = sys.argv[1], sys.argv[2]
spark = get_spark(Settings(spark_master="local[1]", spark_driver_memory="512m"), shuffle_partitions=1)
frame = spark.createDataFrame(rows(ds, 6, 500).to_pylist(), spark_schema(SCHEMA)).repartition(2)
delta.commit_spark_partition(frame, uri, ds, SCHEMA, before_commit=die)
"""


@pytest.mark.slow
def test_a_spark_commit_killed_before_the_commit_leaves_the_previous_partition(spark, tmp_path: Path) -> None:
    from infra.spark import spark_schema

    uri = str(tmp_path / "t")
    delta.overwrite_partition(uri, rows(D1, 3), D1)
    delta.overwrite_partition(uri, rows(D2, 5), D2)
    before, files_before = snapshot(uri), parquet_files(uri)

    killed = start(SPARK_COMMIT_KILLED, uri, D2)
    assert killed.wait(timeout=300) == -signal.SIGKILL, killed.stderr.read()[-3000:]

    orphans = parquet_files(uri) - files_before
    assert len(orphans) == 2, "both executors' files written, then killed before the commit"
    assert snapshot(uri) == before, "readers see the previous partition exactly"

    frame = spark.createDataFrame(rows(D2, 2, 100).to_pylist(), spark_schema(SCHEMA))
    rerun = delta.commit_spark_partition(frame, uri, D2, SCHEMA)
    assert (rerun.version, rerun.rows) == (before[0] + 1, 2)
    assert delta.partition_row_counts(uri) == {D1: 3, D2: 2}, "the killed writer's files are not counted"
    assert not orphans & live_files(uri)


# teacher_outputs-like: partitioned by ds, then teacher; the commit waits at the barrier.
SPARK_CONCURRENT_COMMIT = """
from infra.settings import Settings
from infra.spark import get_spark, spark_schema

uri, ds, folder = sys.argv[1], sys.argv[2], sys.argv[3]
KEYED = pa.schema([*SCHEMA, pa.field("teacher", pa.string(), nullable=False)])
spark = get_spark(Settings(spark_master="local[1]", spark_driver_memory="512m"), shuffle_partitions=1)
frame = spark.createDataFrame(rows(ds, 6, 0).to_pylist(), spark_schema(SCHEMA))
delta.commit_spark_partition(
    frame, uri, ds, KEYED, partition={"teacher": "gem-fm"}, before_commit=lambda _: barrier(folder, ds, 2)
)
"""


@pytest.mark.slow
def test_concurrent_spark_commits_of_different_days_both_land(tmp_path: Path) -> None:
    uri, folder = str(tmp_path / "teacher_outputs"), tmp_path / "barrier"
    folder.mkdir()
    writers = [start(SPARK_CONCURRENT_COMMIT, uri, ds, str(folder)) for ds in (D2, D3)]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()[-3000:]
    assert delta.partition_row_counts(uri) == {D2: 6, D3: 6}
    assert DeltaTable(uri).metadata().partition_columns == ["ds", "teacher"]
    assert parquet_files(uri) == live_files(uri)
