"""Continual training for one interval: one time-ordered pass over a day's rows.

No I/O: the caller brings the model (warm-started or fresh), its optimizer and
the day's features, labels and label masks (see `pipeline.fm_data`), and saves
the result. A label whose mask is False (a conversion not known yet) adds no loss.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infra.progress import track
from teacher.features import FeatureBatch, slice_batch

# Adam's step size of the dense layers per model size: wider models take smaller steps.
# On the synthetic world (8 days of 20k events, progressive NE of days 4-8), `base` at
# 3e-4 beat 1e-3 on 4 of 5 surfaces while `tiny` was best at 1e-3 (3e-4 and 3e-3 both
# worse); `large` follows `base` (not measured for quality: it serves the throughput figures).
LEARNING_RATES = {"tiny": 1e-3, "base": 3e-4, "large": 3e-4}
# The id embedding tables' step size, the same for every size: a row moves only on the
# few examples carrying its id (one pass a day: a user's ~10, an ad's ~10), and how far a
# step moves the output does not grow with the model's width (as in muP, where
# input-layer rates do not shrink with width). At the dense rate of `base` its rows
# barely left their initialisation in 7 days.
EMBEDDING_LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class TrainConfig:
    """How one day is learned."""

    batch_size: int = 256
    learning_rate: float = 1e-3  # dense layers
    embedding_learning_rate: float = EMBEDDING_LEARNING_RATE  # id embedding tables
    seed: int = 0
    conversion_window_days: int = 3  # a conversion arrives at most this long after its click

    @classmethod
    def for_size(cls, size: str, **fields: Any) -> TrainConfig:
        """The config with `size`'s learning rate (`LEARNING_RATES`); other fields as given."""
        if size not in LEARNING_RATES:
            raise ValueError(f"no learning rate for model size {size!r}; known: {sorted(LEARNING_RATES)}")
        return cls(learning_rate=LEARNING_RATES[size], **fields)

    def to_dict(self) -> dict[str, object]:
        """Plain values, for checkpoints and MLflow params."""
        return asdict(self)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over every trainable parameter (its state is carried from day to day).

    Two groups: the weights of the `nn.Embedding` tables at `embedding_learning_rate`,
    every other parameter at `learning_rate`.
    """
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    in_tables = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in in_tables]
    return torch.optim.Adam(
        [
            {"params": tables, "lr": config.embedding_learning_rate},
            {"params": dense, "lr": config.learning_rate},
        ]
    )


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of each task's mean BCE over its known labels; (B, T) inputs."""
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * mask
    return (losses.sum(dim=0) / mask.sum(dim=0).clamp(min=1)).sum()


def train_interval(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: FeatureBatch,
    labels: torch.Tensor,
    mask: torch.Tensor,
    config: TrainConfig,
    label: str = "training",
) -> dict[str, float]:
    """One pass in row order (rows are time-ordered by the caller); returns loss and throughput.

    `labels` (N, T) float and `mask` (N, T) float 0/1, tasks in the model's order;
    `label` names the pass in its progress bar or log lines (`infra.progress`).
    """
    model.train()
    n = int(labels.shape[0])
    total, steps, start = 0.0, 0, time.perf_counter()
    for begin in track(range(0, n, config.batch_size), label):
        rows = slice(begin, min(begin + config.batch_size, n))
        loss = masked_bce(model(slice_batch(features, rows)), labels[rows], mask[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        steps += 1
    seconds = time.perf_counter() - start
    return {
        "train_loss": total / max(steps, 1),
        "examples": float(n),
        "train_seconds": seconds,
        "examples_per_s": n / seconds if seconds else 0.0,
    }


@torch.no_grad()
def predict_logits(model: nn.Module, features: FeatureBatch, batch_size: int = 4_096) -> torch.Tensor:
    """Logits (N, T) in eval mode, batch by batch."""
    model.eval()
    n = int(features["surface"].shape[0])
    outputs = [
        model(slice_batch(features, slice(b, min(b + batch_size, n)))) for b in range(0, n, batch_size)
    ]
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)
