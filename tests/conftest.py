"""Shared fixtures: one local SparkSession for the whole test run, examples without Spark."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from infra.schema import EXAMPLES_SCHEMA, SURFACES
from infra.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """A local Spark with 2 cores and 2 shuffle partitions (tiny data, little task overhead)."""
    from infra.spark import get_spark

    session = get_spark(Settings(spark_master="local[2]"), shuffle_partitions=2)
    yield session
    session.stop()


def dag_test_settings(root: Path, start_date: str) -> Settings:
    """Settings for a few days of the whole DAG in minutes: small days, the `tiny` FM, a lake under `root`.

    A tiny model after one 3k-event day is near the base rate: the gate's bars are loose,
    so that end-to-end tests check the wiring (the gate's logic has its own tests).
    """
    return Settings(
        lake=str(root / "lake"),
        mlflow_uri=f"sqlite:///{root}/mlruns.db",
        events_per_day=3_000,
        n_users=300,
        history_length=20,
        start_date=start_date,
        fm_size="tiny",
        gate_max_ne=1.5,
        gate_max_regression=0.5,
    )


@pytest.fixture(scope="session")
def tiny_dag_settings() -> Callable[[Path, str], Settings]:
    """`dag_test_settings`, for the end-to-end DAG and services tests."""
    return dag_test_settings


def events_as_examples(events: pa.Table) -> pa.Table:
    """Events as EXAMPLES_SCHEMA rows with empty histories: examples without running Spark."""
    n = events.num_rows
    columns = {"example_id": events["event_id"]} | {
        name: events[name] for name in EXAMPLES_SCHEMA.names if name in events.column_names
    }
    columns["hist_len"] = pa.array(np.zeros(n, dtype=np.int32))
    for field in EXAMPLES_SCHEMA:
        if field.name.startswith("hist_") and field.name != "hist_len":
            columns[field.name] = pa.array([[]] * n, type=field.type)
    return pa.table(columns, schema=EXAMPLES_SCHEMA)


@pytest.fixture(scope="session")
def as_examples() -> Callable[[pa.Table], pa.Table]:
    """`events_as_examples`, for tests that need examples but not their histories."""
    return events_as_examples


def random_histories(examples: pa.Table, seed: int, max_len: int = 24) -> pa.Table:
    """`examples` with random histories of 0..max_len tokens (valid codes, not a real past)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, examples.num_rows)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    total = int(lengths.sum())
    values = {
        "hist_item_id": pa.array(rng.integers(0, 10_000, total), pa.int64()),
        "hist_category_id": pa.array(rng.integers(0, 50, total), pa.int32()),
        "hist_surface": pa.array(rng.integers(0, len(SURFACES), total), pa.int8()),
        "hist_event_type": pa.array(rng.integers(1, 6, total), pa.int8()),
        "hist_dt_s": pa.array(rng.uniform(1, 1e6, total), pa.float32()),
    }
    table = examples.set_column(
        examples.schema.get_field_index("hist_len"), "hist_len", pa.array(lengths.astype(np.int32))
    )
    for name, flat in values.items():
        table = table.set_column(
            table.schema.get_field_index(name), name, pa.ListArray.from_arrays(offsets, flat)
        )
    return table.cast(EXAMPLES_SCHEMA)


@pytest.fixture(scope="session")
def with_histories() -> Callable[..., pa.Table]:
    """`random_histories`, for model tests that need non-empty histories without Spark."""
    return random_histories


@pytest.fixture(scope="session")
def registry_models() -> Iterator[ModuleType]:
    """`tests/registry_models.py`, importable by the dotted paths stored with each test model."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parent))
        yield importlib.import_module("registry_models")
