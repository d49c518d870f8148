"""
# distillery_daily

The daily knowledge-transfer pipeline for one logical day `ds` (the data interval
`[ds, ds+1)`, processed after the day closes).

1. **land_events**: generate the day from the synthetic ads world, or import it
   from files (`DISTILLERY_SOURCE=files`), into the landing zone `<lake>/landing/ds=<ds>/`.
2. **ingest_events**: validate the batch with Great Expectations; failing rows go to
   Delta `quarantine`, good rows replace the `ds` partition of Delta `events`. A batch
   whose bad share passes `DISTILLERY_MAX_BAD_SHARE` fails without retries and writes nothing.
3. **build_examples**: Spark builds Delta `examples` for `ds` (each event plus the
   user's history strictly before it), carrying a per-user history state forward
   from the previous day.
4. **gate_fm**: progressive validation. The `gem-fm` version trained through `ds-1`
   is measured on day `ds` (which it never saw), beside the current `champion` on the
   same day; the alias moves only if the gate passes. A refused model fails this
   task (the reasons are in its log and on the MLflow version's `gate_reasons` tag);
   on the first day there is nothing to gate and the task is skipped.
5. **train_fm**: continual training: the FM trained through `ds-1` (looked up by
   date) makes one time-ordered pass over day `ds` and is checkpointed under `ds`.
6. **register_fm**: the new checkpoint becomes a version of `gem-fm` in MLflow with its
   lineage tags (`trained_through`, `examples_version`, `config_hash`, `git_sha`).
7. **generate_knowledge**: after the gate (passed, refused or skipped: the champion is
   then still a valid teacher), Spark runs the teacher over the day's examples and
   replaces the (`ds`, `gem-fm`) partition of Delta `teacher_outputs` (per example: a
   logit per task and the embedding). The teacher was trained only on days before `ds`:
   the `champion`, or with `DISTILLERY_TEACHER_DELAY_DAYS=k` the version trained through
   `ds-1-k`. With no eligible teacher (the first day) the task is skipped.

8. **domain_fm** (mapped, one group per domain): `gate_student` measures the
   `domain-fm-<domain>` version trained through `ds-1` on the domain's day `ds` and
   moves its `champion` if it passes (fails on refusal, skipped when there is none);
   `distill_student` trains the domain FM through `ds` from `gem-fm`'s knowledge and
   registers it with its lineage (`teacher` = `gem-fm/<version>`, table versions);
   `generate_domain_knowledge` writes the domain FM champion's outputs on the domain's
   examples to (`ds`, `domain-fm-<domain>`) of `teacher_outputs`, for its VMs.
9. **vertical_model** (mapped, one group per surface): the same gate and distillation
   for `vm-<surface>`, taught by its domain FM (`DISTILLERY_TRANSFER_PATH=hierarchical`,
   the default) or by `gem-fm` (`direct`), with the transfer methods named by
   `DISTILLERY_TRANSFER_METHOD`. A student whose teacher has no knowledge for `ds` yet
   (its first days) is skipped.

10. **report** (after everything, whatever its outcome): the report of the 7 days ending
   at `ds` (`pipeline.run_report`: NE by day of every model, each VM against its teacher,
   teacher staleness, rows per day; Markdown + PNG plots), logged to MLflow in the run of
   experiment `distillery-reports` tagged `report=daily, ds=<ds>` (a re-run reuses it), and
   linked from every version trained through `ds` by the tag `daily_report`.

Assets: each task declares what it writes as `outlets` (`infra.assets`): the Delta tables
`events`, `quarantine`, `examples`, `user_state`, `teacher_outputs`, the model registry
and the daily report, each event's `extra` carrying `ds`. The DAG `distillery_report`
is scheduled on them.

`build_examples`, `train_fm` and every `distill_student` run in date order (`depends_on_past`, one active
run): a backfill builds and trains day 1, then day 2, and a failed day holds the
later ones, waiting, until it is cleared.

Tasks pass table URIs and partitions, never data. Every step replaces exactly its
partition, so clearing and re-running a day is safe. The same steps run without
Airflow: `distillery ingest --ds <ds>`, `distillery examples --ds <ds>`, `distillery fm --ds <ds>`,
`distillery knowledge --teacher gem-fm --ds <ds>`, `distillery distill --model <name> --ds <ds>`;
`distillery lineage models:/vm-<surface>/<version>` prints the chain of teachers behind a VM.
Settings come from `DISTILLERY_*` environment variables (see the README).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task, task_group

from infra.assets import DS_KEY, daily_report_asset, models_asset, table_asset
from infra.schema import DOMAINS, SURFACES
from infra.settings import Settings
from pipeline.hierarchy import domain_fm_name, vm_name

SETTINGS = Settings.from_env()
EVENTS, QUARANTINE, EXAMPLES, USER_STATE, TEACHER_OUTPUTS = (
    table_asset(SETTINGS, table)
    for table in ("events", "quarantine", "examples", "user_state", "teacher_outputs")
)
MODELS, DAILY_REPORT = models_asset(SETTINGS), daily_report_asset(SETTINGS)


def _stamp(ds: str, *assets: Asset) -> None:
    """Carry `ds` on this task's asset events: an asset-triggered run has no logical date."""
    events = get_current_context()["outlet_events"]
    for asset in assets:
        events[asset].extra = {DS_KEY: ds}


