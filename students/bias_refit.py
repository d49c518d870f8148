"""The served head's day-end bias refit: the day's own objective, every other weight as the pass left it.

A student learns a day in one time-ordered pass, so its served head's bias ends where the day's last
minibatches put it, not where the whole day does. On a VM learning a few thousand rows a day that is
far off: on the benchmark's synthetic world, vm-facebook_feed alone predicted 1.19x the clicks of the
very day it had just learned (checkpoint of 2026-01-07, seed 0, at 223134f). The VM serves all of the
next day, so after the pass each surface's bias is moved to the minimum of the served head's own
loss over the day's rows (`serving_objective`: the labels, and single-head KD's term against the
targets the rows were trained on), every other weight held. Its first-order condition is the
calibration the day's rows can tell: with labels alone, predicted clicks equal the day's clicks on
each surface; with KD, the labels' and the targets' pulls balance as they do in training, so KD keeps
its share of a teacher's bias. The auxiliary distillation head is not served and is not refit.
"""

from __future__ import annotations

import torch

from students.config import TransferConfig
from students.losses import serving_objective


def refit_bias_shift(
    logits: torch.Tensor,
    surface: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    teacher_mask: torch.Tensor,
    config: TransferConfig,
    n_surfaces: int,
) -> torch.Tensor:
    """The shift (n_surfaces, T) of the served head's bias that minimises `serving_objective` on the
    rows: served `logits` (N, T), their `surface` codes (N,), `labels`, `mask`, `targets` (N, T) and
    `teacher_mask` (N,). A surface or task with no row to learn from keeps a shift of 0."""
    shift = torch.zeros(n_surfaces, logits.shape[1], dtype=torch.float64, requires_grad=True)
    served = logits.double()
    rows = [t.double() for t in (labels, mask, targets, teacher_mask)]
    optimizer = torch.optim.LBFGS(
        [shift], max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss, _ = serving_objective(served + shift[surface], *rows, config)
        loss.backward()
        return loss

    optimizer.step(closure)
    return shift.detach().float()
