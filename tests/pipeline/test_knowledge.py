"""Teacher knowledge with Spark: the leakage rule, parity with PyTorch, idempotence,
validation refusing corrupted outputs, and the same job on a multi-process cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from deltalake import DeltaTable

from infra import delta, registry
from infra.output_validation import TeacherOutputsInvalid
from infra.schema import EXAMPLES_SCHEMA
from infra.settings import Settings
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.fm_release import register_fm
from pipeline.knowledge import (
    KnowledgeConfig,
    NoEligibleTeacherError,
    TeacherLeakageError,
    commit_outputs,
    generate_teacher_knowledge,
    outputs_transform,
    resolve_teacher,
)
from pipeline.train_fm import FMTrainingConfig, train_fm
from teacher.features import table_to_features
from teacher.train import TrainConfig

D0, D1, D2, D3 = "2025-12-31", "2026-01-01", "2026-01-02", "2026-01-03"
REPO = Path(__file__).resolve().parents[2]
FM = "gem-fm"
CONFIG = KnowledgeConfig(batch_size=97)  # not a divisor of anything: ragged last batches


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, as_examples, with_histories) -> Settings:
    """A lake with examples of D1..D3 and gem-fm v1 (through D1, champion) and v2 (through D2)."""
    root = tmp_path_factory.mktemp("knowledge")
    settings = Settings(lake=str(root / "lake"), mlflow_uri=f"sqlite:///{root}/mlflow.db", fm_size="tiny")
    world = SyntheticWorld(WorldConfig(seed=5, events_per_day=1_500, n_users=200))
    for i, ds in enumerate((D1, D2, D3)):
        examples = with_histories(as_examples(world.day_table(ds)), seed=i)
        delta.overwrite_partition(settings.table_uri("examples"), examples, ds)
    train = FMTrainingConfig(size="tiny", train=TrainConfig(batch_size=256))
    for ds in (D1, D2):
        train_fm(settings, ds, train)
        register_fm(settings, ds)
    registry.set_alias(settings, registry.ModelRef(FM, 1, ""))
    registry.set_version_tags(settings, registry.ModelRef(FM, 1, ""), {"gate": "passed"}, on_run=False)
    yield settings
    mlflow.set_tracking_uri(None)


def partition_rows(settings: Settings, ds: str, teacher: str = FM) -> list[dict]:
    table = delta.read_partition(settings.table_uri("teacher_outputs"), ds)
    rows = [r for r in table.to_pylist() if r["teacher"] == teacher]
    return sorted(rows, key=lambda r: r["example_id"])


def test_the_leakage_rule(settings: Settings) -> None:
    def version(ds: str, **kwargs) -> int:
        return resolve_teacher(settings, FM, ds, **kwargs).ref.version

    assert version(D2) == 1, "by default the champion as of ds, trained through ds-1"
    assert version(D3, version=2) == 2
    assert version(D3, delay_days=1) == 1, "a delay of k days: the version trained through ds-1-k"
    assert version(D3, alias="champion") == 1
    with pytest.raises(
        TeacherLeakageError, match=r"models:/gem-fm/1 was trained through 2026-01-01.*ds=2026-01-01"
    ):
        resolve_teacher(settings, FM, D1, alias="champion")
    with pytest.raises(NoEligibleTeacherError, match="passed the gate trained through 2025-12-31 or earlier"):
        resolve_teacher(settings, FM, D1)
    with pytest.raises(TeacherLeakageError, match=r"gem-fm/2 was trained through 2026-01-02.*ds=2026-01-02"):
        resolve_teacher(settings, FM, D2, version=2)
    with pytest.raises(TeacherLeakageError, match="with a delay of 1 days"):
        resolve_teacher(settings, FM, D3, delay_days=1, version=2)
    with pytest.raises(NoEligibleTeacherError, match="trained through 2025-12-31"):
        resolve_teacher(settings, FM, D2, delay_days=1)
    with pytest.raises(NoEligibleTeacherError, match="other-fm has no version that passed the gate"):
        resolve_teacher(settings, "other-fm", D2)
    with pytest.raises(NoEligibleTeacherError, match="version 9"):
        resolve_teacher(settings, FM, D3, version=9)
    with pytest.raises(TeacherLeakageError):  # the job refuses before it reads anything
        generate_teacher_knowledge(settings, FM, D2, CONFIG, version=2)


def test_a_backfill_picks_the_champion_of_its_day(settings: Settings) -> None:
    v1, v2 = registry.ModelRef(FM, 1, ""), registry.ModelRef(FM, 2, "")
    registry.set_version_tags(settings, v2, {"gate": "passed"}, on_run=False)
    registry.set_alias(settings, v2)  # the alias moves on: day 3's run promoted v2
    try:
        assert resolve_teacher(settings, FM, D3).ref.version == 2
        assert resolve_teacher(settings, FM, D2).ref.version == 1, "re-running day 2 keeps its teacher"
    finally:
        registry.set_version_tags(settings, v2, {"gate": "failed"}, on_run=False)
        registry.set_alias(settings, v1)


def test_outputs_equal_a_pytorch_forward_and_a_rerun_changes_nothing(spark, settings: Settings) -> None:
    uri = settings.table_uri("teacher_outputs")
    first = generate_teacher_knowledge(settings, FM, D2, CONFIG, spark=spark)
    other = generate_teacher_knowledge(settings, FM, D3, CONFIG, version=2, spark=spark)
    before = partition_rows(settings, D2)
    examples = delta.read_partition(settings.table_uri("examples"), D2)

    assert first["rows"] == len(before) == examples.num_rows == 1_500
    assert (first["model_uri"], first["trained_through"]) == ("models:/gem-fm/1", D1)
    assert {(r["teacher_version"], r["teacher_trained_through"]) for r in before} == {(1, D1)}

    # Parity: every row against an in-process forward of the same registered model.
    model, _ = registry.load_torch_module(settings, first["model_uri"])
    examples = examples.sort_by("example_id")
    with torch.no_grad():
        features = table_to_features(examples, model.config)
        logits, embedding = model(features).numpy(), model.embed(features).numpy()
    assert [r["example_id"] for r in before] == examples["example_id"].to_pylist()
    got = np.array([[r["logit_click"], r["logit_conversion"]] for r in before], dtype=np.float32)
    got_embedding = np.array([r["embedding"] for r in before], dtype=np.float32)
    diff = max(np.abs(got - logits).max(), np.abs(got_embedding - embedding).max())
    print(f"parity: max abs difference {diff:.3g} over {len(before)} examples")
    assert diff < 1e-5

    again = generate_teacher_knowledge(settings, FM, D2, CONFIG, spark=spark)

    assert again["version"] == other["version"] + 1 and again["rows"] == first["rows"]
    assert partition_rows(settings, D2) == before, "same content, no duplicates"
    assert len(partition_rows(settings, D3)) == other["rows"], "other partitions untouched"
    assert delta.partition_row_counts(uri) == {D2: 1_500, D3: 1_500}
    assert DeltaTable(uri).metadata().partition_columns == ["ds", "teacher"]


def test_corrupted_outputs_are_never_committed(spark, settings: Settings) -> None:
    generate_teacher_knowledge(settings, FM, D3, CONFIG, version=2, spark=spark)
    uri = settings.table_uri("teacher_outputs")
    teacher = resolve_teacher(settings, FM, D3, version=2)
    model, _ = registry.load_torch_module(settings, teacher.ref.uri)
    examples = delta.read_spark_partition(spark, settings.table_uri("examples"), D3, EXAMPLES_SCHEMA)
    transform, payload = outputs_transform(spark, teacher, model, CONFIG.batch_size)
    first_id = sorted(r["example_id"] for r in partition_rows(settings, D3))[0]

    def corrupted(batches):
        """The teacher's outputs with a NaN click logit on one example."""
        for batch in transform(batches):
            hit = pc.equal(batch.column("example_id"), first_id)
            logits = pc.if_else(hit, pa.scalar(float("nan"), pa.float32()), batch.column("logit_click"))
            yield batch.set_column(batch.schema.get_field_index("logit_click"), "logit_click", logits)

    state = (delta.table_version(uri), partition_rows(settings, D3), _parquet_files(uri))

    with pytest.raises(TeacherOutputsInvalid, match=r"logit_click_not_nan \(1 of 1500 rows\)"):
        commit_outputs(examples, corrupted, uri, D3, teacher, 1_500, model.config.embed_dim)
    with pytest.raises(TeacherOutputsInvalid, match="1500 teacher outputs written for 1501 examples"):
        commit_outputs(examples, transform, uri, D3, teacher, 1_501, model.config.embed_dim)
    payload.destroy()

    assert (delta.table_version(uri), partition_rows(settings, D3), _parquet_files(uri)) == state


