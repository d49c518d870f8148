"""Settings: embedded defaults, `DISTILLERY_*` overrides, clear errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings


def test_defaults_are_local_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.lake == str(tmp_path / "lake")
    assert settings.mlflow_uri == f"sqlite:///{tmp_path}/mlruns.db"
    assert settings.spark_master == "local[*]"
    assert settings.table_uri("events") == str(tmp_path / "lake" / "events")


def test_environment_overrides_with_types() -> None:
    settings = Settings.from_env(
        {"DISTILLERY_LAKE": "s3://bucket/lake", "DISTILLERY_SEED": "11", "DISTILLERY_MAX_BAD_SHARE": "0.2"}
    )
    assert settings.lake == "s3://bucket/lake"
    assert settings.table_uri("examples") == "s3://bucket/lake/examples"
    assert settings.seed == 11 and settings.max_bad_share == 0.2


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DISTILLERY_SEED", "seven", "DISTILLERY_SEED='seven' is not a valid int"),
        ("DISTILLERY_SOURCE", "kafka", "DISTILLERY_SOURCE must be 'synthetic' or 'files'"),
        ("DISTILLERY_MAX_BAD_SHARE", "1.5", "DISTILLERY_MAX_BAD_SHARE must be in [0, 1]"),
        ("DISTILLERY_TEACHER_DELAY_DAYS", "-1", "DISTILLERY_TEACHER_DELAY_DAYS must be >= 0"),
        ("DISTILLERY_KNOWLEDGE_BATCH_SIZE", "0", "DISTILLERY_KNOWLEDGE_BATCH_SIZE must be >= 1"),
        ("DISTILLERY_TRANSFER_PATH", "sideways", "DISTILLERY_TRANSFER_PATH must be one of"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Settings.from_env({variable: value})


def test_artifact_root_is_under_the_lake_as_a_uri(tmp_path: Path) -> None:
    assert Settings(lake=str(tmp_path)).artifact_root() == (tmp_path / "mlartifacts").as_uri()
    assert Settings(lake="s3://bucket/lake/").artifact_root() == "s3://bucket/lake/mlartifacts"
