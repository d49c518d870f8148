"""`distillery bench knowledge`: is the teacher's forward pass, not the plumbing, what bounds the job?

One temporary lake of two synthetic days of `examples` events (land, ingest,
examples); the second day, whose histories carry the first day's events, is the
day measured. For each core count c, in a fresh process pinned to c CPUs (its
JVM and Spark's Python workers inherit the pinning, so `local[1]` cannot borrow
a second core), and for each size, a `GemFM` with a fixed seed (weights do not
change throughput):

1. Spark, master `local[c]`: the product's path, timed from reading the Delta
   partition to the committed `teacher_outputs` partition (`outputs_transform` run
   by `commit_outputs` inside the writer's tasks: forward pass and Parquet files in
   the same Python workers, row count and GX suite on the written files, one Delta
   commit). One cold run first (worker spawn, model
   broadcast and build), reported apart; then `repeats` warm runs.
2. A plain PyTorch loop in one process with `torch.set_num_threads(c)`: read the
   partition with `infra.delta.read_partition`, then features and forward pass per
   batch of the same batch size; run right after each warm Spark run.

The ratio is Spark examples/s / PyTorch examples/s at the same cores (medians of
the repeats); the scaling is examples/s at the most cores / at the fewest. CPU
seconds per process role (driver, JVM, Python workers) show where Spark's time goes.
Writes `<out>/bench_knowledge.json` and `<out>/bench_knowledge.md`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pyarrow.compute as pc
import torch

from infra import delta, registry
from infra.days import shift_day
from infra.schema import EXAMPLES_SCHEMA
from infra.settings import Settings
from pipeline.bench_reports import write_reports
from pipeline.knowledge import ResolvedTeacher, commit_outputs, outputs_transform
from teacher.config import config_for
from teacher.features import table_to_features
from teacher.model import GemFM

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RATIO_TARGET = 0.8  # Spark examples/s over plain PyTorch examples/s, same cores
EXAMPLES = 100_000
SINK = (
    "the real commit path (`commit_outputs`: the forward pass and the Parquet files in the same Python "
    "workers, row count and GX suite on the files, "
    "one Delta commit into a scratch `teacher_outputs` table)"
)


def _tree_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and its descendants, by pid: (role, seconds)."""
    me = psutil.Process()
    seconds = {}
    for process in (me, *me.children(recursive=True)):
        try:
            times, name = process.cpu_times(), process.name()
        except psutil.Error:  # ended meanwhile: its time shows in its parent's children_* once reaped
            continue
        role = "driver" if process.pid == me.pid else "jvm" if "java" in name else "python_workers"
        seconds[process.pid] = (role, times.user + times.system + times.children_user + times.children_system)
    return seconds


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _timed(step: Callable[[], int]) -> dict[str, Any]:
    """Run `step` (it returns its row count): wall seconds, CPU seconds by role and of other processes."""
    before, busy = _tree_cpu(), _machine_busy()
    start = time.perf_counter()
    rows = step()
    seconds = time.perf_counter() - start
    busy = _machine_busy() - busy
    cpu = dict.fromkeys(("driver", "jvm", "python_workers"), 0.0)
    for pid, (role, total) in _tree_cpu().items():
        cpu[role] += total - before.get(pid, (role, 0.0))[1]
    return {
        "rows": rows,
        "seconds": seconds,
        "examples_per_s": rows / seconds,
        "cpu_seconds": cpu,
        # Processes outside this run (the machine is shared): their CPU seconds meanwhile.
        "others_cpu_seconds": max(0.0, busy - sum(cpu.values())),
        "load_average_1min": os.getloadavg()[0],
    }


def spark_run(
    spark: SparkSession, settings: Settings, ds: str, teacher: ResolvedTeacher, model: GemFM, batch_size: int
) -> dict[str, Any]:
    """One knowledge job through the product's path: Delta examples -> committed teacher_outputs."""
    examples_uri = settings.table_uri("examples")
    expected = delta.partition_row_counts(examples_uri)[ds]

    def job() -> int:
        examples = delta.read_spark_partition(spark, examples_uri, ds, EXAMPLES_SCHEMA)
        transform, payload = outputs_transform(spark, teacher, model, batch_size)
        try:
            uri = settings.table_uri("teacher_outputs")
            embed_dim = model.config.embed_dim
            return commit_outputs(examples, transform, uri, ds, teacher, expected, embed_dim).rows
        finally:
            payload.destroy()

    return _timed(job)


