"""`distillery bench transfer`: how much of the FM's advantage each transfer method carries into the VMs.

One temporary lake per dataset, built by the product's own steps (land, ingest,
examples; the last day is the test day). On it, with the product's functions:

1. `gem-fm` trained continually on every day but the last, each day registered;
2. for each teacher staleness k: `gem-fm`'s knowledge of every day from the version
   trained through `ds-1-k` (the Spark job, delay k);
3. for each seed: the domain FMs trained on that knowledge (for the hierarchical
   method), registered, and their knowledge of their domain; then one VM per
   (surface, method) trained over the same window of days (the days every staleness
   has knowledge for) and measured progressively, as it would serve: on the day after
   each window day by the version trained through that day, the window's last day
   being the test day. NE, AUC and calibration of the serving head's click predictions
   on its surface, pooled over those evaluation days. `alone` learns nothing from a
   teacher: it is trained once, fresh, and stands for itself at every staleness.

Transfer ratio (METHODS.md) = (NE_alone - NE_method) / (NE_alone - NE_teacher), all on
the VM's evaluation slice, NE_teacher being fresh `gem-fm`'s (k = 0) logged predictions.
The k-stale gem-fm's own logged predictions on the same slices are measured too: what
staleness costs the teacher itself (ExFM's premise), beside what it costs each VM.
Calibration over several VMs pools their clicks (predicted over observed, summed). In the
synthetic worlds every test row's true click probability is known (the one its label was drawn
with), so there calibration is also measured against the expected clicks (`true_calibration`),
free of the observed clicks' sampling noise. Beside every slice, the calibration of predicting
each evaluation day at the click rate of the day before (`label_rate`): all a served head that
learns the rate from labels alone can know of it, the floor of a VM's own calibration.
Bench students get their own registered names (`<name>.<method>.s<seed>.k<k>`), so a
bench lake never mixes variants. Writes `transfer.json`, `transfer.md` and PNG plots.

Here: a dataset's lake, the run over every dataset and the files it writes. Beside it:
`bench_transfer_config` (the committed setup), `bench_transfer_measure` (steps 1-3),
`bench_transfer_summary` (over VMs and seeds), `bench_transfer_claims` (the verdicts),
`bench_transfer_report` (Markdown, plots) and `bench_transfer_join` (one report from runs
over disjoint datasets).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.settings import Settings
from pipeline.bench_transfer_config import TransferBenchConfig
from pipeline.bench_transfer_measure import measure_dataset
from pipeline.bench_transfer_summary import summarise
from pipeline.hierarchy import FM_NAME

if TYPE_CHECKING:
    from infra.sources.synthetic import SyntheticWorld

MOVIELENS_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "recbole"


def bench_settings(settings: Settings, root: str, cfg: TransferBenchConfig) -> Settings:
    """Settings of a temporary bench lake and MLflow store under `root`."""
    return dataclasses.replace(
        settings,
        lake=f"{root}/lake",
        mlflow_uri=f"sqlite:///{root}/mlruns.db",
        events_per_day=cfg.events_per_day,
        n_users=cfg.n_users,
        history_length=cfg.history_length,
        seed=cfg.world_seed,
        fm_size=cfg.fm_size,
        source="synthetic",
    )


def drifting_world(settings: Settings, cfg: TransferBenchConfig) -> SyntheticWorld:
    """The `synthetic_drift` world: the bench's synthetic world (`settings`) moving at `cfg.fast_drift`."""
    from infra.sources.select import world_config
    from infra.sources.synthetic import SyntheticWorld

    return SyntheticWorld(dataclasses.replace(world_config(settings), **dataclasses.asdict(cfg.fast_drift)))


def run_dataset(settings: Settings, cfg: TransferBenchConfig, dataset: str) -> dict[str, Any]:
    """One dataset's measurements in a temporary lake: the synthetic world; or, written as daily event
    files and read by the `files` source as users' own logs are, the drifting world or MovieLens-100k."""
    from infra.sources.movielens import write_movielens_events
    from infra.sources.select import world_config
    from infra.sources.synthetic import SyntheticWorld, write_world_events
    from pipeline.bench_teacher import bench_days, build_lake

    with tempfile.TemporaryDirectory(prefix=f"distillery-bench-transfer-{dataset}-") as root:
        lake = bench_settings(settings, root, cfg)
        world = None  # MovieLens: no hidden truth
        if dataset == "synthetic":
            days = bench_days(lake.start_date, cfg.days)
            world = SyntheticWorld(world_config(lake))
        else:
            lake = dataclasses.replace(lake, source="files", events_dir=f"{root}/events")
            if dataset == "movielens":
                days = write_movielens_events(
                    Path(lake.events_dir), lake.start_date, MOVIELENS_CACHE, cfg.movielens_days
                )
            else:
                days = bench_days(lake.start_date, cfg.days)
                world = drifting_world(lake, cfg)
                write_world_events(world, Path(lake.events_dir), days)
        build_lake(lake, days)
        measured = measure_dataset(lake, cfg, days, world)
    summary = summarise(measured, cfg)
    summary["setup"] = dataclasses.asdict(cfg) | {
        "days_list": days,
        "student_days": cfg.student_days(days),
        "evaluation_days": cfg.evaluation_days(days),
    }
    summary["seconds"] = measured.seconds
    summary["ne_by_day"] = measured.ne_by_day
    if world is not None:  # the hidden market-wide click level the teachers' staleness missed
        summary["market_by_day"] = {ds: world.state(ds).market for ds in days}
    return summary


