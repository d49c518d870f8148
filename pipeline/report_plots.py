"""Line plots of values by day, shared by the daily run report and the transfer benchmark.

A day without a value (None or NaN) is a gap in its line, never a zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def draw_series_by_day(
    ax: Any,
    series: Mapping[str, Mapping[str, float | None]],
    days: Sequence[str],
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Draw one line per name of `series` (day -> value) on the axes `ax`, at positions 0.. of `days`,
    with `styles[name]`'s plot keywords if given; returns the names drawn. A name with no value on any
    of `days` is left out."""
    drawn = []
    for name, by_day in series.items():
        values = [by_day.get(day) for day in days]
        if all(v is None for v in values):
            continue
        style = {"marker": "o"} | dict((styles or {}).get(name, {}))
        ax.plot(range(len(days)), [math.nan if v is None else v for v in values], label=name, **style)
        drawn.append(name)
    return drawn


def plot_series_by_day(
    series: Mapping[str, Mapping[str, float | None]],
    days: Sequence[str],
    ylabel: str,
    title: str,
    path: Path,
    xlabel: str = "day",
) -> Path:
    """Draw one line per name of `series` (day -> value) over `days` into the PNG `path`; returns it.

    A name with no value on any of `days` is left out of the plot and its legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    drawn = draw_series_by_day(ax, series, days)
    ax.set_xticks(range(len(days)), list(days))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    if drawn:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no data in this range", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
