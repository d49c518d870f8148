"""The `distillery` command line: the DAG's steps without Airflow, the demo and the benchmarks.

Settings come from `DISTILLERY_*` environment variables (see `infra.settings`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence

from infra.schema import SURFACES
from infra.settings import Settings

TABLES = ("events", "quarantine", "examples", "user_state", "teacher_outputs")


def _day(value: str) -> str:
    """argparse type for `--ds`: a YYYY-MM-DD date, returned in that form."""
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--ds must be YYYY-MM-DD, got {value!r}") from err


def ingest(settings: Settings, ds: str) -> dict:
    """Generate or import day `ds` into the landing zone, then validate and ingest it."""
    from pipeline.ingest import ingest_events, land_events

    landing_uri = land_events(settings, ds)
    return ingest_events(settings, ds, landing_uri, run_id=f"cli__{ds}__{uuid.uuid4().hex[:8]}")


def examples(settings: Settings, ds: str) -> dict:
    """Build the `examples` partition for `ds` with Spark."""
    from pipeline.examples import build_examples

    return build_examples(settings, ds)


def foundation_model(settings: Settings, ds: str) -> dict:
    """The DAG's FM tasks for `ds`: gate the FM of `ds-1` on `ds`, then train and register `ds`."""
    from pipeline.fm_release import gate_fm, register_fm
    from pipeline.gate import GateConfig
    from pipeline.train_fm import FMTrainingConfig, train_fm

    verdict = gate_fm(settings, ds, GateConfig.from_settings(settings))
    trained = train_fm(settings, ds, FMTrainingConfig.from_settings(settings))
    return {"gate": verdict, "trained": trained, "registered": register_fm(settings, ds)}


def knowledge(
    settings: Settings,
    ds: str,
    teacher: str = "gem-fm",
    delay_days: int | None = None,
    version: int | None = None,
    alias: str | None = None,
    skip_without_teacher: bool = False,
) -> dict:
    """Generate the teacher's `teacher_outputs` partition for `ds` with Spark.

    The delay defaults to `DISTILLERY_TEACHER_DELAY_DAYS`. With `skip_without_teacher`
    (the `day` command, as the DAG does), no eligible teacher is a skip, not an error.
    """
    from pipeline.knowledge import KnowledgeConfig, NoEligibleTeacherError, generate_teacher_knowledge

    config = KnowledgeConfig.from_settings(settings)
    if delay_days is not None:
        config = dataclasses.replace(config, delay_days=delay_days)
    try:
        return generate_teacher_knowledge(settings, teacher, ds, config, version=version, alias=alias)
    except NoEligibleTeacherError as none:
        if not skip_without_teacher:
            raise
        return {"ds": ds, "teacher": teacher, "skipped": str(none)}


def distill(settings: Settings, name: str, ds: str, skip_without_knowledge: bool = False) -> dict:
    """The DAG's student tasks for `name` on `ds`: gate its version of `ds-1`, then train and register `ds`.

    With `skip_without_knowledge` (the `day` command, as the DAG does), a teacher without
    knowledge for `ds` is a skip, not an error.
    """
    from pipeline.gate import GateConfig
    from pipeline.hierarchy import student_spec
    from pipeline.student_data import MissingKnowledgeError
    from pipeline.student_release import distill_student, gate_student
    from pipeline.train_student import DistillConfig

    config, spec = DistillConfig.from_settings(settings), student_spec(name, settings.transfer_path)
    try:
        verdict = gate_student(settings, spec, ds, config, GateConfig.from_settings(settings))
        return {"gate": verdict, **distill_student(settings, spec, ds, config)}
    except MissingKnowledgeError as missing:
        if not skip_without_knowledge:
            raise
        return {"ds": ds, "student": name, "skipped": str(missing)}


