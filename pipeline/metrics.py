"""Measures of a click/conversion model with torchmetrics: NE, AUC and calibration per slice.

All metrics take logits. NE (normalized entropy) = mean log loss / H(p), with p the
slice's base positive rate and H the binary entropy: a constant predictor at p
scores 1.0, lower is better. Calibration = mean predicted probability / observed
rate (ideal 1.0). States are float64 sums, so batches and processes add up exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC


class NormalizedEntropy(Metric):
    """Mean binary log loss of `logits` against `target`, divided by the entropy of the base rate."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        for name in ("log_loss", "positives", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: `logits` and `target` (0/1 or soft) of the same shape."""
        target = target.double()
        self.log_loss += F.binary_cross_entropy_with_logits(logits.double(), target, reduction="sum")
        self.positives += target.sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        """NE; NaN when the slice is empty or has a single class (its entropy is 0)."""
        p = self.positives / self.count
        entropy = -(p * torch.log(p) + (1 - p) * torch.log1p(-p))
        if not 0 < p < 1:
            return torch.tensor(math.nan, dtype=torch.float64)
        return (self.log_loss / self.count) / entropy


class Calibration(Metric):
    """Mean predicted probability over observed positive rate (1.0 is calibrated)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        for name in ("predicted", "observed"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of `logits` and 0/1 `target`."""
        self.predicted += torch.sigmoid(logits.double()).sum()
        self.observed += target.double().sum()

    def compute(self) -> torch.Tensor:
        """The ratio; NaN when the slice has no positive."""
        if self.observed == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return self.predicted / self.observed


def _slice_metrics() -> MetricCollection:
    return MetricCollection(
        {"ne": NormalizedEntropy(), "auc": BinaryAUROC(), "calibration": Calibration()}, compute_groups=False
    )


class SliceEvaluator:
    """Streams batches of (logits, labels, label mask, surface) and reports every slice.

    Slices: each task overall (`click/ne`) and per surface (`click/ne/facebook_feed`).
    A label whose mask is False (not yet known) is left out of its task's slices.
    """

    def __init__(self, tasks: Sequence[str], surfaces: Sequence[str]) -> None:
        self.tasks, self.surfaces = tuple(tasks), tuple(surfaces)
        self._slices = {
            (task, surface): _slice_metrics() for task in self.tasks for surface in (None, *self.surfaces)
        }

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, surface: torch.Tensor
    ) -> None:
        """Add a batch: logits, labels and mask (B, T), surface codes (B,) indexing `surfaces`."""
        for t, task in enumerate(self.tasks):
            known = mask[:, t]
            self._slices[task, None].update(logits[known, t], labels[known, t].long())
            for s, name in enumerate(self.surfaces):
                rows = known & (surface == s)
                if rows.any():
                    self._slices[task, name].update(logits[rows, t], labels[rows, t].long())

    def positives(self, task: str, surface: str | None = None) -> float:
        """The positive labels a slice has seen (a click task's clicks); `surface` None: the task overall."""
        return float(self._slices[task, surface]["ne"].positives)

    def compute(self) -> dict[str, float]:
        """Metric name -> value for every slice with both classes present."""
        results: dict[str, float] = {}
        for (task, surface), metrics in self._slices.items():
            ne_state = metrics["ne"]
            if not 0 < float(ne_state.positives) < float(ne_state.count):
                continue  # AUC and NE are undefined on a single-class slice
            suffix = "" if surface is None else f"/{surface}"
            for name, value in metrics.compute().items():
                results[f"{task}/{name}{suffix}"] = float(value)
        return results
