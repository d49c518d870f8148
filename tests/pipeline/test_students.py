"""Students end to end without Airflow: gem-fm -> domain FM -> VM, day by day, with lineage.

One lake of four days of tiny models: gem-fm trains D1..D3; its knowledge exists for
D2..D4; the facebook domain FM learns on D2..D3 and teaches from D3 on; the
facebook_feed VM learns on D3..D4 from the domain FM (hierarchical) and another one
from gem-fm directly.
"""

from __future__ import annotations

import dataclasses

import mlflow
import pyarrow.compute as pc
import pytest
import torch

from infra import delta, registry
from infra.checkpoints import checkpoint_uri
from infra.settings import Settings
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.fm_release import gate_fm, register_fm
from pipeline.gate import GateConfig
from pipeline.hierarchy import domain_fm, vertical_model
from pipeline.knowledge import KnowledgeConfig, generate_domain_knowledge, generate_teacher_knowledge
from pipeline.lineage import LineageError, format_lineage, walk_lineage
from pipeline.student_data import MissingKnowledgeError, student_training_rows
from pipeline.student_release import distill_student, gate_student, register_student
from pipeline.train_fm import FMTrainingConfig, train_fm
from pipeline.train_student import DistillConfig, load_student, load_teacher, train_student
from teacher.train import TrainConfig

D1, D2, D3, D4 = "2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"
GATE = GateConfig(max_ne=2.0, max_relative_regression=1.0)  # wiring, not quality: tiny models, tiny days
CONFIG = DistillConfig(train=TrainConfig(batch_size=128))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, spark, as_examples, with_histories) -> Settings:
    """Examples D1..D4, gem-fm through D1..D3 (gated), its knowledge on D2..D4."""
    root = tmp_path_factory.mktemp("students")
    settings = Settings(lake=str(root / "lake"), mlflow_uri=f"sqlite:///{root}/mlflow.db", fm_size="tiny")
    world = SyntheticWorld(WorldConfig(seed=3, events_per_day=2_000, n_users=150))
    for i, ds in enumerate((D1, D2, D3, D4)):
        examples = with_histories(as_examples(world.day_table(ds)), seed=i)
        delta.overwrite_partition(settings.table_uri("examples"), examples, ds)
    for ds in (D1, D2, D3, D4):
        gate_fm(settings, ds, GATE)
        generate_teacher_knowledge(
            settings, "gem-fm", ds, KnowledgeConfig(), spark=spark
        ) if ds != D1 else None
        if ds != D4:
            train_fm(settings, ds, FMTrainingConfig(size="tiny", train=TrainConfig(batch_size=256)))
            register_fm(settings, ds)
    yield settings
    mlflow.set_tracking_uri(None)


def _facebook_chain(settings: Settings, spark) -> dict:
    """Domain FM facebook on D2, D3 (gated on D3), its knowledge D3, D4; VM facebook_feed on D3, D4."""
    domain, vm = domain_fm("facebook"), vertical_model("facebook_feed", "hierarchical")
    done = {}
    for ds in (D2, D3, D4):
        gate_student(settings, domain, ds, CONFIG, GATE)
        if ds != D2:
            done[f"knowledge {ds}"] = generate_domain_knowledge(
                settings, "facebook", ds, KnowledgeConfig(), spark
            )
            gate_student(settings, vm, ds, CONFIG, GATE)
            done[f"vm {ds}"] = distill_student(settings, vm, ds, CONFIG)
        if ds != D4:
            done[f"domain {ds}"] = distill_student(settings, domain, ds, CONFIG)
    return done


@pytest.fixture(scope="module")
def chain(settings: Settings, spark) -> dict:
    return _facebook_chain(settings, spark)


def test_domain_fm_learns_from_gem_fm_and_teaches_its_own_domain_only(
    settings: Settings, chain: dict
) -> None:
    first = chain[f"domain {D2}"]["registered"]
    assert first["teacher"] == "gem-fm/1", "on D2 the champion as of D2 is gem-fm v1 (trained through D1)"
    outputs = delta.read_partition(
        settings.table_uri("teacher_outputs"),
        D3,
        ["surface", "teacher_version"],
        {"teacher": "domain-fm-facebook"},
    )
    examples = delta.read_partition(settings.table_uri("examples"), D3, ["surface"])
    facebook = pc.sum(pc.starts_with(examples["surface"], "facebook_")).as_py()
    assert outputs.num_rows == facebook
    assert set(outputs["surface"].to_pylist()) == {"facebook_feed", "facebook_stories"}
    assert set(outputs["teacher_version"].to_pylist()) == {first["version"]}


def test_vm_lineage_walks_to_the_exact_fm_version(settings: Settings, chain: dict) -> None:
    vm = chain[f"vm {D4}"]["registered"]
    steps = walk_lineage(settings, vm["model_uri"])
    assert [s.ref.name for s in steps] == ["vm-facebook_feed", "domain-fm-facebook", "gem-fm"]
    vm_tags, domain_tags, fm_tags = (s.tags for s in steps)
    assert vm_tags["teacher"] == f"domain-fm-facebook/{steps[1].ref.version}"
    assert vm_tags["trained_through"] == D4 and vm_tags["teacher_trained_through"] < D4
    assert domain_tags["teacher"] == f"gem-fm/{steps[2].ref.version}"
    assert "teacher" not in fm_tags and fm_tags["trained_through"] < domain_tags["trained_through"]
    lines = format_lineage(steps)
    assert lines[0].startswith(vm["model_uri"]) and "gem-fm" in lines[-1]
    with pytest.raises(LineageError, match="not registered"):
        walk_lineage(settings, "models:/vm-facebook_feed/99")


