"""ExFM's student adapter: a small MLP that refreshes a stale teacher logit on fresh labels.

`a = f + MLP(f[, context])`, f the teacher's logits (B, T). It is fit on the
freshest ground truth alone (`L_a = h(a, y)`, teacher inputs detached; its fits add
a ridge penalty `l2 * ||W||^2` on the MLP's weights, which pulls it toward the
identity, where a day's rows are few for its inputs), and its
stop-gradient probabilities `SG(sigma(a))` then supervise a student's distillation
term, so student losses never reach it. Two ways to fit it: ExFM's per-step update
(`fit_student_adapter`, one optimizer step per student minibatch) or, when a whole
interval's rows are at hand, to convergence on all of them before the student's pass
(`fit_student_adapter_to_interval`), the targets then cross-fitted so that no row's
target has seen its own label (`cross_fitted_logits`). Torch only: no teacher or
student imports.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class StudentAdapter(nn.Module):
    """(B, T) teacher logits [+ (B, C) context] -> (B, T) adapted logits.

    `hidden` SiLU units, or none (`hidden=0`): an affine map of the inputs, each task's adapted
    logit from every task's teacher logit (Platt scaling across tasks, with context when given).
    `l2`: the ridge penalty its fits add on the MLP's weights (`penalty`), biases free.
    """

    def __init__(self, n_tasks: int, context_dim: int = 0, hidden: int = 0, l2: float = 0.0) -> None:
        super().__init__()
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.context_dim = context_dim
        self.l2 = l2
        width = n_tasks + context_dim
        layers = [nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, n_tasks)] if hidden else []
        self.mlp = nn.Sequential(*(layers or [nn.Linear(width, n_tasks)]))
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

    def penalty(self) -> torch.Tensor:
        """`l2 * ||W||^2` over the MLP's weights: what its fits add to `L_a`."""
        weights = [m.weight for m in self.mlp if isinstance(m, nn.Linear)]
        return self.l2 * sum((w**2).sum() for w in weights)


def adapter_loss(
    adapter: StudentAdapter,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """`L_a` = sum over tasks of the mean BCE(a, y) over known labels, teacher inputs detached.

    `labels`, `mask` (B, T) float, mask 0/1 (the caller zeroes rows without teacher outputs).
    """
    a = adapter(teacher_logits.detach(), None if context is None else context.detach())  # (B, T)
    losses = F.binary_cross_entropy_with_logits(a, labels, reduction="none") * mask
    return (losses.sum(dim=0) / mask.sum(dim=0).clamp(min=1)).sum()


def fit_student_adapter(
    adapter: StudentAdapter,
    optimizer: torch.optim.Optimizer,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
) -> float:
    """ExFM's per-step update: one optimizer step on `L_a` (`adapter_loss`) plus the adapter's
    `penalty`; returns `L_a` before it.

    A batch without a known label takes no step and returns 0.
    """
    if not bool(mask.any()):
        return 0.0
    adapter.train()
    loss = adapter_loss(adapter, teacher_logits, labels, mask, context)
    optimizer.zero_grad(set_to_none=True)
    (loss + adapter.penalty()).backward()
    optimizer.step()
    return float(loss.detach())


def fit_student_adapter_to_interval(
    adapter: StudentAdapter,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
    max_iterations: int = 100,
) -> float:
    """Fit `adapter` on all of an interval's rows at once: full-batch L-BFGS on `L_a` plus the
    adapter's `penalty` until it converges or `max_iterations`; returns `L_a` at the end (0 when no
    label is known).

    For a teacher whose version changes between intervals: a per-step update must track each new
    version's bias from one minibatch's labels at a time; this reads all of the interval's.
    """
    if not bool(mask.any()):
        return 0.0
    adapter.train()
    optimizer = torch.optim.LBFGS(
        adapter.parameters(), max_iter=max_iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = adapter_loss(adapter, teacher_logits, labels, mask, context) + adapter.penalty()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(adapter_loss(adapter, teacher_logits, labels, mask, context))


def cross_fitted_logits(
    adapter: StudentAdapter,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
    folds: int = 2,
) -> torch.Tensor:
    """Every row's adapted logits (N, T) from a copy of `adapter` fit (`fit_student_adapter_to_interval`)
    on the other folds' rows, rows dealt to folds in turn: out of sample, as a stale teacher's
    correction must be to be learned from, and as its quality must be to be measured."""
    held_out = torch.arange(teacher_logits.shape[0]) % folds
    adapted = torch.empty_like(teacher_logits)
    for fold in range(folds):
        rows, others = held_out == fold, held_out != fold
        fitted = copy.deepcopy(adapter)
        fit_student_adapter_to_interval(
            fitted, teacher_logits[others], labels[others], mask[others], _rows(context, others)
        )
        with torch.no_grad():
            adapted[rows] = fitted(teacher_logits[rows].detach(), _rows(context, rows))
    return adapted


def _rows(context: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    return None if context is None else context[keep]


@torch.no_grad()
def adapted_probabilities(
    adapter: StudentAdapter, teacher_logits: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """SG(sigmoid(a)), (B, T): the targets a student's distillation term learns from."""
    return torch.sigmoid(adapter(teacher_logits, context))