def pytorch_run(examples_uri: str, ds: str, model: GemFM, batch_size: int) -> dict[str, Any]:
    """The plain loop: read the partition, then features and forward pass batch by batch, one process."""
    phases = dict.fromkeys(("read", "features", "forward"), 0.0)

    def clock(phase: str, start: float) -> float:
        now = time.perf_counter()
        phases[phase] += now - start
        return now

    @torch.no_grad()
    def loop() -> int:
        start = time.perf_counter()
        table = delta.read_partition(examples_uri, ds)
        start = clock("read", start)
        for begin in range(0, table.num_rows, batch_size):
            features = table_to_features(table.slice(begin, batch_size), model.config)
            start = clock("features", start)
            model.heads(model.embed(features), features["surface"])  # (B, T) logits, as forward_outputs
            start = clock("forward", start)
        return table.num_rows

    result = _timed(loop)
    return result | {f"{phase}_seconds": seconds for phase, seconds in phases.items()}


def _warm_pytorch(examples_uri: str, ds: str, model: GemFM, batch_size: int) -> None:
    """A few forward passes: allocator and thread pool warm before the first timed loop."""
    rows = delta.read_partition(examples_uri, ds).slice(0, 2 * batch_size)
    with torch.no_grad():
        for begin in range(0, rows.num_rows, batch_size):
            features = table_to_features(rows.slice(begin, batch_size), model.config)
            model.heads(model.embed(features), features["surface"])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall seconds (the lower median for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def measure_size(
    spark: SparkSession, settings: Settings, ds: str, size: str, batch_size: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Cold Spark run, then `repeats` x (warm Spark run, PyTorch loop) for one model size."""
    torch.manual_seed(seed)
    model = GemFM(config_for(size)).eval()
    # A teacher name per size: each size commits its own partition of the scratch table.
    teacher = ResolvedTeacher(registry.ModelRef(f"bench-{size}", 1, ""), shift_day(ds, -1))
    examples_uri = settings.table_uri("examples")
    cold = spark_run(spark, settings, ds, teacher, model, batch_size)
    _warm_pytorch(examples_uri, ds, model, batch_size)
    spark_runs, pytorch_runs = [], []
    for _ in range(repeats):
        spark_runs.append(spark_run(spark, settings, ds, teacher, model, batch_size))
        pytorch_runs.append(pytorch_run(examples_uri, ds, model, batch_size))
    warm, plain = _median_run(spark_runs), _median_run(pytorch_runs)
    ratio = warm["examples_per_s"] / plain["examples_per_s"]
    return {
        "spark": warm,
        "spark_cold": cold,
        "pytorch": plain,
        "ratio": ratio,
        "holds": bool(ratio >= RATIO_TARGET),
        "spark_runs": spark_runs,
        "pytorch_runs": pytorch_runs,
    }


def _pin(cores: int) -> None:
    """Pin this process, and what it starts later (the JVM, Spark's workers), to `cores` CPUs if it can."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])


def measure_cores(
    settings: Settings, ds: str, cores: int, sizes: tuple[str, ...], batch_size: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Every size at `cores` cores, in a process of its own: a fresh `local[cores]` session and JVM."""
    from infra.spark import get_spark

    torch.set_num_threads(cores)  # the plain loop's threads; Spark's workers set 1 per task themselves
    start = time.perf_counter()
    spark = get_spark(dataclasses.replace(settings, spark_master=f"local[{cores}]"))
    session_seconds = time.perf_counter() - start
    try:
        examples = delta.read_spark_partition(spark, settings.table_uri("examples"), ds, EXAMPLES_SCHEMA)
        facts = {
            "cores": cores,
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "session_start_seconds": session_seconds,
            "input_partitions": examples.rdd.getNumPartitions(),
            "arrow_max_records_per_batch": int(
                spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") or 10_000
            ),
        }
        results = {size: measure_size(spark, settings, ds, size, batch_size, repeats, seed) for size in sizes}
    finally:
        spark.stop()
    return {"session": facts, "sizes": results}


def _measure_in_child(settings: Settings, request: dict[str, Any], out: Path) -> dict[str, Any]:
    """`measure_cores(settings, **request)` in a fresh Python process (`main` below); its result."""
    payload = {"settings": dataclasses.asdict(settings), "request": request, "out": str(out)}
    subprocess.run([sys.executable, "-m", "pipeline.bench_knowledge", json.dumps(payload)], check=True)
    return json.loads(out.read_text())


def main(argv: list[str]) -> None:
    """The child's entry point: pin to the cores first (the JVM starts later), measure, write the result."""
    payload = json.loads(argv[0])
    request = payload["request"]
    _pin(request["cores"])
    settings = Settings(**payload["settings"])
    result = measure_cores(settings, **request | {"sizes": tuple(request["sizes"])})
    Path(payload["out"]).write_text(json.dumps(result))


def build_day(settings: Settings) -> tuple[str, int, float]:
    """Two synthetic days through ingest and examples; the second day, its rows and mean history length."""
    from pipeline.bench_teacher import bench_days, build_lake

    days = bench_days(settings.start_date, 2)
    build_lake(settings, days)
    lengths = delta.read_partition(settings.table_uri("examples"), days[-1], columns=["hist_len"])
    return days[-1], lengths.num_rows, float(pc.mean(lengths["hist_len"]).as_py())


def _machine() -> dict[str, Any]:
    import pyspark

    return {
        "platform": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "pyspark": pyspark.__version__,
        "python": platform.python_version(),
    }


def _scaling(results: dict[str, dict[int, dict[str, Any]]], cores: tuple[int, ...]) -> dict[str, Any]:
    """Per size: examples/s at the most cores over the fewest, for Spark and the plain loop."""
    low, high = min(cores), max(cores)
    return {
        size: {
            "from_cores": low,
            "to_cores": high,
            **{
                engine: by_cores[high][engine]["examples_per_s"] / by_cores[low][engine]["examples_per_s"]
                for engine in ("spark", "pytorch")
            },
        }
        for size, by_cores in results.items()
    }


def run_knowledge_benchmark(
    settings: Settings,
    examples: int = EXAMPLES,
    sizes: tuple[str, ...] = ("base", "large"),
    cores: tuple[int, ...] = (1, 2),
    out_dir: str = "reports",
    repeats: int = 1,
) -> dict[str, Any]:
    """Measure Spark against the plain loop for every size and core count on one day; write both reports."""
    batch_size = settings.knowledge_batch_size
    with tempfile.TemporaryDirectory(prefix="distillery-bench-knowledge-") as root:
        cfg = dataclasses.replace(
            settings, lake=f"{root}/lake", mlflow_uri=f"sqlite:///{root}/mlruns.db", events_per_day=examples
        )
        ds, rows, mean_history = build_day(cfg)
        if rows < examples:
            raise RuntimeError(f"the synthetic day {ds} has {rows} examples, fewer than {examples}")
        sessions, by_size = {}, {size: {} for size in sizes}
        for c in cores:
            request = {"ds": ds, "cores": c, "sizes": sizes, "batch_size": batch_size, "repeats": repeats}
            request["seed"] = cfg.seed
            measured = _measure_in_child(cfg, request, Path(root) / f"cores-{c}.json")
            sessions[str(c)] = measured["session"]
            for size, result in measured["sizes"].items():
                by_size[size][c] = result
    report = {
        "machine": _machine(),
        "setup": {
            "ds": ds,
            "examples": rows,
            "n_users": cfg.n_users,
            "history_length": cfg.history_length,
            "mean_history_length": mean_history,
            "seed": cfg.seed,
            "batch_size": batch_size,
            "repeats": repeats,
            "sink": SINK,
        },
        "target": RATIO_TARGET,
        "sessions": sessions,
        "results": [
            {"size": size, "cores": c, **result}
            for size, by_cores in by_size.items()
            for c, result in by_cores.items()
        ],
        "scaling": _scaling(by_size, cores),
    }
    report["claims"] = {"ratio_at_least_target": all(r["holds"] for r in report["results"])}
    from pipeline.bench_knowledge_report import markdown

    return write_reports(report, out_dir, "bench_knowledge", markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
