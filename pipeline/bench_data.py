"""`distillery bench data`: events/s of generation, landing, ingest and example building.

Each size runs two consecutive synthetic days in a fresh temporary lake (day two
builds examples from the history state carried over from day one, the steady
state). A small warm-up round runs first, so that JVM, Spark and GX start-up costs
stay out of the figures. Writes
`<out>/bench_data.json` and `<out>/bench_data.md`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable

from infra.days import shift_day
from infra.settings import Settings
from pipeline.bench_reports import write_reports

STAGES = ("generate", "land", "ingest", "examples_first_day", "examples_next_day")
WARM_UP_EVENTS = 2_000


def _timed(step: Callable[[], object]) -> float:
    """Seconds `step` takes (wall clock)."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def bench_size(settings: Settings, events_per_day: int) -> dict[str, float]:
    """Events/s of every stage for one day size, in a temporary lake."""
    from infra.sources.synthetic import SyntheticWorld, WorldConfig
    from infra.spark import get_spark
    from pipeline.examples import build_examples
    from pipeline.ingest import ingest_events, land_events, landing_uri_for

    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as lake:
        cfg = dataclasses.replace(
            settings, lake=lake, events_per_day=events_per_day, n_users=max(2_000, events_per_day // 50)
        )
        spark = get_spark(cfg)
        day1 = cfg.start_date
        day2 = shift_day(day1, 1)
        world = SyntheticWorld(
            WorldConfig(seed=cfg.seed, start_date=day1, events_per_day=events_per_day, n_users=cfg.n_users)
        )
        seconds = {"generate": _timed(lambda: sum(b.num_rows for b in world.day_batches(day1)))}
        ingest_events(cfg, day1, land_events(cfg, day1), run_id="bench")
        seconds["land"] = _timed(lambda: land_events(cfg, day2))
        landing2 = landing_uri_for(cfg, day2)
        seconds["ingest"] = _timed(lambda: ingest_events(cfg, day2, landing2, run_id="bench"))
        seconds["examples_first_day"] = _timed(lambda: build_examples(cfg, day1, spark=spark))
        seconds["examples_next_day"] = _timed(lambda: build_examples(cfg, day2, spark=spark))
    return {f"{stage}_events_per_s": events_per_day / seconds[stage] for stage in STAGES} | {
        f"{stage}_seconds": seconds[stage] for stage in STAGES
    }


def _markdown(report: dict) -> str:
    """The report as a Markdown table, one row per day size."""
    head = "| events/day | " + " | ".join(STAGES) + " |"
    rule = "|---" * (len(STAGES) + 1) + "|"
    rows = [
        f"| {size} | " + " | ".join(f"{r[f'{s}_events_per_s']:,.0f}" for s in STAGES) + " |"
        for size, r in report["results"].items()
    ]
    return "\n".join(
        [
            "# Data benchmark (events/s, higher is better)",
            "",
            f"Machine: {report['machine']}. Spark master `{report['spark_master']}`.",
            "",
            head,
            rule,
            *rows,
            "",
            "`examples_next_day` carries the per-user history state from the day before.",
        ]
    )


def run_data_benchmark(settings: Settings, sizes: list[int], out_dir: str) -> dict:
    """Benchmark every size in `sizes`; write the JSON and Markdown reports into `out_dir`."""
    bench_size(settings, WARM_UP_EVENTS)  # JVM, Spark and GX start-up stay out of the figures
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "spark_master": settings.spark_master,
        "results": {str(size): bench_size(settings, size) for size in sizes},
    }
    return write_reports(report, out_dir, "bench_data", _markdown)
