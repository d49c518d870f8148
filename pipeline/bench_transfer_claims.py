"""The transfer benchmark's verdicts: each claim it promises, judged on one dataset's summary.

`claims` returns, per claim, whether it holds and the numbers it compared: GEM's 2x (the full
method's transfer ratio against standard KD's), the adapter's recovery of what a 2-day-stale
teacher costs a VM, and the auxiliary head's calibration where single-head KD's is off (on the
teacher's own targets, and on targets scaled up by ExFM's label scaling, `CALIBRATION_PAIRS`). A
difference counts only beyond twice the spread of its seed-by-seed differences
(`paired_difference`); a miscalibration only beyond twice its noise.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

CALIBRATION_TOLERANCE = 0.02  # |calibration - 1| within this is "calibrated"
FULL_OVER_KD_TARGET = 2.0  # GEM: combined transfer at 2x standard KD's effectiveness
NOISE_SPREADS = 2.0  # a difference is told from noise only beyond this many seeds' spreads (std)


def all_finite(*values: float) -> bool:
    """Whether every value is a finite number (not NaN, infinite or missing)."""
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def fmt(value: Any) -> str:
    """A float to 4 significant digits; anything else as it prints."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def fmt_ne(difference: float) -> str:
    """An NE difference to 4 decimals, with no sign on one that rounds to zero."""
    return f"{round(difference, 4) + 0.0:.4f}"


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
    if all_finite(kd, kd_std) and kd > 0 and kd <= NOISE_SPREADS * kd_std:
        note = f"kd's ratio {kd:.3f} is within twice its seeds' spread ({kd_std:.3f}) of zero: no factor"
        return {**verdict, "factor": math.nan, "holds": False, "note": note}
    factor = full / kd if all_finite(full, kd) and kd > 0 else math.nan
    return {**verdict, "factor": factor, "holds": bool(all_finite(factor) and factor >= FULL_OVER_KD_TARGET)}


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """NE of `a` minus NE of `b`, seed by seed (`ne_by_seed`): the mean difference, and twice the spread
    of the differences. The bench's variants of a student draw the same random numbers for a seed, so
    a pair differs only by what the two learned: their differences' spread is the noise to beat."""
    differences = [x - y for x, y in zip(a["ne_by_seed"], b["ne_by_seed"], strict=True) if all_finite(x, y)]
    if not differences:
        return math.nan, math.nan
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return statistics.fmean(differences), NOISE_SPREADS * spread


# The VMs the bench measures without and with ExFM's adapter: the ladder's auxiliary head, where a
# stale teacher reaches the served head only through the backbone; single-head KD, where its targets
# supervise the served head itself; and the representation rung, where its embedding is a served input.
ADAPTED_HEADS: tuple[tuple[str, str], ...] = (
    ("aux_head", "adapter"),
    ("kd", "kd_adapter"),
    ("representation_no_adapter", "representation"),
)
# The VMs the adapter's claim judges: those a stale teacher reaches through the targets that supervise
# them, which are what the adapter re-maps (a stale teacher output turned into a fresher target). The
# representation rung serves the stale teacher's embedding as an input besides, which no adapter sees:
# what staleness costs it there is measured and shown beside the claim, not judged by it.
TARGET_HEADS: frozenset[str] = frozenset({"aux_head", "kd"})


def beyond_noise(difference: float, noise: float) -> bool:
    """Whether a difference is told from noise: both measured, and the difference beyond the noise
    (`paired_difference`'s twice the spread)."""
    return all_finite(difference, noise) and difference > noise


def staleness_loss(staleness: dict[str, Any], plain: str, k: str) -> tuple[float, float]:
    """The NE a `k`-day-stale teacher costs the VM `plain`, seed by seed against a fresh one, and its
    noise (`paired_difference`)."""
    return paired_difference(staleness[k][plain], staleness["0"][plain])


def staleness_cost(staleness: dict[str, Any], method: str, k: str) -> dict[str, list[float]]:
    """What a `k`-day-stale teacher costs `method`'s VM, seed by seed: NE at `k` minus NE at 0, in
    the form `paired_difference` reads."""
    pairs = zip(staleness[k][method]["ne_by_seed"], staleness["0"][method]["ne_by_seed"], strict=True)
    return {"ne_by_seed": [stale - fresh for stale, fresh in pairs]}