def test_reregistering_a_day_returns_the_same_version(settings: Settings, chain: dict) -> None:
    vm = vertical_model("facebook_feed", "hierarchical")
    again = register_student(settings, vm, D4)
    assert again["version"] == chain[f"vm {D4}"]["registered"]["version"]


def test_the_vm_gate_ran_on_its_second_day(settings: Settings, chain: dict) -> None:
    first = registry.find_version(settings, "vm-facebook_feed", "trained_through", D3)
    assert registry.version_tags(settings, first)["gate"] == "passed"
    assert registry.champion(settings, "vm-facebook_feed") == first


def test_a_student_without_its_teachers_knowledge_is_refused(settings: Settings) -> None:
    with pytest.raises(MissingKnowledgeError, match="domain-fm-instagram has no outputs"):
        train_student(settings, vertical_model("instagram_feed", "hierarchical"), D3, CONFIG)


def test_a_students_teacher_never_changes(settings: Settings, chain: dict) -> None:
    with pytest.raises(ValueError, match="teacher never changes"):
        train_student(settings, vertical_model("facebook_feed", "direct"), D4, CONFIG)


def test_direct_vm_with_past_embeddings_reads_only_earlier_outputs(settings: Settings) -> None:
    vm = vertical_model("instagram_reels", "direct")
    rows = student_training_rows(settings, vm, D3, ("click", "conversion"), 3, sequence_length=4)
    table = rows.table
    assert rows.teacher == "gem-fm" and rows.teacher_version == 2
    assert set(table["surface"].to_pylist()) == {"instagram_reels"}
    assert all(table["has_teacher"].to_pylist())
    own = dict(zip(table["example_id"].to_pylist(), table["teacher_embedding"].to_pylist(), strict=True))
    width = len(next(iter(own.values())))
    for example_id, past in zip(
        table["example_id"].to_pylist(), table["past_embeddings"].to_pylist(), strict=True
    ):
        vectors = [past[i : i + width] for i in range(0, len(past), width)]
        assert len(vectors) <= 4
        assert own[example_id] not in vectors, f"{example_id} sees its own teacher output"
    assert any(table["past_embeddings"].to_pylist()), "users with earlier examples get a past"


def test_the_lineage_command_prints_the_chain(
    settings: Settings, chain: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("DISTILLERY_LAKE", settings.lake)
    monkeypatch.setenv("DISTILLERY_MLFLOW_URI", settings.mlflow_uri)
    main(["lineage", "models:/vm-facebook_feed@champion"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("models:/vm-facebook_feed/") and "teacher=domain-fm-facebook/" in lines[0]
    assert "models:/domain-fm-facebook/" in lines[1] and "models:/gem-fm/" in lines[2]
    with pytest.raises(SystemExit, match="not registered"):
        main(["lineage", "models:/vm-facebook_feed/99"])
    with pytest.raises(SystemExit, match="expected models:/"):
        main(["lineage", "vm-facebook_feed"])


def test_the_domain_fm_refreshes_gem_fms_id_tables_each_day(settings: Settings, chain: dict) -> None:
    for ds in (D2, D3):
        teacher = chain[f"domain {ds}"]["registered"]["teacher"]  # gem-fm/<version> it learned from on ds
        name, version = teacher.split("/")
        gem = load_teacher(settings, name, int(version)).embeddings.tables.state_dict()
        student, _ = load_student(checkpoint_uri(settings.lake, "domain-fm-facebook", ds))
        mine = student.backbone.embeddings.tables.state_dict()
        assert mine.keys() == gem.keys()
        assert all(torch.equal(mine[k], gem[k]) for k in gem), f"{ds}: the tables of {teacher}, frozen"
    first, second = (chain[f"domain {ds}"]["registered"]["teacher"] for ds in (D2, D3))
    assert first != second, "D3 learned from a newer gem-fm, whose tables replaced D2's"


def test_variants_sharing_a_seed_name_draw_the_same_random_numbers(settings: Settings) -> None:
    base = vertical_model("instagram_feed", "direct")
    alone = DistillConfig(vm_method="alone", train=TrainConfig(batch_size=128))

    def weights(name: str, seed_name: str) -> dict[str, torch.Tensor]:
        spec = dataclasses.replace(base, name=name, seed_name=seed_name)
        train_student(settings, spec, D3, alone)
        return load_student(checkpoint_uri(settings.lake, name, D3))[0].state_dict()

    first, twin = weights(f"{base.name}.a", base.name), weights(f"{base.name}.b", base.name)
    other = weights(f"{base.name}.c", f"{base.name}.c")
    assert all(torch.equal(first[k], twin[k]) for k in first), "same seed name: the same training"
    assert not all(torch.equal(first[k], other[k]) for k in first), "another seed name: other draws"
