"""The run report: NE by day of every model, VMs against their teachers, teacher staleness, rows per day.

Reads:  the MLflow registry (`infra.registry`): for evaluation day d, the version of each
        model trained through d-1 and the metrics its gate logged on its run (`click/ne`,
        and `click/ne/<surface>` per surface); students' version tags `teacher` and
        `teacher_trained_through`; the Delta tables' row counts per `ds` partition.
Writes: `report.md` and three PNG plots into a folder (`write_report`); the daily run
        logs them to MLflow (`log_report`), the CLI to a folder of the user's choice.

A day without a measurement (no version trained through d-1, or not gated on d) is
None here, "—" in the Markdown and a gap in the plots: never zero.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import registry
from infra.assets import REPORT_EXPERIMENT
from infra.days import shift_day
from infra.delta import partition_row_counts
from infra.settings import Settings
from pipeline.hierarchy import all_students
from pipeline.report_plots import plot_series_by_day
from pipeline.train_fm import FM_NAME

METRIC = "click/ne"  # the gate's metric: click NE over the model's own surfaces
REPORT_TABLES = ("events", "quarantine", "examples", "teacher_outputs")
PLOTS = ("ne_by_day.png", "ne_gain_share.png", "staleness.png")
MISSING = "—"


@dataclass(frozen=True)
class ReportConfig:
    """A report logged for a day `ds`: the `window_days` days ending at it, under the name `kind`."""

    kind: str = "daily"
    window_days: int = 7
    experiment: str = REPORT_EXPERIMENT

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise ValueError(f"window_days must be at least 1, got {self.window_days}")


DAILY = ReportConfig()  # the daily DAG's `report` task
RECENT = ReportConfig(kind="recent", window_days=28)  # the asset-triggered `distillery_report` DAG


@dataclass(frozen=True)
class RunReport:
    """The numbers of one report over `days`; every inner dict is keyed by day (None: not measured)."""

    days: tuple[str, ...]
    models: tuple[str, ...]
    ne: dict[str, dict[str, float | None]]  # model -> evaluation day -> click NE
    teachers: dict[str, dict[str, str | None]]  # VM -> evaluation day -> its teacher's name
    teacher_ne: dict[str, dict[str, float | None]]  # VM -> day -> teacher's NE on the VM's surface
    gain_share: dict[str, dict[str, float | None]]  # VM -> day -> (1 - NE_vm) / (1 - NE_teacher)
    staleness: dict[str, dict[str, int | None]]  # student -> training day -> ds - teacher_trained_through
    rows: dict[str, dict[str, int | None]]  # table -> day -> rows


def report_days(start: str, end: str) -> tuple[str, ...]:
    """Every day from `start` to `end` inclusive; a clear error for a reversed or malformed range."""
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as err:
        raise ValueError(f"report range must be YYYY-MM-DD days, got from={start!r} to={end!r}") from err
    if first > last:
        raise ValueError(f"report range is empty: from={start} is after to={end}")
    return tuple((first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1))


def gain_share(vm_ne: float | None, teacher_ne: float | None) -> float | None:
    """(1 - NE_vm) / (1 - NE_teacher): the VM's NE gain over the base rate as a share of its teacher's.

    None when either is missing or the teacher does not beat the base-rate predictor (NE >= 1).
    """
    if vm_ne is None or teacher_ne is None or not teacher_ne < 1.0:
        return None
    return (1.0 - vm_ne) / (1.0 - teacher_ne)


class _Versions:
    """Registry lookups of one report, each (model, trained_through) fetched once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._seen: dict[tuple[str, str], tuple[dict[str, str], dict[str, float]] | None] = {}

    def trained_through(self, name: str, day: str) -> tuple[dict[str, str], dict[str, float]] | None:
        """(version tags, run metrics) of the newest version of `name` trained through `day`, or None."""
        if (name, day) not in self._seen:
            ref = registry.find_version(self.settings, name, "trained_through", day)
            self._seen[name, day] = (
                None
                if ref is None
                else (registry.version_tags(self.settings, ref), registry.run_metrics(self.settings, ref))
            )
        return self._seen[name, day]

    def ne_on(self, name: str, day: str, metric: str = METRIC) -> float | None:
        """`metric` of `name` measured on `day` (the version trained through the day before)."""
        found = self.trained_through(name, shift_day(day, -1))
        value = None if found is None else found[1].get(metric)
        return None if value is None or not math.isfinite(value) else float(value)