def staleness_recovery(staleness: dict[str, Any], plain: str, adapted: str, k: str) -> dict[str, Any]:
    """What a `k`-day-stale teacher costs the VM `plain` and what the same VM with the adapter
    (`adapted`) wins back of it: NE, seed by seed, each with its noise (`paired_difference`). What
    it wins back is the loss without the adapter less the loss with it (`staleness_cost`), so a gain
    the adapter makes with a fresh teacher too is not counted as undoing staleness. The share is only
    defined for a loss beyond its noise."""
    lost, noise = staleness_loss(staleness, plain, k)
    recovered, recovery_noise = paired_difference(
        staleness_cost(staleness, plain, k), staleness_cost(staleness, adapted, k)
    )
    share = recovered / lost if beyond_noise(lost, noise) and all_finite(recovered) else math.nan
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
    return recovery["share"] >= 0.5 and beyond_noise(recovered, noise)


def adapter_recovery(
    staleness: dict[str, Any], teacher: dict[str, dict[str, float]], stale: int = 2
) -> dict[str, Any]:
    """ExFM's claim: the adapter recovers at least half of the NE a `stale`-day-old teacher costs.

    Per head in `ADAPTED_HEADS` measured (`by_head`): lost = NE_plain(k) - NE_plain(0), seed by seed
    (`paired_difference`); recovered = lost - (NE_adapted(k) - NE_adapted(0)), seed by seed too. A loss within
    twice the spread of the seeds' losses is noise: nothing measurable to recover on that head. The
    claim holds when some head of `TARGET_HEADS` loses measurably and, on every one that does, the
    adapter wins back at least half, itself a win (beyond twice the spread of the seeds' gains); the
    other heads are measured beside it (`judged` False), their loss not the adapter's to win back.
    Beside it, what staleness costs gem-fm itself on the same slices (`teacher`, per staleness: NE,
    and AUC, its ranking), and what the adapter does where it acts, on the click targets of the
    adapter VMs' training rows (`targets_share`: the share of the log loss staleness costs the
    teacher's own targets that the adapted ones win back; `adapted_targets_lost`: what it still costs
    the adapted ones). The adapter re-maps what the stale teacher logged (per day, an affine map of its
    tasks' logits and, the ladder's, its embedding): what the stale teacher no longer knows is not in
    its inputs, which the note names where the claim does not hold, with what else explains it
    (`_why_not`). Each head also gets the loss to expect (`ne_lost_expected`): its fresh teacher's
    transfer ratio times what staleness costs gem-fm.
    """
    k = str(stale)
    not_judged = {
        "holds": None,
        "why": f"needs staleness 0 and {stale}, and a head of {sorted(TARGET_HEADS)} with its adapter twin",
    }
    if "0" not in staleness or k not in staleness:
        return not_judged
    both = staleness["0"].keys() & staleness[k].keys()
    heads = [(plain, adapted) for plain, adapted in ADAPTED_HEADS if {plain, adapted} <= both]
    judged = [(plain, adapted) for plain, adapted in heads if plain in TARGET_HEADS]
    if not judged:
        return not_judged
    teacher_lost = teacher[k]["ne"] - teacher["0"]["ne"]
    by_head = {
        plain: staleness_recovery(staleness, plain, adapted, k)
        | {
            "judged": plain in TARGET_HEADS,
            "ne_lost_expected": staleness["0"][plain].get("transfer_ratio", math.nan) * teacher_lost,
        }
        for plain, adapted in heads
    }
    losing = [r for r in by_head.values() if r["judged"] and all_finite(r["share"])]
    teacher_auc_lost = teacher["0"]["auc"] - teacher[k]["auc"]
    target_vm = judged[0][1]  # the targets of a VM the claim judges
    targets = _target_recovery(staleness["0"][target_vm], staleness[k][target_vm])
    verdict = {
        "stale_days": stale,
        "teacher_ne_lost": teacher_lost,
        "teacher_auc_lost": teacher_auc_lost,
        **targets,
        "by_head": by_head,
        "holds": bool(losing) and all(_recovers_half(r) for r in losing),
    }
    notes = [] if verdict["holds"] else _why_not(verdict, staleness, judged_any_loss=bool(losing))
    if notes:
        verdict["note"] = "; ".join(notes)
    return verdict


