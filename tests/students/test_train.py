"""Student training: ExFM's per-step order, the adapter's isolation, determinism, learning, prediction."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import pytest
import torch

from adapters.adapter import StudentAdapter, fit_student_adapter, fit_student_adapter_to_interval
from students.config import METHODS, StudentConfig, TransferConfig, student_backbone
from students.knowledge_inputs import Knowledge, random_knowledge, slice_knowledge
from students.losses import student_loss
from students.model import Student
from students.train import (
    make_adapter,
    make_adapter_optimizer,
    make_student_optimizer,
    predict_student,
    teacher_probabilities,
    train_student_interval,
)
from teacher.config import config_for
from teacher.features import FeatureBatch, random_batch
from teacher.train import TrainConfig

TEACHER = config_for("tiny")
TRAIN = TrainConfig(batch_size=32, learning_rate=1e-2)
N = 96


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(
    transfer: TransferConfig, teacher_tasks: tuple[str, ...] = ("click", "conversion")
) -> StudentConfig:
    return StudentConfig(student_backbone("vm", TEACHER), transfer, TEACHER.embed_dim, teacher_tasks)


def _data(n: int = N, seed: int = 1) -> tuple[FeatureBatch, Knowledge, torch.Tensor, torch.Tensor]:
    """Features, knowledge, labels (N, 2) and a mask with some unknown conversions."""
    batch = random_batch(_config(TransferConfig()).backbone, n, seed=seed)
    knowledge = random_knowledge(n, 2, TEACHER.embed_dim, 8, seed=seed)
    labels = torch.stack([batch["click"], batch["conversion"]], dim=1)
    mask = torch.ones_like(labels)
    mask[::5, 1] = 0.0
    return batch, knowledge, labels, mask


def _run(transfer: TransferConfig, seed: int = 0) -> tuple[Student, StudentAdapter | None, dict[str, float]]:
    torch.manual_seed(seed)
    config = _config(transfer)
    student, adapter = Student(config), make_adapter(config)
    adapter_optimizer = make_adapter_optimizer(adapter, config) if adapter is not None else None
    metrics = train_student_interval(
        student, make_student_optimizer(student, TRAIN), *_data(), TRAIN, adapter, adapter_optimizer
    )
    return student, adapter, metrics


def test_student_losses_never_reach_the_adapter() -> None:
    config = _config(METHODS["adapter"])
    torch.manual_seed(0)
    student, adapter = Student(config), make_adapter(config)
    assert adapter is not None
    batch, knowledge, labels, mask = _data()
    targets = teacher_probabilities(config, knowledge, adapter)
    loss, _ = student_loss(
        student(batch, knowledge), labels, mask, targets, knowledge["teacher_mask"], config.transfer
    )
    loss.backward()
    assert all(p.grad is None for p in adapter.parameters())


def _replay_adapter(transfer: TransferConfig) -> StudentAdapter:
    """The adapter `_run(transfer)` ends with, refit from the same start on its fit's inputs alone."""
    torch.manual_seed(0)
    config = _config(transfer)
    Student(config)  # the same draws as in _run, so the replayed adapter starts equal
    replay = make_adapter(config)
    assert replay is not None
    _, knowledge, labels, mask = _data()
    context = knowledge["teacher_embedding"] if transfer.adapter == "context" else None
    if transfer.adapter_fit == "interval":
        has = knowledge["teacher_mask"][:, None]
        fit_student_adapter_to_interval(replay, knowledge["teacher_logits"], labels, mask * has, context)
        return replay
    optimizer = make_adapter_optimizer(replay, config)
    assert optimizer is not None
    for begin in range(0, N, TRAIN.batch_size):
        rows = slice(begin, begin + TRAIN.batch_size)
        k = slice_knowledge(knowledge, rows)
        has = k["teacher_mask"][:, None]
        known = (labels[rows], mask[rows] * has, None if context is None else context[rows])
        fit_student_adapter(replay, optimizer, k["teacher_logits"], *known)
    return replay


