"""The transfer benchmark's report: claims checked, Markdown tables, PNG plots.

`claims` turns the measured numbers into the verdicts the benchmark promises
(each with the numbers it compared); `markdown` renders the report; `plots` draws
transfer ratio by method (bars with the seeds' spread), VM NE against the
teacher's staleness per method, and NE by day of the FM, domain FMs and VMs. A
difference is called a win only when larger than twice the spread of its seed-by-seed
differences (`paired_difference`).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from pipeline.report_plots import plot_series_by_day

CALIBRATION_TOLERANCE = 0.02  # |calibration - 1| within this is "calibrated"
FULL_OVER_KD_TARGET = 2.0  # GEM: combined transfer at 2x standard KD's effectiveness
NOISE_SPREADS = 2.0  # a difference is told from noise only beyond this many seeds' spreads (std)


def _finite(*values: float) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def full_versus_kd(methods: dict[str, Any]) -> dict[str, Any]:
    """GEM's claim: the full method's transfer ratio is at least 2x standard KD's.

    A factor over a KD ratio within twice its seeds' spread of zero says nothing (any
    positive full ratio would "hold"), so there the claim is refused, with the reason.
    """
    if not {"full", "kd"} <= methods.keys():
        return {"holds": None, "why": "needs methods full and kd"}
    full, kd = methods["full"]["transfer_ratio"], methods["kd"]["transfer_ratio"]
    kd_std = methods["kd"].get("transfer_ratio_std", 0.0)
    verdict = {"full": full, "kd": kd, "kd_std": kd_std, "target": FULL_OVER_KD_TARGET}
    if _finite(kd, kd_std) and kd > 0 and kd <= NOISE_SPREADS * kd_std:
        note = f"kd's ratio {kd:.3f} is within twice its seeds' spread ({kd_std:.3f}) of zero: no factor"
        return {**verdict, "factor": math.nan, "holds": False, "note": note}
    factor = full / kd if _finite(full, kd) and kd > 0 else math.nan
    return {**verdict, "factor": factor, "holds": bool(_finite(factor) and factor >= FULL_OVER_KD_TARGET)}


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """NE of `a` minus NE of `b`, seed by seed (`ne_by_seed`): the mean difference, and twice the spread
    of the differences. The bench's variants of a student draw the same random numbers for a seed, so
    a pair differs only by what the two learned: their differences' spread is the noise to beat."""
    differences = [x - y for x, y in zip(a["ne_by_seed"], b["ne_by_seed"], strict=True) if _finite(x, y)]
    if not differences:
        return math.nan, math.nan
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return statistics.fmean(differences), NOISE_SPREADS * spread


# ExFM's adapter on each distillation head the bench measures, (without it, with it): the ladder's
# auxiliary head, where a stale teacher reaches the served head only through the backbone, and
# single-head KD, where its targets supervise the served head itself.
ADAPTED_HEADS: tuple[tuple[str, str], ...] = (("aux_head", "adapter"), ("kd", "kd_adapter"))


def _recovery(staleness: dict[str, Any], plain: str, adapted: str, k: str) -> dict[str, Any]:
    """What a `k`-day-stale teacher costs the VM `plain` and what the same VM with the adapter
    (`adapted`) wins back of it: NE, seed by seed, each with its noise (`paired_difference`). The
    share is only defined for a loss beyond its noise."""
    old = staleness[k][plain]
    lost, noise = paired_difference(old, staleness["0"][plain])
    recovered, recovery_noise = paired_difference(old, staleness[k][adapted])
    measurable = _finite(lost, noise) and lost > noise
    share = recovered / lost if measurable and _finite(recovered) else math.nan
    return {
        "ne_lost": lost,
        "noise": noise,
        "ne_recovered": recovered,
        "recovery_noise": recovery_noise,
        "share": share,
    }


def _recovers_half(recovery: dict[str, Any]) -> bool:
    """At least half of the loss won back, and a win: beyond twice the spread of the seeds' gains."""
    recovered, noise = recovery["ne_recovered"], recovery["recovery_noise"]
    return recovery["share"] >= 0.5 and _finite(recovered, noise) and recovered > noise


