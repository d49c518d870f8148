"""The transfer benchmark's report in Markdown: tables with the claims' verdicts.

`markdown` renders the report: first its verdicts, each claim against each dataset
(`verdicts_table`; the verdicts come from `bench_transfer_claims`), then per dataset the methods, NE
by staleness, what a stale teacher costs each VM and what the adapter wins back at every staleness
(`_recovery_table`), the served head's calibration under KD and under the auxiliary head, pooled and
VM by VM, on the teacher's own targets and on scaled ones (`_calibration_table`), and each claim's
numbers. A difference is called a win only when larger than
twice the spread of its seed-by-seed differences (`method_verdict`, `paired_difference`); the plots
(`bench_transfer_plots`) colour their bars by the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.bench_transfer_claims import (
    ADAPTED_HEADS,
    CALIBRATION_PAIRS,
    CALIBRATION_TOLERANCE,
    all_finite,
    calibration_slices,
    fmt,
    fmt_ne,
    judged_slices,
    paired_difference,
    staleness_recovery,
)
from pipeline.hierarchy import vm_name
from students.config import SCALED_TARGETS


def method_verdict(method: dict[str, Any], alone: dict[str, Any]) -> str:
    """The verdict against `alone`, "win", "loss" or "within noise" ("n/a" without seeds to compare):
    a win only when the NE gap exceeds twice the spread of the seeds' gaps."""
    if len(alone["ne_by_seed"]) < 2:
        return "n/a (1 seed)"
    gap, spread = paired_difference(alone, method)
    if not all_finite(gap, spread):
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
        *verdicts_table(report),
    ]
    for name, data in report["datasets"].items():
        setup = data["setup"]
        lines += [
            f"## {name}",
            "",
            f"{len(setup['days_list'])} days ({_day_size(name, setup)}), gem-fm `{setup['fm_size']}` "
            f"(minibatch {setup['batch_size']}, the VMs' {setup['vm_batch_size']}), "
            f"seeds {', '.join(map(str, setup['seeds']))}; "
            f"VMs train on {setup['student_days'][0]}..{setup['student_days'][-1]}, "
            f"each measured on {setup['evaluation_days'][0]}..{setup['evaluation_days'][-1]} by its version "
            "trained through the day before, pooled "
            f"({data['teacher']['clicks']:,.0f} clicks over the VMs' slices{_expected(data)}; calibration "
            "pools them). "
            f"Teacher (gem-fm, fresh) click NE on the same slices: {data['teacher']['ne']:.4f}."
            f"{_first_hop(data)}{market_line(data)}",
            "",
            f"| method | NE | ± (seeds) | AUC | calibration{_truth_header(data)} | transfer ratio "
            "| vs alone |",
            "|---|---|---|---|---|---|---|",
        ]
        alone = data["methods"].get("alone")
        for method, m in data["methods"].items():
            verdict = method_verdict(m, alone) if alone and method != "alone" else ""
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
        lines += _recovery_table(data["staleness"], ks)
        lines += _targets_table(data["staleness"], ks)
        for claim in CALIBRATION_PAIRS:
            lines += _calibration_table(data["claims"].get(claim, {}))
        lines += ["", "Claims:", ""]
        lines += [_claim_line(claim, verdict) for claim, verdict in data["claims"].items()]
        lines.append("")
    lines += ["## Model sizes", "", "| model | parameters | forward FLOPs/example |", "|---|---|---|"]
    for model, facts in report["models"].items():
        lines.append(f"| {model} | {facts['parameters']:,} | {facts['flops_per_example']:,.0f} |")
    return "\n".join(lines)


# The claims the report judges, as a reader asks them (METHODS.md; issue "the transfer benchmark").
CLAIM_QUESTIONS: dict[str, str] = {
    "full_at_least_2x_kd": "GEM: the full method's transfer ratio is at least 2x standard KD's",
    "adapter_recovers_half_of_staleness": (
        "ExFM: the adapter wins back at least half of the VM NE a 2-day-stale teacher's targets cost"
    ),
    "aux_head_keeps_calibration": (
        "ExFM: the auxiliary head keeps the served head calibrated within 2% where single-head KD does not"
    ),
    "aux_head_keeps_calibration_scaled": (
        f"The same, both heads on targets scaled by {SCALED_TARGETS} (ExFM's label scaling: a teacher "
        "biased up by construction)"
    ),
}


