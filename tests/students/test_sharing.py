"""Parameter sharing: copies (never aliases) of teacher modules, frozen or fine-tuned, refreshed in place."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from students.config import StudentConfig, TransferConfig, student_backbone
from students.knowledge_inputs import random_knowledge
from students.model import Student
from students.sharing import SHARE_GROUPS, share_teacher_modules
from students.train import make_student_optimizer, train_student_interval
from teacher.config import FMConfig, config_for
from teacher.features import random_batch
from teacher.model import GemFM
from teacher.train import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(
    share: tuple[str, ...], frozen: bool, teacher_config: FMConfig | None = None, kind: str = "vm"
) -> tuple[Student, GemFM]:
    teacher_config = teacher_config or config_for("tiny")
    torch.manual_seed(0)
    teacher = GemFM(teacher_config)
    transfer = TransferConfig(share=share, share_frozen=frozen)
    config = StudentConfig(student_backbone(kind, teacher_config, share), transfer, teacher_config.embed_dim)
    return Student(config), teacher


def _train_one_interval(student: Student) -> None:
    batch = random_batch(student.config.backbone, 32, seed=3, full_history=True)
    labels = torch.stack([batch["click"], batch["conversion"]], dim=1)
    knowledge = random_knowledge(32, 2, student.config.teacher_embed_dim, 8)
    optimizer = make_student_optimizer(student, TrainConfig(batch_size=16, learning_rate=1e-2))
    train_student_interval(
        student, optimizer, batch, knowledge, labels, torch.ones_like(labels), TrainConfig(batch_size=16)
    )


def _teacher_copy(teacher: GemFM) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in teacher.state_dict().items()}


@pytest.mark.parametrize("frozen", [True, False])
def test_taken_parameters_equal_the_teachers_and_are_copies(frozen: bool) -> None:
    student, teacher = _pair(("embeddings", "sequence_encoder"), frozen)
    names = share_teacher_modules(student, teacher, ("embeddings", "sequence_encoder"), frozen)
    ours, theirs = dict(student.named_parameters()), dict(teacher.named_parameters())
    assert "backbone.embeddings.tables.item.weight" in names
    assert any(n.startswith("backbone.stack.layers.0.attention.") for n in names)
    assert not any("embeddings.position" in n or "stack.layers.0.interaction" in n for n in names)
    for name in names:
        mine, source = ours[name], theirs[name.removeprefix("backbone.")]
        assert torch.equal(mine, source) and mine.data_ptr() != source.data_ptr()
        assert mine.requires_grad is not frozen
    assert all(p.requires_grad for n, p in ours.items() if n not in names)


def test_frozen_parameters_stay_put_and_the_teacher_is_untouched() -> None:
    student, teacher = _pair(("embeddings",), frozen=True)
    names = share_teacher_modules(student, teacher, ("embeddings",), frozen=True)
    before, teacher_before = {n: p.clone() for n, p in student.named_parameters()}, _teacher_copy(teacher)
    _train_one_interval(student)
    after = dict(student.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in names)
    assert not torch.equal(after["backbone.trunk.0.weight"], before["backbone.trunk.0.weight"])
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


def test_fine_tuned_parameters_change_while_the_teachers_do_not() -> None:
    student, teacher = _pair(("embeddings",), frozen=False)
    share_teacher_modules(student, teacher, ("embeddings",), frozen=False)
    teacher_before = _teacher_copy(teacher)
    _train_one_interval(student)
    mine = student.backbone.embeddings.tables["user"].weight
    assert not torch.equal(mine, teacher.embeddings.tables["user"].weight)
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


def test_a_newer_teacher_refreshes_the_same_parameter_objects() -> None:
    student, teacher = _pair(("embeddings",), frozen=False)
    share_teacher_modules(student, teacher, ("embeddings",), frozen=False)
    optimizer = make_student_optimizer(student, TrainConfig())
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    torch.manual_seed(7)
    newer = GemFM(teacher.config)
    share_teacher_modules(student, newer, ("embeddings",), frozen=False)
    table = student.backbone.embeddings.tables["item"].weight
    assert torch.equal(table, newer.embeddings.tables["item"].weight) and id(table) in held


def test_mismatched_shapes_name_the_module_and_both_shapes() -> None:
    teacher_config = config_for("tiny")
    student, teacher = _pair((), frozen=True, teacher_config=teacher_config)  # VM tables a quarter as big
    with pytest.raises(ValueError, match=r"embeddings\.tables.*user\.weight.*\(4096, 16\).*\(1024, 16\)"):
        share_teacher_modules(student, teacher, ("embeddings",), frozen=True)
    with pytest.raises(ValueError, match="unknown share groups"):
        share_teacher_modules(student, teacher, ("trunk",), frozen=True)


@pytest.mark.parametrize("kind", ["vm", "domain"])
def test_an_hstu_sequence_encoder_can_be_taken(kind: str) -> None:
    student, teacher = _pair(("sequence_encoder",), True, config_for("tiny", attention="hstu"), kind)
    names = share_teacher_modules(student, teacher, ("sequence_encoder",), frozen=True)
    assert "backbone.stack.layers.0.attention.pos_bias" in names
    assert SHARE_GROUPS["sequence_encoder"] == ("stack.layers.0.attention",)
