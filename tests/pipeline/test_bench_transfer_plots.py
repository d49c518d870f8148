"""The transfer benchmark's plots show the report's numbers: read back from the figures, not the PNGs."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex

from pipeline.bench_transfer_plots import (
    NOT_JUDGED,
    VERDICT_COLORS,
    ne_by_day_figure,
    plots,
    staleness_figure,
    transfer_ratio_figure,
)

KS = (0, 1, 2, 4)


def _method(ne: float, ratio: float, jitter: tuple[float, ...] = (0.0, 0.0, 0.0)) -> dict:
    return {
        "ne": ne,
        "ne_by_seed": [ne + j for j in jitter],
        "transfer_ratio": ratio,
        "transfer_ratio_std": 0.01,
    }


def _dataset() -> dict:
    methods = {
        "alone": _method(0.95, 0.0),
        "kd": _method(0.94, 0.25),
        "aux_head": _method(0.949, 0.05, (0.0, 0.01, -0.01)),  # its gap over alone is noise
        "adapter": _method(0.945, 0.1),
        "full": _method(0.93, 0.6),
    }
    return {
        "methods": methods,
        "staleness": {
            str(k): {m: {"ne": arm["ne"] + (0.001 * k if m == "kd" else 0.0)} for m, arm in methods.items()}
            for k in KS
        },
        "teacher_by_staleness": {str(k): {"ne": 0.92 + 0.002 * k} for k in KS},
        "ne_by_day": {
            "vm-facebook_feed (alone)": {"2026-01-08": 0.96, "2026-01-09": 0.95},
            "vm-facebook_feed (full)": {"2026-01-08": 0.94, "2026-01-09": 0.93},
            "vm-instagram_feed (full)": {"2026-01-09": 0.92},
            "domain-fm-facebook": {"2026-01-03": 0.93, "2026-01-09": 0.92},
            "gem-fm": {"2026-01-02": 0.93, "2026-01-03": 0.92, "2026-01-09": 0.91},
        },
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_the_transfer_ratio_bars_give_each_method_its_ratio_its_verdict_and_gems_bar() -> None:
    ax = transfer_ratio_figure("synthetic", _dataset()).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        "kd  0.25 ± 0.01",
        "aux_head  0.05 ± 0.01",
        "adapter  0.10 ± 0.01",
        "full  0.60 ± 0.01",
    ], "every method but alone, in the ladder's order, its value beside its name"
    bars = ax.patches
    assert [round(b.get_width(), 6) for b in bars] == [0.25, 0.05, 0.1, 0.6]
    assert to_hex(bars[1].get_facecolor()) == VERDICT_COLORS["within noise"]
    assert to_hex(bars[3].get_facecolor()) == VERDICT_COLORS["win"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in dashed] == [0.5], "GEM's bar: twice KD's ratio"


def test_one_seed_has_no_spread_to_show_and_no_verdict() -> None:
    data = _dataset()
    for method in data["methods"].values():
        method["transfer_ratio_std"] = math.nan
        method["ne_by_seed"] = method["ne_by_seed"][:1]
    ax = transfer_ratio_figure("synthetic", data).axes[0]
    assert ax.get_yticklabels()[0].get_text() == "kd  0.25"
    assert {to_hex(bar.get_facecolor()) for bar in ax.patches} == {NOT_JUDGED}, "no bar looks like a win"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["vs alone: n/a (1 seed)", "2x kd: GEM's bar"]


def test_the_staleness_plot_shows_each_methods_ne_and_what_staleness_costs_it() -> None:
    fig = staleness_figure("synthetic", _dataset())
    ax_ne, ax_lost = fig.axes
    assert list(ax_ne.get_xticks()) == list(KS), "ticks at the staleness levels measured"
    by_label = {line.get_label(): line for line in ax_ne.get_lines()}
    assert list(by_label["kd"].get_ydata()) == pytest.approx([0.94, 0.941, 0.942, 0.944])
    kd_lost = ax_lost.get_lines()[list(by_label).index("kd")]
    assert list(kd_lost.get_ydata()) == pytest.approx([0.0, 0.001, 0.002, 0.004]), "NE lost vs fresh"
    assert by_label["aux_head"].get_linestyle() == "--", "without the adapter: dashed"
    assert by_label["adapter"].get_linestyle() == "-"
    assert by_label["aux_head"].get_color() == by_label["adapter"].get_color(), "twins share a colour"
    assert list(by_label["gem-fm itself"].get_ydata()) == pytest.approx([0.92, 0.922, 0.924, 0.928])


def test_ne_by_day_puts_the_fms_beside_the_vms_alone_dashed_and_full_solid() -> None:
    ax_fm, ax_vm = ne_by_day_figure("synthetic", _dataset()["ne_by_day"]).axes
    fms = {line.get_label(): line for line in ax_fm.get_lines()}
    assert set(fms) == {"gem-fm", "domain-fm-facebook"}
    assert [t.get_text() for t in ax_fm.get_xticklabels()] == ["01-02", "01-03", "01-09"]
    assert math.isnan(fms["domain-fm-facebook"].get_ydata()[0]), "a day without a value is a gap"
    vms = {line.get_label(): line for line in ax_vm.get_lines() if not line.get_label().startswith("_")}
    assert vms["vm-facebook_feed (alone)"].get_linestyle() == "--"
    assert vms["vm-facebook_feed (full)"].get_linestyle() == "-"
    feed = {vms[f"vm-facebook_feed ({m})"].get_color() for m in ("alone", "full")}
    assert len(feed) == 1 and vms["vm-instagram_feed (full)"].get_color() not in feed, "a colour a surface"
    assert [t.get_text() for t in ax_vm.get_xticklabels()] == ["01-08", "01-09"]


def test_plots_writes_three_pngs_a_dataset(tmp_path: Path) -> None:
    files = plots({"datasets": {"synthetic": _dataset(), "movielens": _dataset()}}, tmp_path)
    assert sorted(f.name for f in files) == sorted(
        f"{kind}_{name}.png"
        for kind in ("transfer_ratio", "staleness", "ne_by_day")
        for name in ("synthetic", "movielens")
    )
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in files)


def test_a_run_without_alone_gets_no_transfer_ratio_plot_and_the_others(tmp_path: Path) -> None:
    """`--methods full` measures no `alone`, so no ratio: its bars are left out, never a crash."""
    data = _dataset()
    data["methods"] = {m: arm for m, arm in data["methods"].items() if m != "alone"}
    data["staleness"] = {
        k: {m: a for m, a in arms.items() if m != "alone"} for k, arms in data["staleness"].items()
    }
    files = plots({"datasets": {"synthetic": data}}, tmp_path)
    assert sorted(f.name for f in files) == ["ne_by_day_synthetic.png", "staleness_synthetic.png"]
