"""The transfer report's numbers and verdicts: pooling over VMs and days, each claim holding or failing
on the numbers it names, and the lines that show them."""

from __future__ import annotations

import math

import torch

from infra.schema import SURFACES
from pipeline.bench_transfer_claims import (
    adapter_recovery,
    aux_head_calibration,
    claims,
    full_versus_kd,
    paired_difference,
)
from pipeline.bench_transfer_measure import Measured, pooled_metrics
from pipeline.bench_transfer_report import (
    BESIDE_THE_CLAIM,
    _calibration_table,
    _claim_line,
    _kept,
    _recovery_table,
    _targets_table,
    market_line,
    method_verdict,
    verdicts_table,
)
from pipeline.bench_transfer_summary import _over_surfaces, label_rate_calibration, transfer_ratio


def test_transfer_ratio() -> None:
    assert abs(transfer_ratio(alone=0.90, student=0.88, teacher=0.80) - 0.2) < 1e-9
    assert transfer_ratio(alone=0.90, student=0.91, teacher=0.80) < 0, (
        "a student worse than alone is negative"
    )
    assert math.isnan(transfer_ratio(alone=0.90, student=0.88, teacher=0.95)), (
        "no teacher advantage: undefined"
    )


def test_full_versus_kd() -> None:
    methods = {"kd": {"transfer_ratio": 0.1}, "full": {"transfer_ratio": 0.25}}
    assert full_versus_kd(methods)["holds"] is True
    methods["full"]["transfer_ratio"] = 0.15
    verdict = full_versus_kd(methods)
    assert verdict["holds"] is False and abs(verdict["factor"] - 1.5) < 1e-9
    assert full_versus_kd({"kd": {"transfer_ratio": -0.1}, "full": {"transfer_ratio": 0.2}})["holds"] is False
    assert full_versus_kd({"kd": {"transfer_ratio": 0.1}})["holds"] is None


def test_full_versus_kd_refuses_a_factor_over_a_kd_ratio_within_noise_of_zero() -> None:
    methods = {"kd": {"transfer_ratio": 0.01, "transfer_ratio_std": 0.17}, "full": {"transfer_ratio": 0.18}}
    verdict = full_versus_kd(methods)
    assert verdict["holds"] is False and math.isnan(verdict["factor"]) and "spread" in verdict["note"]
    methods["kd"]["transfer_ratio_std"] = 0.004
    assert full_versus_kd(methods)["holds"] is True, "a KD ratio clear of its spread keeps the factor (18)"


def _arm(ne: float, jitter: tuple[float, ...] = (0.0, 0.0, 0.0)) -> dict:
    """One method at one staleness: its NE, and each seed's (ne + jitter)."""
    return {"ne": ne, "ne_by_seed": [ne + j for j in jitter]}


def _staleness(aux0: float, aux2: float, adapter2: float) -> dict:
    return {
        "0": {"aux_head": _arm(aux0), "adapter": _arm(aux0)},
        "2": {"aux_head": _arm(aux2), "adapter": _arm(adapter2)},
    }


TEACHER = {"0": {"ne": 0.70, "auc": 0.72}, "2": {"ne": 0.75, "auc": 0.70}}  # as `teacher_metrics` gives


def test_adapter_recovery() -> None:
    assert adapter_recovery(_staleness(0.80, 0.84, 0.81), TEACHER)["holds"] is True  # recovers 3/4
    verdict = adapter_recovery(_staleness(0.80, 0.84, 0.83), TEACHER)  # recovers 1/4
    assert verdict["holds"] is False and abs(verdict["by_head"]["aux_head"]["share"] - 0.25) < 1e-9
    assert abs(verdict["teacher_ne_lost"] - 0.05) < 1e-9
    assert adapter_recovery(_staleness(0.80, 0.79, 0.79), TEACHER)["holds"] is False, (
        "nothing lost: not shown"
    )
    assert adapter_recovery({"0": {}}, TEACHER)["holds"] is None
    noisy = _staleness(0.80, 0.84, 0.81)
    noisy["2"]["aux_head"] = _arm(0.84, (-0.04, 0.0, 0.04))
    verdict = adapter_recovery(noisy, TEACHER)
    assert verdict["holds"] is False and math.isnan(verdict["by_head"]["aux_head"]["share"]), (
        "a loss within 2x spread is noise"
    )
    assert "gem-fm itself loses 0.0500" in verdict["note"]


