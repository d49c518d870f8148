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

from infra.schema import EXAMPLES_SCHEMA
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


@pytest.fixture(scope="session")
def registry_models() -> Iterator[ModuleType]:
    """`tests/registry_models.py`, importable by the dotted paths stored with each test model."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parent))
        yield importlib.import_module("registry_models")