def _why_not(verdict: dict[str, Any], staleness: dict[str, Any], judged_any_loss: bool) -> list[str]:
    """What a failed adapter claim's note says, each only where its numbers are measured: that no
    judged VM lost anything to recover (unless one did), which VMs would lose too little to tell
    (`_too_small_to_tell`), each judged VM's loss at every staleness (`_loss_curve`, where more than
    the claim's was measured), and what staleness still costs the adapted targets and gem-fm's ranking."""
    k, teacher_lost = str(verdict["stale_days"]), verdict["teacher_ne_lost"]
    judged = {plain: r for plain, r in verdict["by_head"].items() if r["judged"]}
    notes = []
    if not judged_any_loss:
        losses = "; ".join(
            f"the {plain} VM {r['ne_lost']:.4f} (noise {r['noise']:.4f})" for plain, r in judged.items()
        )
        notes.append(
            f"a {k}-day-stale teacher costs {losses}, each within twice the spread of the seeds' "
            f"losses, while gem-fm itself loses {teacher_lost:.4f}: nothing to recover; on the VMs' "
            f"training rows the adapted click targets win back {fmt(verdict['targets_share'])} of the "
            "log loss staleness costs the teacher's own"
        )
    notes += [
        _too_small_to_tell(plain, r, staleness["0"][plain]["transfer_ratio"], teacher_lost)
        for plain, r in judged.items()
        if all_finite(r["ne_lost_expected"], r["noise"]) and r["ne_lost_expected"] <= r["noise"]
    ]
    if staleness.keys() - {"0", k}:  # a curve, not only the claim's point
        notes.append("by staleness, " + "; ".join(_loss_curve(staleness, plain) for plain in judged))
    if all_finite(verdict["teacher_auc_lost"], verdict["adapted_targets_lost"]):
        notes.append(
            f"staleness still costs the adapted targets {verdict['adapted_targets_lost']:.4f} log loss "
            f"(the teacher's own {verdict['targets_lost']:.4f}) and gem-fm {verdict['teacher_auc_lost']:.4f} "
            "AUC: the adapter only re-maps what the stale teacher logged, so what it no longer knows is "
            "not in its inputs"
        )
    return notes


def _too_small_to_tell(plain: str, recovery: dict[str, Any], ratio: float, teacher_lost: float) -> str:
    """Why no number of seeds shows the claim on the VM `plain`: what it would lose keeping its fresh
    teacher's transfer ratio of a stale gem-fm's advantage is within its noise, and that noise is the
    spread of the seeds' losses, which more seeds estimate better but do not shrink."""
    return (
        f"the {plain} VM keeps {ratio:.3f} of gem-fm's advantage over alone (its transfer ratio), so of "
        f"the {teacher_lost:.4f} NE a stale gem-fm loses it would lose about "
        f"{recovery['ne_lost_expected']:.4f} keeping that share, within its noise ({recovery['noise']:.4f}): "
        "the spread of the seeds' losses, which more seeds estimate better but do not shrink"
    )


def _loss_curve(staleness: dict[str, Any], plain: str) -> str:
    """What staleness costs the VM `plain` at every staleness measured, each loss with its noise
    (`paired_difference`), and at how many of them the loss is beyond it: one point beyond noise in a
    flat curve is a loss the benchmark can hardly tell, whatever the claim reads at its one point."""
    days = sorted((k for k in staleness if k != "0" and plain in staleness[k]), key=int)
    losses = [(k, *staleness_loss(staleness, plain, k)) for k in days]
    beyond = [k for k, lost, noise in losses if beyond_noise(lost, noise)]
    curve = ", ".join(f"{fmt_ne(lost)} (noise {noise:.4f}) at {k}" for k, lost, noise in losses)
    if not beyond:
        where = f"within its noise at all {len(days)}"
    elif len(beyond) == len(days):
        where = f"beyond its noise at all {len(days)}"
    else:
        where = f"beyond its noise only at {', '.join(beyond)} of the {len(days)}"
    return f"the {plain} VM loses {curve} days: {where}"


def _target_recovery(fresh: dict[str, Any], stale: dict[str, Any]) -> dict[str, float]:
    """The adapter VM's click targets (`TARGET_METRICS`, mean log loss against its training labels):
    what staleness costs the teacher's own, what the adapted ones win back, the share, and what
    staleness still costs the adapted ones."""
    own, adapted = stale.get("teacher_log_loss", math.nan), stale.get("target_log_loss", math.nan)
    lost = own - fresh.get("teacher_log_loss", math.nan)
    recovered = own - adapted
    share = recovered / lost if all_finite(lost, recovered) and lost > 0 else math.nan
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


