"""The transfer benchmark's plots, three per dataset, drawn from the report's numbers alone.

- `transfer_ratio_figure`: each method's transfer ratio, a bar with the seeds' spread, coloured by
  whether its VM beats `alone` beyond noise, with GEM's bar (twice standard KD's ratio) as a line;
- `staleness_figure`: VM NE against the teacher's staleness per method, and beside it what that
  staleness costs each method against a fresh teacher. A VM and the same VM with the adapter
  (`ADAPTED_HEADS`) share a colour, the one without the adapter dashed;
- `ne_by_day_figure`: NE by day of gem-fm and the domain FMs, and beside it of each VM alone
  (dashed) and with the full method (solid), one colour per surface.

`plots` writes them as PNGs. The figure functions return the figure, so tests can read what it shows.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.bench_transfer_claims import ADAPTED_HEADS
from pipeline.bench_transfer_report import method_verdict
from pipeline.hierarchy import DOMAIN_FM_PREFIX, FM_NAME, VM_PREFIX
from pipeline.report_plots import draw_series_by_day

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One colour (tab10's) per family: a VM and its adapter twin share one, and the dash tells them apart;
# the two heads on scaled targets have their own.
METHOD_COLORS: dict[str, str] = {
    "alone": "#7f7f7f",
    "kd": "#ff7f0e",
    "kd_adapter": "#ff7f0e",
    "aux_head": "#2ca02c",
    "adapter": "#2ca02c",
    "representation_no_adapter": "#9467bd",
    "representation": "#9467bd",
    "sharing": "#8c564b",
    "full": "#d62728",
    "kd_scaled": "#e377c2",
    "aux_head_scaled": "#17becf",
}
WITHOUT_ADAPTER: frozenset[str] = frozenset(plain for plain, _ in ADAPTED_HEADS)
VERDICT_COLORS: dict[str, str] = {
    "win": "#4878a8",
    "within noise": "#b8c8d8",
    "loss": "#c85050",
}
NOT_JUDGED = "#a0a0a0"  # a verdict of "n/a": one seed, or a gap that is not finite
_VM_SERIES = re.compile(rf"^{VM_PREFIX}(?P<surface>\S+) \((?P<method>\w+)\)$")
_TEACHER = "gem-fm itself"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dash(method: str) -> str:
    return "--" if method in WITHOUT_ADAPTER else "-"


def transfer_ratio_figure(name: str, data: dict[str, Any]) -> Figure:
    """Horizontal bars of each method's transfer ratio with the seeds' spread, coloured by its verdict
    against `alone`, the value in its label; a dashed line at twice KD's ratio, the bar GEM's claim
    sets for `full`."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    methods = [m for m in data["methods"] if m != "alone"]
    alone = data["methods"]["alone"]
    ratios = [data["methods"][m]["transfer_ratio"] for m in methods]
    spread = [data["methods"][m]["transfer_ratio_std"] for m in methods]
    verdicts = [method_verdict(data["methods"][m], alone) for m in methods]
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(methods) + 1.8))
    labels = [
        f"{m}  {r:.2f}" + (f" ± {s:.2f}" if math.isfinite(s) else "")
        for m, r, s in zip(methods, ratios, spread, strict=True)
    ]
    colors = [VERDICT_COLORS.get(v, NOT_JUDGED) for v in verdicts]
    ax.barh(labels, ratios, xerr=spread, capsize=3, color=colors)
    ax.invert_yaxis()  # the ladder reads top down
    ax.axvline(0, color="black", linewidth=0.8)
    handles: list[Any] = [
        Patch(color=VERDICT_COLORS.get(verdict, NOT_JUDGED), label=f"vs alone: {verdict}")
        for verdict in dict.fromkeys([*VERDICT_COLORS, *verdicts])
        if verdict in verdicts
    ]
    kd = data["methods"].get("kd", {}).get("transfer_ratio", math.nan)
    if math.isfinite(kd):
        handles.append(
            ax.axvline(2 * kd, color="black", linestyle="--", linewidth=1, label="2x kd: GEM's bar")
        )
    ax.set_xlabel("transfer ratio: the share of gem-fm's NE advantage over alone the VMs keep")
    ax.set_title(f"{name}: transfer ratio by method (± the seeds' spread)")
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def staleness_figure(name: str, data: dict[str, Any]) -> Figure:
    """Left, VM click NE against teacher staleness per method and gem-fm's own; right, the NE each
    loses against its fresh teacher (positive: worse)."""
    plt = _pyplot()
    ks = sorted(int(k) for k in data["staleness"])
    fig, (ax_ne, ax_lost) = plt.subplots(1, 2, figsize=(11, 4))
    lines = {method: [data["staleness"][str(k)][method]["ne"] for k in ks] for method in data["methods"]}
    for method, values in lines.items():
        style = {"color": METHOD_COLORS.get(method), "linestyle": _dash(method), "marker": "o"}
        ax_ne.plot(ks, values, label=method, **style)
        ax_lost.plot(ks, [v - values[0] for v in values], **style)
    teacher = [data["teacher_by_staleness"][str(k)]["ne"] for k in ks]
    style = {"color": "black", "linestyle": ":", "marker": "s"}
    ax_ne.plot(ks, teacher, label=_TEACHER, **style)
    ax_lost.plot(ks, [v - teacher[0] for v in teacher], **style)
    ax_lost.axhline(0, color="black", linewidth=0.8)
    for ax in (ax_ne, ax_lost):
        ax.set_xticks(ks)
        ax.set_xlabel("teacher staleness (days)")
        ax.grid(alpha=0.3)
    ax_ne.set_ylabel("click NE (lower is better)")
    ax_ne.set_title(f"{name}: VM NE against teacher staleness")
    ax_lost.set_ylabel("NE lost against a fresh teacher")
    ax_lost.set_title("what the staleness costs (dashed: without the adapter)")
    fig.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def ne_by_day_figure(name: str, ne_by_day: dict[str, dict[str, float]]) -> Figure:
    """Left, gem-fm's and the domain FMs' click NE by day; right, each VM's, alone (dashed) and with
    the full method (solid) in its surface's colour. Both on one NE scale."""
    plt = _pyplot()
    fig, (ax_fm, ax_vm) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    vms = {n: (m["surface"], m["method"], ne_by_day[n]) for n in ne_by_day if (m := _VM_SERIES.match(n))}
    surfaces = list(dict.fromkeys(surface for surface, _, _ in vms.values()))
    domains = [n for n in ne_by_day if n.startswith(DOMAIN_FM_PREFIX)]
    palette = plt.get_cmap("tab10").colors  # surfaces first, then domain FMs: no colour means two things
    colors = {series: palette[i % len(palette)] for i, series in enumerate(surfaces + domains)} | {
        FM_NAME: "black"
    }
    _plot_by_day(ax_fm, {n: (colors[n], "-", ne_by_day[n]) for n in [FM_NAME, *domains] if n in ne_by_day})
    _plot_by_day(
        ax_vm,
        {
            n: (colors[surface], "--" if method == "alone" else "-", v)
            for n, (surface, method, v) in vms.items()
        },
    )
    ax_fm.set_title(f"{name}: gem-fm and the domain FMs")
    ax_fm.set_ylabel("click NE (lower is better)")
    ax_vm.set_title("VMs: alone (dashed), full method (solid)")
    ax_fm.legend(fontsize=7)
    handles = [plt.Line2D([], [], color=colors[s], label=f"{VM_PREFIX}{s}") for s in surfaces]
    ax_vm.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _plot_by_day(ax: Any, series: dict[str, tuple[Any, str, dict[str, float]]]) -> None:
    """One line per name, in its (colour, dash), over the days any of them has (`draw_series_by_day`)."""
    days = sorted({day for _, _, by_day in series.values() for day in by_day})
    styles = {
        name: {"color": color, "linestyle": dash, "markersize": 4}
        for name, (color, dash, _) in series.items()
    }
    draw_series_by_day(ax, {name: by_day for name, (_, _, by_day) in series.items()}, days, styles)
    ax.set_xticks(range(len(days)), [day[5:] for day in days])
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_xlabel("evaluation day (trained through the day before)")
    ax.grid(alpha=0.3)


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Write each dataset's three plots into `out` as PNGs; returns the files. A run that left `alone`
    out (`--methods`) has no transfer ratios: its dataset gets the other two."""
    plt = _pyplot()
    files = []
    for name, data in report["datasets"].items():
        figures = {
            f"staleness_{name}.png": staleness_figure(name, data),
            f"ne_by_day_{name}.png": ne_by_day_figure(name, data["ne_by_day"]),
        }
        if "alone" in data["methods"]:
            figures[f"transfer_ratio_{name}.png"] = transfer_ratio_figure(name, data)
        for file, fig in figures.items():
            fig.savefig(out / file, dpi=120, bbox_inches="tight")
            plt.close(fig)
            files.append(out / file)
    return files
