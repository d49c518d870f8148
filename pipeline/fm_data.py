"""The rows a foundation model trains and is evaluated on, with the labels it may use.

Reads Delta `examples` (EXAMPLES_SCHEMA) and appends four columns that models and
metrics read instead of the raw labels: `label_click`, `label_conversion` (float32)
and `mask_click`, `mask_conversion` (bool: False where the label is not known yet).
The delayed-conversion rule is `teacher.labels`'.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from infra.days import shift_day
from infra.delta import partitions, read_partition
from teacher.labels import catch_up_day, caught_up_conversion, conversion_known, training_cutoff


def _conversion_ts(table: pa.Table) -> np.ndarray:
    return table["conversion_ts"].to_numpy(zero_copy_only=False).astype("datetime64[us]")


def _with_labels(
    table: pa.Table, mask_click: np.ndarray, label_conversion: np.ndarray, mask_conversion: np.ndarray
) -> pa.Table:
    return (
        table.append_column("label_click", pa.array(table["click"].to_numpy().astype(np.float32)))
        .append_column("label_conversion", pa.array(label_conversion.astype(np.float32)))
        .append_column("mask_click", pa.array(mask_click))
        .append_column("mask_conversion", pa.array(mask_conversion))
    )


def _in_time_order(table: pa.Table) -> pa.Table:
    return table.sort_by([("ts", "ascending"), ("example_id", "ascending")])


def labelled_day(examples_uri: str, ds: str) -> pa.Table:
    """Day `ds`'s examples in time order, labelled as known at the end of `ds`."""
    table = _in_time_order(read_partition(examples_uri, ds))
    click, conversion = table["click"].to_numpy(), table["conversion"].to_numpy()
    known = conversion_known(click, conversion, _conversion_ts(table), training_cutoff(ds))
    return _with_labels(table, np.ones(len(click), dtype=bool), conversion * known, known)


def caught_up_rows(examples_uri: str, ds: str, window_days: int) -> pa.Table | None:
    """Pending clicked rows of day `ds - window_days`, now final: conversion-only supervision.

    None when that day was never built (the first days of the lake).
    """
    own_day = catch_up_day(ds, window_days)
    if own_day not in partitions(examples_uri):
        return None
    table = _in_time_order(read_partition(examples_uri, own_day))
    click, conversion = table["click"].to_numpy(), table["conversion"].to_numpy()
    pending, final = caught_up_conversion(click, conversion, _conversion_ts(table), own_day, window_days)
    table = table.filter(pa.array(pending))
    n = table.num_rows
    return _with_labels(table, np.zeros(n, dtype=bool), final[pending], np.ones(n, dtype=bool))


def training_rows(examples_uri: str, ds: str, window_days: int) -> pa.Table:
    """What the run of `ds` learns from: caught-up older rows first, then the day in time order."""
    day = labelled_day(examples_uri, ds)
    late = caught_up_rows(examples_uri, ds, window_days)
    return day if late is None else pa.concat_tables([late.cast(day.schema), day])


def previous_day(ds: str) -> str:
    """The day before `ds`."""
    return shift_day(ds, -1)
