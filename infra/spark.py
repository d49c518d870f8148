"""The one place that builds a SparkSession.

Pipeline steps take an optional session and otherwise call `get_spark(settings)`;
an active session is reused, so a test fixture, a CLI run and an Airflow task
all share one JVM per process.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import pyarrow as pa

from infra.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

APP_NAME = "distillery"
FILE_SPLITS_PER_CORE = 4


def get_spark(settings: Settings, shuffle_partitions: int | None = None) -> SparkSession:
    """Return the active SparkSession, or build one from `settings`.

    Shuffle partitions default to 2x the local cores for `local[...]` masters (the
    200 Spark default costs seconds of task overhead on small days) and to Spark's
    own default elsewhere; `shuffle_partitions` overrides both. File reads split into
    at least 4 tasks per local core (where files are big enough): a day's examples
    are a few files of uneven size, and a forward pass per row makes the largest
    file's task the tail of the job. A reused active session keeps its own configuration.
    """
    # Must be set before the JVM starts: the machine's hostname may not resolve.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this interpreter (its venv has pyarrow, numpy, torch),
    # not whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(APP_NAME)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        # Workers run numpy/torch per task: one thread each, Spark supplies the parallelism.
        .config("spark.executorEnv.OMP_NUM_THREADS", "1")
    )
    cores = _local_cores(settings.spark_master)
    partitions = shuffle_partitions or (max(2, 2 * cores) if cores else None)
    if partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(partitions))
    if cores:
        builder = builder.config("spark.sql.files.minPartitionNum", str(FILE_SPLITS_PER_CORE * cores))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    # py4j logs every connection it closes at INFO, noisy once Airflow has configured logging.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return spark


def _local_cores(master: str) -> int | None:
    """The cores of a `local`/`local[n]`/`local[*]` master; None for any other master."""
    if master == "local":
        return 1
    if not master.startswith("local["):
        return None
    cores = master[len("local[") :].split(",")[0].rstrip("]")
    return (os.cpu_count() or 2) if cores == "*" else int(cores)


def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark StructType of an Arrow schema (tz-aware timestamps -> TimestampType)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, prefer_timestamp_ntz=False)


def read_parquet_files(spark: SparkSession, root: str, files: list[str], schema: pa.Schema) -> DataFrame:
    """Read Parquet `files` under `root` with an explicit schema (an empty frame if none).

    Partition columns (e.g. `ds`) come from the `key=value` directories under
    `root`; the caller picks the files (e.g. a Delta table's live files).
    """
    struct = spark_schema(schema)
    if not files:
        return spark.createDataFrame([], struct)
    return spark.read.schema(struct).option("basePath", root).parquet(*files)
