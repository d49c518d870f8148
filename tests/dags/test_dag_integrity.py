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
    assert "distillery_daily" in dagbag.dags


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
    }
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