def test_what_the_adapter_gains_with_a_fresh_teacher_too_is_not_won_back_from_staleness() -> None:
    staleness = _staleness(0.80, 0.84, 0.81)
    staleness["0"]["adapter"] = _arm(0.77)  # 0.03 better at a fresh teacher too: loses 0.04 itself
    recovery = adapter_recovery(staleness, TEACHER)["by_head"]["aux_head"]
    assert abs(recovery["ne_recovered"]) < 1e-9 and abs(recovery["share"]) < 1e-9
    assert adapter_recovery(staleness, TEACHER)["holds"] is False
    staleness["0"]["adapter"] = _arm(0.79)  # loses 0.02 of the 0.04: half won back
    assert abs(adapter_recovery(staleness, TEACHER)["by_head"]["aux_head"]["share"] - 0.5) < 1e-9


def test_a_recovery_within_the_seeds_noise_is_no_win_however_large_its_mean() -> None:
    staleness = _staleness(0.80, 0.84, 0.81)
    staleness["2"]["adapter"] = _arm(0.81, (-0.04, 0.0, 0.04))  # wins back 3/4 on average, noisily
    recovery = adapter_recovery(staleness, TEACHER)["by_head"]["aux_head"]
    assert abs(recovery["share"] - 0.75) < 1e-9 and abs(recovery["recovery_noise"] - 0.08) < 1e-9
    assert adapter_recovery(staleness, TEACHER)["holds"] is False
    line = _claim_line("a", adapter_recovery(staleness, TEACHER))
    assert "the adapter wins back 0.0300 (noise 0.0800), a share of 0.75" in line


def _with_kd(staleness: dict, kd0: float, kd2: float, kd_adapter2: float) -> dict:
    staleness["0"] |= {"kd": _arm(kd0), "kd_adapter": _arm(kd0)}
    staleness["2"] |= {"kd": _arm(kd2), "kd_adapter": _arm(kd_adapter2)}
    return staleness


def test_adapter_recovery_judges_every_head_that_loses_to_staleness() -> None:
    shielded = _staleness(0.80, 0.80, 0.80)  # the auxiliary head loses nothing: no verdict from it
    verdict = adapter_recovery(_with_kd(shielded, 0.80, 0.84, 0.81), TEACHER)
    assert verdict["holds"] is True and abs(verdict["by_head"]["kd"]["share"] - 0.75) < 1e-9
    assert math.isnan(verdict["by_head"]["aux_head"]["share"]) and "note" not in verdict
    both = _with_kd(_staleness(0.80, 0.84, 0.83), 0.80, 0.84, 0.81)  # kd recovers 3/4, aux_head 1/4
    assert adapter_recovery(both, TEACHER)["holds"] is False, "every head that loses must recover half"
    kd_only = {k: {m: v for m, v in arms.items() if m.startswith("kd")} for k, arms in both.items()}
    assert adapter_recovery(kd_only, TEACHER)["holds"] is True, "a head not measured is not judged"
    nothing = adapter_recovery(_with_kd(_staleness(0.80, 0.80, 0.80), 0.80, 0.80, 0.79), TEACHER)
    assert nothing["holds"] is False and "the kd VM 0.0000" in nothing["note"]


def test_the_representation_rung_is_measured_beside_the_adapter_claim_never_judged_by_it() -> None:
    """Where a stale teacher's embedding is a served input, the VM loses NE through an input the
    adapter, which re-maps targets, never sees: shown beside the claim, not deciding it."""
    staleness = _with_kd(_staleness(0.80, 0.84, 0.81), 0.80, 0.80, 0.80)  # aux_head wins back 3/4
    staleness["0"] |= {"representation_no_adapter": _arm(0.70), "representation": _arm(0.70)}
    staleness["2"] |= {"representation_no_adapter": _arm(0.74), "representation": _arm(0.735)}
    verdict = adapter_recovery(staleness, TEACHER)
    recovery = verdict["by_head"]["representation_no_adapter"]
    assert abs(recovery["ne_lost"] - 0.04) < 1e-9 and abs(recovery["share"] - 0.125) < 1e-9
    assert recovery["judged"] is False and verdict["by_head"]["aux_head"]["judged"] is True
    assert verdict["holds"] is True, "an eighth won back beside the claim does not decide it"
    line = _claim_line("a", verdict)
    assert f"{BESIDE_THE_CLAIM}the representation_no_adapter VM loses 0.0400 (noise 0.0000)" in line
    for k in ("0", "2"):
        staleness[k] |= {"aux_head": staleness["0"]["aux_head"], "adapter": staleness["0"]["aux_head"]}
    unmoved = adapter_recovery(staleness, TEACHER)  # the supervised heads lose nothing: not shown
    assert unmoved["holds"] is False and "representation" not in unmoved["note"]
    pair = ("representation_no_adapter", "representation")
    representation_only = {k: {m: arms[m] for m in pair} for k, arms in staleness.items()}
    assert adapter_recovery(representation_only, TEACHER)["holds"] is None, "no judged head measured"


