"""Transfer losses: ground truth on the serving head plus ExFM's distillation terms.

`h(z, t)` is BCE-with-logits against a hard label or a soft probability. The
total is `h(s, y) + kd_weight * h(s, t) + aux_weight * h(d, t)`, s the serving
head's logits, d the auxiliary distillation head's, t the (adapted, label-scaled)
teacher probabilities. Distillation terms average over rows with teacher output only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from students.config import TransferConfig
from teacher.train import masked_bce

if TYPE_CHECKING:  # the model imports scale_gradient from here
    from students.model import StudentOutput

__all__ = ["masked_bce", "scale_gradient", "scaled_targets", "serving_objective", "soft_bce", "student_loss"]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient times `beta` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.beta = beta  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.beta, None  # type: ignore[attr-defined]


def scale_gradient(x: torch.Tensor, beta: float) -> torch.Tensor:
    """`x` forward; its gradient multiplied by `beta` backward (ExFM's gradient scale)."""
    return x if beta == 1.0 else _ScaleGradient.apply(x, beta)


def scaled_targets(probabilities: torch.Tensor, alpha: float) -> torch.Tensor:
    """ExFM's label scaling, `min(alpha * p, 1)` elementwise."""
    return (alpha * probabilities).clamp(max=1.0)


def soft_bce(logits: torch.Tensor, targets: torch.Tensor, teacher_mask: torch.Tensor) -> torch.Tensor:
    """Mean over rows with teacher output (`teacher_mask` (B,) 0/1) of the BCE summed over tasks."""
    return masked_bce(logits, targets, teacher_mask[:, None].expand_as(logits))


def serving_objective(
    serving: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    teacher_mask: torch.Tensor,
    config: TransferConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The terms of the loss the serving head's logits (B, T) enter: `h(s, y) + kd_weight * h(s, t)`;
    (total, {"serving", "kd"} floats)."""
    serving_loss = masked_bce(serving, labels, mask)
    total = serving_loss
    parts = {"serving": float(serving_loss.detach()), "kd": 0.0}
    if config.kd_weight > 0:
        kd = soft_bce(serving, targets, teacher_mask)
        total = total + config.kd_weight * kd
        parts["kd"] = float(kd.detach())
    return total, parts


def student_loss(
    output: StudentOutput,
    labels: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    teacher_mask: torch.Tensor,
    config: TransferConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(total, {"serving", "kd", "aux"} floats); `labels`, `mask`, `targets` (B, T), `teacher_mask` (B,)."""
    total, parts = serving_objective(output.serving, labels, mask, targets, teacher_mask, config)
    parts["aux"] = 0.0
    if config.aux_head:
        if output.distill is None:
            raise ValueError("aux_head is on but the output has no distillation head")
        aux = soft_bce(output.distill, targets, teacher_mask)
        total = total + config.aux_weight * aux
        parts["aux"] = float(aux.detach())
    return total, parts
