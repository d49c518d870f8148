"""Which labels a model may learn from when it trains: the delayed-conversion rule.

A click is known the moment it happens. A conversion arrives up to
`window_days` after its click (`conversion_ts`), so at the training cutoff of day
`ds` (the end of the day, `ds+1 00:00 UTC`) a clicked impression without a
conversion yet may still convert. The rule, which uses every conversion label
exactly once and only once it is final:

- an unclicked impression: conversion 0 is final at once (conversions need a click);
- a clicked impression whose conversion arrived before the cutoff: final positive,
  learned on its own day;
- any other clicked impression is *pending*: its conversion label is not used on
  its own day, neither as a negative nor as a positive. It becomes final once its
  attribution window has closed, and is learned then, in the run of day
  `ds + window_days` ("late-label catch-up"), whose cutoff lies past `ts + window`.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from infra.days import shift_day


def training_cutoff(ds: str) -> np.datetime64:
    """The end of day `ds` (UTC): what a run training on `ds` may know."""
    return np.datetime64(dt.date.fromisoformat(ds) + dt.timedelta(days=1), "us")


def conversion_known(
    click: np.ndarray, conversion: np.ndarray, conversion_ts: np.ndarray, cutoff: np.datetime64
) -> np.ndarray:
    """Mask of rows whose conversion label is final at `cutoff` on the row's own day.

    `conversion_ts` is datetime64[us] with NaT where no conversion happened.
    """
    arrived = (conversion == 1) & ~np.isnat(conversion_ts) & (conversion_ts < cutoff)
    return (click == 0) | arrived


def catch_up_day(ds: str, window_days: int) -> str:
    """The day whose pending conversion labels become final in the run of `ds`."""
    return shift_day(ds, -window_days)


def caught_up_conversion(
    click: np.ndarray, conversion: np.ndarray, conversion_ts: np.ndarray, own_day: str, window_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """For rows of `own_day`, read in the run of `own_day + window_days`: (pending mask, final label).

    Pending rows are the clicked ones not known at their own day's cutoff; by the
    later cutoff their window has closed, so the label is the eventual conversion.
    """
    pending = ~conversion_known(click, conversion, conversion_ts, training_cutoff(own_day))
    later = training_cutoff(own_day) + np.timedelta64(window_days, "D")
    final = (conversion == 1) & ~np.isnat(conversion_ts) & (conversion_ts < later)
    return pending, final.astype(np.float32)