def test_adapter_recovery_names_what_the_adapter_won_back_on_its_targets() -> None:
    staleness = _staleness(0.80, 0.8001, 0.8001)
    staleness["2"]["aux_head"] = _arm(0.8001, (-0.01, 0.0, 0.01))  # the VM's loss is noise
    staleness["0"]["adapter"] |= {"teacher_log_loss": 0.230, "target_log_loss": 0.229}
    staleness["2"]["adapter"] |= {"teacher_log_loss": 0.238, "target_log_loss": 0.232}
    verdict = adapter_recovery(staleness, TEACHER)
    assert abs(verdict["targets_lost"] - 0.008) < 1e-9 and abs(verdict["targets_recovered"] - 0.006) < 1e-9
    assert abs(verdict["targets_share"] - 0.75) < 1e-9
    assert verdict["holds"] is False and "win back 0.75" in verdict["note"], "the VM's verdict stands"
    table = "\n".join(_targets_table(staleness, ["0", "2"]))
    assert "| the teacher's own | 0.2300 | 0.2380 |" in table and "| adapted | 0.2290 | 0.2320 |" in table
    assert math.isnan(adapter_recovery(_staleness(0.80, 0.84, 0.81), TEACHER)["targets_share"])
    assert _targets_table(_staleness(0.80, 0.84, 0.81), ["0", "2"]) == [], "not measured: no table"


def test_a_claim_that_fails_names_the_ranking_a_stale_teacher_lost_beyond_the_adapter() -> None:
    staleness = _staleness(0.80, 0.84, 0.83)  # the adapter wins back 1/4
    staleness["0"]["adapter"] |= {"teacher_log_loss": 0.230, "target_log_loss": 0.229}
    staleness["2"]["adapter"] |= {"teacher_log_loss": 0.238, "target_log_loss": 0.232}
    verdict = adapter_recovery(staleness, TEACHER)
    assert abs(verdict["adapted_targets_lost"] - 0.003) < 1e-9
    assert abs(verdict["teacher_auc_lost"] - 0.02) < 1e-9
    assert verdict["note"].startswith("staleness still costs the adapted targets 0.0030 log loss (the ")
    assert "gem-fm 0.0200 AUC" in verdict["note"]
    staleness["2"]["adapter"] = _arm(0.81)  # wins back 3/4: nothing to explain
    assert "note" not in adapter_recovery(staleness, TEACHER)


def test_a_failed_claims_note_reads_the_whole_staleness_curve_not_only_its_point() -> None:
    staleness = _with_kd(_staleness(0.80, 0.80, 0.80), 0.80, 0.8009, 0.8006)  # kd wins back 1/3
    for k, kd in (("1", 0.7994), ("4", 0.8001)):  # a gain at 1 day, nothing at 4: a bump at 2
        staleness[k] = {"aux_head": _arm(0.80), "adapter": _arm(0.80), "kd": _arm(kd), "kd_adapter": _arm(kd)}
    staleness["2"]["kd"] = _arm(0.8009, (-0.0002, 0.0, 0.0002))  # noise 0.0004
    staleness["4"]["kd"] = _arm(0.8001, (-0.0003, 0.0, 0.0003))  # noise 0.0006
    note = adapter_recovery(staleness, TEACHER)["note"]
    assert note.startswith("by staleness, the aux_head VM loses 0.0000 (noise 0.0000) at 1, 0.0000 ")
    assert "at 4 days: within its noise at all 3; the kd VM loses -0.0006 (noise 0.0000) at 1, " in note
    assert "0.0009 (noise 0.0004) at 2, 0.0001 (noise 0.0006) at 4 days: beyond its noise only at 2 " in note
    for k in ("1", "4"):
        staleness[k]["kd"] = _arm(0.8009)  # the same loss at every staleness
    assert "beyond its noise at all 3" in adapter_recovery(staleness, TEACHER)["note"]
    del staleness["1"], staleness["4"]
    assert "note" not in adapter_recovery(staleness, TEACHER), "only the claim's point: no curve to read"
    assert "note" not in adapter_recovery(_with_kd(staleness, 0.80, 0.84, 0.81), TEACHER), "it holds"


