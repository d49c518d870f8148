"""The events expectation suite (GX Core 1.x) and a row-level verdict for one day's batch.

One ephemeral GX context, pandas data source, suite and validation definition are built
once per process and cached; the day-dependent bounds (`ds`, the day's `ts` window) are
suite parameters (`$PARAMETER`) given at run time. Each expectation carries a stable
name in its `meta`; the verdict maps every name to the row positions GX found
unexpected (`result_format="COMPLETE"`, `unexpected_index_list` over a RangeIndex), so
the quarantine applies exactly GX's verdict and no hand-written copy of the rules.

Importing this module imports great_expectations (~4 s): import it inside tasks only.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pyarrow as pa
from great_expectations.data_context import EphemeralDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import Column

from infra.schema import AD_FORMATS, ITEM_KINDS, REQUIRED_EVENT_COLUMNS, SURFACES

SUITE_NAME = "events"
ID_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "advertiser_id", "category_id")
MAX_AGE_BUCKET = 6


class ValidationError(RuntimeError):
    """GX could not evaluate an expectation (e.g. a missing column): no row verdict exists."""


@dataclass(frozen=True)
class EventsVerdict:
    """GX's row-level verdict on one batch.

    `failures` maps every expectation name in the suite (in suite order) to the sorted
    row positions (0-based, into the validated table) that it found unexpected.
    """

    n_rows: int
    failures: dict[str, np.ndarray]

    @property
    def bad_positions(self) -> np.ndarray:
        """Sorted positions of rows failing at least one expectation."""
        parts = [p for p in self.failures.values() if p.size]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    def failed_by_row(self) -> dict[int, list[str]]:
        """Row position -> names of the expectations it failed, in suite order."""
        by_row: dict[int, list[str]] = {}
        for name, positions in self.failures.items():
            for pos in positions.tolist():
                by_row.setdefault(pos, []).append(name)
        return by_row

    def worst_expectation(self) -> tuple[str, int]:
        """The expectation with the most failing rows and that count (first in suite order on ties)."""
        name = max(self.failures, key=lambda n: self.failures[n].size)
        return name, int(self.failures[name].size)


def named(name: str, expectation: gxe.Expectation) -> gxe.Expectation:
    """`expectation` with `name` in its meta: the name failures and quarantine rows report."""
    expectation.meta = {"name": name}
    return expectation


def events_expectations() -> list[gxe.Expectation]:
    """The events suite: one named expectation per rule in docs/events.md."""
    is_ad = Column("item_kind") == "ad"
    rules: list[gxe.Expectation] = [
        named(f"{c}_not_null", gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in REQUIRED_EVENT_COLUMNS
    ]
    rules += [
        named("surface_in_set", gxe.ExpectColumnValuesToBeInSet(column="surface", value_set=list(SURFACES))),
        named(
            "item_kind_in_set",
            gxe.ExpectColumnValuesToBeInSet(column="item_kind", value_set=list(ITEM_KINDS)),
        ),
        named(
            "ad_format_in_set",
            gxe.ExpectColumnValuesToBeInSet(column="ad_format", value_set=list(AD_FORMATS)),
        ),
        named(
            "ad_has_advertiser_id",
            gxe.ExpectColumnValuesToNotBeNull(column="advertiser_id", row_condition=is_ad),
        ),
        named("ad_has_ad_format", gxe.ExpectColumnValuesToNotBeNull(column="ad_format", row_condition=is_ad)),
        named("click_in_0_1", gxe.ExpectColumnValuesToBeInSet(column="click", value_set=[0, 1])),
        named("conversion_in_0_1", gxe.ExpectColumnValuesToBeInSet(column="conversion", value_set=[0, 1])),
        named(
            "conversion_requires_click",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="click", column_B="conversion", or_equal=True
            ),
        ),
        named(
            "conversion_only_for_ads",
            gxe.ExpectColumnValuesToBeInSet(
                column="conversion", value_set=[0], row_condition=Column("item_kind") != "ad"
            ),
        ),
        named(
            "conversion_ts_not_before_ts",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="conversion_ts",
                column_B="ts",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
        ),
        named(
            "ts_within_day",
            gxe.ExpectColumnValuesToBeBetween(
                column="ts",
                min_value={"$PARAMETER": "day_start"},
                max_value={"$PARAMETER": "day_end"},
                strict_max=True,
            ),
        ),
        named(
            "ds_matches_batch", gxe.ExpectColumnValuesToBeInSet(column="ds", value_set={"$PARAMETER": "ds"})
        ),
        named(
            "user_age_bucket_in_range",
            gxe.ExpectColumnValuesToBeBetween(
                column="user_age_bucket", min_value=0, max_value=MAX_AGE_BUCKET
            ),
        ),
    ]
    rules += [
        named(f"{c}_non_negative", gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0))
        for c in ID_COLUMNS
    ]
    rules.append(named("event_id_unique", gxe.ExpectColumnValuesToBeUnique(column="event_id")))
    return rules


@functools.cache
def gx_context() -> EphemeralDataContext:
    """The process's one ephemeral GX context (every suite of `infra` lives in it)."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def dataframe_validation(name: str, expectations: list[gxe.Expectation]) -> gx.ValidationDefinition:
    """Suite `name` over a whole pandas dataframe, added to the shared context (call once per name)."""
    context = gx_context()
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(f"{name}_batch")
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = gx.ValidationDefinition(
        name=name, data=batch.add_batch_definition_whole_dataframe("whole"), suite=suite
    )
    return context.validation_definitions.add(definition)


