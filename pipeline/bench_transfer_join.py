"""`distillery bench transfer --join DIR ...`: one report from runs over disjoint datasets.

The committed setup takes about three hours on two cores, longer than one sitting (or one
machine's lease). Each dataset can be run on its own (`--datasets <name> --out DIR`) and the
runs joined here, provided they measured one setup: the same machine, the same code (the
commit each report records), the same models, and every dataset's setup equal but for its
days. The joined wall time is the runs' sum, and the report keeps each run's datasets and
wall time under `runs`. Runs may run side by side, each slowed by the others: where every run
recorded when it started and finished, the report also gives `elapsed_seconds`, from the first
start to the last finish. A joined report joins again (a dataset added to the committed report
later), its runs kept. The claims are judged again by the joining code (`judged_by`): a verdict
reads the measurements, so a rule refined after the runs applies to them without measuring again.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.settings import Settings
from pipeline.bench_transfer import write_transfer_report
from pipeline.bench_transfer_config import DATASETS

# What may differ between the datasets of one setup: the days themselves and which datasets ran.
PER_DATASET_SETUP = ("datasets", "days_list", "student_days", "evaluation_days")


def _null_as_undefined(value: Any) -> Any:
    """The inverse of the writer's NaN-as-null: JSON null back to NaN (an undefined number)."""
    if isinstance(value, dict):
        return {k: _null_as_undefined(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_null_as_undefined(v) for v in value]
    return math.nan if value is None else value


def read_run(run_dir: str) -> dict[str, Any]:
    """A run's `transfer.json`, undefined numbers as NaN; a clear error when it is missing."""
    path = Path(run_dir) / "transfer.json"
    if not path.is_file():
        raise ValueError(f"{path}: no transfer.json (is {run_dir} the --out of a `bench transfer` run?)")
    return _null_as_undefined(json.loads(path.read_text()))


def _common_setup(setup: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in setup.items() if k not in PER_DATASET_SETUP}


def join_reports(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Join reports keyed by where they came from; refuse, naming the run and the field, any two
    that did not measure one setup or that both measured a dataset."""
    if not runs:
        raise ValueError("nothing to join: give at least one run")
    (first_name, first), *_ = runs.items()
    reference = _common_setup(next(iter(first["datasets"].values()))["setup"])
    datasets: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name, report in runs.items():
        for field in ("machine", "code", "models"):
            if report.get(field) != first.get(field):
                raise ValueError(f"{name}: its {field} differs from {first_name}'s: not one setup")
        for dataset, data in report["datasets"].items():
            if dataset in datasets:
                raise ValueError(f"{name}: dataset {dataset!r} was measured by {origin[dataset]} too")
            setup = _common_setup(data["setup"])
            differing = sorted(k for k in reference.keys() | setup.keys() if reference.get(k) != setup.get(k))
            if differing:
                raise ValueError(f"{name}: dataset {dataset!r} has setup {differing} unlike {first_name}'s")
            datasets[dataset], origin[dataset] = data, name
    joined_runs = [run for name, report in runs.items() for run in _runs_of(name, report)]
    return {
        "machine": first["machine"],
        "code": first.get("code", "unrecorded"),
        "datasets": {d: datasets[d] for d in DATASETS if d in datasets},
        "models": first["models"],
        "wall_seconds": sum(report["wall_seconds"] for report in runs.values()),
        "runs": joined_runs,
    } | _elapsed(joined_runs)


def _runs_of(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs behind a report: those it was joined from, else itself (with when it ran, if recorded)."""
    own = {"from": name, "datasets": list(report["datasets"]), "wall_seconds": report["wall_seconds"]}
    own |= {k: report[k] for k in ("started", "finished") if k in report}
    return report.get("runs", [own])


def _elapsed(runs: list[dict[str, Any]]) -> dict[str, float]:
    """`elapsed_seconds` from the first run's start to the last one's finish; nothing unless every run
    recorded both."""
    if not all("started" in run and "finished" in run for run in runs):
        return {}
    first = min(datetime.fromisoformat(run["started"]) for run in runs)
    last = max(datetime.fromisoformat(run["finished"]) for run in runs)
    return {"elapsed_seconds": (last - first).total_seconds()}


def join_transfer_runs(settings: Settings, run_dirs: list[str], out_dir: str) -> dict[str, Any]:
    """Join the `transfer.json` of each run folder into one report in `out_dir` (JSON, Markdown, plots),
    its claims judged by this code, logged to MLflow as a run of its own."""
    from infra.registry import git_sha
    from pipeline.bench_transfer_claims import claims

    report = join_reports({run_dir: read_run(run_dir) for run_dir in run_dirs})
    for data in report["datasets"].values():
        data["claims"] = claims(data)
    report["judged_by"] = git_sha()
    setup = _common_setup(next(iter(report["datasets"].values()))["setup"])
    write_transfer_report(settings, report, out_dir, setup | {"joined": run_dirs})
    return report