def test_a_loss_the_vms_transfer_ratio_keeps_within_its_noise_is_named_as_one_no_seeds_can_show() -> None:
    staleness = _with_kd(_staleness(0.80, 0.80, 0.80), 0.80, 0.8009, 0.8006)  # kd wins back 1/3
    staleness["2"]["kd"] = _arm(0.8009, (-0.0003, 0.0, 0.0003))  # noise 0.0006
    staleness["0"]["kd"]["transfer_ratio"] = 0.1  # of gem-fm's 0.05 lost: about 0.005 expected
    verdict = adapter_recovery(staleness, TEACHER)
    assert abs(verdict["by_head"]["kd"]["ne_lost_expected"] - 0.005) < 1e-9
    assert "note" not in verdict, "a loss expected beyond its noise: nothing to explain"
    staleness["0"]["kd"]["transfer_ratio"] = 0.01  # about 0.0005 expected, within the noise
    note = adapter_recovery(staleness, TEACHER)["note"]
    assert note.startswith("the kd VM keeps 0.010 of gem-fm's advantage over alone (its transfer ratio), ")
    assert "of the 0.0500 NE a stale gem-fm loses it would lose about 0.0005 keeping that share, " in note
    assert "within its noise (0.0006): the spread of the seeds' losses" in note
    line = _claim_line("a", adapter_recovery(staleness, TEACHER))
    assert "the kd VM loses 0.0009 (noise 0.0006; its transfer ratio of gem-fm's loss: 0.0005), " in line
    assert "the aux_head VM loses 0.0000 (noise 0.0000), " in line, "no transfer ratio: nothing expected"
    assert "aux_head VM keeps" not in note, "no transfer ratio measured: no expectation"
    staleness["2"]["kd_adapter"] = _arm(0.80)  # wins it all back: the claim holds, nothing to explain
    assert "note" not in adapter_recovery(staleness, TEACHER)


def test_a_claims_line_names_its_numbers_then_each_head_then_its_note() -> None:
    staleness = _with_kd(_staleness(0.80, 0.80, 0.80), 0.80, 0.84, 0.81)
    line = _claim_line("adapter", adapter_recovery(staleness, TEACHER))
    assert line.startswith("- `adapter`: holds (stale_days=2, teacher_ne_lost=0.05")
    assert "; the aux_head VM loses 0.0000 (noise 0.0000), the adapter wins back 0.0000" in line
    assert "no share: no loss beyond its noise; the kd VM loses 0.0400" in line
    assert line.endswith("a share of 0.75)"), "the kd VM's, the last head: no note when the claim holds"
    nothing = _claim_line("adapter", adapter_recovery(_staleness(0.80, 0.80, 0.80), TEACHER))
    assert "**does not hold**" in nothing and nothing.index("the aux_head VM loses") < nothing.index(
        "; note: "
    )
    assert _claim_line("x", {"holds": None, "why": "needs y"}) == "- `x`: not measured (why=needs y)"


def test_paired_differences_cancel_what_a_seed_shares_across_arms() -> None:
    luck = (-0.03, 0.0, 0.03)  # each seed's level, common to both arms (common random numbers)
    alone, method = _arm(0.90, luck), _arm(0.89, (-0.029, 0.0, 0.029))  # seed by seed 0.01 +- 0.001
    gap, spread = paired_difference(alone, method)
    assert abs(gap - 0.01) < 1e-9 and abs(spread - 0.002) < 1e-9, "the levels' spread (0.03) cancels"
    assert method_verdict(method, alone) == "win"
    assert method_verdict(_arm(0.89, (0.0, 0.03, -0.03)), alone) == "within noise", "unpaired luck is noise"
    assert method_verdict(_arm(0.89, (0.0,)), _arm(0.90, (0.0,))) == "n/a (1 seed)"
    assert method_verdict(_arm(0.89), _arm(0.90)) == "win", (
        "three seeds with the same gap: no spread, still a win"
    )


def _observed(calibration: float, clicks: float = 40_000, spread: float = 0.0) -> dict:
    """A head's calibration over observed clicks, pooled over seeds with that spread."""
    return {"calibration": calibration, "calibration_std": spread, "clicks": clicks}


def test_aux_head_calibration() -> None:
    good = {"0": {"kd": _observed(1.08), "aux_head": _observed(1.01)}}
    assert aux_head_calibration(good)["holds"] is True
    both = {"0": {"kd": _observed(1.01), "aux_head": _observed(0.99)}}
    assert aux_head_calibration(both)["holds"] is False, "KD calibrated too: nothing shown"
    # 0.005 beyond the tolerance, within twice the labels' sampling error (2 x 0.005): not shown.
    near = {"0": {"kd": _observed(1.025), "aux_head": _observed(1.01)}}
    assert aux_head_calibration(near)["holds"] is False
    assert "nowhere beyond 2% of 1.0 by more than twice its noise" in aux_head_calibration(near)["note"]
    assert aux_head_calibration({})["holds"] is None


def _truth(true: float, spread: float = 0.004) -> dict:
    """A head's calibration over the world's expected clicks, its seeds' spread, and observed (1.0)."""
    return {"calibration": 1.0, "true_calibration": true, "true_calibration_std": spread, "clicks": 800}


