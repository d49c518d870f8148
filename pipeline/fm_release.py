"""Releasing the FM: register each day's model, then gate it on the day after.

`register_fm` logs the checkpoint trained through `ds` as a new version of
`gem-fm` with its lineage tags. `gate_fm`, in the run of day `ds`, measures the
version trained through `ds - 1` on day `ds` (never seen by it), re-measures the
current champion on the same day, and moves `champion` only if the gate passes.
"""

from __future__ import annotations

from typing import Any

from infra import registry
from infra.checkpoints import checkpoint_uri
from infra.settings import Settings
from pipeline.evaluate_fm import evaluate_on_day
from pipeline.fm_data import previous_day
from pipeline.gate import GateConfig, promote_if_blessed
from pipeline.train_fm import FM_NAME, load_fm
from teacher.model import count_parameters
from teacher.predict import FACTORY, PREDICTOR


def _reference(ref: registry.ModelRef, trained_through: str) -> dict[str, Any]:
    return {
        "model_uri": ref.uri,
        "name": ref.name,
        "version": ref.version,
        "trained_through": trained_through,
    }


def register_fm(settings: Settings, ds: str) -> dict[str, Any]:
    """Register the FM checkpoint trained through `ds` (skipped if this exact model is registered)."""
    uri = checkpoint_uri(settings.lake, FM_NAME, ds)
    model, checkpoint = load_fm(uri)
    config = model.config.to_dict()
    done = registry.find_trained(settings, FM_NAME, ds, config, checkpoint["examples_version"])
    if done is not None:
        return _reference(done, ds)
    ref = registry.log_and_register(
        settings,
        FM_NAME,
        model,
        config,
        FACTORY,
        PREDICTOR,
        metrics={f"train/{k}": v for k, v in checkpoint["stats"].items()},
        params={
            **checkpoint["train_config"],
            "size": model.config.name,
            "parameters": count_parameters(model),
        },
        tags={
            "trained_through": ds,
            "examples_version": str(checkpoint["examples_version"]),
            "checkpoint": uri,
            "parent_checkpoint": checkpoint["parent"] or "none (first day)",
        },
    )
    return _reference(ref, ds)


def gate_fm(settings: Settings, ds: str, config: GateConfig) -> dict[str, Any]:
    """Evaluate the FM trained through `ds - 1` on day `ds`; promote it if it beats the champion."""
    trained_through = previous_day(ds)
    candidate = registry.find_version(settings, FM_NAME, "trained_through", trained_through)
    if candidate is None:
        return {
            "ds": ds,
            "candidate": None,
            "passed": None,
            "reasons": [f"no {FM_NAME} trained through {trained_through}"],
        }
    examples_uri = settings.table_uri("examples")
    module, _ = registry.load_torch_module(settings, candidate.uri)
    metrics = evaluate_on_day(module, trained_through, examples_uri, ds)
    registry.log_run_metrics(settings, candidate, metrics)
    current = registry.champion(settings, FM_NAME)
    champion_metrics = None
    if current is not None and current.version != candidate.version:
        champion_module, _ = registry.load_torch_module(settings, current.uri)
        champion_through = registry.version_tags(settings, current)["trained_through"]
        champion_metrics = evaluate_on_day(champion_module, champion_through, examples_uri, ds)
    verdict = promote_if_blessed(settings, candidate, metrics, config, champion_metrics)
    return verdict.summary(ds, candidate, current)
