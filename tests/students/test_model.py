"""Student: heads and shapes, where the distillation gradient goes, teacher representation inputs."""

from __future__ import annotations

import pytest
import torch

from students.config import METHODS, StudentConfig, TransferConfig, student_backbone
from students.knowledge_inputs import Knowledge, empty_knowledge, random_knowledge
from students.losses import student_loss
from students.model import Student
from teacher.config import config_for
from teacher.features import random_batch

TEACHER = config_for("tiny")
B, K = 12, 4


def _student(transfer: TransferConfig, seed: int = 0) -> Student:
    torch.manual_seed(seed)
    config = StudentConfig(student_backbone("vm", TEACHER), transfer, TEACHER.embed_dim)
    return Student(config).eval()


def _knowledge(seed: int = 2) -> Knowledge:
    k = random_knowledge(B, 2, TEACHER.embed_dim, K, seed=seed)
    k["teacher_mask"][:2] = torch.tensor([1.0, 0.0])  # row 0 has teacher output, row 1 not
    k["past_mask"][:2] = torch.tensor([[True, True, False, False], [False] * K])  # 2 past rows, none
    k["past_embeddings"][:2] *= k["past_mask"][:2, :, None]
    return k


@pytest.mark.parametrize("method", list(METHODS))
def test_shapes_for_every_method(method: str) -> None:
    student = _student(METHODS[method])
    batch = random_batch(student.config.backbone, B, seed=1)
    out = student(batch, _knowledge())
    assert out.serving.shape == (B, 2) and out.embedding.shape == (B, student.config.backbone.embed_dim)
    assert (out.distill is not None) == METHODS[method].aux_head
    if out.distill is not None:
        assert out.distill.shape == (B, 2)
    assert torch.allclose(out.serving, student.backbone.heads(out.embedding, batch["surface"]))


def test_without_knowledge_terms_the_student_is_its_backbone() -> None:
    student = _student(METHODS["representation"])
    batch = random_batch(student.config.backbone, B, seed=1)
    empty = empty_knowledge(B, ("click", "conversion"), TEACHER.embed_dim, K)
    assert torch.allclose(student(batch, empty).serving, student.backbone(batch))


def _aux_gradients(beta: float) -> dict[str, torch.Tensor | None]:
    """Gradients of the auxiliary distillation loss alone (no known label: the serving term is 0)."""
    student = _student(TransferConfig(aux_head=True, grad_scale=beta))
    batch, k = random_batch(student.config.backbone, B, seed=1), _knowledge()
    zeros = torch.zeros(B, 2)
    loss, parts = student_loss(
        student(batch, k), zeros, zeros, torch.rand(B, 2), k["teacher_mask"], student.config.transfer
    )
    assert parts["serving"] == 0.0 and parts["aux"] > 0
    loss.backward()
    return {name: p.grad for name, p in student.named_parameters()}


def test_distillation_reaches_the_serving_head_only_through_the_backbone() -> None:
    full, none, half = _aux_gradients(1.0), _aux_gradients(0.0), _aux_gradients(0.5)
    serving = [n for n in full if n.startswith("backbone.heads.")]
    backbone = [n for n in full if n.startswith("backbone.") and n not in serving]
    assert serving and all(full[n] is None or not full[n].any() for n in serving)
    assert full["distill_head.weight"].abs().sum() > 0
    assert sum(float(full[n].abs().sum()) for n in backbone if full[n] is not None) > 0
    assert all(none[n] is None or not none[n].any() for n in backbone)  # grad_scale 0: no path at all
    assert torch.equal(none["distill_head.weight"], full["distill_head.weight"])  # the head still learns
    for name in backbone:
        if full[name] is not None:
            assert torch.equal(half[name], 0.5 * full[name]), name  # scaling by 0.5 is exact


def _serving(student: Student, k: Knowledge) -> torch.Tensor:
    return student(random_batch(student.config.backbone, B, seed=1), k).serving


def _trained(student: Student) -> Student:
    """`student` with a representation projection as training leaves it: not zero."""
    assert student.representation is not None
    with torch.no_grad():
        student.representation.project.weight.normal_(generator=torch.Generator().manual_seed(3))
    return student


def test_a_fresh_representation_input_has_no_effect_until_it_learns_one() -> None:
    student = _student(TransferConfig(representation="input"))
    batch, k = random_batch(student.config.backbone, B, seed=1), _knowledge()
    assert torch.equal(student(batch, k).serving, student.backbone(batch))  # the backbone alone
    labels = torch.randint(0, 2, (B, 2)).float()
    loss, _ = student_loss(
        student(batch, k), labels, torch.ones(B, 2), labels, k["teacher_mask"], student.config.transfer
    )
    loss.backward()
    assert student.representation is not None
    assert student.representation.project.weight.grad.abs().sum() > 0  # yet it learns from the first step


def test_sequence_representation_reads_only_real_past_embeddings() -> None:
    student = _trained(_student(TransferConfig(representation="sequence", sequence_length=K)))
    k = _knowledge()
    base = _serving(student, k)
    own = {**k, "teacher_embedding": torch.randn(B, TEACHER.embed_dim) * 10}
    assert torch.equal(_serving(student, own), base)  # the example's own embedding is never read
    padded = {**k, "past_embeddings": k["past_embeddings"].clone()}
    padded["past_embeddings"][0, 2:] = 5.0  # past_mask False there
    padded["past_embeddings"][1] = 5.0  # a row without past embeddings
    assert torch.equal(_serving(student, padded), base)
    real = {**k, "past_embeddings": k["past_embeddings"].clone()}
    real["past_embeddings"][0, 1] += 1.0
    changed = (_serving(student, real) != base).any(dim=1)
    assert changed[0] and not changed[1:].any()


def test_input_representation_reads_the_examples_own_embedding() -> None:
    student = _trained(_student(TransferConfig(representation="input")))
    k = _knowledge()
    base = _serving(student, k)
    other = {**k, "teacher_embedding": k["teacher_embedding"] + 1.0}
    changed = (_serving(student, other) != base).any(dim=1)
    assert changed[0] and not changed[1]  # row 1 has no teacher output: no representation term
    assert changed.sum() == int(k["teacher_mask"].sum())
    past = {**k, "past_embeddings": k["past_embeddings"] + 1.0}
    assert torch.equal(_serving(student, past), base)


def test_start_at_rates_sets_both_heads() -> None:
    student = _student(TransferConfig(aux_head=True))
    rates = torch.tensor([0.1, 0.01])
    student.start_at_rates(rates)
    assert student.distill_head is not None
    for head in (student.backbone.heads, student.distill_head):
        assert torch.allclose(torch.sigmoid(head.bias), rates.expand_as(head.bias))
