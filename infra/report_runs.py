"""Reports in MLflow: one run per report key, reused when the same report is logged again.

A report is identified by tags (e.g. `report=daily`, `ds=2026-01-03`). Logging it
again (a cleared task, a backfill) writes into the same run: artifacts of the same
name are replaced, metrics get a newer value, and no second run appears.
Artifacts land under `<lake>/mlartifacts/<experiment>` (`infra.registry.ensure_experiment`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import RunStatus

from infra.registry import configure_mlflow, ensure_experiment
from infra.settings import Settings


def _filter(key: Mapping[str, str]) -> str:
    for name, value in key.items():
        if "'" in value or "`" in name:
            raise ValueError(f"report key {name}={value!r}: quotes are not allowed")
    return " AND ".join(f"tags.`{name}` = '{value}'" for name, value in key.items())


def find_report_runs(settings: Settings, experiment: str, key: Mapping[str, str]) -> list[str]:
    """Ids of the active runs of `experiment` carrying every tag of `key`, oldest first."""
    client = configure_mlflow(settings)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], filter_string=_filter(key), order_by=["attributes.start_time ASC"]
    )
    return [run.info.run_id for run in runs]


def log_report_run(
    settings: Settings,
    experiment: str,
    key: Mapping[str, str],
    files: Sequence[Path],
    metrics: Mapping[str, float],
    run_name: str,
) -> str:
    """Log `files` as artifacts and `metrics` in the run of `experiment` tagged `key`; returns its id.

    Creates the run the first time; afterwards reuses the oldest run with that key.
    """
    client = configure_mlflow(settings)
    existing = find_report_runs(settings, experiment, key)
    if existing:
        run_id = existing[0]
    else:
        experiment_id = ensure_experiment(settings, experiment)
        run_id = client.create_run(experiment_id, tags=dict(key), run_name=run_name).info.run_id
    for path in files:
        client.log_artifact(run_id, str(path))
    for name, value in metrics.items():
        client.log_metric(run_id, name, float(value))
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run_id
