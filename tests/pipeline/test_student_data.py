"""Student rows: the teacher's knowledge joined by example id, past embeddings strictly before each row."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipeline.student_data import in_scope, join_knowledge, past_embeddings

T0 = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def _ts(seconds: list[float]) -> pa.Array:
    return pa.array([T0 + dt.timedelta(seconds=s) for s in seconds], pa.timestamp("us", tz="UTC"))


def _pool(users: list[int], seconds: list[float], width: int = 2) -> pa.Table:
    embeddings = [[float(i), float(i) + 0.5][:width] for i in range(len(users))]
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "ts": _ts(seconds),
            "embedding": pa.array(embeddings, pa.list_(pa.float32())),
        }
    )


def _pasts(array: pa.ListArray, width: int = 2) -> list[list[float]]:
    """Row -> the first component of each past embedding, most recent first."""
    return [[v for v in row[::width]] for row in array.to_pylist()]


def test_past_embeddings_are_strictly_earlier_same_user_most_recent_first() -> None:
    # pool rows 0..4: user 1 at t=10, 20, 30; user 2 at t=15, 25
    pool = _pool([1, 2, 1, 1, 2], [10, 15, 20, 30, 25])
    rows = pa.table({"user_id": pa.array([1, 1, 2, 3, 1], pa.int64()), "ts": _ts([20, 31, 25, 40, 5])})
    got = _pasts(past_embeddings(rows, pool, sequence_length=2))
    assert got == [
        [0.0],  # user 1 at t=20: its own output (row 2, same ts) is not included, only t=10
        [3.0, 2.0],  # user 1 at t=31: t=30 then t=20 (K=2 keeps the two most recent)
        [1.0],  # user 2 at t=25: t=15 only, never its own t=25 output
        [],  # user 3: no past
        [],  # user 1 at t=5: nothing before
    ]


def test_own_output_never_in_its_past_when_pool_contains_the_rows_themselves() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 5, 200).tolist()
    seconds = rng.integers(0, 1_000, 200).astype(float).tolist()
    pool = _pool(users, seconds, width=2)
    rows = pool.select(["user_id", "ts"])
    pasts = past_embeddings(rows, pool, sequence_length=50).to_pylist()
    for i, past in enumerate(pasts):
        earlier = sorted(
            (j for j in range(200) if users[j] == users[i] and seconds[j] < seconds[i]),
            key=lambda j: -seconds[j],
        )
        assert float(i) not in past[::2]
        assert sorted(past[::2]) == sorted(float(j) for j in earlier)


def test_join_knowledge_keeps_row_order_and_marks_missing() -> None:
    rows = pa.table({"example_id": ["c", "a", "z"], "surface": ["facebook_feed"] * 3})
    outputs = pa.table(
        {
            "example_id": ["a", "b", "c"],
            "logit_click": pa.array([1.0, 2.0, 3.0], pa.float32()),
            "logit_conversion": pa.array([-1.0, -2.0, -3.0], pa.float32()),
            "embedding": pa.array([[1.0], [2.0], [3.0]], pa.list_(pa.float32())),
        }
    )
    joined = join_knowledge(rows, outputs, ("click", "conversion"))
    assert joined["teacher_logit_click"].to_pylist() == [3.0, 1.0, None]
    assert joined["teacher_embedding"].to_pylist() == [[3.0], [1.0], None]
    assert joined["has_teacher"].to_pylist() == [True, True, False]


def test_in_scope_filters_surfaces() -> None:
    rows = pa.table({"surface": ["facebook_feed", "instagram_reels", "facebook_stories"]})
    assert in_scope(rows, ("facebook_feed", "facebook_stories"))["surface"].to_pylist() == [
        "facebook_feed",
        "facebook_stories",
    ]


@pytest.mark.parametrize("k", [0, 1])
def test_empty_pool(k: int) -> None:
    rows = pa.table({"user_id": pa.array([1], pa.int64()), "ts": _ts([1])})
    empty = _pool([], []).slice(0, 0)
    assert past_embeddings(rows, empty, k).to_pylist() == [[]]
