"""Generate a teacher's knowledge for one day with Spark: Delta `teacher_outputs`.

Reads:  Delta `examples` partition `ds` (EXAMPLES_SCHEMA); the registered teacher
        (`models:/<name>/<version>`, chosen by `resolve_teacher`).
Writes: Delta `teacher_outputs` partition (`ds`, teacher) (TEACHER_OUTPUTS_SCHEMA), in one
        commit that replaces exactly that partition, after a row count and the GX suite
        (`infra.output_validation`) passed on the written files.

Leakage rule (ExFM's logged teacher outputs): the teacher used for day `ds` was
trained only on days before it. With a delay of k days the teacher is the one
trained through `ds-1-k`; with k = 0 it is the champion as of `ds`: the newest
version that passed the gate and was trained through `ds-1` or earlier (what the
`champion` alias pointed at when day `ds` ran, so backfills reproduce it). An
explicit version or alias must be trained through a day strictly before `ds-k`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from infra import delta, registry
from infra.days import shift_day
from infra.schema import EXAMPLES_SCHEMA, TEACHER_OUTPUTS_SCHEMA
from infra.settings import Settings
from teacher.knowledge import TeacherIdentity, state_to_bytes

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

    from teacher.model import GemFM

TABLE = "teacher_outputs"


class TeacherLeakageError(ValueError):
    """The requested teacher was trained on data of `ds` or later (or of the delay window)."""


class NoEligibleTeacherError(LookupError):
    """No registered teacher satisfies the request (e.g. the first day: nothing trained before it)."""


class MissingExamplesError(RuntimeError):
    """The day has no `examples` partition: build it first."""


@dataclass(frozen=True)
class KnowledgeConfig:
    """How knowledge is generated: the teacher's delay in days and the forward-pass batch size."""

    delay_days: int = 0
    batch_size: int = 1_024

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeConfig:
        """`DISTILLERY_TEACHER_DELAY_DAYS` and `DISTILLERY_KNOWLEDGE_BATCH_SIZE`."""
        return cls(delay_days=settings.teacher_delay_days, batch_size=settings.knowledge_batch_size)


@dataclass(frozen=True)
class ResolvedTeacher:
    """A registered teacher version and the last day of its training data."""

    ref: registry.ModelRef
    trained_through: str

    @property
    def identity(self) -> TeacherIdentity:
        """Name, version and trained-through day: what a knowledge row records of its teacher."""
        return TeacherIdentity(self.ref.name, self.ref.version, self.trained_through)


def champion_as_of(settings: Settings, name: str, cutoff: str) -> registry.ModelRef | None:
    """The newest version that passed the gate and was trained through `cutoff` or earlier.

    That is the champion the run of `cutoff + 1` left behind (gates run in date order),
    so a re-run or a backfill of an old day picks the teacher the first run picked,
    even after the `champion` alias has moved on.
    """
    passed = registry.find_versions(settings, name, {"gate": "passed"})
    eligible = [
        (trained_through, ref.version, ref)
        for ref in passed
        if (trained_through := registry.version_tags(settings, ref)["trained_through"]) <= cutoff
    ]
    return max(eligible)[2] if eligible else None


def _requested(
    settings: Settings, name: str, cutoff: str, delay_days: int, version: int | None, alias: str | None
) -> registry.ModelRef:
    """The version the request names, or by default the one the delay selects."""
    if version is not None:
        found, what = registry.get_version(settings, name, version), f"version {version}"
    elif alias is not None:
        found, what = registry.alias_version(settings, name, alias), f"alias {alias!r}"
    elif delay_days > 0:
        found = registry.find_version(settings, name, "trained_through", cutoff)
        what = f"version trained through {cutoff}"
    else:
        found = champion_as_of(settings, name, cutoff)
        what = f"version that passed the gate trained through {cutoff} or earlier"
    if found is None:
        raise NoEligibleTeacherError(f"no eligible teacher: {name} has no {what}")
    return found


def resolve_teacher(
    settings: Settings,
    name: str,
    ds: str,
    delay_days: int = 0,
    version: int | None = None,
    alias: str | None = None,
) -> ResolvedTeacher:
    """The teacher for day `ds` under the leakage rule (see the module docstring).

    Raises NoEligibleTeacherError when nothing matches the request, and
    TeacherLeakageError when the match was trained on `ds - delay_days` or later.
    """
    if delay_days < 0:
        raise ValueError(f"delay_days must be >= 0, got {delay_days}")
    if version is not None and alias is not None:
        raise ValueError("give a version or an alias, not both")
    cutoff = shift_day(ds, -1 - delay_days)  # the last day the teacher may have trained on
    ref = _requested(settings, name, cutoff, delay_days, version, alias)
    trained_through = registry.version_tags(settings, ref).get("trained_through")
    if trained_through is None:
        raise TeacherLeakageError(f"{ref.uri} has no trained_through tag: its training data is unknown")
    if trained_through > cutoff:
        delay = f" with a delay of {delay_days} days" if delay_days else ""
        horizon = shift_day(ds, -delay_days)
        raise TeacherLeakageError(
            f"leakage: {ref.uri} was trained through {trained_through}, but knowledge for ds={ds}{delay} "
            f"needs a teacher trained through {cutoff} or earlier (strictly before {horizon})"
        )
    return ResolvedTeacher(ref, trained_through)