def adapter_recovery(
    staleness: dict[str, Any], teacher: dict[str, dict[str, float]], stale: int = 2
) -> dict[str, Any]:
    """ExFM's claim: the adapter recovers at least half of the NE a `stale`-day-old teacher costs.

    Per head in `ADAPTED_HEADS` measured (`by_head`): lost = NE_plain(k) - NE_plain(0), seed by seed
    (`paired_difference`); recovered = NE_plain(k) - NE_adapted(k), seed by seed too. A loss within
    twice the spread of the seeds' losses is noise: nothing measurable to recover on that head. The
    claim holds when some head loses measurably and, on every head that does, the adapter wins back at
    least half, itself a win (beyond twice the spread of the seeds' gains).
    Beside it, what staleness costs gem-fm itself on the same slices (`teacher`, per staleness: NE,
    and AUC, its ranking), and what the adapter does where it acts, on the click targets of the
    adapter VMs' training rows (`targets_share`: the share of the log loss staleness costs the
    teacher's own targets that the adapted ones win back; `adapted_targets_lost`: what it still costs
    the adapted ones). The adapter re-maps the stale teacher's own logits (per day, an affine map of
    its tasks' logits): ranking the stale teacher no longer knows is not in its inputs, which the
    note names where the claim does not hold.
    """
    k = str(stale)
    not_judged = {"holds": None, "why": f"needs staleness 0 and {stale}, and a head of {ADAPTED_HEADS}"}
    if "0" not in staleness or k not in staleness:
        return not_judged
    both = staleness["0"].keys() & staleness[k].keys()
    heads = [(plain, adapted) for plain, adapted in ADAPTED_HEADS if {plain, adapted} <= both]
    if not heads:
        return not_judged
    by_head = {plain: _recovery(staleness, plain, adapted, k) for plain, adapted in heads}
    losing = [r for r in by_head.values() if _finite(r["share"])]
    teacher_lost = teacher[k]["ne"] - teacher["0"]["ne"]
    teacher_auc_lost = teacher["0"]["auc"] - teacher[k]["auc"]
    targets = _target_recovery(staleness["0"][heads[0][1]], staleness[k][heads[0][1]])
    verdict = {
        "stale_days": stale,
        "teacher_ne_lost": teacher_lost,
        "teacher_auc_lost": teacher_auc_lost,
        **targets,
        "by_head": by_head,
        "holds": bool(losing) and all(_recovers_half(r) for r in losing),
    }
    notes = []
    if not losing:
        losses = "; ".join(
            f"the {plain} VM {r['ne_lost']:.4f} (noise {r['noise']:.4f})" for plain, r in by_head.items()
        )
        notes.append(
            f"a {stale}-day-stale teacher costs {losses}, each within twice the spread of the seeds' "
            f"losses, while gem-fm itself loses {teacher_lost:.4f}: nothing to recover; on the VMs' "
            f"training rows the adapted click targets win back {_fmt(targets['targets_share'])} of the "
            "log loss staleness costs the teacher's own"
        )
    if not verdict["holds"] and _finite(teacher_auc_lost, targets["adapted_targets_lost"]):
        notes.append(
            f"staleness still costs the adapted targets {targets['adapted_targets_lost']:.4f} log loss "
            f"(the teacher's own {targets['targets_lost']:.4f}) and gem-fm {teacher_auc_lost:.4f} AUC: "
            "the adapter only re-maps the stale teacher's own logits, so ranking the stale teacher no "
            "longer knows is not in its inputs"
        )
    if notes:
        verdict["note"] = "; ".join(notes)
    return verdict


def _target_recovery(fresh: dict[str, Any], stale: dict[str, Any]) -> dict[str, float]:
    """The adapter VM's click targets (`TARGET_METRICS`, mean log loss against its training labels):
    what staleness costs the teacher's own, what the adapted ones win back, the share, and what
    staleness still costs the adapted ones."""
    own, adapted = stale.get("teacher_log_loss", math.nan), stale.get("target_log_loss", math.nan)
    lost = own - fresh.get("teacher_log_loss", math.nan)
    recovered = own - adapted
    share = recovered / lost if _finite(lost, recovered) and lost > 0 else math.nan
    return {
        "targets_lost": lost,
        "targets_recovered": recovered,
        "targets_share": share,
        "adapted_targets_lost": adapted - fresh.get("target_log_loss", math.nan),
    }


def label_noise(clicks: float) -> float:
    """The relative sampling error of a calibration measured on `clicks` observed clicks: the clicks
    are a sum of Bernoulli draws, whose spread is at most the square root of their count."""
    return 1.0 / math.sqrt(clicks) if clicks > 0 else math.nan


