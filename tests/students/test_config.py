"""Student configs: validation, round trips, the METHODS ladder, domain and VM backbones."""

from __future__ import annotations

import dataclasses
import json

import pytest

from infra.registry import config_hash
from students.config import (
    ADAPTER_L2,
    METHODS,
    SCALED_TARGETS,
    StudentConfig,
    TransferConfig,
    student_backbone,
)
from teacher.config import SIZES, config_for
from teacher.model import GemFM, forward_flops_per_example

SHARED_SIZES = ("d_model", "n_heads", "attention", "ffn_mult", "n_time_buckets", "n_age_buckets")
SHARED_SIZES += ("country_buckets", "category_buckets", "tasks", "n_surfaces")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"adapter": "mlp", "aux_head": True}, "adapter"),
        ({"adapter_fit": "epoch"}, "adapter_fit"),
        ({"representation": "pooled"}, "representation"),
        ({"share": ("embeddings", "heads")}, "share"),
        ({"kd_weight": -1.0}, "kd_weight"),
        ({"aux_weight": -0.5}, "aux_weight"),
        ({"grad_scale": -0.1}, "grad_scale"),
        ({"label_scale": 0.0}, "label_scale"),
        ({"adapter_learning_rate": 0.0}, "adapter_learning_rate"),
        ({"adapter_hidden": -1}, "adapter_hidden"),
        ({"adapter_l2": -0.1}, "adapter_l2"),
        ({"sequence_length": 0}, "sequence_length"),
        ({"adapter": "logit"}, "adapter"),  # an adapter without any distillation term
    ],
)
def test_invalid_transfer_configs_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TransferConfig(**overrides)  # type: ignore[arg-type]


def test_transfer_round_trip_through_json() -> None:
    config = TransferConfig(
        kd_weight=0.5, aux_head=True, adapter="context", representation="sequence", share=("embeddings",)
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["share"] == ["embeddings"]
    back = TransferConfig.from_dict(data)
    assert back == config and isinstance(back.share, tuple)


def test_properties() -> None:
    assert not TransferConfig().uses_teacher and not TransferConfig().distillation
    assert not TransferConfig(share=("embeddings",)).uses_teacher  # weights only, no logged outputs
    assert TransferConfig(representation="sequence").uses_teacher
    assert not TransferConfig(representation="input").distillation
    assert TransferConfig(kd_weight=0.1).distillation and TransferConfig(aux_head=True).distillation


def test_methods_ladder_is_cumulative() -> None:
    ladder = ["alone", "kd", "aux_head", "adapter", "representation", "sharing", "full"]
    beside = ["kd_adapter", "representation_no_adapter", "kd_scaled", "aux_head_scaled"]
    assert list(METHODS) == [*ladder, *beside]
    m = METHODS
    assert m["alone"] == TransferConfig()
    assert m["kd"].kd_weight == 1.0 and not m["kd"].aux_head
    assert m["aux_head"].aux_head and m["aux_head"].kd_weight == 0 and m["aux_head"].aux_weight == 1.0
    assert m["adapter"] == dataclasses.replace(m["aux_head"], adapter="context", adapter_l2=ADAPTER_L2)
    assert m["representation"] == dataclasses.replace(m["adapter"], representation="input")
    assert m["sharing"] == dataclasses.replace(m["representation"], share=("embeddings",), share_frozen=False)
    assert m["full"] == m["sharing"]
    assert m["kd_adapter"] == dataclasses.replace(m["kd"], adapter="context", adapter_l2=ADAPTER_L2)
    assert m["representation_no_adapter"] == dataclasses.replace(m["representation"], adapter="none")
    assert m["kd_scaled"] == dataclasses.replace(m["kd"], label_scale=SCALED_TARGETS)
    assert m["aux_head_scaled"] == dataclasses.replace(m["aux_head"], label_scale=SCALED_TARGETS)
    assert SCALED_TARGETS > 1.0, "the scaled targets over-predict: a teacher biased up"
    assert [c.uses_teacher for c in m.values()] == [False] + [True] * 10


def test_student_config_round_trip_and_hash() -> None:
    teacher = config_for("tiny")
    config = StudentConfig(student_backbone("vm", teacher), METHODS["representation"], teacher.embed_dim)
    data = json.loads(json.dumps(config.to_dict()))
    back = StudentConfig.from_dict(data)
    assert back == config
    # the registry's lineage tag: the same for the stored config, another for other methods
    assert config_hash(back.to_dict()) == config_hash(config.to_dict())
    other = dataclasses.replace(config, transfer=METHODS["kd"])
    assert config_hash(other.to_dict()) != config_hash(config.to_dict())


def test_distillation_needs_the_students_tasks_in_the_teacher() -> None:
    teacher = config_for("tiny")
    with pytest.raises(ValueError, match="conversion"):
        StudentConfig(teacher, METHODS["kd"], teacher.embed_dim, teacher_tasks=("click",))
    StudentConfig(teacher, METHODS["alone"], teacher.embed_dim, teacher_tasks=("click",))  # no targets needed


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("share", [(), ("embeddings",), ("embeddings", "sequence_encoder")])
def test_backbones_are_valid_and_keep_shareable_sizes(size: str, share: tuple[str, ...]) -> None:
    teacher = SIZES[size]
    domain, vm = student_backbone("domain", teacher, share), student_backbone("vm", teacher, share)
    assert domain.name == f"domain-of-{teacher.name}" and vm.name == f"vm-of-{teacher.name}"
    for student in (domain, vm):
        assert all(getattr(student, k) == getattr(teacher, k) for k in SHARED_SIZES)
    assert domain.n_layers == max(1, teacher.n_layers - 1)
    assert domain.history_length == max(8, teacher.history_length // 2)
    assert domain.trunk_widths == teacher.trunk_widths and domain.embed_dim == teacher.embed_dim
    assert domain.item_buckets == teacher.item_buckets
    assert vm.n_layers == 1 and vm.trunk_widths == (32, 16) and vm.dropout == 0.0
    if "embeddings" in share:
        assert (vm.user_buckets, vm.item_buckets) == (teacher.user_buckets, teacher.item_buckets)
    else:
        assert vm.item_buckets == max(64, teacher.item_buckets // 4)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        student_backbone("tower", config_for("tiny"))


def test_hstu_sequence_encoder_keeps_its_token_span() -> None:
    teacher = config_for("tiny", attention="hstu")
    vm = student_backbone("vm", teacher, ("sequence_encoder",))
    assert vm.n_cls + vm.history_length == teacher.n_cls + teacher.history_length
    GemFM(vm)  # builds


def test_base_students_are_cheaper() -> None:
    teacher = SIZES["base"]
    fm = forward_flops_per_example(teacher)
    assert forward_flops_per_example(student_backbone("vm", teacher)) <= fm / 10
    assert forward_flops_per_example(student_backbone("domain", teacher)) < fm
