"""ExFM's student adapter: a small MLP that refreshes a stale teacher logit on fresh labels.

`a = f + MLP(f[, context])`, f the teacher's logits (B, T). It is fit on the
freshest ground truth alone (`L_a = h(a, y)`, teacher inputs detached), and its
stop-gradient probabilities `SG(sigma(a))` then supervise a student's distillation
term, so student losses never reach it. Torch only: no teacher or student imports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StudentAdapter(nn.Module):
    """(B, T) teacher logits [+ (B, C) context] -> (B, T) adapted logits."""

    def __init__(self, n_tasks: int, context_dim: int = 0, hidden: int = 16) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.mlp = nn.Sequential(
            nn.Linear(n_tasks + context_dim, hidden), nn.SiLU(), nn.Linear(hidden, n_tasks)
        )
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # a fresh adapter is the identity: it returns f exactly
        nn.init.zeros_(last.bias)

    def forward(self, teacher_logits: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """a = f + MLP(f[, context]), (B, T)."""
        if (context is None) != (self.context_dim == 0):
            given = "a context" if context is not None else "no context"
            raise ValueError(f"adapter built for context_dim={self.context_dim}, got {given}")
        inputs = teacher_logits if context is None else torch.cat([teacher_logits, context], dim=1)
        return teacher_logits + self.mlp(inputs)


def fit_student_adapter(
    adapter: StudentAdapter,
    optimizer: torch.optim.Optimizer,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
) -> float:
    """One step on `L_a` = sum over tasks of the mean BCE(a, y) over known labels; returns `L_a`.

    `labels`, `mask` (B, T) float, mask 0/1 (the caller zeroes rows without teacher
    outputs). A batch without a known label takes no step and returns 0.
    """
    if not bool(mask.any()):
        return 0.0
    adapter.train()
    a = adapter(teacher_logits.detach(), None if context is None else context.detach())  # (B, T)
    losses = F.binary_cross_entropy_with_logits(a, labels, reduction="none") * mask
    loss = (losses.sum(dim=0) / mask.sum(dim=0).clamp(min=1)).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def adapted_probabilities(
    adapter: StudentAdapter, teacher_logits: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """SG(sigmoid(a)), (B, T): the targets a student's distillation term learns from."""
    return torch.sigmoid(adapter(teacher_logits, context))
