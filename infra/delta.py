"""Delta table I/O through delta-rs: every write replaces exactly one partition.

Tables live at `Settings.table_uri(name)`; any delta-rs URI works (local path,
s3://, abfss://). All tables here are partitioned by `ds` (YYYY-MM-DD string).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake


def table_exists(uri: str) -> bool:
    """True when a Delta table is committed at `uri`."""
    return DeltaTable.is_deltatable(uri)


def overwrite_partition(uri: str, data: pa.Table, ds: str) -> int:
    """Replace partition `ds` of the Delta table at `uri` with `data` in one commit.

    Creates the table (partitioned by `ds`) on first write. Every row of `data`
    must carry `ds`; a re-run with the same data leaves the same table content.
    Returns the committed table version.
    """
    if data.num_rows and set(data.column("ds").unique().to_pylist()) != {ds}:
        raise ValueError(f"rows written to {uri} for ds={ds} carry other ds values")
    if table_exists(uri):
        write_deltalake(uri, data, mode="overwrite", predicate=f"ds = '{ds}'")
    else:
        write_deltalake(uri, data, mode="overwrite", partition_by=["ds"])
    return DeltaTable(uri).version()


def read_partition(uri: str, ds: str, columns: list[str] | None = None) -> pa.Table:
    """Read partition `ds` of the Delta table at `uri` (empty-partition safe)."""
    # to_pyarrow_dataset, not to_pyarrow_table(filters=...): in deltalake 1.6.6 the
    # latter aborts the interpreter at exit ("terminate called without an active exception").
    dataset = DeltaTable(uri).to_pyarrow_dataset()
    return dataset.to_table(columns=columns, filter=pc.field("ds") == ds)


def partitions(uri: str) -> list[str]:
    """The sorted `ds` values present in the Delta table at `uri` (empty if no table)."""
    if not table_exists(uri):
        return []
    return sorted({p["ds"] for p in DeltaTable(uri).partitions()})


def table_version(uri: str) -> int:
    """The current version of the Delta table at `uri`."""
    return DeltaTable(uri).version()
