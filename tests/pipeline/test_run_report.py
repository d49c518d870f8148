"""The run report reads back exactly what the gates logged, shows gaps as gaps, and logs once per day."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from infra import registry
from infra.report_runs import find_report_runs
from infra.settings import Settings
from pipeline.cli import main
from pipeline.hierarchy import all_students
from pipeline.run_report import (
    MISSING,
    PLOTS,
    ReportConfig,
    collect_report,
    gain_share,
    log_report,
    markdown,
    report_days,
    write_range_report,
)

D1, D2, D3, D4 = "2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"
DOMAIN_FM, VM = "domain-fm-facebook", "vm-facebook_feed"
# (model, trained through, version tags, metrics its gate logged on the day after, or None: not gated)
VERSIONS = [
    ("gem-fm", D1, {}, {"click/ne": 0.95, "click/ne/facebook_feed": 0.93}),
    ("gem-fm", D2, {}, {"click/ne": 0.92, "click/ne/facebook_feed": 0.90}),
    ("gem-fm", D3, {}, None),
    (DOMAIN_FM, D2, {"teacher": "gem-fm/1", "teacher_trained_through": D1}, {"click/ne": 0.94}),
    (
        DOMAIN_FM,
        D3,
        {"teacher": "gem-fm/2", "teacher_trained_through": D2},
        {"click/ne": 0.93, "click/ne/facebook_feed": 0.90},
    ),
    (VM, D3, {"teacher": f"{DOMAIN_FM}/1", "teacher_trained_through": D1}, {"click/ne": 0.96}),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, registry_models: ModuleType) -> Iterator[Settings]:
    """A registry holding VERSIONS, tiny linear models, gate metrics logged on their runs."""
    with registry_models.sandbox(tmp_path_factory.mktemp("report")) as sandboxed:
        for seed, (name, day, tags, gate_metrics) in enumerate(VERSIONS):
            config = {"n_features": len(registry_models.FEATURES), "seed": seed}
            ref = registry.log_and_register(
                sandboxed,
                name,
                registry_models.build_linear(config),
                config,
                registry_models.FACTORY,
                registry_models.PREDICTOR,
                metrics={"train/train_loss": 0.5},
                params={},
                tags={"trained_through": day, "examples_version": "1", **tags},
            )
            if gate_metrics is not None:
                registry.log_run_metrics(sandboxed, ref, gate_metrics)
        yield sandboxed


def test_numbers_equal_what_the_gates_logged(settings: Settings) -> None:
    report = collect_report(settings, D1, D4)
    assert report.days == (D1, D2, D3, D4)
    assert report.ne["gem-fm"] == {D1: None, D2: 0.95, D3: 0.92, D4: None}
    assert report.ne[DOMAIN_FM] == {D1: None, D2: None, D3: 0.94, D4: 0.93}
    assert report.ne[VM] == {D1: None, D2: None, D3: None, D4: 0.96}
    # The VM on D4 against its teacher's version trained through D3, on the VM's surface.
    assert report.teachers[VM][D4] == DOMAIN_FM
    assert report.teacher_ne[VM] == {D1: None, D2: None, D3: None, D4: 0.90}
    assert report.gain_share[VM][D4] == pytest.approx((1 - 0.96) / (1 - 0.90))
    assert report.staleness[DOMAIN_FM] == {D1: None, D2: 1, D3: 1, D4: None}
    assert report.staleness[VM] == {D1: None, D2: None, D3: 2, D4: None}
    assert report.rows["events"] == dict.fromkeys(report.days), "no lake tables: no rows, not zero rows"


def test_markdown_names_every_model_and_shows_missing_days(settings: Settings) -> None:
    report = collect_report(settings, D1, D4)
    text = markdown(report, "test")
    for name in ["gem-fm", *(spec.name for spec in all_students(settings.transfer_path))]:
        assert name in text, f"{name} missing from the report"
    ne_table = text[text.index("## NE by day") : text.index("![NE by day]")]
    ne_rows = {line[2:12]: line.split(" | ") for line in ne_table.splitlines() if line.startswith("| 2026")}
    assert ne_rows[D1][1] == MISSING, "gem-fm has no NE on its first day: missing, not zero"
    assert ne_rows[D2][1] == "0.9500" and "0.0000" not in text
    assert "NE gain share" in text and "does not train" in text, "the report says what it cannot show"


def test_files_are_written_and_non_empty(settings: Settings, tmp_path: Path) -> None:
    files = write_range_report(settings, D1, D4, tmp_path / "out")
    assert [f.name for f in files] == ["report.md", *PLOTS]
    for path in files:
        assert path.stat().st_size > 0, f"{path} is empty"
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in files[1:])


def test_relogging_a_day_reuses_its_run(settings: Settings) -> None:
    config = ReportConfig(window_days=7)
    first = log_report(settings, D3, config)
    again = log_report(settings, D3, config)
    assert first["run_id"] == again["run_id"]
    assert find_report_runs(settings, config.experiment, {"report": "daily", "ds": D3}) == [first["run_id"]]
    assert first["from"] == D1, "the window starts no earlier than the settings' start date"
    client = registry.configure_mlflow(settings)
    logged = sorted(a.path for a in client.list_artifacts(first["run_id"]))
    assert logged == sorted(["report.md", *PLOTS])
    # Every version trained through D3 links to the report.
    assert sorted(first["models"]) == ["models:/domain-fm-facebook/2", "models:/gem-fm/3", f"models:/{VM}/1"]
    tags = registry.version_tags(settings, registry.get_version(settings, VM, 1))
    assert tags["daily_report"] == f"runs:/{first['run_id']}/report.md"
    assert client.get_run(first["run_id"]).data.metrics["ne/gem-fm"] == pytest.approx(0.92)


def test_gain_share_is_undefined_without_a_teacher_gain() -> None:
    assert gain_share(0.95, 0.90) == pytest.approx(0.5)
    assert gain_share(0.95, None) is None
    assert gain_share(None, 0.9) is None
    assert gain_share(0.95, 1.0) is None, "a teacher at the base rate has no gain to share"


def test_a_reversed_or_malformed_range_is_refused() -> None:
    with pytest.raises(ValueError, match="from=2026-01-04 is after to=2026-01-01"):
        report_days(D4, D1)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        report_days("2026-1-1x", D1)


def test_cli_report_writes_the_range(settings: Settings, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DISTILLERY_LAKE", settings.lake)
    monkeypatch.setenv("DISTILLERY_MLFLOW_URI", settings.mlflow_uri)
    main(["report", "--from", D2, "--to", D4, "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "cli" / name) for name in ("report.md", *PLOTS)]
    assert f"Days {D2} to {D4}" in (tmp_path / "cli" / "report.md").read_text()
    with pytest.raises(SystemExit, match="distillery report: report range is empty"):
        main(["report", "--from", D4, "--to", D2])
