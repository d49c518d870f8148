"""The hierarchy: one domain FM per domain, one VM per surface, who teaches whom."""

from __future__ import annotations

import pytest

from infra.schema import DOMAINS, SURFACE_DOMAINS, SURFACES
from pipeline.hierarchy import FM_NAME, all_students, student_spec
from pipeline.train_student import DOMAIN_TRANSFER, DistillConfig
from students.config import METHODS
from teacher.train import TrainConfig


@pytest.mark.parametrize("path", ["hierarchical", "direct"])
def test_every_domain_and_surface_has_one_student(path: str) -> None:
    students = all_students(path)
    assert [s.name for s in students] == [f"domain-fm-{d}" for d in DOMAINS] + [f"vm-{s}" for s in SURFACES]
    covered = [surface for s in students if s.kind == "domain" for surface in s.surfaces]
    assert sorted(covered) == sorted(SURFACES), "the domain FMs cover every surface exactly once"
    for spec in students:
        if spec.kind == "domain":
            assert spec.teacher == FM_NAME
        else:
            domain = SURFACE_DOMAINS[spec.surfaces[0]]
            assert spec.teacher == (f"domain-fm-{domain}" if path == "hierarchical" else FM_NAME)


def test_names_parse_back_and_unknown_names_are_refused() -> None:
    assert student_spec("vm-instagram_reels", "hierarchical").teacher == "domain-fm-instagram"
    assert student_spec("domain-fm-messaging", "direct").surfaces == ("messaging_inbox",)
    with pytest.raises(ValueError, match="not a student"):
        student_spec("gem-fm", "direct")
    with pytest.raises(ValueError, match="unknown surface"):
        student_spec("vm-tiktok", "direct")
    with pytest.raises(ValueError, match="transfer path"):
        student_spec("vm-facebook_feed", "sideways")


def test_distill_config_picks_each_students_methods() -> None:
    config = DistillConfig(vm_method="kd")
    assert config.transfer_for(student_spec("vm-facebook_feed", "direct")) == METHODS["kd"]
    assert config.transfer_for(student_spec("domain-fm-facebook", "direct")) == DOMAIN_TRANSFER
    assert DOMAIN_TRANSFER.representation == "none", "domain FMs teach in their turn: no inputs from gem-fm"
    with pytest.raises(ValueError, match="DISTILLERY_TRANSFER_METHOD"):
        DistillConfig(vm_method="magic")


def test_a_vm_learns_in_its_own_minibatches_and_a_domain_fm_in_the_fms() -> None:
    config = DistillConfig(train=TrainConfig(batch_size=256, seed=3), vm_batch_size=32)
    vm = config.train_for(student_spec("vm-facebook_feed", "direct"))
    assert (vm.batch_size, vm.seed) == (32, 3), "only the minibatch differs"
    assert config.train_for(student_spec("domain-fm-facebook", "direct")) == config.train
    with pytest.raises(ValueError, match="vm_batch_size must be >= 1"):
        DistillConfig(vm_batch_size=0)
