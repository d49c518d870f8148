"""The transfer benchmark's summary of one dataset: each model's metrics over its VMs (the mean;
calibration pools the clicks), then over seeds (the mean, the seeds' spread and each seed's NE for
paired comparisons), with its transfer ratio against the same seed's VM alone.

Transfer ratio (METHODS.md) = (NE_alone - NE_method) / (NE_alone - NE_teacher), all on the VM's
evaluation slice, NE_teacher being fresh gem-fm's (k = 0) logged predictions.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from pipeline.bench_transfer_config import TransferBenchConfig
from pipeline.bench_transfer_measure import METRICS, TARGET_METRICS, TRUTH_METRICS, Measured, finite_mean


def transfer_ratio(alone: float, student: float, teacher: float) -> float:
    """(NE_alone - NE_student) / (NE_alone - NE_teacher); NaN when the teacher has no advantage."""
    gap = alone - teacher
    return (alone - student) / gap if gap > 0 else math.nan


def _std(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.stdev(finite) if len(finite) > 1 else 0.0


def _over_surfaces(records: list[dict[str, float]], metric: str) -> float:
    """One seed's `metric` over its VMs: the mean; clicks add up, and calibration pools the clicks
    (every VM's predicted clicks over every VM's observed ones, or expected ones: `true_calibration`)."""
    if metric == "clicks":
        return sum(r["clicks"] for r in records)
    clicked = [r for r in records if r["clicks"] > 0]
    if metric in ("calibration", "true_calibration"):
        over = "clicks" if metric == "calibration" else "expected_clicks"
        total = sum(r[over] for r in clicked)
        return sum(r["calibration"] * r["clicks"] for r in clicked) / total if total else math.nan
    if metric == "expected_clicks":
        return sum(r["expected_clicks"] for r in clicked)
    return finite_mean([r[metric] for r in records])


def _ratio_to_alone(
    measured: Measured, cfg: TransferBenchConfig, seed: int, surface: str, model: dict[str, float]
) -> float:
    """`model`'s transfer ratio on `surface`: against the same seed's VM alone (fresh teacher) and gem-fm."""
    alone = measured.students[seed, 0, "alone", surface]["ne"] if "alone" in cfg.methods else math.nan
    return transfer_ratio(alone, model["ne"], measured.teachers[0, surface]["ne"])


def _over_seeds(
    measured: Measured,
    cfg: TransferBenchConfig,
    model: Callable[[int, str], dict[str, float]],
    surfaces: tuple[str, ...] = (),
) -> dict[str, float]:
    """A model's metrics (`model(seed, surface)`): each seed's over `surfaces` (every surface when
    empty; `_over_surfaces`), then the mean and spread over seeds (and each seed's NE, for paired
    comparisons), with its transfer ratio against the same seed's VM alone; the spread of `calibration`
    over seeds; a VM's `TARGET_METRICS` likewise, and `TRUTH_METRICS` (with the spread of
    `true_calibration`) where the world is synthetic."""
    surfaces = surfaces or cfg.surfaces

    def per_seed(metric: str) -> list[float]:
        return [_over_surfaces([model(s, v) for v in surfaces], metric) for s in cfg.seeds]

    ratios = [
        finite_mean([_ratio_to_alone(measured, cfg, s, v, model(s, v)) for v in surfaces]) for s in cfg.seeds
    ]
    measured_here = set(model(cfg.seeds[0], surfaces[0]))
    truth = TRUTH_METRICS if "expected_clicks" in measured_here else ()
    metrics = (*METRICS, "clicks", *truth, *(m for m in TARGET_METRICS if m in measured_here))
    spread = {"calibration_std": _std(per_seed("calibration"))}
    if truth:
        spread["true_calibration_std"] = _std(per_seed("true_calibration"))
    return (
        {m: finite_mean(per_seed(m)) for m in metrics}
        | spread
        | {
            "ne_std": _std(per_seed("ne")),
            "ne_by_seed": per_seed("ne"),
            "transfer_ratio": finite_mean(ratios),
            "transfer_ratio_std": _std(ratios),
        }
    )


def summarise(measured: Measured, cfg: TransferBenchConfig) -> dict[str, Any]:
    """Per method (fresh teacher), then per staleness: over surfaces and seeds, the seeds' spread, and
    the same for each VM on its own (`vms`: each is a served model, calibrated or not by itself); and
    the hierarchy's first hop (`domain_teacher`: the fresh domain FMs' logged knowledge on each VM's
    slice, and the share of gem-fm's advantage over the VM alone it kept) when domain FMs were trained;
    gem-fm's own logged metrics, fresh (`teacher`) and per staleness (`teacher_by_staleness`); and the
    calibration of each slice's day-before click rate (`label_rate`, where measured)."""

    def student(method: str, delay: int = 0) -> Callable[[int, str], dict[str, float]]:
        return lambda seed, surface: measured.students[seed, delay, method, surface]

    def pooled_and_by_vm(model: Callable[[int, str], dict[str, float]]) -> dict[str, Any]:
        vms = {v: _over_seeds(measured, cfg, model, (v,)) for v in cfg.surfaces}
        return _over_seeds(measured, cfg, model) | {"vms": vms}

    methods = {method: pooled_and_by_vm(student(method)) for method in cfg.methods}
    staleness = {
        str(k): {method: pooled_and_by_vm(student(method, k)) for method in cfg.methods}
        for k in cfg.staleness
    }

    def teacher(delay: int) -> dict[str, float]:
        slices = [measured.teachers[delay, v] for v in cfg.surfaces]
        truth = TRUTH_METRICS if measured.expected_clicks else ()
        return {m: _over_surfaces(slices, m) for m in (*METRICS, "clicks", *truth)}

    summary = {
        "methods": methods,
        "staleness": staleness,
        "teacher": teacher(0) | {"vms": {v: measured.teachers[0, v] for v in cfg.surfaces}},
        "teacher_by_staleness": {str(k): teacher(k) for k in cfg.staleness},
    }
    if measured.domain_teacher:
        summary["domain_teacher"] = _over_seeds(measured, cfg, lambda s, v: measured.domain_teacher[s, v])
    if measured.label_rate_clicks:
        summary["label_rate"] = label_rate_calibration(measured, cfg.surfaces)
    return summary


def label_rate_calibration(measured: Measured, surfaces: tuple[str, ...]) -> dict[str, Any]:
    """The calibration of predicting each evaluation day at the click rate of the day before
    (`label_rate_clicks`), every VM's slice pooled and each on its own, over the same clicks the
    VMs' calibration is measured against: expected ones where the world is synthetic, else observed."""
    truth = bool(measured.expected_clicks)

    def against(surface: str) -> float:
        return measured.expected_clicks[surface] if truth else measured.teachers[0, surface]["clicks"]

    def ratio(clicks: float, over: float) -> float:
        return clicks / over if over else math.nan

    vms = {v: ratio(measured.label_rate_clicks[v], against(v)) for v in surfaces}
    pooled = ratio(sum(measured.label_rate_clicks[v] for v in surfaces), sum(against(v) for v in surfaces))
    return {"measure": "true_calibration" if truth else "calibration", "calibration": pooled, "vms": vms}
