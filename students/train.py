"""Continual student training for one interval, in ExFM's per-step order.

No I/O: the caller brings the student (warm-started or fresh, teacher modules
already shared), its optimizer, an optional adapter (with its optimizer for the
per-step fit), and the day's features, knowledge, labels and label masks,
time-ordered. An "interval" adapter is first fit on all of the day's rows with
teacher output, every row's adapted logit coming from a copy fit on the other rows
(cross-fitted). Then per minibatch: (1) a "step" adapter takes one step on the
batch's fresh labels, (2) the distillation targets `min(alpha * SG(sigma(a)), 1)`
(or of sigma(f) without an adapter) are recomputed, (3) the student takes one step
on `student_loss`. After the pass, the served head's bias is refit to the day's rows
(`students.bias_refit`). How well the targets, and the teacher's own, predict the fresh
labels is returned beside the losses: what the adapter exists to improve.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from adapters.adapter import (
    StudentAdapter,
    adapted_probabilities,
    cross_fitted_logits,
    fit_student_adapter,
    fit_student_adapter_to_interval,
)
from infra.progress import track
from students.bias_refit import refit_bias_shift
from students.config import StudentConfig
from students.knowledge_inputs import Knowledge, slice_knowledge
from students.losses import scaled_targets, student_loss
from students.model import Student
from teacher.features import FeatureBatch, slice_batch
from teacher.train import TrainConfig


def make_student_optimizer(student: Student, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (frozen shared ones excluded)."""
    return torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=train.learning_rate)


def make_adapter(config: StudentConfig) -> StudentAdapter | None:
    """The adapter `config.transfer.adapter` names, over the student's tasks; None for "none"."""
    transfer = config.transfer
    if transfer.adapter == "none":
        return None
    context = config.teacher_embed_dim if transfer.adapter == "context" else 0
    tasks, hidden = len(config.backbone.tasks), transfer.adapter_hidden
    return StudentAdapter(tasks, context_dim=context, hidden=hidden, l2=transfer.adapter_l2)


def make_adapter_optimizer(adapter: StudentAdapter, config: StudentConfig) -> torch.optim.Optimizer | None:
    """Adam at the adapter's own learning rate for the per-step fit; None for the interval fit,
    whose L-BFGS starts afresh on each interval's rows."""
    if config.transfer.adapter_fit != "step":
        return None
    return torch.optim.Adam(adapter.parameters(), lr=config.transfer.adapter_learning_rate)


def student_teacher_logits(config: StudentConfig, knowledge: Knowledge) -> torch.Tensor:
    """The teacher's logits on the student's tasks, by name: (B, T_teacher) -> (B, T_student)."""
    index = [config.teacher_tasks.index(task) for task in config.backbone.tasks]
    return knowledge["teacher_logits"][:, index]


def _adapter_context(config: StudentConfig, knowledge: Knowledge) -> torch.Tensor | None:
    return knowledge["teacher_embedding"] if config.transfer.adapter == "context" else None


