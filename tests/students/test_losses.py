"""Transfer losses: label scaling, gradient scaling, KD and auxiliary terms, teacher masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from students.config import TransferConfig
from students.losses import scale_gradient, scaled_targets, student_loss
from students.model import StudentOutput


def test_label_scaling_is_min_alpha_p_one() -> None:
    p = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9])
    assert torch.allclose(scaled_targets(p, 2.0), torch.tensor([0.0, 0.2, 0.6, 1.0, 1.0]))
    assert torch.equal(scaled_targets(p, 1.0), p)
    assert torch.allclose(scaled_targets(p, 0.5), p / 2)


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 3.0])
def test_scale_gradient_is_identity_forward_and_scales_backward(beta: float) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = scale_gradient(x, beta)
    assert torch.equal(y, x)
    (y * torch.arange(12.0).view(4, 3)).sum().backward()
    assert torch.equal(x.grad, beta * torch.arange(12.0).view(4, 3))


def _output(serving: torch.Tensor, distill: torch.Tensor | None = None) -> StudentOutput:
    return StudentOutput(serving, distill, torch.zeros(serving.shape[0], 4))


def test_kd_term_learns_the_targets_on_rows_with_teacher_output() -> None:
    torch.manual_seed(0)
    s = torch.randn(6, 2)
    labels, mask = torch.randint(0, 2, (6, 2)).float(), torch.ones(6, 2)
    targets = torch.rand(6, 2)
    has = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    config = TransferConfig(kd_weight=0.5)
    loss, parts = student_loss(_output(s), labels, mask, targets, has, config)
    rows = has.bool()
    kd = F.binary_cross_entropy_with_logits(s[rows], targets[rows], reduction="none").sum(1).mean()
    serving = F.binary_cross_entropy_with_logits(s, labels, reduction="none").mean(0).sum()
    assert parts["kd"] == pytest.approx(float(kd), rel=1e-5) and parts["aux"] == 0.0
    assert parts["serving"] == pytest.approx(float(serving), rel=1e-5)
    assert float(loss) == pytest.approx(float(serving + 0.5 * kd), rel=1e-5)
    # the rows without teacher output add nothing, whatever their targets
    other = targets.clone()
    other[~rows] = 1 - other[~rows]
    assert student_loss(_output(s), labels, mask, other, has, config)[1]["kd"] == parts["kd"]


def test_aux_term_reads_the_distillation_head_only() -> None:
    torch.manual_seed(1)
    s, d = torch.randn(5, 2), torch.randn(5, 2)
    labels, mask, targets, has = torch.ones(5, 2), torch.ones(5, 2), torch.rand(5, 2), torch.ones(5)
    config = TransferConfig(aux_head=True, aux_weight=2.0)
    loss, parts = student_loss(_output(s, d), labels, mask, targets, has, config)
    aux = F.binary_cross_entropy_with_logits(d, targets, reduction="none").sum(1).mean()
    assert parts["aux"] == pytest.approx(float(aux), rel=1e-5) and parts["kd"] == 0.0
    assert float(loss) == pytest.approx(parts["serving"] + 2.0 * float(aux), rel=1e-5)
    with pytest.raises(ValueError, match="distillation head"):
        student_loss(_output(s), labels, mask, targets, has, config)


def test_alone_is_ground_truth_only() -> None:
    s = torch.randn(4, 2)
    loss, parts = student_loss(
        _output(s), torch.ones(4, 2), torch.ones(4, 2), torch.rand(4, 2), torch.ones(4), TransferConfig()
    )
    assert parts == {"serving": pytest.approx(float(loss)), "kd": 0.0, "aux": 0.0}
