"""The quality gate: pure verdicts at the edges, and promotion on a real SQLite MLflow."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType

import pytest

from infra import registry
from infra.registry import ModelRef
from infra.settings import Settings
from pipeline.gate import GateConfig, judge, promote_if_blessed

CONFIG = GateConfig(max_ne=1.0, max_relative_regression=0.01, metric="ne")


# ---------------------------------------------------------------- judge (pure)


def test_without_champion_only_the_absolute_threshold_applies() -> None:
    verdict = judge({"ne": 0.9}, None, CONFIG)
    assert verdict.passed
    assert verdict.champion_value is None
    assert "0.9 < max_ne 1" in verdict.reasons[0]
    assert not judge({"ne": 1.2}, None, CONFIG).passed


def test_exactly_at_max_ne_fails() -> None:
    verdict = judge({"ne": 1.0}, None, CONFIG)
    assert not verdict.passed
    assert "1 is not below max_ne 1" in verdict.reasons[0]


def test_exactly_at_the_relative_bound_passes_and_just_above_fails() -> None:
    config = GateConfig(max_ne=1.0, max_relative_regression=0.5, metric="ne")
    assert judge({"ne": 0.75}, {"ne": 0.5}, config).passed  # 0.5 * 1.5 == 0.75 exactly
    above = judge({"ne": 0.7501}, {"ne": 0.5}, config)
    assert not above.passed
    assert "exceeds allowed +50.000%" in above.reasons[1]


def test_a_better_candidate_passes_both_checks() -> None:
    verdict = judge({"ne": 0.8, "auc": 0.7}, {"ne": 0.85}, CONFIG)
    assert verdict.passed
    assert (verdict.candidate_value, verdict.champion_value) == (0.8, 0.85)


def test_a_nan_candidate_fails() -> None:
    verdict = judge({"ne": math.nan}, {"ne": 0.8}, CONFIG)
    assert not verdict.passed


def test_a_champion_without_the_metric_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"champion's metrics have no 'ne' \(found: \['auc'\]\)"):
        judge({"ne": 0.8}, {"auc": 0.7}, CONFIG)
    with pytest.raises(ValueError, match="candidate's metrics have no 'ne'"):
        judge({}, None, CONFIG)
    with pytest.raises(ValueError, match="champion's ne is NaN"):
        judge({"ne": 0.8}, {"ne": math.nan}, CONFIG)


def test_the_summary_names_both_versions_the_verdict_and_the_metric() -> None:
    candidate, champion = ModelRef("gem-fm", 3, "r3"), ModelRef("gem-fm", 2, "r2")
    verdict = judge({"ne": 0.95}, {"ne": 0.9}, CONFIG)
    summary = verdict.summary("2026-01-04", candidate, champion)
    assert summary == {
        "ds": "2026-01-04",
        "candidate": "models:/gem-fm/3",
        "champion_before": "models:/gem-fm/2",
        "passed": False,
        "reasons": verdict.reasons,
        "ne": 0.95,
    }
    assert judge({"ne": 0.9}, None, CONFIG).summary("2026-01-01", candidate, None)["champion_before"] is None


# ---------------------------------------------------------------- promote_if_blessed (MLflow)


@pytest.fixture(scope="module")
def settings(registry_models: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with registry_models.sandbox(tmp_path_factory.mktemp("gate")) as sandboxed:
        yield sandboxed


def _candidate(registry_models: ModuleType, settings: Settings, name: str, ds: str, ne: float) -> ModelRef:
    config = {"n_features": 3, "seed": 0}
    return registry.log_and_register(
        settings,
        name,
        registry_models.build_linear(config),
        config,
        registry_models.FACTORY,
        registry_models.PREDICTOR,
        metrics={"ne": ne},
        params={},
        tags={"trained_through": ds, "examples_version": "1"},
        input_example=None,
    )


def test_the_gate_promotes_refuses_and_records(registry_models: ModuleType, settings: Settings) -> None:
    first = _candidate(registry_models, settings, "gem-fm", "2026-01-02", ne=0.9)
    assert promote_if_blessed(settings, first, {"ne": 0.9}, CONFIG).passed
    assert registry.champion(settings, "gem-fm") == first
    assert registry.version_tags(settings, first)["gate"] == "passed"

    worse = _candidate(registry_models, settings, "gem-fm", "2026-01-03", ne=0.95)
    verdict = promote_if_blessed(settings, worse, {"ne": 0.95}, CONFIG)
    assert not verdict.passed
    assert registry.champion(settings, "gem-fm") == first  # alias unchanged
    tags = registry.version_tags(settings, worse)
    assert tags["gate"] == "failed"
    assert "ne 0.95 vs champion 0.9: +5.556% exceeds allowed +1.000%" in tags["gate_reasons"]
    assert tags["gate_champion"].startswith("models:/gem-fm/1 (its logged metrics")
    run_tags = registry.configure_mlflow(settings).get_run(worse.run_id).data.tags
    assert (run_tags["gate"], run_tags["gate_reasons"]) == ("failed", tags["gate_reasons"])

    better = _candidate(registry_models, settings, "gem-fm", "2026-01-04", ne=0.85)
    assert promote_if_blessed(settings, better, {"ne": 0.85}, CONFIG).passed
    assert registry.champion(settings, "gem-fm") == better


def test_champion_re_evaluated_on_the_same_slice_is_the_reference(
    registry_models: ModuleType, settings: Settings
) -> None:
    first = _candidate(registry_models, settings, "vm-reels", "2026-01-02", ne=0.80)
    promote_if_blessed(settings, first, {"ne": 0.80}, CONFIG)
    # A harder day: the champion scores 0.93 on it too, so 0.935 is no real regression.
    second = _candidate(registry_models, settings, "vm-reels", "2026-01-03", ne=0.935)
    verdict = promote_if_blessed(settings, second, {"ne": 0.935}, CONFIG, champion_metrics={"ne": 0.93})
    assert verdict.passed
    assert verdict.champion_value == 0.93
    assert registry.champion(settings, "vm-reels") == second
    assert "re-evaluated" in registry.version_tags(settings, second)["gate_champion"]


def test_no_champion_and_above_max_ne_promotes_nothing(
    registry_models: ModuleType, settings: Settings
) -> None:
    bad = _candidate(registry_models, settings, "vm-stories", "2026-01-02", ne=1.05)
    verdict = promote_if_blessed(settings, bad, {"ne": 1.05}, CONFIG)
    assert not verdict.passed
    assert registry.champion(settings, "vm-stories") is None
    assert registry.version_tags(settings, bad)["gate"] == "failed"