def _target_log_loss(targets: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per task (T,), the summed log loss of probability `targets` against 0/1 `labels` over `mask`."""
    return (F.binary_cross_entropy(targets, labels, reduction="none") * mask).sum(dim=0)


def teacher_probabilities(
    student_config: StudentConfig, knowledge_slice: Knowledge, adapter: StudentAdapter | None
) -> torch.Tensor:
    """The distillation targets (B, T_student): `min(alpha * SG(sigma(a or f)), 1)`, no gradient."""
    f = student_teacher_logits(student_config, knowledge_slice).detach()
    if adapter is None:
        p = torch.sigmoid(f)
    else:
        p = adapted_probabilities(adapter, f, _adapter_context(student_config, knowledge_slice))
    return scaled_targets(p, student_config.transfer.label_scale)


def train_student_interval(
    student: Student,
    optimizer: torch.optim.Optimizer,
    features: FeatureBatch,
    knowledge: Knowledge,
    labels: torch.Tensor,
    mask: torch.Tensor,
    train: TrainConfig,
    adapter: StudentAdapter | None = None,
    adapter_optimizer: torch.optim.Optimizer | None = None,
    label: str = "distillation",
) -> dict[str, float]:
    """One pass in row order, then the served head's bias refit on the same rows; returns mean losses,
    the refit's shift, the targets' log loss and throughput.

    `labels` (N, T) float and `mask` (N, T) float 0/1, tasks in the student's order;
    `knowledge` holds N rows. Keys: train_loss, serving_loss, kd_loss, aux_loss,
    adapter_loss, examples, train_seconds, examples_per_s; per task `bias_shift_<task>`
    (how far the refit moved the served logits, averaged over the rows); and with
    distillation, per task, `target_log_loss_<task>` (the targets the student learned
    from) and `teacher_log_loss_<task>` (sigma(f), label-scaled, without the adapter):
    mean log loss against the fresh labels over rows with teacher output (NaN where none).
    """
    config = student.config
    transfer = config.transfer
    if (adapter is not None) != (transfer.adapter != "none"):
        given = "an adapter was" if adapter is not None else "no adapter was"
        raise ValueError(f"transfer.adapter is {transfer.adapter!r} but {given} given")
    if adapter is not None and transfer.adapter_fit == "step" and adapter_optimizer is None:
        raise ValueError("a per-step adapter needs its adapter_optimizer")
    student.train()
    n = int(labels.shape[0])
    sums = dict.fromkeys(("train_loss", "serving_loss", "kd_loss", "aux_loss", "adapter_loss"), 0.0)
    tasks = len(config.backbone.tasks)
    target_loss, teacher_loss, known_rows = torch.zeros(tasks), torch.zeros(tasks), torch.zeros(tasks)
    adapted = None  # the interval fit's adapted logits of every row, cross-fitted
    trained_on = labels.clone()  # each row's distillation targets as the pass used them
    if adapter is not None and transfer.adapter_fit == "interval":
        fit_on = (
            student_teacher_logits(config, knowledge),
            labels,
            mask * knowledge["teacher_mask"][:, None],
            _adapter_context(config, knowledge),
        )
        adapted = cross_fitted_logits(adapter, *fit_on)
        interval_adapter_loss = fit_student_adapter_to_interval(adapter, *fit_on)
    steps, start = 0, time.perf_counter()
    for begin in track(range(0, n, train.batch_size), label):
        rows = slice(begin, min(begin + train.batch_size, n))
        known = slice_knowledge(knowledge, rows)
        y, m, has_teacher = labels[rows], mask[rows], known["teacher_mask"]
        if adapter is not None and adapter_optimizer is not None:
            sums["adapter_loss"] += fit_student_adapter(
                adapter,
                adapter_optimizer,
                student_teacher_logits(config, known),
                y,
                m * has_teacher[:, None],
                _adapter_context(config, known),
            )
        targets = y
        if transfer.distillation:
            own = teacher_probabilities(config, known, None)
            if adapted is not None:
                targets = scaled_targets(torch.sigmoid(adapted[rows]), transfer.label_scale)
            else:
                targets = own if adapter is None else teacher_probabilities(config, known, adapter)
            trained_on[rows] = targets
            m_teacher = m * has_teacher[:, None]
            target_loss += _target_log_loss(targets, y, m_teacher)
            teacher_loss += _target_log_loss(own, y, m_teacher)
            known_rows += m_teacher.sum(dim=0)
        output = student(slice_batch(features, rows), known)
        loss, parts = student_loss(output, y, m, targets, has_teacher, transfer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums["train_loss"] += float(loss.detach())
        for part, value in parts.items():
            sums[f"{part}_loss"] += value
        steps += 1
    shift = _refit_serving_bias(student, features, knowledge, labels, mask, trained_on)
    seconds = time.perf_counter() - start
    stats = {k: v / max(steps, 1) for k, v in sums.items()}
    for i, task in enumerate(config.backbone.tasks):
        stats[f"bias_shift_{task}"] = float(shift[:, i].mean()) if n else 0.0
    if adapted is not None:
        stats["adapter_loss"] = interval_adapter_loss
    if transfer.distillation:
        target_mean, teacher_mean = target_loss / known_rows, teacher_loss / known_rows  # 0/0: NaN
        for i, task in enumerate(config.backbone.tasks):
            stats[f"target_log_loss_{task}"] = float(target_mean[i])
            stats[f"teacher_log_loss_{task}"] = float(teacher_mean[i])
    return stats | {
        "examples": float(n),
        "train_seconds": seconds,
        "examples_per_s": n / seconds if seconds else 0.0,
    }


def _refit_serving_bias(
    student: Student,
    features: FeatureBatch,
    knowledge: Knowledge,
    labels: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Move the served head's bias to the day's optimum (`refit_bias_shift`); each row's shift (N, T)."""
    config = student.config
    surface = features["surface"]
    shift = refit_bias_shift(
        predict_student(student, features, knowledge),
        surface,
        labels,
        mask,
        targets,
        knowledge["teacher_mask"],
        config.transfer,
        config.backbone.n_surfaces,
    )
    with torch.no_grad():
        student.backbone.heads.bias.add_(shift)
    return shift[surface]


@torch.no_grad()
def predict_student(
    student: Student, features: FeatureBatch, knowledge: Knowledge, batch_size: int = 4_096
) -> torch.Tensor:
    """Serving logits (N, T) in eval mode, batch by batch."""
    student.eval()
    n = int(features["surface"].shape[0])
    outputs = [
        student(slice_batch(features, rows), slice_knowledge(knowledge, rows)).serving
        for rows in (slice(b, min(b + batch_size, n)) for b in range(0, n, batch_size))
    ]
    return torch.cat(outputs) if outputs else torch.zeros(0, len(student.config.backbone.tasks))
