"""Continual training of a student (a domain FM or a VM), one day at a time, from its teacher's knowledge.

Reads:  the student's rows for `ds` (`pipeline.student_data`: its surfaces' examples joined
        with Delta `teacher_outputs` of its teacher), the student's checkpoint trained
        through `ds - 1` (looked up by date), and, for parameter sharing, the registered
        teacher version whose outputs it reads.
Writes: `<lake>/checkpoints/<student>/ds=<ds>/checkpoint.pt` (student and adapter weights,
        the optimizers, configs, the teacher version and table versions read, statistics).

A student's first day is the first day its teacher has knowledge: it starts fresh,
its backbone derived from the teacher's config (`students.config.student_backbone`).
Shared teacher modules are taken then; frozen ones are refreshed from each day's
teacher version (they do not learn, so they follow the teacher), fine-tuned ones
keep learning in the student. A student's teacher never changes over its life.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from infra import registry
from infra.checkpoints import (
    checkpoint_days,
    checkpoint_exists,
    checkpoint_uri,
    load_checkpoint,
    save_checkpoint,
)
from infra.settings import Settings
from pipeline.fm_data import previous_day
from pipeline.hierarchy import StudentSpec
from pipeline.student_data import StudentRows, student_training_rows
from pipeline.train_fm import MissingCheckpointError, day_seed, labels_and_mask
from students.config import METHODS, VM_BATCH_SIZE, StudentConfig, TransferConfig, student_backbone
from students.knowledge_inputs import table_to_knowledge
from students.model import Student
from students.sharing import share_teacher_modules
from students.train import (
    make_adapter,
    make_adapter_optimizer,
    make_student_optimizer,
    train_student_interval,
)
from teacher.features import table_to_features
from teacher.model import GemFM
from teacher.train import TrainConfig

# Domain FMs are teachers in their turn: the same Spark job runs them over examples
# alone, so they take no representation inputs (those would need their teacher at
# inference). They learn through the auxiliary head, an adapter and gem-fm's tables,
# refreshed from each day's gem-fm: a table taken once on the domain FM's first day keeps
# only what gem-fm knew then, and what transfers here is mostly what gem-fm learns of ids.
DOMAIN_TRANSFER = TransferConfig(aux_head=True, adapter="logit", share=("embeddings",), share_frozen=True)
TASKS: tuple[str, ...] = ("click", "conversion")  # the tasks every model of the hierarchy predicts


@dataclass(frozen=True)
class DistillConfig:
    """How students learn: the VMs' transfer method, the teacher's delay, the optimiser.

    Who teaches a student is its `StudentSpec`'s (`pipeline.hierarchy.student_spec`, by the path).
    """

    vm_method: str = "full"  # a name in students.config.METHODS
    delay_days: int = 0  # the teacher's knowledge for ds comes from the version trained through ds-1-k
    lookback_days: int = 2  # days of past teacher embeddings for the "sequence" representation
    train: TrainConfig = field(default_factory=TrainConfig)
    vm_batch_size: int = VM_BATCH_SIZE  # a VM's minibatch; domain FMs take `train.batch_size`

    def __post_init__(self) -> None:
        if self.vm_method not in METHODS:
            raise ValueError(
                f"DISTILLERY_TRANSFER_METHOD must be one of {sorted(METHODS)}, got {self.vm_method!r}"
            )
        if self.vm_batch_size < 1:
            raise ValueError(f"vm_batch_size must be >= 1, got {self.vm_batch_size}")

    @classmethod
    def from_settings(cls, settings: Settings) -> DistillConfig:
        """`DISTILLERY_TRANSFER_METHOD`, `_TEACHER_DELAY_DAYS`, `_SEED`."""
        return cls(
            vm_method=settings.transfer_method,
            delay_days=settings.teacher_delay_days,
            train=TrainConfig(seed=settings.seed),
        )

    def transfer_for(self, spec: StudentSpec) -> TransferConfig:
        """The transfer methods of `spec`: `DOMAIN_TRANSFER` for domain FMs, `vm_method`'s for VMs."""
        return DOMAIN_TRANSFER if spec.kind == "domain" else METHODS[self.vm_method]

    def train_for(self, spec: StudentSpec) -> TrainConfig:
        """How `spec` learns a day: `train`, in minibatches of `vm_batch_size` for a VM."""
        return (
            self.train
            if spec.kind == "domain"
            else dataclasses.replace(self.train, batch_size=self.vm_batch_size)
        )


def teacher_backbone(module: torch.nn.Module) -> GemFM:
    """The `GemFM` inside a registered teacher: the FM itself or a domain FM's backbone."""
    if isinstance(module, GemFM):
        return module
    if isinstance(module, Student):
        if module.representation is not None:
            raise ValueError(
                "a student with representation inputs cannot teach: it needs its own teacher to run"
            )
        return module.backbone
    raise TypeError(f"a teacher must be a GemFM or a Student, got {type(module).__name__}")


def load_teacher(settings: Settings, name: str, version: int) -> GemFM:
    """The registered teacher version's `GemFM` (eval mode)."""
    module, _ = registry.load_torch_module(settings, f"models:/{name}/{version}")
    return teacher_backbone(module)