def _with_vms(kd: dict[str, float], aux: dict[str, float], alone: dict[str, float] | None = None) -> dict:
    """One staleness: kd and aux_head pooled within 1% of the truth, and on each VM as given; alone
    too where given."""
    methods = {
        "kd": _truth(1.01) | {"vms": {v: _truth(c) for v, c in kd.items()}},
        "aux_head": _truth(1.0) | {"vms": {v: _truth(c) for v, c in aux.items()}},
    }
    if alone is not None:
        methods["alone"] = _truth(1.0) | {"vms": {v: _truth(c) for v, c in alone.items()}}
    return {"0": methods}


def test_calibration_is_judged_on_each_served_vm_as_well_as_pooled() -> None:
    # Pooled, KD is within 2%: one VM's 6% low and another's 4% high cancel out.
    verdict = aux_head_calibration(
        _with_vms({"stories": 0.94, "feed": 1.04}, {"stories": 0.99, "feed": 1.01})
    )
    assert verdict["holds"] is True and "note" not in verdict
    by_vm = verdict["by_staleness"]["0"]["by_vm"]
    assert by_vm["stories"]["kd_outside"] and by_vm["feed"]["kd_outside"]
    assert not verdict["by_staleness"]["0"]["kd_outside"], "pooled, KD looks calibrated"
    both_off = aux_head_calibration(
        _with_vms(
            {"stories": 0.94, "feed": 1.04}, {"stories": 0.99, "feed": 1.03}, {"stories": 1.0, "feed": 1.03}
        )
    )
    assert both_off["holds"] is False, "on every VM where KD is off, the aux head must be within 2%"
    assert both_off["note"] == (
        "the aux head is itself beyond 2% on 1 of the 2 slices where KD is; on 1 of those the VM alone, "
        "with no teacher, is beyond it too"
    )
    assert "2 of 3 slices" in _kept(both_off) and "within 2% on 1 of them" in _kept(both_off)
    noisy = aux_head_calibration(_with_vms({"stories": 0.975}, {"stories": 1.0}))  # 0.005 beyond, noise 0.008
    assert noisy["holds"] is False and "its noise, pooled or on any VM: no miscalibration" in noisy["note"]
    few = {  # observed clicks: the pool tells 2%, a VM's 3,600 clicks do not (so 8% off is not judged)
        "kd": _observed(1.01) | {"vms": {"reels": _observed(1.08, 3_600)}},
        "aux_head": _observed(1.0) | {"vms": {"reels": _observed(1.0, 3_600)}},
    }
    unjudged = aux_head_calibration({"0": few})
    assert unjudged["holds"] is False and "its noise: no miscalibration" in unjudged["note"]


def test_the_calibration_table_gives_every_slice_at_every_staleness() -> None:
    staleness = _with_vms({"facebook_stories": 0.94}, {"facebook_stories": 0.99}, {"facebook_stories": 1.03})
    staleness["2"] = _with_vms({"facebook_stories": 1.0}, {"facebook_stories": 1.0})["0"]
    lines = _calibration_table(aux_head_calibration(staleness))
    assert "predicted over expected clicks" in lines[1]
    assert lines[3:7] == [
        "| slice | 0 | 2 |",
        "|---|---|---|",
        "| all VMs | kd 1.010 (0.004), aux_head 1.000, alone 1.000 | kd 1.010 (0.004), aux_head 1.000 |",
        "| vm-facebook_stories | kd 0.940 (0.004), aux_head 0.990, alone 1.030 **kd off** "
        "| kd 1.000 (0.004), aux_head 1.000 |",
    ]
    few = aux_head_calibration({"0": {"kd": _observed(1.08, 3_600), "aux_head": _observed(1.01, 3_600)}})
    assert _calibration_table(few)[-1] == "| all VMs | kd 1.080 (0.017), aux_head 1.010 (cannot tell) |"
    assert _calibration_table({}) == [], "not judged: no table"


def test_the_calibration_table_shows_the_teachers_own_bias_beside_the_pooled_vms() -> None:
    """KD pulled toward a biased teacher, the aux head kept from it: gem-fm's own calibration on the
    pooled slice says whether there was a bias to keep out. It is measured pooled, not VM by VM."""
    staleness = _with_vms({"facebook_stories": 1.03}, {"facebook_stories": 1.0})
    verdict = aux_head_calibration(staleness, {"0": _truth(1.05)})
    assert verdict["by_staleness"]["0"]["teacher"] == 1.05
    assert "teacher" not in verdict["by_staleness"]["0"]["by_vm"]["facebook_stories"]
    row = _calibration_table(verdict)[5]
    assert row.startswith("| all VMs | kd 1.010 (0.004), aux_head 1.000, gem-fm 1.050 |"), row
    assert "gem-fm" not in _calibration_table(aux_head_calibration(staleness))[5], "no teacher given"