def aux_head_calibration(staleness: dict[str, Any]) -> dict[str, Any]:
    """ExFM's claim: the auxiliary head keeps the serving head calibrated where single-head KD does not.

    Where the world is synthetic, calibration is predicted over expected clicks (`true_calibration`):
    no sampling error, and the seeds' spread is KD's noise. Elsewhere it is predicted over observed
    clicks, a random draw whose sampling error (`label_noise`) is KD's noise: when twice it exceeds the
    tolerance, "within 2% of 1.0" cannot be told on these test days, and the claim is refused at that
    staleness. It holds where the aux head is within the tolerance and KD beyond it by more than
    twice its noise.
    """
    rows = {}
    for k, methods in staleness.items():
        if {"kd", "aux_head"} <= methods.keys():
            truth = "true_calibration" in methods["aux_head"]
            measure = "true_calibration" if truth else "calibration"
            kd, aux = methods["kd"][measure], methods["aux_head"][measure]
            noise = 0.0 if truth else label_noise(methods["aux_head"]["clicks"])
            kd_noise = methods["kd"]["true_calibration_std"] if truth else noise
            rows[k] = {
                "against": "expected clicks" if truth else "observed clicks",
                "kd": kd,
                "aux_head": aux,
                "label_noise": noise,
                "kd_noise": kd_noise,
                "measurable": _finite(noise) and NOISE_SPREADS * noise <= CALIBRATION_TOLERANCE,
                "aux_within": abs(aux - 1.0) <= CALIBRATION_TOLERANCE,
                "kd_outside": abs(kd - 1.0) - CALIBRATION_TOLERANCE > NOISE_SPREADS * kd_noise,
            }
            if truth:
                rows[k]["aux_head_std"] = methods["aux_head"]["true_calibration_std"]
    if not rows:
        return {"tolerance": CALIBRATION_TOLERANCE, "by_staleness": rows, "holds": None}
    holds = any(r["measurable"] and r["aux_within"] and r["kd_outside"] for r in rows.values())
    verdict = {"tolerance": CALIBRATION_TOLERANCE, "by_staleness": rows, "holds": holds}
    if not any(r["measurable"] for r in rows.values()):
        noise = min(r["label_noise"] for r in rows.values())
        verdict["note"] = (
            f"the test clicks' sampling error ({noise:.3f}) is over half the tolerance: "
            f"calibration within {CALIBRATION_TOLERANCE:.0%} cannot be told"
        )
    elif not any(r["kd_outside"] for r in rows.values()):
        verdict["note"] = (
            f"KD's calibration is nowhere beyond {CALIBRATION_TOLERANCE:.0%} of 1.0 by more than twice "
            "its noise: no miscalibration is shown for the auxiliary head to keep away"
        )
    return verdict


def claims(dataset: dict[str, Any]) -> dict[str, Any]:
    """Every claim the benchmark checks on one dataset."""
    return {
        "full_at_least_2x_kd": full_versus_kd(dataset["methods"]),
        "adapter_recovers_half_of_staleness": adapter_recovery(
            dataset["staleness"], dataset["teacher_by_staleness"]
        ),
        "aux_head_keeps_calibration": aux_head_calibration(dataset["staleness"]),
    }


def _win(method: dict[str, Any], alone: dict[str, Any]) -> str:
    """A win over `alone` only when the NE gap exceeds twice the spread of the seeds' gaps."""
    if len(alone["ne_by_seed"]) < 2:
        return "n/a (1 seed)"
    gap, spread = paired_difference(alone, method)
    if not _finite(gap, spread):
        return "n/a"
    return "win" if gap > spread else ("loss" if -gap > spread else "within noise")


def markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    lines = [
        "# Transfer benchmark",
        "",
        f"Wall time: {report['wall_seconds'] / 60:.1f} min{_runs(report)}. {report['machine']}; "
        f"measured by commit {report.get('code', 'unrecorded')[:12]}{_judged_by(report)}",
        "",
    ]
    for name, data in report["datasets"].items():
        setup = data["setup"]
        lines += [
            f"## {name}",
            "",
            f"{len(setup['days_list'])} days ({_day_size(name, setup)}), gem-fm `{setup['fm_size']}`, "
            f"seeds {setup['seeds']}; VMs train on {setup['student_days'][0]}..{setup['student_days'][-1]}, "
            f"each measured on {setup['evaluation_days'][0]}..{setup['evaluation_days'][-1]} by its version "
            "trained through the day before, pooled "
            f"({data['teacher']['clicks']:,.0f} clicks over the VMs' slices{_expected(data)}; calibration "
            "pools them). "
            f"Teacher (gem-fm, fresh) click NE on the same slices: {data['teacher']['ne']:.4f}."
            f"{_first_hop(data)}",
            "",
            f"| method | NE | ± (seeds) | AUC | calibration{_truth_header(data)} | transfer ratio "
            "| vs alone |",
            "|---|---|---|---|---|---|---|",
        ]
        alone = data["methods"].get("alone")
        for method, m in data["methods"].items():
            verdict = _win(m, alone) if alone and method != "alone" else ""
            lines.append(
                f"| {method} | {m['ne']:.4f} | {m['ne_std']:.4f} | {m['auc']:.4f} | {_calibration_cell(m)} "
                f"| {m['transfer_ratio']:.3f} | {verdict} |"
            )
        ks = list(data["staleness"])
        lines += ["", "VM click NE by teacher staleness (days):", "", "| method | " + " | ".join(ks) + " |"]
        lines.append("|---|" + "---|" * len(ks))
        for method in data["methods"]:
            cells = " | ".join(f"{data['staleness'][k][method]['ne']:.4f}" for k in ks)
            lines.append(f"| {method} | {cells} |")
        cells = " | ".join(f"{data['teacher_by_staleness'][k]['ne']:.4f}" for k in ks)
        lines.append(f"| gem-fm itself (its logged predictions) | {cells} |")
        cells = " | ".join(f"{data['teacher_by_staleness'][k]['auc']:.4f}" for k in ks)
        lines.append(f"| gem-fm itself: AUC, its ranking (higher is better) | {cells} |")
        lines += _targets_table(data["staleness"], ks)
        lines += ["", "Claims:", ""]
        lines += [_claim_line(claim, verdict) for claim, verdict in data["claims"].items()]
        lines.append("")
    lines += ["## Model sizes", "", "| model | parameters | forward FLOPs/example |", "|---|---|---|"]
    for model, facts in report["models"].items():
        lines.append(f"| {model} | {facts['parameters']:,} | {facts['flops_per_example']:,.0f} |")
    return "\n".join(lines)


def _claim_line(claim: str, verdict: dict[str, Any]) -> str:
    """One claim's verdict with the numbers it compared: its own, then per head (the adapter's) or
    per staleness (calibration), then its note."""
    # None (NaN once read back by a join: JSON null) is a claim not measured
    holds = {True: "holds", False: "**does not hold**"}.get(verdict["holds"], "not measured")
    parts = [
        f"{k}={_fmt(v)}" for k, v in verdict.items() if k not in ("holds", "by_staleness", "by_head", "note")
    ]
    details = [", ".join(parts)]
    for head, r in verdict.get("by_head", {}).items():
        details.append(
            f"the {head} VM: lost {_fmt(r['ne_lost'])} (noise {_fmt(r['noise'])}), the adapter wins "
            f"back {_fmt(r['ne_recovered'])} (noise {_fmt(r['recovery_noise'])}; share {_fmt(r['share'])})"
        )
    for k, row in verdict.get("by_staleness", {}).items():
        details.append(f"staleness {k}: {_calibration_pair(row)}")
    if verdict.get("note"):
        details.append(f"note: {verdict['note']}")
    return f"- `{claim}`: {holds} ({'; '.join(details)})"


def _expected(data: dict[str, Any]) -> str:
    """The clicks the synthetic world expected on the VMs' slices, where known."""
    expected = data["teacher"].get("expected_clicks")
    return f", {expected:,.0f} expected by the world" if _finite(expected) else ""


def _truth_header(data: dict[str, Any]) -> str:
    """What the calibration column holds, where it holds two measures."""
    return " (over observed / expected clicks)" if _expected(data) else ""


def _calibration_cell(m: dict[str, Any]) -> str:
    """A method's calibration over observed clicks, and over expected ones where the world is synthetic."""
    truth = m.get("true_calibration")
    return f"{m['calibration']:.3f}" + (f" / {truth:.3f}" if _finite(truth) else "")


def _calibration_pair(row: dict[str, Any]) -> str:
    """kd's and aux_head's calibration at one staleness, with what they were measured against and
    their noise."""
    if row.get("against") == "expected clicks":
        return (
            f"kd {row['kd']:.3f} ± {row['kd_noise']:.3f}, aux_head {row['aux_head']:.3f} "
            f"± {row['aux_head_std']:.3f} (predicted over expected clicks; ± the seeds' spread)"
        )
    return f"kd {row['kd']:.3f}, aux_head {row['aux_head']:.3f} (± {row['label_noise']:.3f} from the labels)"


