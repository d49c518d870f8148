"""`distillery bench transfer --quick`: every key exists, every number is finite, and two runs agree."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from infra.delta import overwrite_partition, read_partition
from infra.settings import Settings
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.bench_transfer import bench_settings, drifting_world, run_transfer_benchmark
from pipeline.bench_transfer_config import FAST_DRIFT, METHOD_NAMES, QUICK, SYNTHETIC, TransferBenchConfig
from pipeline.bench_transfer_join import join_transfer_runs
from pipeline.bench_transfer_measure import label_rate_clicks, learns_from_teacher, write_fm_knowledge
from pipeline.hierarchy import FM_NAME
from pipeline.student_data import OUTPUTS_TABLE


def _numbers(value: object, path: str = "") -> list[tuple[str, float]]:
    """Every number in a JSON document, with its path."""
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{path}[{i}]")]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(path, float(value))]
    return []


@pytest.mark.slow
def test_quick_run_writes_every_key_with_finite_numbers(tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "user-lake"), mlflow_uri=f"sqlite:///{tmp_path}/mlruns.db")
    run_transfer_benchmark(settings, QUICK, out_dir=str(tmp_path / "out"))

    report = json.loads((tmp_path / "out" / "transfer.json").read_text())
    synthetic = report["datasets"]["synthetic"]
    for dataset in report["datasets"].values():
        for method in METHOD_NAMES:
            values = dataset["methods"][method]
            assert set(values) >= {"ne", "auc", "calibration", "transfer_ratio", "ne_std"}
            assert all(values[k] is not None for k in ("ne", "auc", "calibration", "ne_std")), method
            assert len(values["ne_by_seed"]) == len(QUICK.seeds)
    for k in QUICK.staleness:
        assert set(synthetic["staleness"][str(k)]) == set(METHOD_NAMES)
        assert all("ne" in v for v in synthetic["staleness"][str(k)].values())
        for adapted in ("adapter", "kd_adapter"):
            targets = synthetic["staleness"][str(k)][adapted]
            assert targets["target_log_loss"] > 0 and targets["teacher_log_loss"] > 0, "targets measured"
        alone = synthetic["staleness"][str(k)]["alone"]
        assert alone["ne_by_seed"] == synthetic["methods"]["alone"]["ne_by_seed"], "one fresh run stands"
    assert {"gem-fm", "domain-fm", "vm (alone)", "vm (full)"} <= set(report["models"])
    assert synthetic["domain_teacher"]["ne"] is not None, "the hierarchy's first hop is measured"
    setup = synthetic["setup"]
    evaluation = setup["evaluation_days"]
    assert evaluation[-1] == setup["days_list"][-1] and len(evaluation) == len(setup["student_days"])
    assert synthetic["teacher"]["clicks"] > 0
    # The synthetic world's expected clicks on the same slices: the observed are a draw around them.
    expected, clicks = synthetic["teacher"]["expected_clicks"], synthetic["teacher"]["clicks"]
    assert abs(clicks - expected) < 4 * math.sqrt(expected)
    assert synthetic["methods"]["kd"]["true_calibration"] > 0
    for dataset in report["datasets"].values():  # the day before's click rate, against the same clicks
        rates = dataset["label_rate"]
        assert set(rates["vms"]) == set(QUICK.surfaces) and 0.5 < rates["calibration"] < 2
    assert synthetic["label_rate"]["measure"] == "true_calibration"
    assert "labels" in synthetic["claims"]["aux_head_keeps_calibration"]["by_staleness"]["0"]
    assert (
        synthetic["claims"]["aux_head_keeps_calibration"]["by_staleness"]["0"]["against"] == "expected clicks"
    )
    scaled = synthetic["claims"]["aux_head_keeps_calibration_scaled"]
    assert scaled["pair"] == ["kd_scaled", "aux_head_scaled"] and scaled["by_staleness"], "judged"
    assert "true_calibration" not in report["datasets"]["movielens"]["methods"]["kd"], "no truth known"
    assert synthetic["market_by_day"] == dict.fromkeys(setup["days_list"], 0.0), "the default market stands"
    assert "market_by_day" not in report["datasets"]["movielens"]
    stale_kd = synthetic["staleness"]["1"]["kd"]["vms"]["facebook_feed"]
    assert set(synthetic["staleness"]["1"]["kd"]["vms"]) == set(QUICK.surfaces), "each served VM on its own"
    assert (
        stale_kd["true_calibration"]
        == stale_kd["calibration"] * stale_kd["clicks"] / stale_kd["expected_clicks"]
    )
    stale_teacher = synthetic["teacher_by_staleness"]
    assert set(stale_teacher) == {str(k) for k in QUICK.staleness}
    assert stale_teacher["0"]["ne"] == synthetic["teacher"]["ne"]
    assert stale_teacher["1"]["clicks"] == synthetic["teacher"]["clicks"], (
        "the same slices at every staleness"
    )
    assert set(synthetic["ne_by_day"]["vm-facebook_feed (full)"]) == set(evaluation)
    bad = [(p, v) for p, v in _numbers(report) if not math.isfinite(v)]
    assert not bad, f"non-finite numbers: {bad}"  # undefined ratios are written as null
    assert set(report["datasets"]) == {"synthetic", "movielens"}
    assert len(report["code"]) == 40, "the commit that measured it"
    assert {"gem-fm", "domain-fm-facebook", "vm-facebook_feed (full)"} <= set(synthetic["ne_by_day"])
    for dataset in ("synthetic", "movielens"):
        for name in ("transfer_ratio", "staleness", "ne_by_day"):
            assert (tmp_path / "out" / f"{name}_{dataset}.png").stat().st_size > 0
    markdown = (tmp_path / "out" / "transfer.md").read_text()
    assert markdown.count("## ") >= 4 and "## Verdicts\n\n| claim | synthetic | movielens |" in markdown

    for dataset in ("synthetic", "movielens"):  # one run per dataset, joined: the same report
        (tmp_path / dataset).mkdir()
        part = report | {"datasets": {dataset: report["datasets"][dataset]}}
        (tmp_path / dataset / "transfer.json").write_text(json.dumps(part))
    parts = [str(tmp_path / "movielens"), str(tmp_path / "synthetic")]
    join_transfer_runs(settings, parts, str(tmp_path / "j"))
    joined = json.loads((tmp_path / "j" / "transfer.json").read_text())
    assert joined["datasets"] == report["datasets"], "claims judged again by the same code: the same"
    assert joined["judged_by"] == report["code"]
    assert joined["wall_seconds"] == 2 * report["wall_seconds"]
    ran = datetime.fromisoformat(report["finished"]) - datetime.fromisoformat(report["started"])
    assert joined["elapsed_seconds"] == ran.total_seconds() <= report["wall_seconds"] + 1
    joined_markdown = (tmp_path / "j" / "transfer.md").read_text()
    assert "the sum of 2 runs joined (movielens" in joined_markdown
    assert "| claim | synthetic | movielens |" in joined_markdown, "the verdicts of runs read back from JSON"
    below_the_header = markdown.split("## synthetic", 1)[1]
    assert joined_markdown.split("## synthetic", 1)[1] == below_the_header, "read back from JSON, the same"
    assert (tmp_path / "j" / "staleness_movielens.png").stat().st_size > 0


def test_the_config_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        TransferBenchConfig(methods=("alone", "distil"))
    with pytest.raises(ValueError, match="staleness must include 0"):
        TransferBenchConfig(staleness=(1, 2))
    with pytest.raises(ValueError, match="vm_batch_size 0"):
        TransferBenchConfig(vm_batch_size=0)
    with pytest.raises(ValueError, match="leave no student day"):
        TransferBenchConfig(days=5, staleness=(0, 2))
    days = [f"2026-01-{d:02d}" for d in range(1, 8)]
    assert TransferBenchConfig(days=7, staleness=(0, 1)).student_days(days) == days[3:6]
    assert TransferBenchConfig(days=7, staleness=(0, 1)).evaluation_days(days) == days[4:7]


def test_only_alone_stands_apart_from_the_teacher() -> None:
    assert [m for m in METHOD_NAMES if not learns_from_teacher(m)] == ["alone"]


def test_a_day_without_a_teacher_that_late_keeps_no_knowledge_of_another_delay(tmp_path: Path) -> None:
    """At a delay with no gem-fm version old enough for a day, the day has no knowledge: what a
    fresher delay wrote there before is removed, so a VM's caught-up rows of that day carry none.
    Another teacher's outputs of the day stand."""
    settings = Settings(lake=str(tmp_path / "lake"), mlflow_uri=f"sqlite:///{tmp_path}/mlruns.db")
    outputs = settings.table_uri(OUTPUTS_TABLE)
    written = pa.table(
        {
            "example_id": ["e1", "e2", "e3"],
            "ds": ["2026-01-05"] * 3,
            "teacher": [FM_NAME, FM_NAME, "domain-fm-facebook"],
        }
    )
    write_deltalake(outputs, written, partition_by=["ds", "teacher"])

    write_fm_knowledge(settings, ["2026-01-05"], delay=4, spark=None)  # no gem-fm trained through 12-31

    assert len(read_partition(outputs, "2026-01-05", partition={"teacher": FM_NAME})) == 0
    assert read_partition(outputs, "2026-01-05")["example_id"].to_pylist() == ["e3"]