def test_the_scaled_pair_is_judged_on_its_own_methods_and_named_in_its_table() -> None:
    """On scaled targets, single-head KD's served head takes the teacher's bias in and the aux head's
    does not; the teacher's own pair is judged apart, and a claim whose pair was not run is not judged."""
    staleness = {
        "0": {
            "kd": _observed(1.01),
            "aux_head": _observed(1.0),
            "kd_scaled": _observed(1.12),
            "aux_head_scaled": _observed(1.01),
        }
    }
    judged = claims({"methods": {}, "staleness": staleness, "teacher_by_staleness": {}})
    scaled = judged["aux_head_keeps_calibration_scaled"]
    assert scaled["holds"] is True and scaled["pair"] == ["kd_scaled", "aux_head_scaled"]
    assert scaled["by_staleness"]["0"]["kd"] == 1.12, "the pair's KD role is kd_scaled"
    assert judged["aux_head_keeps_calibration"]["holds"] is False, "on the teacher's own targets KD is within"
    table = _calibration_table(scaled)
    assert "single-head KD (kd_scaled) against the auxiliary head (aux_head_scaled)" in table[1]
    assert table[-1] == "| all VMs | kd_scaled 1.120 (0.005), aux_head_scaled 1.010 **kd off** |"
    assert "aux_head_scaled 1.010" in _kept(scaled)
    del staleness["0"]["kd_scaled"]
    unmeasured = claims({"methods": {}, "staleness": staleness, "teacher_by_staleness": {}})
    assert unmeasured["aux_head_keeps_calibration_scaled"]["holds"] is None


def test_kds_calibration_noise_over_observed_clicks_adds_its_seeds_spread_to_the_labels() -> None:
    # 0.02 beyond the tolerance: beyond twice the labels' sampling error (0.005) alone ...
    assert aux_head_calibration({"0": {"kd": _observed(1.04), "aux_head": _observed(1.01)}})["holds"] is True
    # ... not beyond twice hypot(0.005, 0.01) = 0.0224 once the seeds disagree by 0.01.
    verdict = aux_head_calibration({"0": {"kd": _observed(1.04, spread=0.01), "aux_head": _observed(1.01)}})
    assert verdict["holds"] is False
    assert abs(verdict["by_staleness"]["0"]["kd_noise"] - math.hypot(0.005, 0.01)) < 1e-12
    assert "KD's noise with its seeds' spread 0.011" in _claim_line("c", verdict)


def test_calibration_is_refused_where_the_test_clicks_cannot_tell_two_percent() -> None:
    def staleness(clicks: float) -> dict:
        return {"0": {"kd": _observed(1.08, clicks), "aux_head": _observed(1.01, clicks)}}

    few = aux_head_calibration(staleness(3_600))  # sampling error 1/60: twice it is over 2%
    assert few["holds"] is False and "cannot be told" in few["note"]
    assert abs(few["by_staleness"]["0"]["label_noise"] - 1 / 60) < 1e-12
    assert aux_head_calibration(staleness(40_000))["holds"] is True  # error 0.005


def test_calibration_against_the_worlds_expected_clicks_needs_no_label_noise_allowance() -> None:
    def arm(observed: float, true: float, spread: float = 0.004) -> dict:
        return {
            "calibration": observed,
            "true_calibration": true,
            "true_calibration_std": spread,
            "clicks": 3_600,
        }

    # Observed over 3,600 clicks, 2% cannot be told; against the expected clicks it can.
    verdict = aux_head_calibration({"0": {"kd": arm(1.00, 1.03), "aux_head": arm(0.98, 1.01)}})
    row = verdict["by_staleness"]["0"]
    assert verdict["holds"] is True and "note" not in verdict
    assert (row["against"], row["kd"], row["aux_head"], row["label_noise"]) == (
        "expected clicks",
        1.03,
        1.01,
        0.0,
    )
    assert "predicted over expected clicks" in _claim_line("aux_head_keeps_calibration", verdict)
    calibrated = aux_head_calibration({"0": {"kd": arm(1.03, 1.01), "aux_head": arm(1.01, 0.99)}})
    assert calibrated["holds"] is False, "KD within 2% of the truth: nothing shown, whatever was observed"
    spread = aux_head_calibration({"0": {"kd": arm(1.00, 1.03, 0.006), "aux_head": arm(0.98, 1.01)}})
    assert spread["holds"] is False, "KD 0.01 beyond the tolerance, within twice its seeds' spread"


def test_vms_pool_their_clicks_for_calibration_and_add_them_up() -> None:
    records = [
        {"ne": 0.9, "calibration": 1.2, "clicks": 100.0, "expected_clicks": 110.0},
        {"ne": 0.8, "calibration": 0.9, "clicks": 300.0, "expected_clicks": 290.0},
    ]
    assert abs(_over_surfaces(records, "calibration") - (120 + 270) / 400) < 1e-12
    assert abs(_over_surfaces(records, "true_calibration") - (120 + 270) / 400) < 1e-12, "400 expected"
    assert _over_surfaces(records, "expected_clicks") == 400.0
    records[0]["expected_clicks"] = 130.0
    assert abs(_over_surfaces(records, "true_calibration") - (120 + 270) / 420) < 1e-12
    assert _over_surfaces(records, "clicks") == 400
    assert abs(_over_surfaces(records, "ne") - 0.85) < 1e-12


