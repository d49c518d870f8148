"""The FM's optimizer: embedding tables and dense layers at their own step sizes."""

from __future__ import annotations

import torch
from torch import nn

from teacher.config import config_for
from teacher.features import random_batch
from teacher.model import GemFM
from teacher.train import EMBEDDING_LEARNING_RATE, LEARNING_RATES, TrainConfig, make_optimizer, masked_bce


def test_embedding_tables_take_their_own_step_size() -> None:
    model = GemFM(config_for("tiny"))
    config = TrainConfig.for_size("base")
    tables, dense = make_optimizer(model, config).param_groups
    table_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    assert {id(p) for p in tables["params"]} == table_ids
    assert tables["lr"] == EMBEDDING_LEARNING_RATE and dense["lr"] == LEARNING_RATES["base"]
    grouped = [id(p) for group in (tables, dense) for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()), "every parameter exactly once"


def test_one_step_moves_a_table_row_by_the_embedding_rate() -> None:
    torch.manual_seed(0)
    model = GemFM(config_for("tiny"))
    config = TrainConfig(learning_rate=1e-4, embedding_learning_rate=1e-2)
    optimizer = make_optimizer(model, config)
    batch = random_batch(model.config, 8, seed=1)
    before = model.embeddings.tables["user"].weight.detach().clone()
    labels = torch.ones(8, len(model.config.tasks))
    masked_bce(model(batch), labels, torch.ones_like(labels)).backward()
    optimizer.step()
    moved = (model.embeddings.tables["user"].weight.detach() - before).abs()
    row = int(batch["user"][0])
    # Adam's first step moves every parameter with a gradient by its group's rate.
    assert torch.allclose(moved[row], torch.full_like(moved[row], 1e-2), rtol=1e-3)