@functools.cache
def _validation_definition() -> gx.ValidationDefinition:
    """The events suite's validation, built once per process."""
    return dataframe_validation(SUITE_NAME, events_expectations())


def _suite_parameters(ds: str) -> dict[str, Any]:
    day = dt.date.fromisoformat(ds)
    start = pd.Timestamp(day, tz="UTC")
    return {"ds": [ds], "day_start": start, "day_end": start + pd.Timedelta(days=1)}


def _exception_message(info: dict[str, Any] | None) -> str:
    """The first exception message in GX's exception_info (flat, or keyed by metric id)."""
    if not info:
        return "no result and no exception reported"
    if "exception_message" in info:
        return str(info["exception_message"])
    nested = [v for v in info.values() if isinstance(v, dict) and "exception_message" in v]
    return str(nested[0]["exception_message"]) if nested else str(info)[:500]


def _to_frame(events: pa.Table) -> pd.DataFrame:
    """Pandas frame with a RangeIndex, so GX's unexpected indices are row positions.

    Narrow integer columns are widened to int64 in Arrow (one consolidated block):
    GX's pandas `between` metric is vectorised only for int64/float64 columns and
    falls back to a per-value Python loop otherwise. Strings stay Arrow-backed
    (`string[pyarrow]`), which halves the null and set checks against object columns.
    """
    wide = pa.schema([f.with_type(pa.int64()) if pa.types.is_integer(f.type) else f for f in events.schema])
    return events.cast(wide).to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)


def validate_events(events: pa.Table, ds: str) -> EventsVerdict:
    """Run the events suite on `events` (EVENTS_SCHEMA columns, nulls allowed) for day `ds`.

    Raises ValidationError when GX could not evaluate an expectation.
    """
    frame = _to_frame(events)
    # Copy-on-write, scoped to this run: GX filters the frame with all-true masks many
    # times, and without CoW pandas deep-copies every column each time (~2x slower).
    with pd.option_context("mode.copy_on_write", True):
        result = _validation_definition().run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=_suite_parameters(ds),
            result_format={"result_format": "COMPLETE"},
        )
    found: dict[str, np.ndarray] = {}
    for outcome in result.results:
        name = outcome.expectation_config.meta["name"]
        if not outcome.success and "unexpected_index_list" not in outcome.result:
            raise ValidationError(
                f"GX could not evaluate {name}: {_exception_message(outcome.exception_info)}"
            )
        unexpected = outcome.result.get("unexpected_index_list") or []
        found[name] = np.unique(np.asarray(unexpected, dtype=np.int64))
    # GX reports results in its own order; the verdict keeps the suite's.
    order = [e.meta["name"] for e in _validation_definition().suite.expectations]
    return EventsVerdict(n_rows=events.num_rows, failures={name: found[name] for name in order})
