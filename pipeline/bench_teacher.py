"""`distillery bench teacher`: what the FM knows that small models do not, and what it costs.

One temporary lake of `days` synthetic days (land, ingest, examples; the last day
is the test day). On it:

1. the FM (`fm_size`), trained continually by `train_fm` on every surface, against
   one small model (`alone_size`, the same code) per surface trained continually on
   that surface's rows only (same days, TrainConfig and seed), on that surface's
   rows of every progressive day of the window (each model trained through the day
   before): the claim is on the window's mean NE, about five test days of rows, since
   one day's surface slice moves by as much as the advantage; the test day alone is
   reported beside it;
2. the continual FM against the FM frozen after day 1, on the test day;
3. the wall seconds of each day's `train_fm` (after one warm-up pass of a few batches);
4. training examples/s and model FLOP utilisation (MFU) per size in `mfu_sizes`,
   against the fp32 matmul FLOP/s of this machine measured in the same run.

Writes `<out>/bench_teacher.json` and `<out>/bench_teacher.md`. Every target is
reported with a boolean saying whether it holds on this run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from infra.schema import SURFACES
from infra.settings import Settings
from pipeline.bench_reports import write_reports
from teacher.config import SIZES, config_for
from teacher.model import GemFM, count_parameters, forward_flops_per_example
from teacher.train import TrainConfig, make_optimizer, train_interval

TIME_RATIO_TARGET = 1.2  # last day's training seconds / first day's
WARM_UP_BATCHES = 4
MATMUL_N, MATMUL_REPEATS = 2048, 7
MFU_EXAMPLES = 4_096  # the first rows of day 1: the same fixed set for every size
TRAIN_FLOPS_PER_FORWARD = 3.0  # forward + backward (~2x forward: grads of inputs and weights)
BENCH_DAYS = 14  # 13 training days: a window of 11 progressive test days per surface
PROGRESSIVE_WARM_DAYS = 2  # measured days left out of the window: models that saw under 3 days


def bench_days(start: str, days: int) -> list[str]:
    """`days` consecutive days from `start`, as YYYY-MM-DD."""
    first = dt.date.fromisoformat(start)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]


def build_lake(settings: Settings, days: list[str]) -> None:
    """Land, ingest and build examples for every day, in date order, with one Spark session."""
    from infra.spark import get_spark
    from pipeline.examples import build_examples
    from pipeline.ingest import ingest_events, land_events

    spark = get_spark(settings)
    for ds in days:
        ingest_events(settings, ds, land_events(settings, ds), run_id=f"bench__{ds}")
        build_examples(settings, ds, spark=spark)


def _tensors(rows: pa.Table, model: GemFM) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Features, labels and masks of `rows` for `model`."""
    from pipeline.train_fm import labels_and_mask
    from teacher.features import table_to_features

    labels, mask = labels_and_mask(rows, model.config.tasks)
    return table_to_features(rows, model.config), labels, mask


def warm_up(size: str, rows: pa.Table, train: TrainConfig, batches: int = WARM_UP_BATCHES) -> None:
    """A few training batches of a throwaway `size` model: allocator and thread pools warm."""
    model = GemFM(config_for(size))
    features, labels, mask = _tensors(rows.slice(0, batches * train.batch_size), model)
    train_interval(model, make_optimizer(model, train), features, labels, mask, train)


def fm_chain(settings: Settings, days: list[str], train: TrainConfig) -> list[dict[str, float]]:
    """Train the FM through every day of `days` with `train_fm`; per day: wall seconds and stats."""
    from pipeline.train_fm import FMTrainingConfig, train_fm

    config = FMTrainingConfig(size=settings.fm_size, train=train)
    timings = []
    for ds in days:
        start, cpu = time.perf_counter(), time.process_time()
        result = train_fm(settings, ds, config)
        seconds = time.perf_counter() - start
        timings.append(
            {
                "ds": ds,
                "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu,
                "load_average_1min": os.getloadavg()[0],
                "train_loop_seconds": result["train_seconds"],
                "examples": result["examples"],
                "examples_per_s": result["examples"] / seconds,
            }
        )
    return timings