def calibration_row(
    kd: dict[str, Any],
    aux: dict[str, Any],
    alone: dict[str, Any] | None,
    teacher: dict[str, Any] | None = None,
    labels: float | None = None,
) -> dict[str, Any]:
    """KD's and the auxiliary head's calibration on one slice (every VM pooled, or one VM) at one
    staleness, what it is measured against, KD's noise, and the four tests `aux_head_calibration`
    reads: whether the slice's clicks can tell the tolerance, whether a served head can reach it there,
    the aux head is within it, KD beyond it. Beside them, where measured, the VM alone's (how calibrated
    the slice's VM is with no teacher at all), gem-fm's own (the teacher's bias, which single-head KD
    takes in and the aux head is to keep out) and the day before's click rate's (`labels`: all a head
    learning the rate from labels knows of it; beyond the tolerance, no such head, taught or not, can be
    within it there: `reachable` False)."""
    truth = "true_calibration" in aux
    measure = "true_calibration" if truth else "calibration"
    noise = 0.0 if truth else label_noise(aux["clicks"])
    seeds = kd["true_calibration_std" if truth else "calibration_std"]
    kd_noise = seeds if truth else math.hypot(noise, seeds)
    row = {
        "against": "expected clicks" if truth else "observed clicks",
        "kd": kd[measure],
        "aux_head": aux[measure],
        "label_noise": noise,
        "kd_noise": kd_noise,
        "measurable": all_finite(noise) and NOISE_SPREADS * noise <= CALIBRATION_TOLERANCE,
        "reachable": not all_finite(labels) or abs(labels - 1.0) <= CALIBRATION_TOLERANCE,
        "aux_within": abs(aux[measure] - 1.0) <= CALIBRATION_TOLERANCE,
        "kd_outside": abs(kd[measure] - 1.0) - CALIBRATION_TOLERANCE > NOISE_SPREADS * kd_noise,
    }
    if truth:
        row["aux_head_std"] = aux["true_calibration_std"]
    if alone is not None:
        row["alone"] = alone[measure]
    if teacher is not None:
        row["teacher"] = teacher[measure]
    if labels is not None:
        row["labels"] = labels
    return row


