"""DagBag integrity: every DAG imports cleanly, cheaply, and is configured for operation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ("torch", "pyspark", "mlflow", "great_expectations", "deltalake", "pandas")


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert {"distillery_daily", "distillery_report"} <= dagbag.dags.keys()


def test_every_dag_is_documented_tagged_and_retried(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no doc_md"
        assert Path(dag.fileloc).stem == dag_id, "file name must equal dag_id"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_daily_dag_wiring(dagbag) -> None:
    dag = dagbag.dags["distillery_daily"]
    assert dag.max_active_runs == 1
    assert dag.task_dict["build_examples"].depends_on_past
    assert dag.task_dict["train_fm"].depends_on_past
    upstream = {t: sorted(dag.task_dict[t].upstream_task_ids) for t in dag.task_dict}
    assert upstream == {
        "land_events": [],
        "ingest_events": ["land_events"],
        "build_examples": ["ingest_events"],
        "gate_fm": ["build_examples"],
        "train_fm": ["build_examples"],
        "register_fm": ["train_fm"],
        "generate_knowledge": ["build_examples", "gate_fm"],
        "domain_fm.gate_student": ["generate_knowledge"],
        "domain_fm.distill_student": ["generate_knowledge"],
        "domain_fm.generate_domain_knowledge": ["domain_fm.gate_student"],
        # hierarchical (the default): every VM after the domain FMs and their knowledge
        "vertical_model.gate_student": ["domain_fm.distill_student", "domain_fm.generate_domain_knowledge"],
        "vertical_model.distill_student": [
            "domain_fm.distill_student",
            "domain_fm.generate_domain_knowledge",
        ],
        "report": [
            "domain_fm.distill_student",
            "domain_fm.generate_domain_knowledge",
            "register_fm",
            "vertical_model.distill_student",
            "vertical_model.gate_student",
        ],
    }
    assert dag.task_dict["report"].trigger_rule == "all_done", "a skipped student must not block the report"
    assert dag.task_dict["generate_knowledge"].trigger_rule == "all_done_min_one_success"
    for group in ("domain_fm", "vertical_model"):
        assert dag.task_dict[f"{group}.distill_student"].depends_on_past, "students train in date order"
        assert dag.task_dict[f"{group}.distill_student"].trigger_rule == "all_done"


def test_students_are_mapped_one_per_domain_and_surface(dagbag) -> None:
    from infra.schema import DOMAINS, SURFACES

    dag = dagbag.dags["distillery_daily"]
    groups = dag.task_group.get_task_group_dict()
    domain_kwargs = groups["domain_fm"]._expand_input.value
    assert [kw["domain"] for kw in domain_kwargs] == list(DOMAINS)
    assert [kw["name"] for kw in domain_kwargs] == [f"domain-fm-{d}" for d in DOMAINS]
    assert groups["vertical_model"]._expand_input.value["name"] == [f"vm-{s}" for s in SURFACES]


@pytest.mark.parametrize("dag_file", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_parsing_a_dag_file_imports_no_heavy_library(dag_file: Path) -> None:
    # A fresh interpreter: this test process has long imported everything.
    probe = (
        "import runpy, sys; "
        f"runpy.run_path({str(dag_file)!r}); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1:] in ([], [""]), f"heavy imports: {out.stdout}"


def _asset_names(assets) -> list[str]:
    return sorted(asset.name for asset in assets)


def test_daily_tasks_declare_the_assets_they_write(dagbag) -> None:
    dag = dagbag.dags["distillery_daily"]
    outlets = {t.task_id: _asset_names(t.outlets) for t in dag.tasks if t.outlets}
    assert outlets == {
        "ingest_events": ["distillery.events", "distillery.quarantine"],
        "build_examples": ["distillery.examples", "distillery.user_state"],
        "register_fm": ["distillery.models"],
        "generate_knowledge": ["distillery.teacher_outputs"],
        "domain_fm.distill_student": ["distillery.models"],
        "domain_fm.generate_domain_knowledge": ["distillery.teacher_outputs"],
        "vertical_model.distill_student": ["distillery.models"],
        "report": ["distillery.daily_report"],
    }
    from infra.settings import Settings

    lake = Settings.from_env().table_uri("examples")
    examples = dag.task_dict["build_examples"].outlets
    assert f"file://{lake}" in [asset.uri for asset in examples], "an Asset's URI is the Delta table's path"


def test_report_dag_is_scheduled_on_the_daily_assets(dagbag) -> None:
    from airflow.sdk import Asset, AssetAll

    def leaves(condition) -> list[Asset]:
        if isinstance(condition, Asset):
            return [condition]
        assert isinstance(condition, AssetAll), f"every asset must be updated, not any: {condition}"
        return [asset for part in condition.objects for asset in leaves(part)]

    dag = dagbag.dags["distillery_report"]
    consumed = leaves(dag.timetable.asset_condition)
    names = ["distillery.daily_report", "distillery.examples", "distillery.teacher_outputs"]
    assert _asset_names(consumed) == names
    produced = {a.uri for t in dagbag.dags["distillery_daily"].tasks for a in t.outlets}
    assert {a.uri for a in consumed} <= produced, "it consumes exactly what the daily DAG writes"
    assert list(dag.task_dict) == ["render_recent_report"]


def _daily_report_event(asset, ds: str):
    """A triggering event as Airflow hands it to a task, from the daily DAG's `report` task."""
    import datetime as dt

    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=asset.name, uri=asset.uri, extra={}),
        extra={"ds": ds},
        source_task_id="report",
        source_dag_id="distillery_daily",
        source_run_id=f"scheduled__{ds}",
        source_map_index=-1,
        source_aliases=[],
        timestamp=dt.datetime.now(dt.UTC),
    )


def test_report_dag_reports_the_newest_day_of_its_events(
    dagbag, tmp_path: Path, monkeypatch, registry_models
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    render = dagbag.dags["distillery_report"].task_dict["render_recent_report"].python_callable
    asset = dagbag.dags["distillery_daily"].task_dict["report"].outlets[0]
    with pytest.raises(AirflowFailException, match=r"no distillery\.daily_report event"):
        render(triggering_asset_events=TriggeringAssetEventsAccessor.build([]))
    batched = [_daily_report_event(asset, ds) for ds in ("2026-01-03", "2026-01-02")]
    with registry_models.sandbox(tmp_path) as settings:  # MLflow's globals reset afterwards
        monkeypatch.setenv("DISTILLERY_LAKE", settings.lake)
        monkeypatch.setenv("DISTILLERY_MLFLOW_URI", settings.mlflow_uri)
        monkeypatch.setenv("DISTILLERY_START_DATE", "2026-01-01")
        logged = render(triggering_asset_events=TriggeringAssetEventsAccessor.build(batched))
    assert (logged["from"], logged["ds"]) == ("2026-01-01", "2026-01-03"), "the newest day, 28 days back"
