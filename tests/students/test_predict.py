"""Registry entry points: build_model + predict_frame equal predict_student, with and without knowledge."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from infra.sources.synthetic import SyntheticWorld, WorldConfig
from students import predict
from students.config import METHODS, StudentConfig, student_backbone
from students.knowledge_inputs import empty_knowledge, table_to_knowledge
from students.model import Student
from students.train import predict_student
from teacher.config import config_for
from teacher.features import table_to_features

TEACHER = config_for("tiny")
K = 3


@pytest.fixture(scope="module")
def examples(as_examples, with_histories) -> pa.Table:
    world = SyntheticWorld(WorldConfig(seed=5, events_per_day=60, n_users=20))
    return with_histories(as_examples(world.day_table("2026-01-02")), seed=2, max_len=10)


def _with_knowledge(examples: pa.Table) -> pa.Table:
    rng = np.random.default_rng(0)
    n, e = examples.num_rows, TEACHER.embed_dim
    has = rng.random(n) < 0.8
    logits = {
        f"teacher_logit_{t}": pa.array(
            np.where(has, rng.normal(size=n), np.nan), pa.float32(), from_pandas=True
        )
        for t in ("click", "conversion")
    }
    embedding = pa.array([list(rng.normal(size=e)) if h else None for h in has], pa.list_(pa.float32()))
    past = pa.array(
        [list(rng.normal(size=e * int(rng.integers(0, 5)))) for _ in range(n)], pa.list_(pa.float32())
    )
    columns = logits | {"teacher_embedding": embedding, "past_embeddings": past, "has_teacher": pa.array(has)}
    for name, column in columns.items():
        examples = examples.append_column(name, column)
    return examples


@pytest.mark.parametrize("method", ["alone", "representation"])
def test_round_trip_equals_predict_student(examples: pa.Table, method: str) -> None:
    torch.manual_seed(0)
    transfer = METHODS[method]
    config = StudentConfig(student_backbone("vm", TEACHER), transfer, TEACHER.embed_dim)
    trained = Student(config)
    if trained.representation is not None:  # training moves the projection off its zero start
        torch.nn.init.normal_(trained.representation.project.weight)
    model = predict.build_model(json.loads(json.dumps(config.to_dict())))
    model.load_state_dict(trained.state_dict())
    assert model.config == config
    assert (
        predict.FACTORY == "students.predict:build_model"
        and predict.PREDICTOR == "students.predict:predict_frame"
    )

    table = _with_knowledge(examples)
    features = table_to_features(table, config.backbone)
    knowledge = table_to_knowledge(table, config.teacher_tasks, TEACHER.embed_dim, transfer.sequence_length)
    got = predict.predict_frame(model, table.to_pandas())
    assert got.shape == (examples.num_rows, 2)
    np.testing.assert_allclose(got, predict_student(trained, features, knowledge).numpy(), atol=1e-5)

    bare = predict.predict_frame(model, examples.to_pandas())  # no knowledge columns: empty knowledge
    empty = empty_knowledge(
        examples.num_rows, config.teacher_tasks, TEACHER.embed_dim, transfer.sequence_length
    )
    np.testing.assert_allclose(bare, predict_student(trained, features, empty).numpy(), atol=1e-5)
    assert (method == "representation") == (not np.allclose(got, bare))