def students_day(settings: Settings, ds: str) -> list[dict]:
    """Every domain FM, the domain FMs' knowledge, then every VM, for `ds` (the DAG's order)."""
    from pipeline.hierarchy import DOMAINS, domain_fm, vertical_model
    from pipeline.knowledge import KnowledgeConfig, NoEligibleTeacherError, generate_domain_knowledge

    results = [distill(settings, domain_fm(d).name, ds, skip_without_knowledge=True) for d in DOMAINS]
    for domain in DOMAINS:
        try:
            results.append(
                generate_domain_knowledge(settings, domain, ds, KnowledgeConfig.from_settings(settings))
            )
        except NoEligibleTeacherError as none:
            results.append({"ds": ds, "teacher": domain, "skipped": str(none)})
    for surface in SURFACES:
        name = vertical_model(surface, settings.transfer_path).name
        results.append(distill(settings, name, ds, skip_without_knowledge=True))
    return results


def describe_tables(settings: Settings) -> list[str]:
    """One line per table: its URI, its version and the row count of each `ds` partition."""
    from infra.delta import partition_row_counts, table_exists, table_version

    lines = []
    for name in TABLES:
        uri = settings.table_uri(name)
        if not table_exists(uri):
            lines.append(f"{name:<11} {uri}  (not written yet)")
            continue
        counts = ", ".join(f"{ds}: {n}" for ds, n in partition_row_counts(uri).items())
        lines.append(f"{name:<11} {uri}  v{table_version(uri)}  rows by ds: {counts or 'none'}")
    return lines


def describe_models(settings: Settings) -> list[str]:
    """One line per registered version of every model: its day, teacher, gate verdict and aliases."""
    from infra import registry
    from pipeline.hierarchy import all_students
    from pipeline.train_fm import FM_NAME

    lines = []
    for name in [FM_NAME] + [spec.name for spec in all_students(settings.transfer_path)]:
        champion = registry.champion(settings, name)
        for ref in sorted(registry.find_versions(settings, name, {}), key=lambda r: r.version):
            tags = registry.version_tags(settings, ref)
            alias = "  @champion" if ref == champion else ""
            teacher = f"  teacher={tags['teacher']}" if "teacher" in tags else ""
            gate = tags.get("gate", "not gated yet")
            lines.append(
                f"{ref.uri:<32} trained_through={tags['trained_through']}{teacher}  gate={gate}{alias}"
            )
    return lines or ["no model registered yet"]


def demo(settings: Settings, start: str, days: int) -> None:
    """Run `days` days of the daily DAG from `start` through the Airflow scheduler (`pipeline.demo`)."""
    from infra.airflow_api import AirflowAPIError
    from infra.services import ServiceError
    from pipeline.demo import DemoFailed, run_demo

    try:
        run_demo(settings, start, days)
    except (DemoFailed, ServiceError, AirflowAPIError, ValueError) as failed:
        raise SystemExit(f"distillery demo: {failed}") from failed