def _staleness(tags: dict[str, str], day: str) -> int | None:
    teacher_day = tags.get("teacher_trained_through")
    if not teacher_day:
        return None
    return (dt.date.fromisoformat(day) - dt.date.fromisoformat(teacher_day)).days


def collect_report(settings: Settings, start: str, end: str) -> RunReport:
    """The report's numbers for the days `start`..`end`, from the registry and the lake."""
    days = report_days(start, end)
    students = all_students(settings.transfer_path)
    models = (FM_NAME, *(spec.name for spec in students))
    versions = _Versions(settings)
    ne = {name: {day: versions.ne_on(name, day) for day in days} for name in models}
    teachers: dict[str, dict[str, str | None]] = {}
    teacher_ne: dict[str, dict[str, float | None]] = {}
    shares: dict[str, dict[str, float | None]] = {}
    for spec in (s for s in students if s.kind == "vm"):
        teachers[spec.name], teacher_ne[spec.name], shares[spec.name] = {}, {}, {}
        for day in days:
            evaluated = versions.trained_through(spec.name, shift_day(day, -1))
            teacher = (evaluated[0].get("teacher", "").split("/")[0] or None) if evaluated else None
            value = None if teacher is None else versions.ne_on(teacher, day, f"{METRIC}/{spec.surfaces[0]}")
            teachers[spec.name][day], teacher_ne[spec.name][day] = teacher, value
            shares[spec.name][day] = gain_share(ne[spec.name][day], value)
    staleness: dict[str, dict[str, int | None]] = {}
    for spec in students:
        trained = {day: versions.trained_through(spec.name, day) for day in days}
        staleness[spec.name] = {day: found and _staleness(found[0], day) for day, found in trained.items()}
    rows = {}
    for table in REPORT_TABLES:
        counts = partition_row_counts(settings.table_uri(table))
        rows[table] = {day: counts.get(day) for day in days}
    return RunReport(days, models, ne, teachers, teacher_ne, shares, staleness, rows)


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return MISSING
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _share_cell(report: RunReport, vm: str, day: str) -> str | None:
    vm_ne, teacher_ne = report.ne[vm][day], report.teacher_ne[vm][day]
    if vm_ne is None and teacher_ne is None:
        return None
    return f"{_cell(report.gain_share[vm][day], 3)} ({_cell(vm_ne)} vs {_cell(teacher_ne)})"