def _surface_rows(rows: pa.Table, surface: str) -> pa.Table:
    return rows.filter(pc.equal(rows["surface"], surface))


def train_alone(
    examples_uri: str,
    days: list[str],
    surface: str,
    size: str,
    train: TrainConfig,
    next_days: dict[str, pa.Table],
) -> dict[str, float]:
    """Click NE on `surface` of a `size` model trained continually, in memory, on that surface's rows only.

    Mirrors `train_fm`: heads start at the first day's base rates, the same init and
    per-day seeds, Adam state carried from day to day. After each day `d` of `days`
    the model is measured on the day after it (`next_days`, labelled rows by day):
    returns that progressive NE by measured day.
    """
    from pipeline.evaluate_fm import evaluate_model
    from pipeline.fm_data import training_rows
    from pipeline.train_fm import day_seed

    torch.manual_seed(day_seed(train.seed, "init"))
    model = GemFM(config_for(size))
    optimizer = make_optimizer(model, train)
    measured_days = sorted(next_days)
    ne = {}
    for i, ds in enumerate(days):
        rows = _surface_rows(training_rows(examples_uri, ds, train.conversion_window_days), surface)
        if rows.num_rows:
            features, labels, mask = _tensors(rows, model)
            if i == 0:
                model.heads.start_at_rates((labels * mask).sum(0) / mask.sum(0).clamp(min=1))
            torch.manual_seed(day_seed(train.seed, ds))
            train_interval(model, optimizer, features, labels, mask, train)
        after = measured_days[i]
        ne[after] = _ne(evaluate_model(model, _surface_rows(next_days[after], surface)), surface)
    return ne


def _ne(metrics: dict[str, float], surface: str | None = None) -> float:
    key = "click/ne" if surface is None else f"click/ne/{surface}"
    return metrics.get(key, math.nan)


def _window(fm: dict[str, float], alone: dict[str, float]) -> dict[str, Any]:
    """FM against alone on the progressive days after the first `PROGRESSIVE_WARM_DAYS` (or the test day)."""
    measured = sorted(fm)
    days = measured[min(PROGRESSIVE_WARM_DAYS, len(measured) - 1) :]
    gaps = [alone[d] - fm[d] for d in days]
    return {
        "days": days,
        "fm_click_ne_mean": statistics.fmean(fm[d] for d in days),
        "alone_click_ne_mean": statistics.fmean(alone[d] for d in days),
        "ne_advantage_mean": statistics.fmean(gaps),
        "ne_advantage_std": statistics.stdev(gaps) if len(gaps) > 1 else math.nan,
        "fm_better_days": sum(gap > 0 for gap in gaps),
    }


def fm_versus_alone(
    settings: Settings,
    fm_by_day: dict[str, dict[str, float]],
    days: list[str],
    test_day: str,
    size: str,
    train: TrainConfig,
) -> dict[str, Any]:
    """Click NE per surface: the FM against the surface's model trained alone, on the test day and by day.

    `fm_by_day` holds the FM's progressive metrics (trained through the day before
    each measured day, the last being the test day). The claim (`holds`) is on the
    mean over the window's progressive days; `holds_on_test_day` on the test day alone.
    """
    from pipeline.fm_data import labelled_day

    examples_uri = settings.table_uri("examples")
    next_days = {d: labelled_day(examples_uri, d) for d in fm_by_day}
    surfaces = {}
    for name in SURFACES:
        alone = train_alone(examples_uri, days, name, size, train, next_days)
        fm = {d: _ne(metrics, name) for d, metrics in fm_by_day.items()}
        surfaces[name] = {
            "fm_click_ne": fm[test_day],
            "alone_click_ne": alone[test_day],
            "ne_advantage": alone[test_day] - fm[test_day],
            "fm_beats_alone": bool(fm[test_day] < alone[test_day]),
            "by_day": {d: {"fm_click_ne": fm[d], "alone_click_ne": alone[d]} for d in sorted(fm)},
            "window": _window(fm, alone),
        }
    return {
        "alone_size": size,
        "alone_learning_rate": train.learning_rate,
        "alone_embedding_learning_rate": train.embedding_learning_rate,
        "surfaces": surfaces,
        "holds": all(s["window"]["ne_advantage_mean"] > 0 for s in surfaces.values()),
        "holds_on_test_day": all(s["fm_beats_alone"] for s in surfaces.values()),
    }


