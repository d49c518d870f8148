"""Knowledge columns to tensors: nulls, truncation of past embeddings, width errors, slices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from students.knowledge_inputs import (
    KNOWLEDGE_COLUMNS,
    empty_knowledge,
    random_knowledge,
    slice_knowledge,
    table_to_knowledge,
)

TASKS = ("click", "conversion")
E, K = 3, 2


def _table(embeddings: list[list[float] | None], past: list[list[float] | None], **extra: object) -> pa.Table:
    n = len(embeddings)
    columns = {
        "teacher_logit_click": pa.array([0.5, None, 1.5, -2.0][:n], pa.float32()),
        "teacher_logit_conversion": pa.array([-1.0, -2.0, None, -3.0][:n], pa.float32()),
        "teacher_embedding": pa.array(embeddings, pa.list_(pa.float32())),
        "past_embeddings": pa.array(past, pa.list_(pa.float32())),
        "has_teacher": pa.array([True, True, True, False][:n], pa.bool_()),
        "example_id": pa.array([f"e{i}" for i in range(n)]),  # extra columns are ignored
    }
    return pa.table(columns | extra)


@pytest.fixture
def table() -> pa.Table:
    emb = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [1.0, 1.0, 1.0]]
    past = [
        [10.0, 11.0, 12.0, 20.0, 21.0, 22.0, 30.0, 31.0, 32.0],  # 3 past rows: keep the 2 most recent
        [40.0, 41.0, 42.0],
        None,
        [],
    ]
    return _table(emb, past)


def test_columns_nulls_and_truncation(table: pa.Table) -> None:
    assert set(KNOWLEDGE_COLUMNS) <= set(table.column_names)
    k = table_to_knowledge(table, TASKS, E, K)
    # row 1 and 2 lack a logit, row 3 has_teacher False: mask 0 and zeros
    assert k["teacher_mask"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert k["teacher_logits"].tolist() == [[0.5, -1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert k["teacher_embedding"][0].tolist() == [1.0, 2.0, 3.0]
    assert k["teacher_embedding"][1:].abs().sum() == 0
    assert k["past_mask"].tolist() == [[True, True], [True, False], [False, False], [False, False]]
    assert k["past_embeddings"][0].tolist() == [[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]]
    assert k["past_embeddings"][1].tolist() == [[40.0, 41.0, 42.0], [0.0, 0.0, 0.0]]
    assert k["past_embeddings"][2:].abs().sum() == 0  # past rows are read whatever the teacher mask
    assert k["teacher_logits"].dtype == k["past_embeddings"].dtype == torch.float32
    assert k["past_mask"].dtype == torch.bool


def test_null_embedding_drops_the_row() -> None:
    k = table_to_knowledge(_table([[1.0, 2.0, 3.0], None], [None, None]), TASKS, E, K)
    assert k["teacher_mask"].tolist() == [1.0, 0.0]


def test_sliced_and_chunked_tables_read_their_own_rows(table: pa.Table) -> None:
    whole = table_to_knowledge(table, TASKS, E, K)
    part = table_to_knowledge(table.slice(1, 3), TASKS, E, K)
    chunked = table_to_knowledge(pa.concat_tables([table.slice(0, 1), table.slice(1)]), TASKS, E, K)
    for name, value in whole.items():
        assert torch.equal(part[name], value[1:]), name  # type: ignore[literal-required]
        assert torch.equal(chunked[name], value), name  # type: ignore[literal-required]


def test_wrong_widths_name_the_column_and_row() -> None:
    with pytest.raises(ValueError, match=r"teacher_embedding: row 1 "):
        table_to_knowledge(_table([[1.0, 2.0, 3.0], [1.0, 2.0], None], [None] * 3), TASKS, E, K)
    with pytest.raises(ValueError, match=r"past_embeddings: row 2 "):
        table_to_knowledge(_table([None] * 3, [None, [1.0] * 6, [1.0] * 4]), TASKS, E, K)


def test_empty_and_random_knowledge() -> None:
    empty = empty_knowledge(5, TASKS, E, K)
    assert empty["teacher_logits"].shape == (5, 2) and empty["past_embeddings"].shape == (5, K, E)
    assert empty["teacher_mask"].sum() == 0 and not empty["past_mask"].any()
    rand = random_knowledge(200, 2, E, K, seed=1)
    assert torch.equal(rand["teacher_logits"], random_knowledge(200, 2, E, K, seed=1)["teacher_logits"])
    assert 0 < rand["teacher_mask"].sum() < 200
    assert (rand["teacher_logits"][rand["teacher_mask"] == 0] == 0).all()
    assert (rand["past_embeddings"][~rand["past_mask"]] == 0).all()
    rows = slice_knowledge(rand, slice(10, 20))
    assert all(v.shape[0] == 10 for v in rows.values())


def test_an_empty_table() -> None:
    k = table_to_knowledge(_table([], []).slice(0, 0), TASKS, E, K)
    assert k["teacher_logits"].shape == (0, 2) and k["past_embeddings"].shape == (0, K, E)
    assert np.asarray(k["teacher_mask"]).shape == (0,)
