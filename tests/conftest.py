"""Shared fixtures: one local SparkSession for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

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