def test_the_drifting_world_moves_at_the_committed_pace(tmp_path: Path) -> None:
    settings = bench_settings(Settings(), str(tmp_path), SYNTHETIC)
    world = drifting_world(settings, SYNTHETIC)
    assert "synthetic_drift" in SYNTHETIC.datasets and SYNTHETIC.fast_drift == FAST_DRIFT
    assert (world.config.seed, world.config.events_per_day) == (
        SYNTHETIC.world_seed,
        SYNTHETIC.events_per_day,
    )
    day0, day1 = (world.active_ads(ds)["item_id"].to_numpy() for ds in ("2026-01-01", "2026-01-02"))
    assert len(set(day1) - set(day0)) == round(FAST_DRIFT.ad_churn * world.config.n_active_ads)
    default = WorldConfig()
    for knob in (f.name for f in dataclasses.fields(FAST_DRIFT)):
        assert getattr(world.config, knob) == getattr(FAST_DRIFT, knob) > getattr(default, knob), knob
    assert world.state("2026-01-02").market != 0.0


@pytest.mark.slow
def test_two_runs_of_one_setup_measure_the_same_numbers(tmp_path: Path) -> None:
    """The whole chain (gem-fm, its Spark knowledge, the domain FMs, a VM taking all of it) under one
    seed twice: every number but the wall times equal, to the last bit."""
    setup = dataclasses.replace(QUICK, datasets=("synthetic",), methods=("alone", "full"), staleness=(0,))
    reports = []
    for run in ("a", "b"):
        settings = Settings(lake=str(tmp_path / run / "lake"), mlflow_uri=f"sqlite:///{tmp_path}/{run}.db")
        run_transfer_benchmark(settings, setup, out_dir=str(tmp_path / run / "out"))
        report = json.loads((tmp_path / run / "out" / "transfer.json").read_text())
        reports.append({p: v for p, v in _numbers(report) if "seconds" not in p})
    assert any(p.endswith("methods.full.ne") for p in reports[0]), "the full VM was measured"
    assert reports[0].keys() == reports[1].keys()
    differ = [p for p in reports[0] if reports[0][p] != reports[1][p]]  # a NaN would differ too: none belongs
    assert not differ, f"numbers that differ between two runs: {differ}"


def test_the_label_rate_predicts_each_day_at_the_day_befores_clicks_surface_by_surface(
    tmp_path: Path, as_examples: Callable[[pa.Table], pa.Table]
) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    world = SyntheticWorld(WorldConfig(events_per_day=800, n_users=50, seed=3))
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    for ds in days:
        overwrite_partition(settings.table_uri("examples"), as_examples(world.day_table(ds)), ds)
    surfaces = ("facebook_feed", "messaging_inbox")

    got = label_rate_clicks(settings, surfaces, days[1:])

    frames = {ds: world.day_table(ds).to_pandas() for ds in days}
    for surface in surfaces:
        rows = {ds: frame[frame["surface"] == surface] for ds, frame in frames.items()}
        want = sum(rows[before]["click"].mean() * len(rows[ds]) for before, ds in itertools.pairwise(days))
        assert got[surface] == pytest.approx(want, rel=1e-6)  # float32 labels
    assert got["facebook_feed"] != got["messaging_inbox"]