def run_datasets(settings: Settings, cfg: TransferBenchConfig) -> dict[str, dict[str, Any]]:
    """Every dataset's summary, one dataset after another, each with the whole machine (its own
    temporary lake and registry; torch and the Spark job both use every core). To run them side by
    side instead, run each with `--datasets` and join the runs (`pipeline.bench_transfer_join`)."""
    return {name: run_dataset(settings, cfg, name) for name in cfg.datasets}


def model_sizes(cfg: TransferBenchConfig) -> dict[str, dict[str, float]]:
    """Parameters and forward FLOPs per example of gem-fm, a domain FM and each method's VM."""
    from pipeline.train_student import DOMAIN_TRANSFER
    from students.config import METHODS, StudentConfig, student_backbone
    from students.model import Student
    from teacher.config import config_for
    from teacher.model import GemFM, count_parameters, forward_flops_per_example

    fm = config_for(cfg.fm_size)
    sizes = {
        FM_NAME: {
            "parameters": count_parameters(GemFM(fm)),
            "flops_per_example": forward_flops_per_example(fm),
        }
    }
    students = {"domain-fm": ("domain", DOMAIN_TRANSFER)} | {
        f"vm ({m})": ("vm", METHODS[m]) for m in cfg.methods
    }
    for name, (kind, transfer) in students.items():
        backbone = student_backbone(kind, fm, transfer.share)
        student = Student(StudentConfig(backbone, transfer, fm.embed_dim))
        sizes[name] = {
            "parameters": count_parameters(student),
            "flops_per_example": forward_flops_per_example(backbone),
        }
    return sizes


def run_transfer_benchmark(settings: Settings, cfg: TransferBenchConfig, out_dir: str) -> dict[str, Any]:
    """Measure every dataset, check the claims, write `transfer.json`, `transfer.md`, plots; log to MLflow."""
    import os
    import platform

    import torch

    from infra.registry import git_sha
    from pipeline.bench_transfer_claims import claims

    start, started = time.perf_counter(), _utc_now()
    datasets = run_datasets(settings, cfg)
    for data in datasets.values():
        data["claims"] = claims(data)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "code": git_sha(),  # the commit that measured it: a join refuses runs of different code
        "datasets": datasets,
        "models": model_sizes(cfg),
        "wall_seconds": time.perf_counter() - start,
        "started": started,  # UTC: a join of runs that overlapped tells their elapsed time from these
        "finished": _utc_now(),
    }
    write_transfer_report(settings, report, out_dir, dataclasses.asdict(cfg))
    return report


def _utc_now() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_transfer_report(
    settings: Settings, report: dict[str, Any], out_dir: str, params: dict[str, Any]
) -> list[Path]:
    """Write `transfer.json`, `transfer.md` and the plots into `out_dir`, log them with the headline
    numbers and `params` as one MLflow run, print the Markdown; returns the files."""
    import json

    from infra import registry
    from pipeline.bench_transfer_plots import plots
    from pipeline.bench_transfer_report import markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(_undefined_as_null(report), indent=2, allow_nan=False))
    text = markdown(report)
    (out / "transfer.md").write_text(text + "\n")
    files = [out / "transfer.json", out / "transfer.md", *plots(report, out)]
    headline = {
        f"{name}/{method}/{metric}": value
        for name, data in report["datasets"].items()
        for method, values in data["methods"].items()
        for metric, value in values.items()
        if metric in ("ne", "transfer_ratio")
    }
    registry.log_report(settings, "bench-transfer", files, headline, params)
    print(text)
    return files


def _undefined_as_null(value: Any) -> Any:
    """The report with NaN (an undefined ratio: no teacher advantage, one seed's spread) as JSON null."""
    if isinstance(value, dict):
        return {str(k): _undefined_as_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_undefined_as_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
