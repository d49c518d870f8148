"""The FM chain: warm start by date, determinism, gaps refused, registry round trip, the gate."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from infra import registry
from infra.checkpoints import checkpoint_uri, load_checkpoint, save_checkpoint
from infra.delta import overwrite_partition, read_partition
from infra.settings import Settings
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.cli import describe_models
from pipeline.evaluate_fm import LeakageError, evaluate_on_day
from pipeline.fm_release import gate_fm, register_fm
from pipeline.gate import GateConfig
from pipeline.train_fm import FMTrainingConfig, MissingCheckpointError, load_fm, train_fm
from teacher.features import table_to_features
from teacher.train import TrainConfig, predict_logits

D1, D2, D3 = "2026-01-01", "2026-01-02", "2026-01-03"
CONFIG = FMTrainingConfig(size="tiny", train=TrainConfig(batch_size=128, learning_rate=3e-3))
# A tiny model after one small day is barely better than the base rate: the test's
# absolute bound is loose; the relative check against the champion is the real one here.
GATE = GateConfig(max_ne=1.2, max_relative_regression=0.01)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, as_examples) -> Settings:
    root = tmp_path_factory.mktemp("fm")
    settings = Settings(lake=str(root / "lake"), mlflow_uri=f"sqlite:///{root}/mlflow.db", fm_size="tiny")
    world = SyntheticWorld(WorldConfig(seed=2, events_per_day=4_000, n_users=300))
    for ds in (D1, D2, D3):
        overwrite_partition(settings.table_uri("examples"), as_examples(world.day_table(ds)), ds)
    yield settings
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def trained(settings: Settings) -> dict[str, dict]:
    return {ds: train_fm(settings, ds, CONFIG) for ds in (D1, D2)}


def _weights(uri: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(uri)["model"]


def test_chain_warm_starts_by_date(settings: Settings, trained: dict) -> None:
    assert trained[D1]["parent"] is None
    assert trained[D2]["parent"] == checkpoint_uri(settings.lake, "gem-fm", D1)
    assert trained[D2]["examples"] == 4_000
    first, second = _weights(trained[D1]["checkpoint"]), _weights(trained[D2]["checkpoint"])
    assert any(not torch.equal(first[k], second[k]) for k in first), "day 2 learned something"


def test_rerunning_a_day_gives_the_same_weights(settings: Settings, trained: dict) -> None:
    before = _weights(trained[D2]["checkpoint"])
    again = train_fm(settings, D2, CONFIG)
    after = _weights(again["checkpoint"])
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_gap_in_the_chain_is_refused(settings: Settings, trained: dict) -> None:
    with pytest.raises(MissingCheckpointError, match="trained through 2026-01-04"):
        train_fm(settings, "2026-01-05", CONFIG)


def test_evaluation_refuses_the_training_day(settings: Settings, trained: dict) -> None:
    model, _ = load_fm(trained[D1]["checkpoint"])
    with pytest.raises(LeakageError, match="trained through 2026-01-01 cannot be evaluated on 2026-01-01"):
        evaluate_on_day(model, D1, settings.table_uri("examples"), D1)
    metrics = evaluate_on_day(model, D1, settings.table_uri("examples"), D2)
    assert {"click/ne", "click/auc", "click/calibration", "click/ne/facebook_feed"} <= set(metrics)


def test_register_gate_and_load_the_champion(settings: Settings, trained: dict) -> None:
    ref = register_fm(settings, D1)
    assert register_fm(settings, D1) == ref, "registering the same model twice is skipped"
    tags = registry.version_tags(settings, registry.ModelRef("gem-fm", ref["version"], ""))
    assert tags["trained_through"] == D1 and tags["examples_version"] == str(trained[D1]["examples_version"])
    assert {"config_hash", "git_sha", "checkpoint"} <= set(tags)

    verdict = gate_fm(settings, D2, GATE)
    assert verdict["passed"], verdict["reasons"]
    assert registry.champion(settings, "gem-fm").version == ref["version"]
    listing = describe_models(settings)
    assert listing[0].startswith("models:/gem-fm/1") and listing[0].endswith("gate=passed  @champion")

    rows = read_partition(settings.table_uri("examples"), D2).slice(0, 300)
    loaded = mlflow.pyfunc.load_model("models:/gem-fm@champion").predict(rows.to_pandas())
    model, _ = load_fm(trained[D1]["checkpoint"])
    expected = predict_logits(model, table_to_features(rows, model.config)).numpy()
    assert np.array_equal(np.asarray(loaded), expected)


def test_the_gate_refuses_a_worse_model(settings: Settings, trained: dict) -> None:
    register_fm(settings, D1)
    gate_fm(settings, D2, GATE)
    champion_before = registry.champion(settings, "gem-fm")
    # Sabotage day 2's model: every head predicts a click rate near 1.
    checkpoint = load_checkpoint(trained[D2]["checkpoint"])
    checkpoint["model"]["heads.bias"] = torch.full_like(checkpoint["model"]["heads.bias"], 6.0)
    save_checkpoint(trained[D2]["checkpoint"], checkpoint)
    worse = register_fm(settings, D2)

    verdict = gate_fm(settings, D3, GATE)
    assert not verdict["passed"]
    assert any("click/ne" in reason for reason in verdict["reasons"])
    assert registry.champion(settings, "gem-fm") == champion_before
    tags = registry.version_tags(settings, registry.ModelRef("gem-fm", worse["version"], ""))
    assert tags["gate"] == "failed"
