"""Progress of long loops: a tqdm bar on a terminal, a log line every few percent elsewhere.

Airflow captures the `logging` module in task logs, where a bar redrawn in place
would be noise: off a TTY (a task, a pipe, a CI log) the loop logs
`<label>: 40/100 batches (40%)` at INFO every `every_percent` instead. Progress
reads nothing and draws no random number, so it cannot change a result.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO, TypeVar

from tqdm import tqdm

LOG = logging.getLogger("distillery.progress")
T = TypeVar("T")


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def track(
    items: Sequence[T],
    label: str,
    unit: str = "batches",
    every_percent: int = 10,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield `items`, showing progress: a bar on a terminal `stream` (default stderr), else log lines."""
    if not 0 < every_percent <= 100:
        raise ValueError(f"every_percent must be in 1..100, got {every_percent}")
    stream = stream or sys.stderr
    total = len(items)
    if _is_terminal(stream):
        yield from tqdm(items, total=total, desc=label, unit=unit, file=stream)
        return
    next_mark = every_percent
    for done, item in enumerate(items, start=1):
        yield item
        percent = 100 * done // total
        if percent >= next_mark:
            LOG.info("%s: %d/%d %s (%d%%)", label, done, total, unit, percent)
            next_mark = (percent // every_percent + 1) * every_percent
