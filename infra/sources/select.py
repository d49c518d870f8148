"""Pick the event source named by the settings: the synthetic world or the user's files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from infra.settings import Settings

if TYPE_CHECKING:
    from infra.sources.synthetic import WorldConfig


class EventSource(Protocol):
    """Anything that yields a day's events as record batches with EVENTS_SCHEMA's columns."""

    def day_batches(self, ds: str) -> Iterator[pa.RecordBatch]:
        """The events of day `ds` (YYYY-MM-DD), in bounded-size batches."""
        ...


def world_config(settings: Settings) -> WorldConfig:
    """The synthetic world the settings name: their seed, start date, events per day and users."""
    from infra.sources.synthetic import WorldConfig

    return WorldConfig(
        seed=settings.seed,
        start_date=settings.start_date,
        events_per_day=settings.events_per_day,
        n_users=settings.n_users,
    )


def open_source(settings: Settings) -> EventSource:
    """`SyntheticWorld` (settings.source == "synthetic") or `FileSource(settings.events_dir)`."""
    if settings.source == "files":
        from infra.sources.files import FileSource

        return FileSource(settings.events_dir)
    from infra.sources.synthetic import SyntheticWorld

    return SyntheticWorld(world_config(settings))
