"""GEM's parameter sharing: a student takes named teacher modules, frozen or fine-tuned.

Taken weights are copied into the student's own parameters (the teacher object is
never aliased, so student training cannot change it). A later call (the next day's
teacher) copies the new weights into the same parameter objects, so an optimizer
that holds them keeps working.
"""

from __future__ import annotations

import torch
from torch import nn

from students.config import SHARE_GROUPS
from students.model import Student
from teacher.model import GemFM

__all__ = ["SHARE_GROUPS", "share_teacher_modules"]


def _check_shapes(path: str, source: nn.Module, target: nn.Module) -> None:
    """ValueError naming `path` unless both modules hold the same tensors with the same shapes."""
    theirs = {k: tuple(v.shape) for k, v in source.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    if theirs != ours:
        diff = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        shapes = ", ".join(f"{k}: teacher {theirs.get(k)} vs student {ours.get(k)}" for k in diff)
        raise ValueError(f"cannot share {path}: {shapes}")


@torch.no_grad()
def share_teacher_modules(
    student: Student, teacher: GemFM, groups: tuple[str, ...], frozen: bool
) -> list[str]:
    """Copy the modules of `groups` (keys of SHARE_GROUPS) from `teacher` into `student.backbone`.

    Every module is shape-checked before anything is copied. Frozen parameters get
    requires_grad False. Returns the taken parameters' names in `student.named_parameters()`.
    """
    unknown = sorted(set(groups) - set(SHARE_GROUPS))
    if unknown:
        raise ValueError(f"unknown share groups {unknown}; known: {sorted(SHARE_GROUPS)}")
    paths = [path for group in groups for path in SHARE_GROUPS[group]]
    pairs = [(path, teacher.get_submodule(path), student.backbone.get_submodule(path)) for path in paths]
    for path, source, target in pairs:
        _check_shapes(path, source, target)
    taken: list[str] = []
    for path, source, target in pairs:
        ours = target.state_dict()  # detached views sharing storage with the student's tensors
        for name, tensor in source.state_dict().items():
            ours[name].copy_(tensor)
        for name, parameter in target.named_parameters():
            parameter.requires_grad_(not frozen)
            taken.append(f"backbone.{path}.{name}")
    return taken