def _by_day_table(days: tuple[str, ...], columns: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A Markdown table: one row per day, one column per name of `columns`."""
    return [
        "| day | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *(f"| {day} | " + " | ".join(_cell(c[day]) for c in columns.values()) + " |" for day in days),
        "",
    ]


def markdown(report: RunReport, title: str) -> str:
    """The report as Markdown: four tables (days as rows) and the plots beside it."""
    lines = [
        f"# {title}",
        "",
        f"Days {report.days[0]} to {report.days[-1]}. `{MISSING}` means not measured that day "
        "(the model did not exist yet, was not gated on that day, or its step was skipped); "
        "it is never a zero.",
        "",
        f"## NE by day (`{METRIC}`, progressive validation)",
        "",
        "On day d, each model's version trained through d-1 is measured on day d, which it never saw "
        "(the gate's evaluation, on the model's own surfaces; 1.0 = the base-rate predictor, "
        "lower is better).",
        "",
        *_by_day_table(report.days, report.ne),
        "![NE by day](ne_by_day.png)",
        "",
        "## VMs against their teachers",
        "",
        "The transfer ratio `(NE_alone - NE_VM) / (NE_alone - NE_teacher)` needs the VM trained alone, "
        "which the daily pipeline does not train (`distillery bench transfer` measures it). "
        "Shown instead, per VM and day: the **NE gain share** `(1 - NE_VM) / (1 - NE_teacher)`, the "
        "base-rate predictor (NE 1.0) standing in for the VM alone; both NEs on the VM's surface on the "
        "same day, the teacher being the model named in the VM's `teacher` tag, measured progressively too. "
        "1.0: the VM gains over the base rate as much as its teacher. Undefined when the teacher does not "
        "beat the base rate.",
        "",
    ]
    teachers = {vm: next((t for t in days.values() if t), MISSING) for vm, days in report.teachers.items()}
    lines += [
        "Teachers: " + ", ".join(f"{vm} ← {teacher}" for vm, teacher in teachers.items()) + ". "
        "Each cell: NE gain share (VM NE vs teacher NE).",
        "",
    ]
    shares = {vm: {day: _share_cell(report, vm, day) for day in report.days} for vm in report.gain_share}
    lines += _by_day_table(report.days, shares)
    lines += [
        "![NE gain share](ne_gain_share.png)",
        "",
        "## Teacher staleness (days)",
        "",
        "For the version of each student trained on day d: d minus the last day its teacher had "
        "learned (`teacher_trained_through`); 1 is the freshest teacher the no-leakage rule allows.",
        "",
        *_by_day_table(report.days, report.staleness),
        "![Teacher staleness](staleness.png)",
        "",
        "## Rows per day",
        "",
        f"From the Delta logs; `{MISSING}`: the table has no partition for that day "
        "(for `quarantine`, also a day without a rejected row).",
        "",
        *_by_day_table(report.days, report.rows),
    ]
    return "\n".join(lines)


def write_report(report: RunReport, out: Path, title: str) -> list[Path]:
    """Write `report.md` and the plots `PLOTS` into `out` (created); returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    markdown_file = out / "report.md"
    markdown_file.write_text(markdown(report, title) + "\n")
    ne_plot, share_plot, staleness_plot = (out / name for name in PLOTS)
    return [
        markdown_file,
        plot_series_by_day(report.ne, report.days, "click NE (lower is better)", "NE by day", ne_plot),
        plot_series_by_day(
            report.gain_share, report.days, "(1 - NE_VM) / (1 - NE_teacher)", "VMs' NE gain share", share_plot
        ),
        plot_series_by_day(
            report.staleness, report.days, "ds - teacher_trained_through", "Teacher staleness", staleness_plot
        ),
    ]


def write_range_report(settings: Settings, start: str, end: str, out: Path) -> list[Path]:
    """Collect and write the report of `start`..`end` into the folder `out`; returns the files."""
    report = collect_report(settings, start, end)
    return write_report(report, out, f"distillery report {start} to {end}")


def _headline(report: RunReport) -> dict[str, float]:
    """The last day's NE per model and gain share per VM, as MLflow metrics (measured ones only)."""
    day = report.days[-1]
    values = {f"ne/{name}": by_day[day] for name, by_day in report.ne.items()}
    values |= {f"ne_gain_share/{name}": by_day[day] for name, by_day in report.gain_share.items()}
    return {name: value for name, value in values.items() if value is not None}


def log_report(settings: Settings, ds: str, config: ReportConfig) -> dict[str, Any]:
    """Log the report of the `config.window_days` days ending at `ds` (not before the start date).

    Logs `report.md` and the plots in the MLflow run of `config.experiment` tagged
    `report=<kind>, ds=<ds>` (reused on a re-run: a day never gets two runs), and tags every
    model version trained through `ds` with `<kind>_report` (that run's report.md).
    """
    from infra.report_runs import log_report_run

    start = max(shift_day(ds, 1 - config.window_days), settings.start_date)
    report = collect_report(settings, start, ds)
    key = {"report": config.kind, "ds": ds}
    with tempfile.TemporaryDirectory() as work:
        files = write_report(report, Path(work), f"distillery {config.kind} report {ds}")
        run_id = log_report_run(
            settings, config.experiment, key, files, _headline(report), run_name=f"{config.kind}-{ds}"
        )
    link = f"runs:/{run_id}/report.md"
    tagged = []
    for name in report.models:
        ref = registry.find_version(settings, name, "trained_through", ds)
        if ref is not None:
            registry.set_version_tags(settings, ref, {f"{config.kind}_report": link}, on_run=False)
            tagged.append(ref.uri)
    return {"ds": ds, "from": start, "run_id": run_id, "report": link, "models": tagged}