def outputs_transform(
    spark: SparkSession, teacher: ResolvedTeacher, model: GemFM, batch_size: int
) -> tuple[delta.BatchTransform, Broadcast]:
    """The forward pass as a writer's batch transform, and the broadcast weights to destroy after use.

    The transform maps examples batches to teacher_outputs batches in a Python worker.
    """
    payload = spark.sparkContext.broadcast({"config": model.config.to_dict(), "state": state_to_bytes(model)})
    identity = teacher.identity
    # Keyed by a token of this job too: Python workers outlive jobs, and another lake's
    # registry (a test, a benchmark) may hold a different model under the same name and version.
    key = (identity.name, identity.version, uuid.uuid4().hex)

    def outputs(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import torch

        from teacher import knowledge

        # Spark runs one task per core: a torch thread pool per worker would oversubscribe them.
        torch.set_num_threads(1)
        # Built from the broadcast: the closure carries the payload, key and identity, never `model`.
        built = knowledge.cached_model(key, lambda: (payload.value["config"], payload.value["state"]))
        for batch in batches:
            yield knowledge.teacher_outputs(built, batch, identity, batch_size)

    return outputs, payload


def commit_outputs(
    examples: DataFrame,
    transform: delta.BatchTransform,
    uri: str,
    ds: str,
    teacher: ResolvedTeacher,
    expected_rows: int,
    embed_dim: int,
) -> delta.PartitionCommit:
    """Run `transform` over `examples`; commit its rows as partition (ds, teacher.name) once checks pass.

    The forward pass runs inside the writer's tasks (one pass over the examples, the
    outputs written where they are computed). Before the commit: the written rows must
    number `expected_rows` (the day's examples) and pass the GX suite; otherwise
    TeacherOutputsInvalid and nothing changes.
    """
    from infra.output_validation import TeacherOutputsInvalid, check_teacher_outputs

    def check(written: delta.WrittenPartition) -> None:
        if written.rows != expected_rows:
            raise TeacherOutputsInvalid(
                f"{written.rows} teacher outputs written for {expected_rows} examples of {ds}: not committed"
            )
        check_teacher_outputs(written.read(), embed_dim, teacher.ref.version, teacher.trained_through)

    return delta.commit_spark_partition(
        examples,
        uri,
        ds,
        TEACHER_OUTPUTS_SCHEMA,
        partition={"teacher": teacher.ref.name},
        before_commit=check,
        transform=transform,
    )


def _row_count(examples_uri: str, ds: str, surfaces: tuple[str, ...] | None) -> int:
    """Examples of day `ds`, of `surfaces` only when given."""
    if surfaces is None:
        return delta.partition_row_counts(examples_uri)[ds]
    column = delta.read_partition(examples_uri, ds, ["surface"])["surface"]
    return int(pc.sum(pc.is_in(column, value_set=pa.array(surfaces, pa.string()))).as_py() or 0)


def generate_teacher_knowledge(
    settings: Settings,
    name: str,
    ds: str,
    config: KnowledgeConfig,
    version: int | None = None,
    alias: str | None = None,
    spark: SparkSession | None = None,
    surfaces: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Replace partition (`ds`, `name`) of `teacher_outputs` with the teacher's outputs on day `ds`.

    `surfaces` limits the examples to those surfaces (a domain FM teaches its own domain's
    VMs only). The teacher is a registered `GemFM`, or a student without representation
    inputs (a domain FM: its backbone runs). Returns references: the table URI, the
    partition, the teacher's model URI and training day, the rows and the table version.
    """
    from pyspark.sql import functions as F

    from infra.spark import get_spark
    from pipeline.train_student import teacher_backbone

    teacher = resolve_teacher(settings, name, ds, config.delay_days, version, alias)
    examples_uri, uri = settings.table_uri("examples"), settings.table_uri(TABLE)
    if ds not in delta.partition_row_counts(examples_uri):
        raise MissingExamplesError(f"no examples for {ds} in {examples_uri}: build them first")
    expected = _row_count(examples_uri, ds, surfaces)
    module, _ = registry.load_torch_module(settings, teacher.ref.uri)
    model = teacher_backbone(module)
    spark = spark or get_spark(settings)
    examples = delta.read_spark_partition(spark, examples_uri, ds, EXAMPLES_SCHEMA)
    if surfaces is not None:
        examples = examples.where(F.col("surface").isin(list(surfaces)))
    transform, payload = outputs_transform(spark, teacher, model, config.batch_size)
    try:
        written = commit_outputs(examples, transform, uri, ds, teacher, expected, model.config.embed_dim)
    finally:
        payload.destroy()
    return {
        "teacher_outputs": uri,
        "ds": ds,
        "teacher": name,
        "model_uri": teacher.ref.uri,
        "teacher_version": teacher.ref.version,
        "trained_through": teacher.trained_through,
        "delay_days": config.delay_days,
        "surfaces": list(surfaces) if surfaces is not None else "all",
        "rows": written.rows,
        "version": written.version,
    }


def generate_domain_knowledge(
    settings: Settings, domain: str, ds: str, config: KnowledgeConfig, spark: SparkSession | None = None
) -> dict[str, Any]:
    """The domain FM's knowledge of its domain's examples on `ds`: partition (`ds`, `domain-fm-<domain>`)."""
    from pipeline.hierarchy import domain_fm

    spec = domain_fm(domain)
    return generate_teacher_knowledge(settings, spec.name, ds, config, spark=spark, surfaces=spec.surfaces)