@pytest.mark.slow
def test_the_cli_on_a_local_cluster_writes_the_same_table(spark, settings: Settings) -> None:
    generate_teacher_knowledge(settings, FM, D2, CONFIG, spark=spark)
    local = partition_rows(settings, D2)
    version = delta.table_version(settings.table_uri("teacher_outputs"))
    env = {
        **os.environ,
        "DISTILLERY_SPARK_MASTER": "local-cluster[2,1,1024]",
        "DISTILLERY_LAKE": settings.lake,
        "DISTILLERY_MLFLOW_URI": settings.mlflow_uri,
        "DISTILLERY_FM_SIZE": "tiny",
        "DISTILLERY_KNOWLEDGE_BATCH_SIZE": "200",
    }
    command = [str(Path(sys.executable).with_name("distillery")), "knowledge", "--teacher", FM, "--ds", D2]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert '"rows": 1500' in done.stdout
    assert delta.table_version(settings.table_uri("teacher_outputs")) == version + 1
    cluster = partition_rows(settings, D2)
    assert [r["example_id"] for r in cluster] == [r["example_id"] for r in local]
    for a, b in zip(cluster, local, strict=True):
        assert abs(a["logit_click"] - b["logit_click"]) < 1e-5
        assert np.abs(np.subtract(a["embedding"], b["embedding"])).max() < 1e-5


def _parquet_files(uri: str) -> set[str]:
    return {str(p.relative_to(uri)) for p in Path(uri).rglob("*.parquet")}