def continual_versus_frozen(continual: dict[str, float], frozen: dict[str, float]) -> dict[str, Any]:
    """Click NE on the test day, overall and per surface, continual FM against frozen after day 1."""
    slices = {}
    for name in (None, *SURFACES):
        c, f = _ne(continual, name), _ne(frozen, name)
        slices[name or "overall"] = {
            "continual_click_ne": c,
            "frozen_click_ne": f,
            "ne_gain": f - c,
            "continual_beats_frozen": bool(c < f),
        }
    return {"slices": slices, "holds": slices["overall"]["continual_beats_frozen"]}


def training_time(timings: list[dict[str, float]]) -> dict[str, Any]:
    """Per-day training seconds and the last/first ratio against the target."""
    ratio = timings[-1]["seconds"] / timings[0]["seconds"]
    return {
        "days": timings,
        "ratio_last_first": ratio,
        "cpu_ratio_last_first": timings[-1]["cpu_seconds"] / timings[0]["cpu_seconds"],
        "target": TIME_RATIO_TARGET,
        "holds": bool(ratio <= TIME_RATIO_TARGET),
        "warm_up": f"{WARM_UP_BATCHES} training batches of a throwaway model on day 1's rows, "
        "before the first timed day",
    }


def matmul_peak(n: int = MATMUL_N, repeats: int = MATMUL_REPEATS) -> dict[str, float]:
    """Dense fp32 FLOP/s of `torch.mm` on n x n matrices: one warm-up, then `repeats` timed."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2.0 * n**3 / (time.perf_counter() - start))
    return {
        "n": n,
        "repeats": repeats,
        "best_flops_per_s": max(rates),
        "median_flops_per_s": statistics.median(rates),
    }


def size_facts() -> dict[str, dict[str, float]]:
    """Parameters and forward FLOPs/example of every size in `SIZES`."""
    return {
        name: {
            "parameters": count_parameters(GemFM(config)),
            "forward_flops_per_example": forward_flops_per_example(config),
        }
        for name, config in SIZES.items()
    }


def throughput(rows: pa.Table, sizes: tuple[str, ...], train: TrainConfig, peak: float) -> dict[str, Any]:
    """Training examples/s and MFU of a fresh model of each size on the same rows, after a warm-up."""
    results = {}
    for size in sizes:
        warm_up(size, rows, train)
        torch.manual_seed(train.seed)
        model = GemFM(config_for(size))
        features, labels, mask = _tensors(rows, model)
        stats = train_interval(model, make_optimizer(model, train), features, labels, mask, train)
        flops = forward_flops_per_example(model.config)
        achieved = TRAIN_FLOPS_PER_FORWARD * flops * stats["examples_per_s"]
        results[size] = {
            "examples": stats["examples"],
            "seconds": stats["train_seconds"],
            "examples_per_s": stats["examples_per_s"],
            "forward_flops_per_example": flops,
            "achieved_flops_per_s": achieved,
            "mfu": achieved / peak,
        }
    return results


def _bench_settings(settings: Settings, root: str, events_per_day: int, fm_size: str) -> Settings:
    return dataclasses.replace(
        settings,
        lake=f"{root}/lake",
        mlflow_uri=f"sqlite:///{root}/mlruns.db",
        events_per_day=events_per_day,
        fm_size=fm_size,
    )


def _setup(settings: Settings, days: list[str], train: TrainConfig) -> dict[str, Any]:
    """What the run measured on: days, world size, seed, FM size, training config."""
    return {
        "days": days,
        "train_days": days[:-1],
        "test_day": days[-1],
        "events_per_day": settings.events_per_day,
        "n_users": settings.n_users,
        "history_length": settings.history_length,
        "seed": settings.seed,
        "fm_size": settings.fm_size,
        "train_config": train.to_dict(),
    }


def _evaluate_checkpoints(settings: Settings, train_days: list[str], test_day: str) -> tuple[dict, dict]:
    """Progressive metrics of the continual FM by measured day, and the test-day metrics of the frozen one.

    The continual FM trained through each training day is measured on the next day
    (the last training day's on the test day); the frozen one is the day-1 FM.
    """
    from infra.checkpoints import checkpoint_uri
    from pipeline.evaluate_fm import evaluate_on_day
    from pipeline.train_fm import FM_NAME, load_fm

    examples_uri = settings.table_uri("examples")
    measured = [*train_days[1:], test_day]
    frozen, _ = load_fm(checkpoint_uri(settings.lake, FM_NAME, train_days[0]))
    by_day = {measured[0]: evaluate_on_day(frozen, train_days[0], examples_uri, measured[0])}
    for through, day in zip(train_days[1:], measured[1:], strict=True):
        model, _ = load_fm(checkpoint_uri(settings.lake, FM_NAME, through))
        by_day[day] = evaluate_on_day(model, through, examples_uri, day)
    return by_day, evaluate_on_day(frozen, train_days[0], examples_uri, test_day)


def run_teacher_benchmark(
    settings: Settings,
    days: int = BENCH_DAYS,
    events_per_day: int = 20_000,
    fm_size: str = "base",
    alone_size: str = "tiny",
    mfu_sizes: tuple[str, ...] = ("base", "large"),
    out_dir: str = "reports",
    mfu_examples: int = MFU_EXAMPLES,
) -> dict[str, Any]:
    """Run the four measurements on `days` days (the last is the test day); write both reports."""
    from pipeline.fm_data import training_rows

    if days < 3:
        raise ValueError("need at least 3 days: day 1 (frozen), a later training day, the test day")
    train = TrainConfig.for_size(fm_size, seed=settings.seed)
    alone_train = TrainConfig.for_size(alone_size, seed=settings.seed)
    all_days = bench_days(settings.start_date, days)
    train_days, test_day = all_days[:-1], all_days[-1]
    with tempfile.TemporaryDirectory(prefix="distillery-bench-teacher-") as root:
        cfg = _bench_settings(settings, root, events_per_day, fm_size)
        build_lake(cfg, all_days)
        day_one = training_rows(cfg.table_uri("examples"), train_days[0], train.conversion_window_days)
        warm_up(fm_size, day_one, train)
        timings = fm_chain(cfg, train_days, train)
        fm_by_day, frozen = _evaluate_checkpoints(cfg, train_days, test_day)
        continual = fm_by_day[test_day]
        alone = fm_versus_alone(cfg, fm_by_day, train_days, test_day, alone_size, alone_train)
        peak = matmul_peak()
        mfu_rows = day_one.slice(0, mfu_examples)
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}",
            "setup": _setup(cfg, all_days, train),
            "fm_vs_alone": alone,
            "continual_vs_frozen": continual_versus_frozen(continual, frozen),
            "training_time": training_time(timings),
            "throughput": {
                "matmul": peak,
                "convention": "training FLOPs/example = 3 x forward (forward + backward at 2x forward)",
                "rows": f"the first {mfu_rows.num_rows} training rows of {train_days[0]}, one pass",
                "sizes": throughput(mfu_rows, mfu_sizes, train, peak["best_flops_per_s"]),
            },
            "models": size_facts(),
        }
    report["claims"] = {
        "fm_beats_alone_on_every_surface": report["fm_vs_alone"]["holds"],
        "fm_beats_alone_on_test_day": report["fm_vs_alone"]["holds_on_test_day"],
        "continual_beats_frozen": report["continual_vs_frozen"]["holds"],
        "training_time_flat": report["training_time"]["holds"],
    }
    from pipeline.bench_teacher_report import markdown

    return write_reports(report, out_dir, "bench_teacher", markdown)
