"""The Markdown form of `distillery bench teacher`'s report (see `pipeline.bench_teacher`)."""

from __future__ import annotations

from typing import Any


def _f(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


def _alone_section(section: dict[str, Any]) -> list[str]:
    rows = []
    for name, s in section["surfaces"].items():
        w = s["window"]
        rows.append(
            f"| {name} | {_f(s['fm_click_ne'])} | {_f(s['alone_click_ne'])} | {_f(s['ne_advantage'])} | "
            f"{s['fm_beats_alone']} | {_f(w['fm_click_ne_mean'])} | {_f(w['alone_click_ne_mean'])} | "
            f"{_f(w['ne_advantage_mean'])} ± {_f(w['ne_advantage_std'])} | "
            f"{w['fm_better_days']}/{len(w['days'])} |"
        )
    days = next(iter(section["surfaces"].values()))["window"]["days"]
    return [
        f"## 1. FM against a `{section['alone_size']}` model trained alone on each surface "
        f"(holds on the window's mean: {section['holds']}; "
        f"on the test day alone: {section['holds_on_test_day']})",
        "",
        "Click NE on each surface's rows (lower is better); advantage = alone - FM. "
        f"Window (the claim): progressive validation on {days[0]} .. {days[-1]} (each model trained "
        "through the day before), mean over the days, the advantage's spread across days (std), and on "
        "how many days the FM was better; the test day alone shows how far one day's NE moves. "
        f"The alone model trains at its size's learning rate ({section['alone_learning_rate']:g}; "
        f"its embedding tables at {section['alone_embedding_learning_rate']:g}, as the FM's).",
        "",
        "| surface | FM | alone | advantage | FM better "
        "| FM window | alone window | advantage window | FM better days |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def _frozen_section(section: dict[str, Any]) -> list[str]:
    rows = [
        f"| {name} | {_f(s['continual_click_ne'])} | {_f(s['frozen_click_ne'])} | {_f(s['ne_gain'])} | "
        f"{s['continual_beats_frozen']} |"
        for name, s in section["slices"].items()
    ]
    return [
        f"## 2. Continual FM against the FM frozen after day 1 (holds: {section['holds']}, on overall NE)",
        "",
        "Click NE on the test day; gain = frozen - continual.",
        "",
        "| slice | continual | frozen | gain | continual better |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _time_section(section: dict[str, Any]) -> list[str]:
    rows = [
        f"| {d['ds']} | {_f(d['seconds'], 1)} | {_f(d['train_loop_seconds'], 1)} | "
        f"{_f(d['cpu_seconds'], 1)} | {d['load_average_1min']:.1f} | {d['examples']:,.0f} | "
        f"{d['examples_per_s']:,.0f} |"
        for d in section["days"]
    ]
    return [
        f"## 3. Training seconds per day (last / first = {_f(section['ratio_last_first'], 3)}, "
        f"target <= {section['target']}, holds: {section['holds']})",
        "",
        "Wall seconds of `train_fm` (read rows, features, train, save the checkpoint); "
        f"warm-up: {section['warm_up']}.",
        "",
        f"CPU seconds of the process, last / first = {_f(section['cpu_ratio_last_first'], 3)}; "
        "the 1-minute load average after each day shows how busy the (shared) machine was.",
        "",
        "| day | seconds | of which training loop | CPU seconds | load average | examples | examples/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def _throughput_section(section: dict[str, Any], models: dict[str, Any]) -> list[str]:
    peak = section["matmul"]
    rows = [
        f"| {name} | {s['examples_per_s']:,.0f} | {s['forward_flops_per_example'] / 1e6:,.2f} | "
        f"{s['achieved_flops_per_s'] / 1e9:,.2f} | {s['mfu']:.2%} |"
        for name, s in section["sizes"].items()
    ]
    facts = [
        f"| {name} | {f['parameters']:,} | {f['forward_flops_per_example'] / 1e6:,.2f} |"
        for name, f in models.items()
    ]
    return [
        "## 4. Training throughput and model FLOP utilisation",
        "",
        f"Machine peak: `torch.mm` fp32 {peak['n']}x{peak['n']}, best of {peak['repeats']}: "
        f"{peak['best_flops_per_s'] / 1e9:,.1f} GFLOP/s (median {peak['median_flops_per_s'] / 1e9:,.1f}); "
        f"MFU = achieved / best. {section['convention']}. Rows: {section['rows']}, after a warm-up.",
        "",
        "| size | examples/s | forward MFLOPs/example | achieved GFLOP/s | MFU |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| size | parameters | forward MFLOPs/example |",
        "|---|---|---|",
        *facts,
    ]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the claims, then one section per measurement."""
    setup = report["setup"]
    claims = [f"- {name}: **{holds}**" for name, holds in report["claims"].items()]
    return "\n".join(
        [
            "# Teacher benchmark",
            "",
            f"Machine: {report['machine']}. Synthetic world, {setup['events_per_day']:,} events/day, "
            f"{setup['n_users']:,} users, histories of {setup['history_length']}, seed {setup['seed']}; "
            f"FM `{setup['fm_size']}` trained continually on {setup['train_days'][0]} .. "
            f"{setup['train_days'][-1]}, tested on {setup['test_day']}.",
            "",
            "Claims (does each target hold on this run):",
            *claims,
            "",
            *_alone_section(report["fm_vs_alone"]),
            "",
            *_frozen_section(report["continual_vs_frozen"]),
            "",
            *_time_section(report["training_time"]),
            "",
            *_throughput_section(report["throughput"], report["models"]),
        ]
    )