def load_student(uri: str) -> tuple[Student, dict[str, Any]]:
    """The student stored in the checkpoint at `uri`, and the whole checkpoint."""
    checkpoint = load_checkpoint(uri)
    student = Student(StudentConfig.from_dict(checkpoint["student_config"]))
    student.load_state_dict(checkpoint["model"])
    return student, checkpoint


def _fresh_student(
    spec: StudentSpec, transfer: TransferConfig, teacher: GemFM, rows: StudentRows, seed: int
) -> Student:
    """A new student whose backbone is derived from the teacher's config; heads at the base rates."""
    torch.manual_seed(day_seed(seed, f"init:{spec.seed_key}"))
    config = StudentConfig(
        backbone=student_backbone(spec.kind, teacher.config, transfer.share),
        transfer=transfer,
        teacher_embed_dim=teacher.config.embed_dim,
        teacher_tasks=teacher.config.tasks,
    )
    student = Student(config)
    labels, mask = labels_and_mask(rows.table, config.backbone.tasks)
    student.start_at_rates((labels * mask).sum(0) / mask.sum(0).clamp(min=1))
    return student


def _previous(
    settings: Settings, spec: StudentSpec, ds: str
) -> tuple[Student | None, dict[str, Any] | None, str | None]:
    """The student trained through `ds - 1` with its checkpoint and URI, or Nones on its first day."""
    parent = checkpoint_uri(settings.lake, spec.name, previous_day(ds))
    if checkpoint_exists(parent):
        student, checkpoint = load_student(parent)
        if checkpoint["teacher"] != spec.teacher:
            raise ValueError(
                f"{spec.name} learns from {checkpoint['teacher']} (its checkpoint {parent}); the configured "
                f"path names {spec.teacher}: a student's teacher never changes, start a new student instead"
            )
        return student, checkpoint, parent
    earlier = [day for day in checkpoint_days(settings.lake, spec.name) if day < ds]
    if earlier:
        raise MissingCheckpointError(
            f"{spec.name} for {ds} warm-starts from its checkpoint through {previous_day(ds)}, but {parent} "
            f"does not exist (last trained day: {earlier[-1]}); train {previous_day(ds)} first"
        )
    return None, None, None


def sequence_length(transfer: TransferConfig) -> int:
    """Past teacher embeddings per row the student reads (0 unless the "sequence" representation)."""
    return transfer.sequence_length if transfer.representation == "sequence" else 0


def train_student(settings: Settings, spec: StudentSpec, ds: str, config: DistillConfig) -> dict[str, Any]:
    """Train `spec` through `ds` (one time-ordered pass over its rows) and save its checkpoint.

    Raises MissingKnowledgeError when its teacher has no outputs for `ds` (nothing to learn from yet).
    Returns references: the checkpoint URI, its parent, the teacher version and the statistics.
    """
    student, checkpoint, parent = _previous(settings, spec, ds)
    transfer = student.config.transfer if student is not None else config.transfer_for(spec)
    train = config.train_for(spec)
    rows = student_training_rows(
        settings,
        spec,
        ds,
        TASKS,
        train.conversion_window_days,
        sequence_length(transfer),
        config.lookback_days,
    )
    refresh = transfer.share and (student is None or transfer.share_frozen)
    teacher = (
        load_teacher(settings, spec.teacher, rows.teacher_version) if student is None or refresh else None
    )
    if student is None:
        student = _fresh_student(spec, transfer, teacher, rows, train.seed)
    if refresh:
        share_teacher_modules(student, teacher, transfer.share, transfer.share_frozen)
    optimizer = make_student_optimizer(student, train)
    adapter = make_adapter(student.config)
    adapter_optimizer = make_adapter_optimizer(adapter, student.config) if adapter is not None else None
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if adapter is not None:
            adapter.load_state_dict(checkpoint["adapter"])
        if adapter_optimizer is not None:
            adapter_optimizer.load_state_dict(checkpoint["adapter_optimizer"])
    backbone = student.config.backbone
    features = table_to_features(rows.table, backbone)
    knowledge = table_to_knowledge(
        rows.table, student.config.teacher_tasks, student.config.teacher_embed_dim, sequence_length(transfer)
    )
    labels, mask = labels_and_mask(rows.table, backbone.tasks)
    torch.manual_seed(day_seed(train.seed, f"{spec.seed_key}:{ds}"))
    stats = train_student_interval(
        student,
        optimizer,
        features,
        knowledge,
        labels,
        mask,
        train,
        adapter,
        adapter_optimizer,
        label=f"{spec.name} {ds}",
    )
    uri = checkpoint_uri(settings.lake, spec.name, ds)
    save_checkpoint(
        uri,
        {
            "model": student.state_dict(),
            "optimizer": optimizer.state_dict(),
            "adapter": adapter.state_dict() if adapter is not None else None,
            "adapter_optimizer": adapter_optimizer.state_dict() if adapter_optimizer is not None else None,
            "student_config": student.config.to_dict(),
            "train_config": train.to_dict(),
            "trained_through": ds,
            "parent": parent,
            "teacher": spec.teacher,
            "teacher_version": rows.teacher_version,
            "teacher_trained_through": rows.teacher_trained_through,
            "examples_version": rows.examples_version,
            "teacher_outputs_version": rows.outputs_version,
            "stats": stats,
        },
    )
    return {
        "checkpoint": uri,
        "name": spec.name,
        "ds": ds,
        "parent": parent,
        "teacher": rows.teacher_ref,
        **stats,
    }