def verdicts_table(report: dict[str, Any]) -> list[str]:
    """Every claim against every dataset, one cell each: the verdict and the number that decided it
    (each dataset's claims lines give the rest)."""
    names = list(report["datasets"])
    lines = ["## Verdicts", "", "| claim | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for claim, question in CLAIM_QUESTIONS.items():
        verdicts = [report["datasets"][name]["claims"].get(claim, {"holds": None}) for name in names]
        lines.append(f"| {question} | " + " | ".join(verdict_cell(claim, v) for v in verdicts) + " |")
    return [*lines, ""]


def verdict_cell(claim: str, verdict: dict[str, Any]) -> str:
    """One claim on one dataset in a few words: holds or not, and by what."""
    if verdict["holds"] is None:
        return "not measured"
    holds = "holds" if verdict["holds"] else "**does not hold**"
    return f"{holds}: {_DECIDED_BY[claim](verdict)}"


def _factor(verdict: dict[str, Any]) -> str:
    if all_finite(verdict["factor"]):
        return f"{verdict['factor']:.2f}x (full {verdict['full']:.3f}, kd {verdict['kd']:.3f})"
    return f"no factor, kd's ratio {fmt(verdict['kd'])} ± {fmt(verdict['kd_std'])}"


def _recovered(verdict: dict[str, Any]) -> str:
    losing = {head: r for head, r in verdict["by_head"].items() if all_finite(r["share"])}
    judged = [recovery_phrase(head, r) for head, r in losing.items() if r["judged"]]
    beside = [recovery_phrase(head, r) for head, r in losing.items() if not r["judged"]]
    if not judged:
        judged = [
            "no VM the adapter's targets supervise loses NE beyond noise "
            f"(gem-fm itself loses {verdict['teacher_ne_lost']:.4f})"
        ]
    return "; ".join(judged + beside)


def recovery_phrase(head: str, r: dict[str, Any]) -> str:
    """What a stale teacher costs the VM `head` and what the adapter wins back (`staleness_recovery`'s
    `r`), each with its noise, and the share where the loss is beyond its noise; beside the loss, the
    loss to expect where measured (`ne_lost_expected`). A head the claim does not judge
    (`TARGET_HEADS`) is named as beside it."""
    share = f"a share of {r['share']:.2f}" if all_finite(r["share"]) else "no share: no loss beyond its noise"
    beside = "" if r["judged"] else BESIDE_THE_CLAIM
    expected = r["ne_lost_expected"]
    to_expect = f"; its transfer ratio of gem-fm's loss: {fmt_ne(expected)}" if all_finite(expected) else ""
    return (
        f"{beside}the {head} VM loses {fmt_ne(r['ne_lost'])} (noise {r['noise']:.4f}{to_expect}), "
        f"the adapter wins back {fmt_ne(r['ne_recovered'])} (noise {r['recovery_noise']:.4f}), {share}"
    )


# How a VM the adapter's claim measures but does not judge is introduced (`TARGET_HEADS`).
BESIDE_THE_CLAIM = "beside the claim, through the stale embedding it serves (not the adapter's to win back), "


def _pair(verdict: dict[str, Any]) -> tuple[str, str]:
    """The methods a calibration verdict compares, (single-head KD's, the auxiliary head's)."""
    kd, aux = verdict["pair"]
    return kd, aux


def _kept(verdict: dict[str, Any]) -> str:
    judged = judged_slices(verdict)
    if not judged:
        tolerance = f"{verdict['tolerance']:.0%}"
        return f"within {tolerance} cannot be told on these clicks, or reached from their labels"
    off = [(k, name, r) for k, name, r in judged if r["kd_outside"]]
    k, name, r = max(off or judged, key=lambda s: abs(s[2]["kd"] - 1.0))
    farthest = f"{r['kd']:.3f} ± {r['kd_noise']:.3f} on {_slice(name)} at staleness {k}"
    if not off:
        return (
            f"KD is nowhere beyond {verdict['tolerance']:.0%} by more than twice its noise "
            f"(farthest from 1.0: {farthest})"
        )
    within, aux = sum(r["aux_within"] for _, _, r in off), _pair(verdict)[1]
    return (
        f"KD is beyond {verdict['tolerance']:.0%} by more than twice its noise on {len(off)} of "
        f"{len(judged)} slices judged (farthest: {farthest}, {aux} {r['aux_head']:.3f}); the aux head is "
        f"within {verdict['tolerance']:.0%} on {within} of them"
    )


# Each claim's deciding numbers, as `verdict_cell` words them.
_DECIDED_BY: dict[str, Callable[[dict[str, Any]], str]] = {
    "full_at_least_2x_kd": _factor,
    "adapter_recovers_half_of_staleness": _recovered,
} | dict.fromkeys(CALIBRATION_PAIRS, _kept)


def _claim_line(claim: str, verdict: dict[str, Any]) -> str:
    """One claim's verdict with the numbers it compared: its own, then per head (the adapter's) or
    per staleness (calibration), then its note."""
    # None (NaN once read back by a join: JSON null) is a claim not measured
    holds = {True: "holds", False: "**does not hold**"}.get(verdict["holds"], "not measured")
    parts = [
        f"{k}={fmt(v)}"
        for k, v in verdict.items()
        if k not in ("holds", "pair", "by_staleness", "by_head", "note")
    ]
    details = [", ".join(parts)]
    details += [recovery_phrase(head, r) for head, r in verdict.get("by_head", {}).items()]
    for k, row in verdict.get("by_staleness", {}).items():
        details.append(f"staleness {k}: {_calibration_pair(row, _pair(verdict))}")
    if verdict.get("note"):
        details.append(f"note: {verdict['note']}")
    return f"- `{claim}`: {holds} ({'; '.join(details)})"


def _expected(data: dict[str, Any]) -> str:
    """The clicks the synthetic world expected on the VMs' slices, where known."""
    expected = data["teacher"].get("expected_clicks")
    return f", {expected:,.0f} expected by the world" if all_finite(expected) else ""


def _truth_header(data: dict[str, Any]) -> str:
    """What the calibration column holds, where it holds two measures."""
    return " (over observed / expected clicks)" if _expected(data) else ""


def _calibration_cell(m: dict[str, Any]) -> str:
    """A method's calibration over observed clicks, and over expected ones where the world is synthetic."""
    truth = m.get("true_calibration")
    return f"{m['calibration']:.3f}" + (f" / {truth:.3f}" if all_finite(truth) else "")


def _calibration_pair(row: dict[str, Any], pair: tuple[str, str]) -> str:
    """The `pair`'s calibration (single-head KD's, the aux head's) at one staleness, with what they were
    measured against and their noise."""
    kd, aux = pair
    if row.get("against") == "expected clicks":
        return (
            f"{kd} {row['kd']:.3f} ± {row['kd_noise']:.3f}, {aux} {row['aux_head']:.3f} "
            f"± {row['aux_head_std']:.3f} (predicted over expected clicks; ± the seeds' spread)"
        )
    return (
        f"{kd} {row['kd']:.3f}, {aux} {row['aux_head']:.3f} (± {row['label_noise']:.3f} from the labels; "
        f"KD's noise with its seeds' spread {row['kd_noise']:.3f})"
    )


def _recovery_table(staleness: dict[str, Any], ks: list[str]) -> list[str]:
    """Per VM measured without and with the adapter (`ADAPTED_HEADS`), at every staleness: the NE the
    stale teacher costs it, and what the adapter wins back, each with its noise, and the share where the
    loss is beyond its noise. The claim reads the 2-day column; the others show where staleness costs
    more. Empty when no such pair was measured."""
    stale = [k for k in ks if k != "0"]
    pairs = [(p, a) for p, a in ADAPTED_HEADS if all({p, a} <= staleness[k].keys() for k in ks)]
    if "0" not in ks or not stale or not pairs:
        return []
    lines = [
        "",
        "What a stale teacher costs each VM without the adapter, and what the same VM with it wins back "
        "(the loss without it less the loss with it; NE, seed by seed; in brackets twice the spread of "
        "the seeds' differences, the noise to beat; "
        "the share where the loss is beyond its noise):",
        "",
        "| VM without / with the adapter | " + " | ".join(stale) + " |",
        "|---|" + "---|" * len(stale),
    ]
    for plain, adapted in pairs:
        cells = []
        for k in stale:
            r = staleness_recovery(staleness, plain, adapted, k)
            share = f", share {r['share']:.2f}" if all_finite(r["share"]) else ""
            cells.append(
                f"lost {fmt_ne(r['ne_lost'])} ({r['noise']:.4f}), won back {fmt_ne(r['ne_recovered'])} "
                f"({r['recovery_noise']:.4f}){share}"
            )
        lines.append(f"| {plain} / {adapted} | " + " | ".join(cells) + " |")
    return lines


def _calibration_table(verdict: dict[str, Any]) -> list[str]:
    """The served head's calibration under single-head KD and under the auxiliary head (the verdict's
    pair), on every VM pooled and on each VM, by staleness: the slices a calibration claim judges.
    Empty when not judged."""
    rows = verdict.get("by_staleness", {})
    if not rows:
        return []
    ks, pair = list(rows), _pair(verdict)
    against = next(iter(rows.values()))["against"]
    lines = [
        "",
        f"The served head's calibration, single-head KD ({pair[0]}) against the auxiliary head ({pair[1]}) "
        "(and, where measured, "
        "the VM alone, with no teacher, gem-fm itself, whose bias KD takes in and the aux head is to "
        "keep out, and labels: each day predicted at the click rate of the day before, all a head "
        "learning from labels alone knows of it), by teacher staleness "
        f"(predicted over {against}; in brackets KD's noise; **kd off**: beyond "
        f"{CALIBRATION_TOLERANCE:.0%} of 1.0 by more than twice its noise; a slice whose clicks cannot tell "
        f"{CALIBRATION_TOLERANCE:.0%} is marked so, and one where labels are themselves beyond it, "
        "left out of the claim, is marked (labels' floor)):",
        "",
        "| slice | " + " | ".join(ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    by_slice: dict[str, dict[str, dict[str, Any]]] = {}
    for k, name, r in calibration_slices(verdict):
        by_slice.setdefault(name, {})[k] = r
    for name, by_k in by_slice.items():
        cells = [_kd_and_aux_head(by_k[k], pair) if k in by_k else "" for k in ks]
        lines.append(f"| {_slice(name)} | " + " | ".join(cells) + " |")
    return lines


def _kd_and_aux_head(r: dict[str, Any], pair: tuple[str, str]) -> str:
    """One slice at one staleness, as `_calibration_table` gives it."""
    mark = (" **kd off**" if r["kd_outside"] else "") if r["measurable"] else " (cannot tell)"
    if r["measurable"] and not r["reachable"]:
        mark += " (labels' floor)"
    alone = f", alone {r['alone']:.3f}" if "alone" in r else ""
    teacher = f", gem-fm {r['teacher']:.3f}" if "teacher" in r else ""
    labels = f", labels {r['labels']:.3f}" if "labels" in r else ""
    kd, aux = pair
    return (
        f"{kd} {r['kd']:.3f} ({r['kd_noise']:.3f}), {aux} {r['aux_head']:.3f}{alone}{teacher}{labels}{mark}"
    )


def _slice(name: str) -> str:
    """A calibration slice as the report names it: every VM pooled, or one VM by its registry name."""
    return name if name == "all VMs" else vm_name(name)


def _targets_table(staleness: dict[str, Any], ks: list[str]) -> list[str]:
    """The adapter VMs' click targets by staleness: the teacher's own and the adapted ones (mean log
    loss against the labels of the rows they trained on). Empty when not measured."""
    adapter = [staleness[k].get("adapter", {}) for k in ks]
    if not all(all_finite(a.get("teacher_log_loss"), a.get("target_log_loss")) for a in adapter):
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
        f"± {hop['ne_std']:.4f}, transfer ratio {fmt(hop['transfer_ratio'])} "
        f"± {fmt(hop['transfer_ratio_std'])} (the share of gem-fm's advantage over alone they keep)."
    )


def market_line(data: dict[str, Any]) -> str:
    """The synthetic world's hidden market-wide click level by day, where it moved: how far the rates a
    stale teacher learned are from those it scores. Empty for a still market or no world."""
    levels = data.get("market_by_day", {})
    if not any(levels.values()):
        return ""
    by_day = ", ".join(f"{ds[5:]} {level:+.3f}" for ds, level in levels.items())
    return f" The world's market-wide click level (logit, hidden) by day: {by_day}."


def _day_size(dataset: str, setup: dict[str, Any]) -> str:
    if dataset == "movielens":
        return "one week of MovieLens-100k ratings each"
    if dataset == "synthetic_drift":
        drift = ", ".join(f"{k} {v}" for k, v in setup["fast_drift"].items())
        return f"{setup['events_per_day']} synthetic events each, the world drifting fast: {drift} a day"
    return f"{setup['events_per_day']} synthetic events each"
