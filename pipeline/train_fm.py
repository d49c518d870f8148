"""Continual training of the foundation model `gem-fm`, one day at a time.

Reads:  Delta `examples` (day `ds`, and day `ds - window` for late conversions),
        the checkpoint of the FM trained through `ds - 1` (looked up by date).
Writes: the checkpoint `<lake>/checkpoints/gem-fm/ds=<ds>/checkpoint.pt`
        (weights, optimizer state, configs, the examples version read, statistics).
Day one starts from scratch; any later day needs its predecessor, so the chain
runs in date order and re-running a day re-trains only from its predecessor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from infra.checkpoints import (
    checkpoint_days,
    checkpoint_exists,
    checkpoint_uri,
    load_checkpoint,
    save_checkpoint,
)
from infra.delta import table_version
from infra.settings import Settings
from pipeline.fm_data import previous_day, training_rows
from pipeline.hierarchy import FM_NAME
from teacher.config import FMConfig, config_for
from teacher.features import table_to_features
from teacher.model import GemFM
from teacher.train import TrainConfig, make_optimizer, train_interval


class MissingCheckpointError(RuntimeError):
    """The day before has no checkpoint although earlier days do: train that day first."""


@dataclass(frozen=True)
class FMTrainingConfig:
    """The FM's size and how each day is learned."""

    size: str = "base"
    train: TrainConfig = field(default_factory=lambda: TrainConfig.for_size("base"))

    @classmethod
    def from_settings(cls, settings: Settings) -> FMTrainingConfig:
        """The size from `DISTILLERY_FM_SIZE` (its learning rate with it), the seed from `DISTILLERY_SEED`."""
        return cls(size=settings.fm_size, train=TrainConfig.for_size(settings.fm_size, seed=settings.seed))


def labels_and_mask(rows: pa.Table, tasks: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) float labels and 0/1 masks from the `label_<task>` / `mask_<task>` columns."""
    labels = np.stack([rows[f"label_{t}"].to_numpy() for t in tasks], axis=1).astype(np.float32)
    mask = np.stack([rows[f"mask_{t}"].to_numpy(zero_copy_only=False) for t in tasks], axis=1)
    return torch.from_numpy(labels), torch.from_numpy(mask.astype(np.float32))


def day_seed(seed: int, ds: str) -> int:
    """A per-day seed (dropout, init): the same (seed, ds) always gives the same run."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{ds}".encode()).digest()[:4], "little")


def load_fm(uri: str) -> tuple[GemFM, dict[str, Any]]:
    """The model stored in the checkpoint at `uri`, and the whole checkpoint."""
    checkpoint = load_checkpoint(uri)
    model = GemFM(FMConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model, checkpoint


def warm_start(
    settings: Settings, ds: str, config: FMTrainingConfig, base_rates: torch.Tensor
) -> tuple[GemFM, torch.optim.Optimizer, str | None]:
    """The FM trained through `ds - 1` with its optimizer, or a fresh one on the first day.

    A fresh model's heads start at `base_rates` (per task, over the day's known labels).
    A stored model keeps its own architecture: `config.size` applies to fresh models only.
    """
    parent = checkpoint_uri(settings.lake, FM_NAME, previous_day(ds))
    if checkpoint_exists(parent):
        model, checkpoint = load_fm(parent)
        optimizer = make_optimizer(model, config.train)
        optimizer.load_state_dict(checkpoint["optimizer"])
        return model, optimizer, parent
    earlier = [day for day in checkpoint_days(settings.lake, FM_NAME) if day < ds]
    if earlier:
        raise MissingCheckpointError(
            f"{FM_NAME} for {ds} warm-starts from the FM trained through {previous_day(ds)}, "
            f"but {parent} does not exist (last trained day: {earlier[-1]}); train {previous_day(ds)} first"
        )
    torch.manual_seed(day_seed(config.train.seed, "init"))
    model = GemFM(config_for(config.size))
    model.heads.start_at_rates(base_rates)
    return model, make_optimizer(model, config.train), None


def train_fm(settings: Settings, ds: str, config: FMTrainingConfig) -> dict[str, Any]:
    """Train the FM through `ds` (one time-ordered pass) and save its checkpoint.

    Returns references: the checkpoint URI, its parent, the examples version read,
    and the training statistics.
    """
    examples_uri = settings.table_uri("examples")
    examples_version = table_version(examples_uri)
    rows = training_rows(examples_uri, ds, config.train.conversion_window_days)
    labels, mask = labels_and_mask(rows, config_for(config.size).tasks)
    base_rates = (labels * mask).sum(0) / mask.sum(0).clamp(min=1)
    model, optimizer, parent = warm_start(settings, ds, config, base_rates)
    features = table_to_features(rows, model.config)
    torch.manual_seed(day_seed(config.train.seed, ds))
    stats = train_interval(model, optimizer, features, labels, mask, config.train, f"{FM_NAME} {ds}")
    uri = checkpoint_uri(settings.lake, FM_NAME, ds)
    save_checkpoint(
        uri,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "model_config": model.config.to_dict(),
            "train_config": config.train.to_dict(),
            "trained_through": ds,
            "parent": parent,
            "examples_version": examples_version,
            "stats": stats,
        },
    )
    return {"checkpoint": uri, "ds": ds, "parent": parent, "examples_version": examples_version, **stats}