def calibration_slices(verdict: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (staleness, slice, row) of an `aux_head_calibration` verdict: the pooled VMs ("all VMs")
    and each VM on its own, staleness by staleness."""
    return [
        (k, name, r)
        for k, row in verdict["by_staleness"].items()
        for name, r in [("all VMs", row), *row.get("by_vm", {}).items()]
    ]


# The calibration claim's (single-head KD, auxiliary head) pairs, by claim: on the teacher's own targets,
# and on the same targets scaled up by ExFM's label scaling (students.config.SCALED_TARGETS), a teacher
# biased up by construction. Each row names the pair's methods by role, "kd" and "aux_head".
CALIBRATION_PAIRS: dict[str, tuple[str, str]] = {
    "aux_head_keeps_calibration": ("kd", "aux_head"),
    "aux_head_keeps_calibration_scaled": ("kd_scaled", "aux_head_scaled"),
}


def aux_head_calibration(
    staleness: dict[str, Any],
    teacher: dict[str, dict[str, float]] | None = None,
    pair: tuple[str, str] = CALIBRATION_PAIRS["aux_head_keeps_calibration"],
    label_rate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ExFM's claim: the auxiliary head keeps the serving head calibrated where single-head KD does not,
    judged on the `pair` of methods (single-head KD's, the auxiliary head's).

    Each VM is a served model, so the claim is judged on each on its own (`by_vm`, where measured) as
    well as on every VM pooled, at every staleness (`calibration_row`). Where the world is synthetic,
    calibration is predicted over expected clicks (`true_calibration`): no sampling error, and the
    seeds' spread is KD's noise. Elsewhere it is predicted over observed clicks, a random draw whose
    sampling error (`label_noise`) adds to the seeds' spread (in quadrature: the test rows are the same
    for every seed) in KD's noise: when twice the sampling error exceeds the tolerance, "within 2% of
    1.0" cannot be told on that slice, and it is left out. Beside every slice, the calibration of the
    day before's click rate (`label_rate`, as `label_rate_calibration` gives it), where given: how close
    labels alone can bring a served head, teacher or not. Where it is itself beyond the tolerance, no
    served head that learns the rate from labels can be within it, the VM alone included: what is
    missed there is the world's move since the labels, not a teacher's bias kept in or out, so that
    slice is left out too (`judged_slices`), and the note counts it. It holds where KD is beyond the
    tolerance by more than twice its noise on some slice judged and, on every one where it is, the aux
    head is within it. Beside every VM pooled, gem-fm's own calibration at that staleness (`teacher`,
    as `teacher_metrics` gives it), where given: whether there is a teacher bias to keep out at all.
    """
    rates = label_rate or {}
    rows = {}
    for k, methods in staleness.items():
        if set(pair) <= methods.keys():
            kd, aux, alone = methods[pair[0]], methods[pair[1]], methods.get("alone")
            rows[k] = calibration_row(kd, aux, alone, (teacher or {}).get(k), rates.get("calibration"))
            if "vms" in kd and "vms" in aux:
                alone_vms = alone.get("vms", {}) if alone else {}
                rows[k]["by_vm"] = {
                    v: calibration_row(
                        kd["vms"][v], aux["vms"][v], alone_vms.get(v), None, rates.get("vms", {}).get(v)
                    )
                    for v in kd["vms"]
                }
    verdict: dict[str, Any] = {"pair": list(pair), "tolerance": CALIBRATION_TOLERANCE, "by_staleness": rows}
    if not rows:
        return verdict | {"holds": None}
    slices = calibration_slices(verdict)
    measurable = [r for _, _, r in slices if r["measurable"]]
    judged = judged_slices(verdict)
    off = [r for _, _, r in judged if r["kd_outside"]]
    verdict["holds"] = bool(off) and all(r["aux_within"] for r in off)
    if not measurable:
        noise = min(r["label_noise"] for _, _, r in slices)
        verdict["note"] = (
            f"the test clicks' sampling error ({noise:.3f}) is over half the tolerance: "
            f"calibration within {CALIBRATION_TOLERANCE:.0%} cannot be told"
        )
    elif judged and not off:
        judged_vms = any(name != "all VMs" for _, name, _ in judged)
        where = ", pooled or on any VM" if judged_vms else ""
        verdict["note"] = (
            f"KD's calibration is nowhere beyond {CALIBRATION_TOLERANCE:.0%} of 1.0 by more than twice "
            f"its noise{where}: no miscalibration is shown for the auxiliary head to keep away"
        )
    elif off and not verdict["holds"]:
        aux_off = [r for r in off if not r["aux_within"]]
        alone_off = [r for r in aux_off if _alone_beyond(r)]
        verdict["note"] = (
            f"the aux head is itself beyond {CALIBRATION_TOLERANCE:.0%} on {len(aux_off)} of the "
            f"{len(off)} slices where KD is; on {len(alone_off)} of those the VM alone, with no teacher, "
            "is beyond it too"
        )
    floor = [r for r in measurable if not r["reachable"]]
    if floor:
        aux_beyond = sum(not r["aux_within"] for r in floor)
        alone_beyond = sum(_alone_beyond(r) for r in floor)
        left_out = (
            f"slices left out where the day before's click rate is itself beyond {CALIBRATION_TOLERANCE:.0%} "
            f"(no head learning the rate from labels can be within it): {len(floor)}; KD is beyond it on "
            f"{sum(r['kd_outside'] for r in floor)} of them, the aux head on {aux_beyond}, the VM alone on "
            f"{alone_beyond}"
        )
        verdict["note"] = f"{verdict['note']}; {left_out}" if "note" in verdict else left_out
    return verdict


def _alone_beyond(row: dict[str, Any]) -> bool:
    """Whether the slice's VM alone, where measured, is itself beyond the calibration tolerance."""
    return "alone" in row and abs(row["alone"] - 1.0) > CALIBRATION_TOLERANCE


def judged_slices(verdict: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The (staleness, slice, row) of an `aux_head_calibration` verdict its claim is judged on: where
    the clicks can tell the tolerance and a served head learning the rate from labels can reach it."""
    return [(k, name, r) for k, name, r in calibration_slices(verdict) if r["measurable"] and r["reachable"]]


def claims(dataset: dict[str, Any]) -> dict[str, Any]:
    """Every claim the benchmark checks on one dataset."""
    return {
        "full_at_least_2x_kd": full_versus_kd(dataset["methods"]),
        "adapter_recovers_half_of_staleness": adapter_recovery(
            dataset["staleness"], dataset["teacher_by_staleness"]
        ),
    } | {
        claim: aux_head_calibration(
            dataset["staleness"], dataset["teacher_by_staleness"], pair, dataset.get("label_rate")
        )
        for claim, pair in CALIBRATION_PAIRS.items()
    }
