"""Releasing students: register each day's domain FM or VM with its lineage, gate it the day after.

`register_student` logs the checkpoint trained through `ds` as a new version of the
student's registered name, tagged with the teacher version it learned from and the
table versions it read. `gate_student`, in the run of day `ds`, measures the version
trained through `ds - 1` on day `ds` of its own surfaces (with that day's teacher
knowledge as its inputs) beside the current champion, and moves `champion` only if
the gate passes: the FM's gate (`pipeline.gate`), applied to every student.
"""

from __future__ import annotations

from typing import Any

import torch

from infra import registry
from infra.checkpoints import checkpoint_uri
from infra.schema import SURFACES
from infra.settings import Settings
from pipeline.fm_data import previous_day
from pipeline.gate import GateConfig, promote_if_blessed
from pipeline.hierarchy import StudentSpec
from pipeline.metrics import SliceEvaluator
from pipeline.student_data import StudentRows, student_evaluation_rows
from pipeline.train_fm import labels_and_mask
from pipeline.train_student import TASKS, DistillConfig, load_student, sequence_length
from students.knowledge_inputs import table_to_knowledge
from students.model import Student
from students.predict import FACTORY, PREDICTOR
from students.train import predict_student
from teacher.features import table_to_features
from teacher.model import count_parameters, forward_flops_per_example


def student_predictions(
    student: Student, rows: StudentRows
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The serving head's logits on `rows` (N, T), their labels and label mask, and surface codes (N,):
    what `SliceEvaluator.update` takes."""
    config = student.config
    features = table_to_features(rows.table, config.backbone)
    knowledge = table_to_knowledge(
        rows.table, config.teacher_tasks, config.teacher_embed_dim, sequence_length(config.transfer)
    )
    labels, mask = labels_and_mask(rows.table, config.backbone.tasks)
    return predict_student(student, features, knowledge), labels, mask.bool(), features["surface"]


def evaluate_student(student: Student, rows: StudentRows) -> dict[str, float]:
    """NE, AUC and calibration per task, overall and per surface, of the serving head on `rows`."""
    evaluator = SliceEvaluator(student.config.backbone.tasks, SURFACES)
    evaluator.update(*student_predictions(student, rows))
    return evaluator.compute()


def _student_module(settings: Settings, ref: registry.ModelRef) -> Student:
    module, _ = registry.load_torch_module(settings, ref.uri)
    if not isinstance(module, Student):
        raise TypeError(f"{ref.uri} is not a student model")
    return module


def register_student(settings: Settings, spec: StudentSpec, ds: str) -> dict[str, Any]:
    """Register the checkpoint of `spec` trained through `ds` (skipped if this exact model is registered)."""
    uri = checkpoint_uri(settings.lake, spec.name, ds)
    student, checkpoint = load_student(uri)
    config = checkpoint["student_config"]
    teacher = f"{checkpoint['teacher']}/{checkpoint['teacher_version']}"
    # the same model only if its teacher and that teacher's outputs match too: they are its data
    lineage = {"teacher": teacher, "teacher_outputs_version": str(checkpoint["teacher_outputs_version"])}
    done = registry.find_trained(
        settings, spec.name, ds, config, checkpoint["examples_version"], extra=lineage
    )
    if done is not None:
        return {"model_uri": done.uri, "name": spec.name, "version": done.version, "teacher": teacher}
    ref = registry.log_and_register(
        settings,
        spec.name,
        student,
        config,
        FACTORY,
        PREDICTOR,
        metrics={f"train/{k}": v for k, v in checkpoint["stats"].items()},
        params={
            **{f"transfer.{k}": v for k, v in student.config.transfer.to_dict().items()},
            **checkpoint["train_config"],
            "kind": spec.kind,
            "surfaces": ",".join(spec.surfaces),
            "backbone": student.config.backbone.name,
            "parameters": count_parameters(student),
            "flops_per_example": forward_flops_per_example(student.config.backbone),
        },
        tags={
            **lineage,
            "trained_through": ds,
            "teacher_trained_through": checkpoint["teacher_trained_through"],
            "examples_version": str(checkpoint["examples_version"]),
            "kind": spec.kind,
            "checkpoint": uri,
            "parent_checkpoint": checkpoint["parent"] or "none (first day)",
        },
    )
    return {"model_uri": ref.uri, "name": spec.name, "version": ref.version, "teacher": teacher}


def _evaluate_on_day(
    settings: Settings, spec: StudentSpec, student: Student, ds: str, config: DistillConfig
) -> dict[str, float]:
    rows = student_evaluation_rows(
        settings, spec, ds, TASKS, sequence_length(student.config.transfer), config.lookback_days
    )
    with torch.no_grad():
        return evaluate_student(student, rows)


def gate_student(
    settings: Settings, spec: StudentSpec, ds: str, config: DistillConfig, gate: GateConfig
) -> dict[str, Any]:
    """Evaluate the version of `spec` trained through `ds - 1` on day `ds`; promote it if it passes.

    Raises MissingKnowledgeError when the teacher has no outputs for `ds` (the student's inputs).
    """
    trained_through = previous_day(ds)
    candidate = registry.find_version(settings, spec.name, "trained_through", trained_through)
    if candidate is None:
        return {
            "ds": ds,
            "candidate": None,
            "passed": None,
            "reasons": [f"no {spec.name} trained through {trained_through}"],
        }
    metrics = _evaluate_on_day(settings, spec, _student_module(settings, candidate), ds, config)
    registry.log_run_metrics(settings, candidate, metrics)
    current = registry.champion(settings, spec.name)
    champion_metrics = None
    if current is not None and current.version != candidate.version:
        champion_metrics = _evaluate_on_day(settings, spec, _student_module(settings, current), ds, config)
    verdict = promote_if_blessed(settings, candidate, metrics, gate, champion_metrics)
    return verdict.summary(ds, candidate, current)


def distill_student(settings: Settings, spec: StudentSpec, ds: str, config: DistillConfig) -> dict[str, Any]:
    """Train `spec` through `ds` from its teacher's knowledge, then register it; returns both references.

    Raises MissingKnowledgeError when the teacher has no outputs for `ds` (nothing to learn from yet).
    """
    from pipeline.train_student import train_student

    trained = train_student(settings, spec, ds, config)
    return {"trained": trained, "registered": register_student(settings, spec, ds)}
