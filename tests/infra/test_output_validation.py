"""The teacher_outputs GX suite: clean outputs pass, each kind of corruption is named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from infra.output_validation import TeacherOutputsInvalid, check_teacher_outputs, validate_teacher_outputs
from infra.schema import TEACHER_OUTPUTS_SCHEMA

DIM = 4
FILE_SCHEMA = pa.schema([f for f in TEACHER_OUTPUTS_SCHEMA if f.name not in ("ds", "teacher")])


def outputs(n: int = 6) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "example_id": f"e{i}",
            "teacher_version": 2,
            "teacher_trained_through": "2026-01-01",
            "surface": "facebook_feed",
            "logit_click": float(rng.normal()),
            "logit_conversion": float(rng.normal()),
            "embedding": rng.normal(size=DIM).tolist(),
        }
        for i in range(n)
    ]


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=FILE_SCHEMA)


def test_clean_outputs_pass() -> None:
    assert validate_teacher_outputs(table(outputs()), DIM, 2, "2026-01-01") == {}
    check_teacher_outputs(table(outputs()), DIM, 2, "2026-01-01")


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [
        ("logit_click", float("nan"), "logit_click_not_nan"),
        ("logit_conversion", float("inf"), "logit_conversion_finite"),
        ("embedding", [0.0] * (DIM - 1), "embedding_length"),
        ("embedding", [0.0, float("nan"), 0.0, 0.0], "embedding_finite"),
        ("example_id", "e0", "example_id_unique"),
        ("teacher_version", 3, "teacher_version_single"),
        ("teacher_trained_through", "2026-01-05", "teacher_trained_through_expected"),
    ],
)
def test_a_corrupted_row_is_refused_by_name(column: str, value: object, expectation: str) -> None:
    rows = outputs()
    rows[3][column] = value
    failed = validate_teacher_outputs(table(rows), DIM, 2, "2026-01-01")
    assert expectation in failed
    with pytest.raises(TeacherOutputsInvalid, match=expectation):
        check_teacher_outputs(table(rows), DIM, 2, "2026-01-01")
