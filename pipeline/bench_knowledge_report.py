"""The Markdown form of `distillery bench knowledge`'s report (see `pipeline.bench_knowledge`)."""

from __future__ import annotations

from typing import Any


def _rate(run: dict[str, Any]) -> str:
    return f"{run['examples_per_s']:,.0f}"


def _cpu(run: dict[str, Any]) -> float:
    """CPU seconds of a Spark run (driver, JVM, workers)."""
    return sum(run["cpu_seconds"].values())


def _plain_cpu(run: dict[str, Any]) -> float:
    """CPU seconds of the plain loop: its own process (the idle JVM beside it does not count)."""
    return run["cpu_seconds"]["driver"]


def _throughput_section(report: dict[str, Any]) -> list[str]:
    target = report["target"]
    rows = [
        f"| {r['size']} | {r['cores']} | {_rate(r['spark'])} | {_rate(r['spark_cold'])} | "
        f"{_rate(r['pytorch'])} | {r['ratio']:.2f} | {r['holds']} |"
        for r in report["results"]
    ]
    return [
        f"## Spark against the plain PyTorch loop (target: ratio >= {target})",
        "",
        "Examples/s; ratio = Spark / PyTorch at the same cores; cold = the first Spark run of the "
        "size in its session.",
        "",
        f"| size | cores | Spark | Spark cold | PyTorch | ratio | >= {target} |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def _scaling_section(report: dict[str, Any]) -> list[str]:
    scaling = report["scaling"]
    first = next(iter(scaling.values()))
    if first["to_cores"] == first["from_cores"]:
        return []
    rows = [f"| {size} | {s['spark']:.2f} | {s['pytorch']:.2f} |" for size, s in scaling.items()]
    return [
        f"## Scaling: examples/s at {first['to_cores']} cores / at {first['from_cores']}",
        "",
        "| size | Spark | PyTorch |",
        "|---|---|---|",
        *rows,
    ]


def _time_section(report: dict[str, Any]) -> list[str]:
    rows = []
    for r in report["results"]:
        spark, plain = r["spark"], r["pytorch"]
        cpu = spark["cpu_seconds"]
        rows.append(
            f"| {r['size']} | {r['cores']} | {spark['seconds']:.1f} | {cpu['driver']:.1f} | "
            f"{cpu['jvm']:.1f} | {cpu['python_workers']:.1f} | {spark['others_cpu_seconds']:.1f} | "
            f"{plain['seconds']:.1f} | {plain['read_seconds']:.1f} | {plain['features_seconds']:.1f} | "
            f"{plain['forward_seconds']:.1f} | {_plain_cpu(plain):.1f} | {plain['others_cpu_seconds']:.1f} |"
        )
    return [
        "## Where the time goes",
        "",
        "Spark: wall seconds of the warm run, CPU seconds of each process role (the driver reads the "
        "written files back for the row count and the GX suite, then commits). PyTorch: wall seconds "
        "of the loop by phase, and its CPU seconds. Others: CPU seconds that processes outside the "
        "run used on the machine meanwhile.",
        "",
        "| size | cores | Spark s | driver CPU | JVM CPU | workers CPU | others CPU | "
        "PyTorch s | read | features | forward | CPU | others CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _plumbing_line(r: dict[str, Any]) -> str:
    """What Spark spends beyond the plain loop, in CPU seconds, at one core."""
    spark, plain = r["spark"], r["pytorch"]
    cpu, extra = spark["cpu_seconds"], _cpu(spark) - _plain_cpu(plain)
    return (
        f"- `{r['size']}` at {r['cores']} core: Spark used {_cpu(spark):.1f} CPU s where the plain loop "
        f"used {_plain_cpu(plain):.1f}, so the plumbing is {extra / _cpu(spark):.0%} of the job "
        f"({1000 * extra / spark['rows']:.2f} CPU s per 1,000 examples): the JVM {cpu['jvm']:.1f} s, "
        f"the driver {cpu['driver']:.1f} s, the Python workers {cpu['python_workers']:.1f} s "
        f"(forward pass included)."
    )


def _busy(report: dict[str, Any], engine: str, cores: int | None = None) -> float:
    """Share of the machine's CPU that other processes used during the warm runs of `engine`."""
    runs = [r[engine] for r in report["results"] if cores is None or r["cores"] == cores]
    capacity = report["machine"]["cpu_count"] * sum(run["seconds"] for run in runs)
    return sum(run["others_cpu_seconds"] for run in runs) / capacity


def _bounds_section(report: dict[str, Any]) -> list[str]:
    """Facts of this run: the loop's forward share, Spark's extra CPU, scaling, other load."""
    results, batch = report["results"], report["setup"]["batch_size"]
    shares = [r["pytorch"]["forward_seconds"] / r["pytorch"]["seconds"] for r in results]
    fewest = min(r["cores"] for r in results)
    scaling = [
        f"- From {s['from_cores']} to {s['to_cores']} cores, `{size}`: Spark {s['spark']:.2f}x (one "
        f"single-threaded Python worker per core), the plain loop {s['pytorch']:.2f}x (one process, "
        f"torch's intra-op threads over batches of {batch:,})."
        for size, s in report["scaling"].items()
        if s["to_cores"] > s["from_cores"]
    ]
    most = max(r["cores"] for r in results)
    return [
        f"- The plain loop is its forward pass: {min(shares):.0%} to {max(shares):.0%} of its wall time "
        "(reading the partition and building features take the rest).",
        *[_plumbing_line(r) for r in results if r["cores"] == fewest == 1],
        "- Spark's plumbing follows the rows and their width (histories in, embeddings out), not the "
        "forward FLOPs: Parquet decoding and Arrow conversion in the JVM, the examples' trip to the Python "
        "workers (which run the forward pass and write the outputs' Parquet files, "
        "`infra.delta.commit_spark_partition` with a transform), the read-back and the GX suite; so its "
        "share falls as the model grows.",
        *scaling,
        f"- Other processes used {_busy(report, 'spark'):.0%} of the machine's CPU in the warm Spark runs "
        f"and {_busy(report, 'pytorch'):.0%} in the plain loops ({_busy(report, 'spark', most):.0%} and "
        f"{_busy(report, 'pytorch', most):.0%} at {most} cores). torch's intra-op threads meet at every "
        "operator, so one descheduled thread stalls the whole loop; Spark's workers are independent "
        "processes. A busy machine therefore slows the plain loop at several cores most.",
    ]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: setup, the verdict, throughput, scaling, time split, what bounds it."""
    setup, machine = report["setup"], report["machine"]
    sessions = "; ".join(
        f"{c} core(s): CPUs {s['cpus']}, {s['input_partitions']} input tasks, Arrow batches of "
        f"{s['arrow_max_records_per_batch']:,} rows, session start {s['session_start_seconds']:.1f} s"
        for c, s in report["sessions"].items()
    )
    return "\n".join(
        [
            "# Knowledge generation benchmark",
            "",
            f"Machine: {machine['platform']}, {machine['cpu_count']} cores, torch {machine['torch']} "
            f"({machine['torch_threads_default']} threads by default), PySpark {machine['pyspark']}, "
            f"Python {machine['python']}.",
            "",
            f"Day {setup['ds']}: {setup['examples']:,} examples of the synthetic world ({setup['n_users']:,} "
            f"users; histories carried from the day before, up to {setup['history_length']} events, "
            f"{setup['mean_history_length']:.1f} on average); {setup['batch_size']:,} examples per forward "
            f"pass. Spark writes through {setup['sink']}. Each core count runs in its own process pinned to "
            f"that many CPUs (its JVM and Python workers too): {sessions}. Warm figures are the median of "
            f"{setup['repeats']} run(s) after one cold run (worker spawn, model broadcast and build).",
            "",
            "The machine is shared (other jobs may run at the same time): Spark and PyTorch are measured "
            "side by side in one run, so read the ratios; absolute examples/s vary from run to run.",
            "",
            f"Ratio >= {report['target']} on every row: **{report['claims']['ratio_at_least_target']}**",
            "",
            *_throughput_section(report),
            "",
            *_scaling_section(report),
            "",
            *_time_section(report),
            "",
            "## What bounds it",
            "",
            *_bounds_section(report),
        ]
    )
