"""Student configs: how a student learns from its teacher, and how big it is.

`TransferConfig` names every transfer knob (ExFM's KD, auxiliary head, label and
gradient scaling, student adapter; GEM's representation transfer and parameter
sharing). `METHODS` is the cumulative ablation ladder, each rung adding one method
to the one before it:

- `alone`: ground truth only, no teacher (the baseline every transfer ratio divides by);
- `kd`: + standard KD on the serving head, `h(s, y) + 1.0 * h(s, sigma(f))`;
- `aux_head`: KD moved to a separate distillation head, `h(s, y) + w * h(d, sigma(f))`;
  the teacher reaches the served head only through the backbone;
- `adapter`: + a student adapter `a = f + MLP(f, context)` fit on fresh labels; the head learns
  `SG(sigma(a))`. The ladder's is fit on each day's rows before the student's pass, its targets
  cross-fitted (`adapter_fit="interval"`): the teacher's version, and so its bias, changes every day,
  and one minibatch's labels (a few dozen clicks) are too few to track it step by step (`"step"`,
  ExFM's streaming order). It reads the teacher's logged embedding beside its logits
  (`adapter="context"`, ExFM's variant): a map of the stale logits alone can re-scale them but not
  restore the ranking the stale teacher lost, which the embedding still holds part of. It is affine
  (`adapter_hidden=0`): a day's rows of one VM (1,000-7,000) overfit a 16-unit MLP, whose corrections
  then fail on rows it did not see; and its fit is ridge-penalised (`adapter_l2=ADAPTER_L2`): unpenalised,
  an affine map of 66 inputs overfits them too;
- `representation`: + the example's logged teacher embedding as a student input;
- `sharing`: + the teacher's embedding tables taken by the student, fine-tuned;
- `full`: the same transfer as `sharing`; the pipeline picks the hierarchical teacher
  path (GEM -> domain FM -> VM) for it, which is not a per-student knob.

Beside the ladder, `kd_adapter`: `kd` with the same adapter. Under the auxiliary head a stale
teacher reaches the served head only through the backbone; under single-head KD its targets
supervise the served head itself, so that is where staleness can cost a VM through the logits.
And `representation_no_adapter`: `representation` without its adapter. A stale teacher's
embedding is a served input, so that is where staleness can cost a VM through its representation.
And `kd_scaled`, `aux_head_scaled`: `kd` and `aux_head` with ExFM's label scaling at
`alpha = SCALED_TARGETS` (1.25), targets `min(alpha * sigma(f), 1)`: a teacher over-predicting by a quarter,
by construction. Single-head KD serves a head that learns them; the auxiliary head keeps them on a
head that is not served. The pair is where the auxiliary head's calibration can be seen at work when
the teacher itself is calibrated (gem-fm keeps a head per surface).

`StudentConfig` joins a GemFM-shaped backbone (`student_backbone` derives the domain
FM's and the VM's from the teacher's) with a `TransferConfig`; a checkpoint keeps
`to_dict()` and rebuilds with `from_dict`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from teacher.config import FMConfig

ADAPTERS: tuple[str, ...] = ("none", "logit", "context")
ADAPTER_FITS: tuple[str, ...] = ("interval", "step")
REPRESENTATIONS: tuple[str, ...] = ("none", "input", "sequence")
# Named teacher module groups a student may take, as module paths inside GemFM.
SHARE_GROUPS: dict[str, tuple[str, ...]] = {
    "embeddings": ("embeddings.tables",),
    "sequence_encoder": ("stack.layers.0.attention",),
}
STUDENT_KINDS: tuple[str, ...] = ("domain", "vm")
# A VM's minibatch (domain FMs, like gem-fm, take `TrainConfig`'s 256:
# `pipeline.train_student.DistillConfig.train_for`). A VM learns from one surface's rows, 1,800-7,100
# a day in the transfer benchmark's synthetic world: at 256 that is 7-28 Adam steps a day, too few to
# leave its start. 32 was picked on the VM alone's NE; docs/transfer_benchmark.md (measurements behind
# the students' defaults) gives the measurements, and the domain FMs' at 64.
VM_BATCH_SIZE = 32


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to tuples (frozen dataclasses hold tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


@dataclass(frozen=True)
class TransferConfig:
    """Which knowledge a student takes from its teacher, and how strongly."""

    kd_weight: float = 0.0  # standard KD on the serving head: + kd_weight * h(s, target)
    aux_head: bool = False  # ExFM auxiliary head d, loss aux_weight * h(d, target)
    aux_weight: float = 1.0  # w
    label_scale: float = 1.0  # alpha: distillation targets become min(alpha * p, 1)
    grad_scale: float = 1.0  # beta: the distillation head's gradient into the backbone, times beta
    adapter: str = "none"  # "none" | "logit" (MLP(f)) | "context" (MLP(f, teacher embedding))
    adapter_fit: str = "interval"  # "interval": on the day's rows first, cross-fitted | "step": per step
    adapter_hidden: int = 0  # SiLU units of MLP(f); 0: affine
    adapter_l2: float = 0.0  # ridge penalty on MLP(f)'s weights in its fit, l2 * ||W||^2
    adapter_learning_rate: float = 1e-3  # the "step" fit's Adam
    representation: str = "none"  # "none" | "input" (own teacher embedding) | "sequence" (past ones)
    sequence_length: int = 8  # K past teacher embeddings for "sequence"
    share: tuple[str, ...] = ()  # teacher module groups taken, keys of SHARE_GROUPS
    share_frozen: bool = True  # frozen (requires_grad False) or fine-tuned

    def __post_init__(self) -> None:
        object.__setattr__(self, "share", tuple(self.share))
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.adapter_fit not in ADAPTER_FITS:
            raise ValueError(f"adapter_fit must be one of {ADAPTER_FITS}, got {self.adapter_fit!r}")
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}")
        unknown = sorted(set(self.share) - set(SHARE_GROUPS))
        if unknown:
            raise ValueError(f"share names unknown groups {unknown}; known: {sorted(SHARE_GROUPS)}")
        for name in ("kd_weight", "aux_weight", "grad_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("label_scale", "adapter_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.adapter_l2 < 0:
            raise ValueError(f"adapter_l2 must be >= 0, got {self.adapter_l2}")
        if self.adapter_hidden < 0:
            raise ValueError(f"adapter_hidden must be >= 0, got {self.adapter_hidden}")
        if self.sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {self.sequence_length}")
        if self.adapter != "none" and not self.distillation:
            raise ValueError(f"adapter {self.adapter!r} needs a distillation term (kd_weight > 0, aux_head)")

    @property
    def distillation(self) -> bool:
        """Whether any loss term learns from teacher predictions."""
        return self.kd_weight > 0 or self.aux_head

    @property
    def uses_teacher(self) -> bool:
        """Whether training or serving reads logged teacher outputs (sharing alone reads weights only)."""
        return self.distillation or self.adapter != "none" or self.representation != "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferConfig:
        """Rebuild from `to_dict()` output; unknown keys are an error."""
        return cls(**_tuples(data))


# ExFM's label scaling (alpha) of the `_scaled` methods: targets a quarter above the teacher's
# probabilities. Fixed before their first run; the benchmark reports whatever it shows.
SCALED_TARGETS = 1.25
# The ladder's adapter's ridge penalty. Picked on MovieLens's cross-fitted targets among 0, 1e-3 and
# 1e-2 (docs/transfer_benchmark.md, measurements behind the students' defaults): unpenalised, the
# context adapter's targets were worse than the stale teacher's own.
ADAPTER_L2 = 1e-2
_ALONE = TransferConfig()
_KD = TransferConfig(kd_weight=1.0)
_AUX = TransferConfig(aux_head=True, aux_weight=1.0)
_ADAPTER = dataclasses.replace(_AUX, adapter="context", adapter_l2=ADAPTER_L2)
_REPRESENTATION = dataclasses.replace(_ADAPTER, representation="input")
_SHARING = dataclasses.replace(_REPRESENTATION, share=("embeddings",), share_frozen=False)
METHODS: dict[str, TransferConfig] = {
    "alone": _ALONE,
    "kd": _KD,
    "aux_head": _AUX,
    "adapter": _ADAPTER,
    "representation": _REPRESENTATION,
    "sharing": _SHARING,
    "full": _SHARING,
    "kd_adapter": dataclasses.replace(_KD, adapter="context", adapter_l2=ADAPTER_L2),
    "representation_no_adapter": dataclasses.replace(_REPRESENTATION, adapter="none"),
    "kd_scaled": dataclasses.replace(_KD, label_scale=SCALED_TARGETS),
    "aux_head_scaled": dataclasses.replace(_AUX, label_scale=SCALED_TARGETS),
}


@dataclass(frozen=True)
class StudentConfig:
    """A student: its own GemFM-shaped backbone plus how it learns from the teacher."""

    backbone: FMConfig
    transfer: TransferConfig
    teacher_embed_dim: int  # width of the stored teacher embedding
    teacher_tasks: tuple[str, ...] = ("click", "conversion")  # order of the logged teacher logits

    def __post_init__(self) -> None:
        object.__setattr__(self, "teacher_tasks", tuple(self.teacher_tasks))
        if self.teacher_embed_dim < 1:
            raise ValueError(f"teacher_embed_dim must be >= 1, got {self.teacher_embed_dim}")
        missing = [t for t in self.backbone.tasks if t not in self.teacher_tasks]
        if self.transfer.distillation and missing:
            raise ValueError(f"teacher_tasks {self.teacher_tasks} lack the student's tasks {missing}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, the form stored with the weights."""
        return {
            "backbone": self.backbone.to_dict(),
            "transfer": self.transfer.to_dict(),
            "teacher_embed_dim": self.teacher_embed_dim,
            "teacher_tasks": list(self.teacher_tasks),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Rebuild from `to_dict()` output."""
        return cls(
            backbone=FMConfig.from_dict(data["backbone"]),
            transfer=TransferConfig.from_dict(data["transfer"]),
            teacher_embed_dim=int(data["teacher_embed_dim"]),
            teacher_tasks=tuple(data["teacher_tasks"]),
        )


def _halve(widths: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(16, w // 2) for w in widths)


def student_backbone(kind: str, teacher: FMConfig, share: tuple[str, ...] = ()) -> FMConfig:
    """The backbone of a "domain" FM (a smaller FM) or a "vm" (small enough to serve) under `teacher`.

    Both keep the teacher's d_model, heads, attention, time/age/country/category
    buckets, surfaces and tasks, so teacher modules fit. A domain FM is shallower
    (one layer less, half the history, half the Wukong MLP) but keeps the teacher's
    trunk, so the embedding it ships to its VMs is as wide as the teacher's: halved, it
    cost the hierarchical VMs 0.003-0.005 click NE in the transfer benchmark (synthetic,
    synthetic_drift, MovieLens), though the wider domain FM is no better a teacher of
    clicks. A VM's id tables are a quarter of the teacher's unless it takes them
    ("embeddings" in `share`). An HSTU block's position bias spans n_cls +
    history_length tokens, so a student that takes an HSTU sequence encoder keeps the
    teacher's n_cls and history_length.
    """
    if kind == "domain":
        sizes: dict[str, Any] = {
            "name": f"domain-of-{teacher.name}",
            "n_layers": max(1, teacher.n_layers - 1),
            "history_length": max(8, teacher.history_length // 2),
            "wukong_mlp": _halve(teacher.wukong_mlp),
        }
    elif kind == "vm":
        tables = "embeddings" in share

        def buckets(n: int) -> int:
            return n if tables else max(64, n // 4)

        sizes = {
            "name": f"vm-of-{teacher.name}",
            "n_layers": 1,
            "history_length": min(8, teacher.history_length),
            "n_cls": 1,
            "n_pool_queries": 1,
            "n_recent": 2,
            "n_fields": 4,
            "fmb_fields": 2,
            "wukong_rank": 4,
            "wukong_mlp": (32,),
            "personal_hidden": 8,
            "trunk_widths": (32, 16),
            "dropout": 0.0,
            "user_buckets": buckets(teacher.user_buckets),
            "item_buckets": buckets(teacher.item_buckets),
            "advertiser_buckets": buckets(teacher.advertiser_buckets),
        }
    else:
        raise ValueError(f"kind must be one of {STUDENT_KINDS}, got {kind!r}")
    if "sequence_encoder" in share and teacher.attention == "hstu":
        sizes |= {"history_length": teacher.history_length, "n_cls": teacher.n_cls}
    return dataclasses.replace(teacher, pyramid=(), **sizes)
