"""Logical days (`ds`, YYYY-MM-DD strings) and their arithmetic, in one place."""

from __future__ import annotations

import datetime as dt


def shift_day(ds: str, days: int) -> str:
    """The day `days` after `ds` (before it when negative)."""
    return (dt.date.fromisoformat(ds) + dt.timedelta(days=days)).isoformat()