@pytest.mark.parametrize("fit", ["interval", "step"])
def test_the_adapter_moves_only_by_its_own_fit(fit: str) -> None:
    transfer = dataclasses.replace(METHODS["adapter"], adapter_fit=fit, adapter_learning_rate=1e-2)
    _, adapter, metrics = _run(transfer)
    assert adapter is not None and metrics["adapter_loss"] > 0
    replay = _replay_adapter(transfer)
    for mine, theirs in zip(adapter.parameters(), replay.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert not torch.equal(adapter.mlp[-1].weight, torch.zeros_like(adapter.mlp[-1].weight))


@pytest.mark.parametrize("method", ["adapter", "kd_adapter"])
def test_the_targets_log_loss_shows_what_the_adapter_recovers(method: str) -> None:
    """A teacher 2 nats too high on every row: the interval-fit adapter's targets predict the labels
    better than the teacher's own, whichever head they supervise; without an adapter both are the
    teacher's; without a teacher, none."""
    torch.manual_seed(0)
    config = _config(METHODS[method])
    student, adapter = Student(config), make_adapter(config)
    batch, knowledge, _, mask = _data(n=512)
    g = torch.Generator().manual_seed(3)
    labels = torch.bernoulli(torch.sigmoid(knowledge["teacher_logits"] - 2.0), generator=g)
    metrics = train_student_interval(
        student, make_student_optimizer(student, TRAIN), batch, knowledge, labels, mask, TRAIN, adapter
    )
    for task in ("click", "conversion"):
        assert metrics[f"target_log_loss_{task}"] < metrics[f"teacher_log_loss_{task}"] - 0.05
    _, _, plain = _run(METHODS["aux_head"])
    assert plain["target_log_loss_click"] == plain["teacher_log_loss_click"] > 0
    _, _, alone = _run(METHODS["alone"])
    assert not any(key.endswith("log_loss_click") for key in alone)


def test_training_is_deterministic_under_a_seed() -> None:
    first, _, m1 = _run(METHODS["representation"])
    second, _, m2 = _run(METHODS["representation"])
    drop = ("train_seconds", "examples_per_s")
    assert {k: v for k, v in m1.items() if k not in drop} == {k: v for k, v in m2.items() if k not in drop}
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert m1["examples"] == N and m1["aux_loss"] > 0 and m1["kd_loss"] == 0


def test_a_student_learns_a_toy_signal() -> None:
    torch.manual_seed(0)
    config = _config(METHODS["kd"])
    student = Student(config)
    optimizer = make_student_optimizer(student, TRAIN)
    batch, knowledge, _, _ = _data(n=128)
    labels = torch.stack([(batch["surface"] % 2).float(), (batch["ad_format"] == 1).float()], dim=1)
    knowledge["teacher_logits"] = (labels * 8 - 4) * knowledge["teacher_mask"][
        :, None
    ]  # a teacher that knows
    losses = [
        train_student_interval(student, optimizer, batch, knowledge, labels, torch.ones_like(labels), TRAIN)
        for _ in range(6)
    ]
    assert losses[-1]["serving_loss"] < 0.5 * losses[0]["serving_loss"]
    assert losses[-1]["kd_loss"] < losses[0]["kd_loss"]


def test_teacher_probabilities_map_tasks_by_name_and_scale() -> None:
    k = random_knowledge(8, 2, TEACHER.embed_dim, 8)
    reversed_tasks = _config(METHODS["kd"], teacher_tasks=("conversion", "click"))
    expected = torch.sigmoid(k["teacher_logits"].flip(1))
    assert torch.allclose(teacher_probabilities(reversed_tasks, k, None), expected)
    scaled = _config(dataclasses.replace(METHODS["kd"], label_scale=3.0))
    assert torch.allclose(
        teacher_probabilities(scaled, k, None), (3 * torch.sigmoid(k["teacher_logits"])).clamp(max=1)
    )
    context = _config(dataclasses.replace(METHODS["adapter"], adapter="context"))
    adapter = make_adapter(context)
    assert adapter is not None and adapter.context_dim == TEACHER.embed_dim
    assert torch.equal(teacher_probabilities(context, k, adapter), torch.sigmoid(k["teacher_logits"]))


def test_adapter_arguments_must_match_the_config() -> None:
    config = _config(METHODS["adapter"])
    student = Student(config)
    data = _data()
    with pytest.raises(ValueError, match="adapter"):
        train_student_interval(student, make_student_optimizer(student, TRAIN), *data, TRAIN)
    assert make_adapter(_config(METHODS["aux_head"])) is None
    step = Student(_config(dataclasses.replace(METHODS["adapter"], adapter_fit="step")))
    with pytest.raises(ValueError, match="adapter_optimizer"):
        train_student_interval(step, make_student_optimizer(step, TRAIN), *data, TRAIN, StudentAdapter(2))


def test_predict_student_shapes_and_batching() -> None:
    student, _, _ = _run(METHODS["aux_head"])
    batch, knowledge, _, _ = _data()
    student.train()
    whole = predict_student(student, batch, knowledge)
    assert not student.training and whole.shape == (N, 2)
    assert torch.allclose(predict_student(student, batch, knowledge, batch_size=7), whole, atol=1e-6)
    empty = predict_student(
        student, random_batch(student.config.backbone, 0), slice_knowledge(knowledge, slice(0, 0))
    )
    assert empty.shape == (0, 2)
    snapshot = copy.deepcopy(student.state_dict())
    predict_student(student, batch, knowledge)
    assert all(torch.equal(v, snapshot[k]) for k, v in student.state_dict().items())


@pytest.mark.parametrize("method", ["alone", "aux_head"])
def test_the_served_head_ends_the_day_at_the_days_own_clicks(method: str) -> None:
    student, _, metrics = _run(METHODS[method])
    batch, knowledge, labels, mask = _data()
    p = torch.sigmoid(predict_student(student, batch, knowledge))
    for surface in batch["surface"].unique():
        rows = batch["surface"] == surface
        assert torch.allclose((p * mask)[rows].sum(0), (labels * mask)[rows].sum(0), rtol=1e-3, atol=1e-3)
    assert metrics["bias_shift_click"] != 0.0