def services_up(settings: Settings, home: str, airflow_port: int, mlflow_port: int, schedule: bool) -> None:
    """Start Airflow and the MLflow UI on 127.0.0.1 (`infra.services`); print the URLs and the login."""
    from pathlib import Path

    from infra.airflow_api import AirflowAPIError
    from infra.services import ServiceConfig, ServiceError, start_services

    config = ServiceConfig(Path(home), airflow_port, mlflow_port, schedule)
    try:
        running = start_services(settings, config)
    except (ServiceError, AirflowAPIError) as failed:
        raise SystemExit(f"distillery up: {failed}") from failed
    print(f"Airflow  {running.airflow_url}  (user {running.username}, password {running.password})")
    print(f"MLflow   {running.mlflow_url}")
    print(f"The login is in {running.credentials}; logs in {config.home.resolve() / 'service-logs'}.")
    print(
        "distillery_daily and distillery_report (scheduled on the daily DAG's Assets) are unpaused"
        + ("." if schedule else "; only backfills and manual runs run (its Asset events wait).")
    )
    print("Stop with `distillery down`.")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="distillery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("ingest", "generate or import a day, validate it, write events and quarantine"),
        ("examples", "build the day's examples with Spark"),
        ("fm", "gate yesterday's FM on the day, then train and register the day's FM"),
        ("day", "ingest, examples, the FM steps, the teacher's knowledge, then every student"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--ds", type=_day, required=True, help="the logical day, YYYY-MM-DD")
    teach = commands.add_parser("knowledge", help="write the teacher's outputs on a day (Spark)")
    teach.add_argument("--ds", type=_day, required=True, help="the logical day, YYYY-MM-DD")
    teach.add_argument("--teacher", default="gem-fm", help="registered model name")
    teach.add_argument("--delay-days", type=int, default=None, help="k: the teacher trained through ds-1-k")
    which = teach.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, default=None, help="this version (must be trained before ds-k)")
    which.add_argument("--alias", default=None, help="the version holding this alias (same rule)")
    student = commands.add_parser("distill", help="gate, train and register one student on a day")
    student.add_argument("--ds", type=_day, required=True, help="the logical day, YYYY-MM-DD")
    student.add_argument("--model", required=True, help="domain-fm-<domain> or vm-<surface>")
    lineage = commands.add_parser("lineage", help="print the chain of teachers behind a registered version")
    lineage.add_argument("model_uri", help="models:/<name>/<version> or models:/<name>@<alias>")
    demo_cmd = commands.add_parser("demo", help="days of the DAG through the Airflow scheduler")
    demo_cmd.add_argument("--start", type=_day, default=None, help="first day (default: settings start)")
    demo_cmd.add_argument("--days", type=int, default=3)
    commands.add_parser("tables", help="print where the tables are and their partitions")
    report = commands.add_parser("report", help="NE by day, VMs against teachers, staleness: Markdown + PNG")
    report.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    report.add_argument("--to", dest="end", required=True, help="last day, YYYY-MM-DD")
    report.add_argument("--out", default=None, help="folder for the files (default reports/run_<from>_<to>)")
    up = commands.add_parser("up", help="start Airflow and the MLflow UI on 127.0.0.1")
    up.add_argument("--airflow-port", type=int, default=8080)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--no-schedule", action="store_true", help="no daily runs: only backfills and triggers")
    down = commands.add_parser("down", help="stop the services `distillery up` started")
    for sub in (up, down):
        sub.add_argument("--home", default=".airflow", help="their AIRFLOW_HOME (state, login, logs)")
    bench = commands.add_parser("bench", help="run a benchmark and write a JSON and a Markdown report")
    bench.add_argument("suite", choices=["data", "teacher", "transfer", "knowledge"])
    bench.add_argument("--quick", action="store_true", help="transfer: few days, tiny sizes, 1 seed")
    bench.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="data: events/day")
    bench.add_argument("--days", type=int, default=None, help="days, the last is the test day")
    bench.add_argument("--methods", nargs="+", default=None, help="transfer: methods to run (default: all)")
    bench.add_argument("--surfaces", nargs="+", default=None, help="transfer: VMs to train (default: all)")
    bench.add_argument("--seeds", type=int, nargs="+", default=None, help="transfer: training seeds")
    bench.add_argument(
        "--staleness",
        type=int,
        nargs="+",
        default=None,
        help="transfer: teacher delays in days; the largest, k, sets the VMs' first day (3 + k), so a "
        "run with another largest delay measures other days than the committed report",
    )
    bench.add_argument(
        "--datasets", nargs="+", default=None, help="transfer: synthetic, synthetic_drift, movielens"
    )
    bench.add_argument(
        "--vm-batch-size",
        type=int,
        default=None,
        help="transfer: the VMs' minibatch (default: the product's VM_BATCH_SIZE)",
    )
    bench.add_argument(
        "--join", nargs="+", default=None, metavar="DIR", help="transfer: join these runs' reports into --out"
    )
    bench.add_argument("--examples", type=int, default=100_000, help="knowledge: examples in the day")
    bench.add_argument("--out", default="reports", help="folder for the reports")
    return parser