def _passed(verdict: dict) -> dict:
    """A gate's verdict, if it passed: no candidate skips the task, a refusal fails it."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    if verdict["passed"] is None:
        raise AirflowSkipException("; ".join(verdict["reasons"]))
    if not verdict["passed"]:
        raise AirflowFailException(f"gate refused {verdict['candidate']}: " + "; ".join(verdict["reasons"]))
    return verdict


@dag(
    dag_id="distillery_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.parse(SETTINGS.start_date, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["distillery", "daily"],
    default_args={"owner": "distillery", "retries": 2, "retry_delay": timedelta(minutes=1)},
)
def distillery_daily() -> None:
    """One logical day, from landing its events to its report (the module docstring is the DAG's doc)."""

    @task
    def land_events(ds: str) -> str:
        """Generate or import the day into the landing zone; returns its URI."""
        from airflow.sdk.exceptions import AirflowFailException

        from infra.sources.files import EventsFileError
        from pipeline.ingest import land_events

        try:
            return land_events(Settings.from_env(), ds)
        except EventsFileError as bad_file:  # a file that breaks the schema: retrying will not help
            raise AirflowFailException(str(bad_file)) from bad_file

    @task(outlets=[EVENTS, QUARANTINE])
    def ingest_events(landing_uri: str, ds: str, run_id: str) -> dict:
        """Validate the landed day; good rows to `events`, bad rows to `quarantine`."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline.ingest import IngestRejected, ingest_events

        try:
            ingested = ingest_events(Settings.from_env(), ds, landing_uri, run_id)
        except IngestRejected as rejected:  # bad data: retrying will not help
            raise AirflowFailException(str(rejected)) from rejected
        _stamp(ds, EVENTS, QUARANTINE)
        return ingested

    @task(depends_on_past=True, outlets=[EXAMPLES, USER_STATE])
    def build_examples(ingested: dict) -> dict:
        """Build the day's `examples` partition with Spark; returns its table reference."""
        from pipeline.examples import build_examples

        built = build_examples(Settings.from_env(), ingested["ds"])
        _stamp(ingested["ds"], EXAMPLES, USER_STATE)
        return built

    @task
    def gate_fm(examples: dict) -> dict:
        """Evaluate the FM trained through ds-1 on ds; promote it to champion if it passes."""
        from pipeline.fm_release import gate_fm
        from pipeline.gate import GateConfig

        settings = Settings.from_env()
        verdict = gate_fm(settings, examples["ds"], GateConfig.from_settings(settings))
        return _passed(verdict)

    @task(depends_on_past=True)
    def train_fm(examples: dict) -> dict:
        """Warm-start from the FM trained through ds-1 and train it on ds; returns the checkpoint."""
        from pipeline.train_fm import FMTrainingConfig, train_fm

        settings = Settings.from_env()
        return train_fm(settings, examples["ds"], FMTrainingConfig.from_settings(settings))

    @task(outlets=[MODELS])
    def register_fm(trained: dict) -> dict:
        """Register the day's FM in MLflow as a new version of gem-fm; returns its model URI."""
        from pipeline.fm_release import register_fm

        registered = register_fm(Settings.from_env(), trained["ds"])
        _stamp(trained["ds"], MODELS)
        return registered

    # Runs once the gate is done whatever its outcome, but only on built examples.
    @task(trigger_rule="all_done_min_one_success", outlets=[TEACHER_OUTPUTS])
    def generate_knowledge(examples: dict) -> dict:
        """Write the teacher's outputs on ds to Delta teacher_outputs; skipped without an eligible teacher."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from pipeline.knowledge import (
            KnowledgeConfig,
            NoEligibleTeacherError,
            TeacherLeakageError,
            generate_teacher_knowledge,
        )
        from pipeline.train_fm import FM_NAME

        settings = Settings.from_env()
        try:
            written = generate_teacher_knowledge(
                settings, FM_NAME, examples["ds"], KnowledgeConfig.from_settings(settings)
            )
        except NoEligibleTeacherError as none:
            raise AirflowSkipException(str(none)) from none
        except TeacherLeakageError as leak:  # the registry, not the run, must change: no retries
            raise AirflowFailException(str(leak)) from leak
        _stamp(examples["ds"], TEACHER_OUTPUTS)
        return written

    # Students run once their upstream is done whatever its outcome; each one skips
    # itself when its own teacher has no knowledge for ds.
    @task(trigger_rule="all_done")
    def gate_student(name: str, ds: str) -> dict:
        """Evaluate the student trained through ds-1 on ds; promote it to champion if it passes."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.gate import GateConfig
        from pipeline.hierarchy import student_spec
        from pipeline.student_data import MissingKnowledgeError
        from pipeline.student_release import gate_student
        from pipeline.train_student import DistillConfig

        settings = Settings.from_env()
        config, spec = DistillConfig.from_settings(settings), student_spec(name, settings.transfer_path)
        try:
            verdict = gate_student(settings, spec, ds, config, GateConfig.from_settings(settings))
        except MissingKnowledgeError as missing:
            raise AirflowSkipException(str(missing)) from missing
        return _passed(verdict)

    @task(trigger_rule="all_done", depends_on_past=True, outlets=[MODELS])
    def distill_student(name: str, ds: str) -> dict:
        """Train the student through ds from its teacher's knowledge and register it."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.hierarchy import student_spec
        from pipeline.student_data import MissingKnowledgeError
        from pipeline.student_release import distill_student
        from pipeline.train_student import DistillConfig

        settings = Settings.from_env()
        try:
            distilled = distill_student(
                settings,
                student_spec(name, settings.transfer_path),
                ds,
                DistillConfig.from_settings(settings),
            )
        except MissingKnowledgeError as missing:
            raise AirflowSkipException(str(missing)) from missing
        _stamp(ds, MODELS)
        return distilled

    @task(trigger_rule="all_done", outlets=[TEACHER_OUTPUTS])
    def generate_domain_knowledge(domain: str, ds: str) -> dict:
        """Write the domain FM champion's outputs on its domain's examples of ds; skipped without one."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.knowledge import KnowledgeConfig, NoEligibleTeacherError, generate_domain_knowledge

        settings = Settings.from_env()
        try:
            written = generate_domain_knowledge(settings, domain, ds, KnowledgeConfig.from_settings(settings))
        except NoEligibleTeacherError as none:
            raise AirflowSkipException(str(none)) from none
        _stamp(ds, TEACHER_OUTPUTS)
        return written

    # Last, whatever happened upstream: a skipped or failed student shows as missing in it.
    @task(trigger_rule="all_done", outlets=[DAILY_REPORT])
    def report(ds: str) -> dict:
        """Log the report of the 7 days ending at ds to MLflow, linked from the day's model versions."""
        from pipeline.run_report import DAILY, log_report

        logged = log_report(Settings.from_env(), ds, DAILY)
        _stamp(ds, DAILY_REPORT)
        return logged

    @task_group
    def domain_fm(domain: str, name: str) -> None:
        """One domain FM: gate yesterday's version, train today's, then its knowledge for the VMs."""
        gate_student(name, ds="{{ ds }}") >> generate_domain_knowledge(domain, ds="{{ ds }}")
        distill_student(name, ds="{{ ds }}")

    @task_group
    def vertical_model(name: str) -> None:
        """One VM: gate yesterday's version, then train and register today's."""
        gate_student(name, ds="{{ ds }}")
        distill_student(name, ds="{{ ds }}")

    landed = land_events(ds="{{ ds }}")
    examples = build_examples(ingest_events(landed, ds="{{ ds }}", run_id="{{ run_id }}"))
    fm_knowledge = generate_knowledge(examples)
    gate_fm(examples) >> fm_knowledge
    registered = register_fm(train_fm(examples))
    domains = domain_fm.expand_kwargs([{"domain": d, "name": domain_fm_name(d)} for d in DOMAINS])
    vms = vertical_model.expand(name=[vm_name(s) for s in SURFACES])
    fm_knowledge >> domains
    # Hierarchical VMs read their domain FM's knowledge; direct ones read gem-fm's.
    (domains if SETTINGS.transfer_path == "hierarchical" else fm_knowledge) >> vms
    daily_report = report(ds="{{ ds }}")
    for last in (registered, domains, vms):
        last >> daily_report


distillery_daily()
