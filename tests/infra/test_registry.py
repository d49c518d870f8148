"""MLflow registry on SQLite under tmp_path: versions, lineage tags, lookups, exact round trip."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import mlflow
import numpy as np
import pytest
import torch

from infra import registry
from infra.registry import ModelRef
from infra.settings import Settings


@pytest.fixture(scope="module")
def settings(registry_models: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One SQLite store per module (creating its tables takes seconds); one model name per test."""
    with registry_models.sandbox(tmp_path_factory.mktemp("registry")) as sandboxed:
        yield sandboxed


def _register(
    registry_models: ModuleType, settings: Settings, name: str, ds: str, config: dict[str, Any] | None = None
) -> tuple[ModelRef, torch.nn.Module]:
    config = config or {"n_features": 3, "seed": 0}
    module = registry_models.build_linear(config)
    ref = registry.log_and_register(
        settings,
        name,
        module,
        config,
        registry_models.FACTORY,
        registry_models.PREDICTOR,
        metrics={"ne": 0.9, "auc": 0.7},
        params={"lr": 0.1, "epochs": 1},
        tags={"trained_through": ds, "examples_version": "4"},
        input_example=registry_models.example_frame(4),
    )
    return ref, module


def test_each_day_is_a_new_version_with_lineage_tags(registry_models: ModuleType, settings: Settings) -> None:
    first, _ = _register(registry_models, settings, "gem-fm", "2026-01-02")
    second, _ = _register(registry_models, settings, "gem-fm", "2026-01-03", {"n_features": 3, "seed": 1})

    assert (first.version, second.version) == (1, 2)
    assert second.uri == "models:/gem-fm/2"
    tags = registry.version_tags(settings, second)
    assert tags["trained_through"] == "2026-01-03"
    assert tags["examples_version"] == "4"
    assert tags["config_hash"] == registry.config_hash({"seed": 1, "n_features": 3})
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["git_sha"])
    run = mlflow.MlflowClient(settings.mlflow_uri).get_run(second.run_id)
    assert run.data.metrics == {"ne": 0.9, "auc": 0.7}
    assert run.data.params == {"lr": "0.1", "epochs": "1"}
    assert registry.find_version(settings, "gem-fm", "trained_through", "2026-01-02") == first
    assert registry.find_version(settings, "gem-fm", "trained_through", "2026-01-09") is None
    assert registry.find_version(settings, "no-such-model", "trained_through", "2026-01-02") is None


def test_a_rerun_is_found_and_can_be_skipped(registry_models: ModuleType, settings: Settings) -> None:
    config = {"n_features": 3, "seed": 0}
    _register(registry_models, settings, "rerun-fm", "2026-01-02", config)
    rerun, _ = _register(registry_models, settings, "rerun-fm", "2026-01-02", config)

    assert registry.find_version(settings, "rerun-fm", "trained_through", "2026-01-02") == rerun
    assert registry.find_trained(settings, "rerun-fm", "2026-01-02", config, 4) == rerun
    assert registry.find_trained(settings, "rerun-fm", "2026-01-02", config, 5) is None
    assert registry.find_trained(settings, "rerun-fm", "2026-01-02", {**config, "seed": 2}, 4) is None


def test_champion_round_trip_predicts_identically(registry_models: ModuleType, settings: Settings) -> None:
    assert registry.champion(settings, "vm-feed") is None  # no model yet
    ref, module = _register(registry_models, settings, "vm-feed", "2026-01-02")
    assert registry.champion(settings, "vm-feed") is None  # a model, no alias yet
    registry.set_alias(settings, ref)
    assert registry.champion(settings, "vm-feed") == ref

    frame = registry_models.example_frame(256, seed=3)
    served = mlflow.pyfunc.load_model("models:/vm-feed@champion").predict(frame)
    expected = registry_models.predict_linear(module.eval(), frame)
    assert served.dtype == expected.dtype
    assert np.abs(served - expected).max() == 0.0

    elsewhere = f"sqlite:///{Path(settings.lake) / 'elsewhere.db'}"  # a fresh process's default, say
    mlflow.set_tracking_uri(elsewhere)
    mlflow.set_registry_uri(elsewhere)
    loaded, config = registry.load_torch_module(settings, ref.uri)  # reads the store of `settings`
    assert config == {"n_features": 3, "seed": 0}
    assert not loaded.training
    reference = module.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(tensor, reference[key]) for key, tensor in loaded.state_dict().items())


def test_artifacts_land_under_the_lake_not_the_cwd(registry_models: ModuleType, settings: Settings) -> None:
    _register(registry_models, settings, "domain-fm-instagram", "2026-01-02")

    assert not (Path.cwd() / "mlruns").exists()
    assert list(Path.cwd().iterdir()) == []
    expected = Path(settings.lake) / "mlartifacts" / "domain-fm-instagram"
    experiment = mlflow.MlflowClient(settings.mlflow_uri).get_experiment_by_name("domain-fm-instagram")
    assert experiment.artifact_location == expected.as_uri()
    stored = list(expected.rglob("state_dict.pt"))
    assert len(stored) == 1


def test_a_bad_dotted_path_fails_before_any_run(registry_models: ModuleType, settings: Settings) -> None:
    module = registry_models.build_linear({"n_features": 3})
    with pytest.raises(ValueError, match=r"package\.module:function"):
        registry.log_and_register(
            settings,
            "broken",
            module,
            {},
            "registry_models.build_linear",
            registry_models.PREDICTOR,
            {},
            {},
            {},
        )
    assert mlflow.MlflowClient(settings.mlflow_uri).get_experiment_by_name("broken") is None


def test_config_hash_ignores_key_order() -> None:
    assert registry.config_hash({"a": 1, "b": [1, 2]}) == registry.config_hash({"b": [1, 2], "a": 1})
    assert registry.config_hash({"a": 1}) != registry.config_hash({"a": 2})
