"""The delayed-conversion rule: every conversion label is learned once, and only once final."""

from __future__ import annotations

import numpy as np

from infra.sources.synthetic import SyntheticWorld, WorldConfig
from teacher.labels import (
    catch_up_day,
    caught_up_conversion,
    conversion_known,
    training_cutoff,
)

NAT = np.datetime64("NaT", "us")


def _ts(text: str) -> np.datetime64:
    return np.datetime64(text, "us")


def test_rule_on_hand_made_rows() -> None:
    # unclicked | converted same day | converts the day after | clicked, never converts
    click = np.array([0, 1, 1, 1])
    conversion = np.array([0, 1, 1, 0])
    conversion_ts = np.array([NAT, _ts("2026-01-01T20:00"), _ts("2026-01-02T03:00"), NAT])
    known = conversion_known(click, conversion, conversion_ts, training_cutoff("2026-01-01"))
    assert known.tolist() == [True, True, False, False]

    pending, final = caught_up_conversion(click, conversion, conversion_ts, "2026-01-01", window_days=3)
    assert pending.tolist() == [False, False, True, True]
    assert final[pending].tolist() == [1.0, 0.0]
    assert catch_up_day("2026-01-04", window_days=3) == "2026-01-01"


def test_every_synthetic_label_is_used_exactly_once_and_correctly() -> None:
    world = SyntheticWorld(WorldConfig(seed=3, events_per_day=20_000, n_users=500))
    day = world.day_table("2026-01-01")
    click = day["click"].to_numpy()
    conversion = day["conversion"].to_numpy()
    conversion_ts = day["conversion_ts"].to_numpy(zero_copy_only=False).astype("datetime64[us]")

    known = conversion_known(click, conversion, conversion_ts, training_cutoff("2026-01-01"))
    pending, final = caught_up_conversion(click, conversion, conversion_ts, "2026-01-01", window_days=3)
    assert np.array_equal(known, ~pending), "each row is learned either on its day or at catch-up"
    assert pending.sum() > 0 and conversion[pending].sum() > 0, "some conversions do arrive late"
    # The world's delays stay within the window: at catch-up the label is the eventual conversion.
    assert np.array_equal(final[pending], conversion[pending].astype(np.float32))
    assert (conversion[known & (click == 1)] == 1).all(), "a clicked row known on its day is a positive"