def test_pooled_metrics_cover_every_day_together_and_each_alone() -> None:
    surface = SURFACES.index("facebook_feed")
    generator = torch.Generator().manual_seed(0)

    def day(n: int, logit: float) -> tuple[torch.Tensor, ...]:
        labels = (torch.rand(n, 2, generator=generator) < 0.3).float()
        logits = torch.full((n, 2), logit)
        return logits, labels, torch.ones(n, 2, dtype=torch.bool), torch.full((n,), surface)

    batches = {"2026-01-08": day(400, -1.0), "2026-01-09": day(600, 0.0)}
    pooled, by_day = pooled_metrics(batches, "facebook_feed")
    clicks = sum(float(labels[:, 0].sum()) for _, labels, _, _ in batches.values())
    predicted = 400 / (1 + math.e) + 600 * 0.5
    assert pooled["clicks"] == clicks
    assert abs(pooled["calibration"] - predicted / clicks) < 1e-9
    assert set(by_day) == set(batches) and by_day["2026-01-08"] != by_day["2026-01-09"]
    assert min(by_day.values()) < pooled["ne"] < max(by_day.values())


def test_undefined_numbers_are_written_as_null() -> None:
    import json

    from pipeline.bench_transfer import _undefined_as_null

    report = {"a": math.nan, "b": [1.0, math.inf], "c": {"d": 2}, (1, 2): 0.5}
    text = json.dumps(_undefined_as_null(report), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": 2}, "(1, 2)": 0.5}


def test_a_moving_market_is_named_day_by_day_and_a_still_one_not() -> None:
    moving = {"market_by_day": {"2026-01-01": 0.0, "2026-01-02": 0.055, "2026-01-03": -0.041}}
    assert market_line(moving).endswith("by day: 01-01 +0.000, 01-02 +0.055, 01-03 -0.041.")
    assert market_line({"market_by_day": {"2026-01-01": 0.0, "2026-01-02": 0.0}}) == ""
    assert market_line({}) == "", "MovieLens: no world"


def test_the_verdicts_table_puts_each_claim_against_each_dataset_with_what_decided_it() -> None:
    holding = {
        "full_at_least_2x_kd": full_versus_kd(
            {"kd": {"transfer_ratio": 0.1}, "full": {"transfer_ratio": 0.25}}
        ),
        "adapter_recovers_half_of_staleness": adapter_recovery(_staleness(0.80, 0.84, 0.81), TEACHER),
        "aux_head_keeps_calibration": aux_head_calibration(
            {"0": {"kd": _observed(1.08), "aux_head": _observed(1.01)}}
        ),
    }
    failing = {
        "full_at_least_2x_kd": full_versus_kd(
            {"kd": {"transfer_ratio": 0.01, "transfer_ratio_std": 0.17}, "full": {"transfer_ratio": 0.18}}
        ),
        "adapter_recovers_half_of_staleness": adapter_recovery(_staleness(0.80, 0.80, 0.80), TEACHER),
        "aux_head_keeps_calibration": aux_head_calibration(
            {"0": {"kd": _observed(1.025), "aux_head": _observed(1.01)}}
        ),
    }
    report = {"datasets": {"a": {"claims": holding}, "b": {"claims": failing}, "c": {"claims": {}}}}
    lines = verdicts_table(report)
    assert lines[:4] == ["## Verdicts", "", "| claim | a | b | c |", "|---|---|---|---|"]
    gem, adapter, calibration = (line.removesuffix(" |").split(" | ")[1:] for line in lines[4:7])
    assert gem == [
        "holds: 2.50x (full 0.250, kd 0.100)",
        "**does not hold**: no factor, kd's ratio 0.01 ± 0.17",
        "not measured",
    ]
    assert adapter[0] == (
        "holds: the aux_head VM loses 0.0400 (noise 0.0000), the adapter wins back 0.0300 (noise 0.0000), "
        "a share of 0.75"
    )
    assert adapter[1] == (
        "**does not hold**: no VM the adapter's targets supervise loses NE beyond noise "
        "(gem-fm itself loses 0.0500)"
    )
    assert calibration[0] == (
        "holds: KD is beyond 2% by more than twice its noise on 1 of 1 slices judged (farthest: 1.080 "
        "± 0.005 on all VMs at staleness 0, aux_head 1.010); the aux head is within 2% on 1 of them"
    )
    assert calibration[1] == (
        "**does not hold**: KD is nowhere beyond 2% by more than twice its noise (farthest from 1.0: "
        "1.025 ± 0.005 on all VMs at staleness 0)"
    )


def test_the_recovery_table_gives_each_vm_its_loss_and_the_adapters_gain_at_every_staleness() -> None:
    staleness = _with_kd(_staleness(0.80, 0.84, 0.81), 0.80, 0.80, 0.79)  # only the aux head loses
    lines = _recovery_table(staleness, ["0", "2"])
    assert lines[3:5] == ["| VM without / with the adapter | 2 |", "|---|---|"]
    assert lines[5] == "| aux_head / adapter | lost 0.0400 (0.0000), won back 0.0300 (0.0000), share 0.75 |"
    assert lines[6] == "| kd / kd_adapter | lost 0.0000 (0.0000), won back 0.0100 (0.0000) |", (
        "no loss beyond noise: no share"
    )
    assert len(lines) == 7, "the representation pair was not measured: no row"
    assert _recovery_table(staleness, ["2"]) == [], "no fresh teacher to compare with"
    staleness["2"]["kd"] = _arm(0.8 - 1e-6)  # a loss of -0.000001 prints unsigned
    assert (
        "| kd / kd_adapter | lost 0.0000 (0.0000), won back 0.0100"
        in _recovery_table(staleness, ["0", "2"])[6]
    )


def test_the_label_rate_is_measured_against_the_clicks_the_vms_are() -> None:
    measured = Measured(label_rate_clicks={"feed": 110.0, "reels": 45.0})
    measured.teachers = {(0, "feed"): {"clicks": 100.0}, (0, "reels"): {"clicks": 50.0}}
    observed = label_rate_calibration(measured, ("feed", "reels"))
    assert observed["measure"] == "calibration" and observed["calibration"] == 155 / 150
    assert observed["vms"] == {"feed": 1.1, "reels": 0.9}
    measured.expected_clicks = {"feed": 88.0, "reels": 45.0}
    truth = label_rate_calibration(measured, ("feed", "reels"))
    assert truth["measure"] == "true_calibration" and truth["vms"] == {"feed": 1.25, "reels": 1.0}


def test_the_label_rate_stands_beside_every_slice_and_counts_in_a_failed_claims_note() -> None:
    """Where the aux head misses, the day before's click rate says whether labels alone could do better."""
    staleness = _with_vms(
        {"stories": 0.94, "feed": 1.04}, {"stories": 0.95, "feed": 1.03}, {"stories": 0.95, "feed": 1.03}
    )
    rates = {"measure": "true_calibration", "calibration": 1.01, "vms": {"stories": 0.96, "feed": 1.0}}
    verdict = aux_head_calibration(staleness, label_rate=rates)
    assert verdict["holds"] is False, "on vm-feed labels reach 2%, and the aux head misses it"
    assert verdict["by_staleness"]["0"]["labels"] == 1.01
    assert verdict["by_staleness"]["0"]["by_vm"]["stories"]["labels"] == 0.96
    assert verdict["note"] == (
        "the aux head is itself beyond 2% on 1 of the 1 slices where KD is; on 1 of those the VM alone, "
        "with no teacher, is beyond it too; slices left out where the day before's click rate is itself "
        "beyond 2% (no head learning the rate from labels can be within it): 1; KD is beyond it on 1 of "
        "them, the aux head on 1, the VM alone on 1"
    )
    assert _calibration_table(verdict)[-1] == (
        "| vm-feed | kd 1.040 (0.004), aux_head 1.030, alone 1.030, labels 1.000 **kd off** |"
    )
    assert "labels" not in aux_head_calibration(staleness)["note"], "not measured: not named"


def test_a_slice_whose_labels_miss_the_tolerance_is_left_out_of_the_calibration_claim() -> None:
    """vm-stories' day-before rate is 4% low: no served head learning it from labels is within 2% there,
    the VM alone neither. The claim is judged where labels can reach it, and counts the rest."""
    staleness = _with_vms(
        {"stories": 0.94, "feed": 1.04}, {"stories": 0.95, "feed": 1.01}, {"stories": 0.95, "feed": 1.0}
    )
    rates = {"measure": "true_calibration", "calibration": 1.0, "vms": {"stories": 0.96, "feed": 1.0}}
    verdict = aux_head_calibration(staleness, label_rate=rates)
    assert verdict["holds"] is True
    assert verdict["note"].startswith("slices left out where the day before's click rate")
    assert aux_head_calibration(staleness)["holds"] is False, "labels not measured: every slice judged"
    stories = _calibration_table(verdict)[-2]
    assert stories.endswith("labels 0.960 **kd off** (labels' floor) |")