def _show_progress_lines() -> None:
    """Off a terminal, the long steps log their progress (`infra.progress`): print those lines to stderr."""
    import logging
    import sys

    logger = logging.getLogger("distillery")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `distillery` command."""
    args = build_parser().parse_args(argv)
    _show_progress_lines()
    settings = Settings.from_env()
    if args.command in ("ingest", "day"):
        print(json.dumps(ingest(settings, args.ds), indent=2, default=str))
    if args.command in ("examples", "day"):
        print(json.dumps(examples(settings, args.ds), indent=2, default=str))
    if args.command in ("fm", "day"):
        result = foundation_model(settings, args.ds)
        print(json.dumps(result, indent=2, default=str))
        gate = result["gate"]
        if gate["passed"] is False:
            raise SystemExit(f"gate refused {gate['candidate']}: {'; '.join(gate['reasons'])}")
    if args.command == "day":
        print(json.dumps(knowledge(settings, args.ds, skip_without_teacher=True), indent=2, default=str))
        print(json.dumps(students_day(settings, args.ds), indent=2, default=str))
    if args.command == "distill":
        from pipeline.student_data import MissingKnowledgeError

        try:
            print(json.dumps(distill(settings, args.model, args.ds), indent=2, default=str))
        except (MissingKnowledgeError, ValueError) as refused:
            raise SystemExit(f"distillery distill: {refused}") from refused
    if args.command == "lineage":
        from pipeline.lineage import LineageError, format_lineage, walk_lineage

        try:
            print("\n".join(format_lineage(walk_lineage(settings, args.model_uri))))
        except LineageError as broken:
            raise SystemExit(f"distillery lineage: {broken}") from broken
    if args.command == "knowledge":
        from pipeline.knowledge import NoEligibleTeacherError, TeacherLeakageError

        try:
            result = knowledge(settings, args.ds, args.teacher, args.delay_days, args.version, args.alias)
        except (NoEligibleTeacherError, TeacherLeakageError) as refused:
            raise SystemExit(f"distillery knowledge: {refused}") from refused
        print(json.dumps(result, indent=2, default=str))
    if args.command == "demo":
        demo(settings, args.start or settings.start_date, args.days)
    if args.command == "up":
        services_up(settings, args.home, args.airflow_port, args.mlflow_port, not args.no_schedule)
    if args.command == "down":
        from pathlib import Path

        from infra.services import stop_services

        print(f"stopped: {', '.join(stop_services(Path(args.home))) or 'nothing was running'}")
    if args.command == "tables":
        print("\n".join(describe_tables(settings)))
    if args.command == "report":
        from pathlib import Path

        from pipeline.run_report import write_range_report

        out = Path(args.out or f"reports/run_{args.start}_{args.end}")
        try:
            files = write_range_report(settings, args.start, args.end, out)
        except ValueError as bad_range:
            raise SystemExit(f"distillery report: {bad_range}") from bad_range
        print("\n".join(str(path) for path in files))
    if args.command == "bench":
        _bench(settings, args)


def _bench(settings: Settings, args: argparse.Namespace) -> None:
    """`distillery bench <suite>`: run one benchmark suite (or join transfer runs) into `--out`."""
    if args.suite == "data":
        from pipeline.bench_data import run_data_benchmark

        run_data_benchmark(settings, sizes=args.sizes, out_dir=args.out)
    if args.suite == "transfer" and args.join:
        from pipeline.bench_transfer_join import join_transfer_runs

        try:
            join_transfer_runs(settings, args.join, out_dir=args.out)
        except ValueError as unjoinable:
            raise SystemExit(f"distillery bench transfer --join: {unjoinable}") from unjoinable
    if args.suite == "transfer" and not args.join:
        from pipeline.bench_transfer import run_transfer_benchmark
        from pipeline.bench_transfer_config import QUICK, SYNTHETIC

        overrides = {
            name: tuple(value) if isinstance(value, list) else value
            for name in (
                "days",
                "methods",
                "surfaces",
                "seeds",
                "staleness",
                "datasets",
                "vm_batch_size",
            )
            if (value := getattr(args, name)) is not None
        }
        config = dataclasses.replace(QUICK if args.quick else SYNTHETIC, **overrides)
        run_transfer_benchmark(settings, config, out_dir=args.out)
    if args.suite == "knowledge":
        from pipeline.bench_knowledge import run_knowledge_benchmark

        run_knowledge_benchmark(settings, examples=args.examples, out_dir=args.out)
    if args.suite == "teacher":
        from pipeline.bench_teacher import BENCH_DAYS, run_teacher_benchmark

        run_teacher_benchmark(
            settings,
            days=args.days or BENCH_DAYS,
            events_per_day=settings.events_per_day,
            fm_size=settings.fm_size,
            out_dir=args.out,
        )