def _targets_table(staleness: dict[str, Any], ks: list[str]) -> list[str]:
    """The adapter VMs' click targets by staleness: the teacher's own and the adapted ones (mean log
    loss against the labels of the rows they trained on). Empty when not measured."""
    adapter = [staleness[k].get("adapter", {}) for k in ks]
    if not all(_finite(a.get("teacher_log_loss"), a.get("target_log_loss")) for a in adapter):
        return []
    lines = [
        "",
        "The adapter VMs' click targets by teacher staleness: mean log loss against the labels of the "
        "rows they trained on (what the adapter acts on):",
        "",
        "| targets | " + " | ".join(ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for label, key in (("the teacher's own", "teacher_log_loss"), ("adapted", "target_log_loss")):
        lines.append(f"| {label} | " + " | ".join(f"{a[key]:.4f}" for a in adapter) + " |")
    return lines


def _runs(report: dict[str, Any]) -> str:
    """A joined report's runs (`bench_transfer_join`), each with its datasets and wall time, and
    their elapsed time where they recorded it."""
    runs = report.get("runs", [])
    if len(runs) < 2:
        return ""
    parts = "; ".join(f"{', '.join(r['datasets'])} {r['wall_seconds'] / 60:.1f} min" for r in runs)
    text = f", the sum of {len(runs)} runs joined ({parts})"
    if "elapsed_seconds" in report:
        text += f"; {report['elapsed_seconds'] / 60:.1f} min elapsed from the first start to the last finish"
    return text


def _judged_by(report: dict[str, Any]) -> str:
    """The commit that judged a joined report's claims, where it is not the one that measured it."""
    judge = report.get("judged_by")
    return f", claims judged by commit {judge[:12]}" if judge and judge != report.get("code") else ""


def _first_hop(data: dict[str, Any]) -> str:
    """The domain FMs' knowledge on the same slices: how much of gem-fm's advantage the first hop keeps."""
    if "domain_teacher" not in data:
        return ""
    hop = data["domain_teacher"]
    return (
        f" Domain FMs (fresh, the full method's teachers) on the same slices: {hop['ne']:.4f} "
        f"± {hop['ne_std']:.4f}, transfer ratio {_fmt(hop['transfer_ratio'])} "
        f"± {_fmt(hop['transfer_ratio_std'])} (the share of gem-fm's advantage over alone they keep)."
    )


def _day_size(dataset: str, setup: dict[str, Any]) -> str:
    if dataset == "movielens":
        return "one week of MovieLens-100k ratings each"
    if dataset == "synthetic_drift":
        drift = ", ".join(f"{k} {v}" for k, v in setup["fast_drift"].items())
        return f"{setup['events_per_day']} synthetic events each, the world drifting fast: {drift} a day"
    return f"{setup['events_per_day']} synthetic events each"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots per dataset: transfer ratio by method, VM NE against staleness. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, data in report["datasets"].items():
        methods = [m for m in data["methods"] if m != "alone"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ratios = [data["methods"][m]["transfer_ratio"] for m in methods]
        spread = [data["methods"][m]["transfer_ratio_std"] for m in methods]
        ax.bar(methods, ratios, yerr=spread, capsize=4, color="#4878a8")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("transfer ratio")
        ax.set_title(f"{name}: share of gem-fm's NE advantage captured by the VMs")
        fig.tight_layout()
        files.append(out / f"transfer_ratio_{name}.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ks = sorted(int(k) for k in data["staleness"])
        for method in data["methods"]:
            ax.plot(ks, [data["staleness"][str(k)][method]["ne"] for k in ks], marker="o", label=method)
        teacher = [data["teacher_by_staleness"][str(k)]["ne"] for k in ks]
        ax.plot(ks, teacher, color="black", linestyle="--", marker="s", label="gem-fm itself")
        ax.set_xlabel("teacher staleness (days)")
        ax.set_ylabel("VM click NE (lower is better)")
        ax.set_title(f"{name}: VM NE against teacher staleness")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        files.append(out / f"staleness_{name}.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)

        ne_by_day = data["ne_by_day"]
        files.append(
            plot_series_by_day(
                ne_by_day,
                sorted({day for by_day in ne_by_day.values() for day in by_day}),
                "click NE",
                f"{name}: NE by day, FM, domain FMs and VMs",
                out / f"ne_by_day_{name}.png",
                xlabel="evaluation day (model trained through the day before)",
            )
        )
    return files
