"""The teacher_outputs expectation suite (GX Core 1.x): checked on the written files before the commit.

Rows of `TEACHER_OUTPUTS_SCHEMA` (the partition columns `ds` and `teacher` are not in
the files) are checked for: every logit finite, every embedding `embed_dim` long and
finite, `example_id` present and unique, and one teacher version trained through the
expected day on every row. Lists are not a GX column type: the embedding is checked
through two derived columns, its length and its count of non-finite values.

Importing this module imports great_expectations (~4 s): import it inside tasks only.
"""

from __future__ import annotations

import functools
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from infra.validation import ValidationError, dataframe_validation, named

SUITE_NAME = "teacher_outputs"
LOGITS = ("logit_click", "logit_conversion")
# |logit| above this is no usable probability (sigmoid saturates near 37); it also catches inf.
MAX_ABS_LOGIT = 1e4


class TeacherOutputsInvalid(RuntimeError):
    """Teacher outputs failed an expectation: nothing may be committed."""


def teacher_outputs_expectations() -> list[gxe.Expectation]:
    """One named expectation per rule; `embed_dim`, `version` and `trained_through` are parameters."""
    rules: list[gxe.Expectation] = [
        named("example_id_not_null", gxe.ExpectColumnValuesToNotBeNull(column="example_id")),
        named("example_id_unique", gxe.ExpectColumnValuesToBeUnique(column="example_id")),
    ]
    for logit in LOGITS:
        # NaN counts as null in pandas (and GX skips nulls in range checks): two rules make "finite".
        rules.append(named(f"{logit}_not_nan", gxe.ExpectColumnValuesToNotBeNull(column=logit)))
        rules.append(
            named(
                f"{logit}_finite",
                gxe.ExpectColumnValuesToBeBetween(
                    column=logit, min_value=-MAX_ABS_LOGIT, max_value=MAX_ABS_LOGIT
                ),
            )
        )
    rules += [
        named(
            "embedding_length",
            gxe.ExpectColumnValuesToBeInSet(column="embedding_length", value_set={"$PARAMETER": "embed_dim"}),
        ),
        named(
            "embedding_finite", gxe.ExpectColumnValuesToBeInSet(column="embedding_nonfinite", value_set=[0])
        ),
        named(
            "teacher_version_single",
            gxe.ExpectColumnValuesToBeInSet(column="teacher_version", value_set={"$PARAMETER": "version"}),
        ),
        named(
            "teacher_trained_through_expected",
            gxe.ExpectColumnValuesToBeInSet(
                column="teacher_trained_through", value_set={"$PARAMETER": "trained_through"}
            ),
        ),
    ]
    return rules


@functools.cache
def _validation_definition() -> gx.ValidationDefinition:
    """The teacher_outputs suite's validation, built once per process."""
    return dataframe_validation(SUITE_NAME, teacher_outputs_expectations())


def _to_frame(outputs: pa.Table) -> pd.DataFrame:
    """The flat columns, plus the embedding's length and count of non-finite values per row."""
    embedding = outputs.column("embedding").combine_chunks()
    offsets = embedding.offsets.to_numpy().astype(np.int64)
    bad = ~np.isfinite(embedding.values.to_numpy(zero_copy_only=False))
    cumulative = np.concatenate([[0], np.cumsum(bad)])
    flat = outputs.drop_columns(["embedding"])
    frame = flat.to_pandas()
    frame["embedding_length"] = pc.list_value_length(embedding).fill_null(-1).to_numpy(zero_copy_only=False)
    frame["embedding_nonfinite"] = cumulative[offsets[1:]] - cumulative[offsets[:-1]]
    return frame


def validate_teacher_outputs(
    outputs: pa.Table, embed_dim: int, version: int, trained_through: str
) -> dict[str, int]:
    """Run the suite on `outputs`; return each failed expectation's name -> unexpected row count.

    Raises ValidationError when GX could not evaluate an expectation (e.g. a missing column).
    """
    result = _validation_definition().run(
        batch_parameters={"dataframe": _to_frame(outputs)},
        expectation_parameters={
            "embed_dim": [embed_dim],
            "version": [version],
            "trained_through": [trained_through],
        },
        result_format={"result_format": "SUMMARY"},
    )
    failed: dict[str, int] = {}
    for outcome in result.results:
        name = outcome.expectation_config.meta["name"]
        if outcome.success:
            continue
        count: Any = outcome.result.get("unexpected_count")
        if count is None:
            raise ValidationError(f"GX could not evaluate {name}: {outcome.exception_info}")
        failed[name] = int(count)
    return failed


def check_teacher_outputs(outputs: pa.Table, embed_dim: int, version: int, trained_through: str) -> None:
    """Raise TeacherOutputsInvalid naming every failed expectation and its row count."""
    failed = validate_teacher_outputs(outputs, embed_dim, version, trained_through)
    if failed:
        detail = ", ".join(f"{name} ({n} of {outputs.num_rows} rows)" for name, n in failed.items())
        raise TeacherOutputsInvalid(f"teacher outputs failed GX suite {SUITE_NAME!r}: {detail}")
