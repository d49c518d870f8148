"""Lineage: from any registered version, the chain of teachers behind it, down to the FM.

Every student version carries a `teacher` tag (`<name>/<version>`); `gem-fm` versions
carry none. Walking the tags from `models:/vm-<surface>/<v>` gives the exact domain FM
version and the exact `gem-fm` version whose knowledge it learned from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra import registry
from infra.settings import Settings

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
_TEACHER_TAG = re.compile(r"^(?P<name>[^/]+)/(?P<version>\d+)$")
LINEAGE_TAGS = (
    "trained_through",
    "teacher",
    "teacher_trained_through",
    "examples_version",
    "teacher_outputs_version",
    "gate",
)


class LineageError(LookupError):
    """A model URI that does not resolve, or a broken `teacher` tag along the chain."""


@dataclass(frozen=True)
class LineageStep:
    """One version on the chain, with its lineage tags."""

    ref: registry.ModelRef
    tags: dict[str, str]


def resolve_model_uri(settings: Settings, uri: str) -> registry.ModelRef:
    """`models:/<name>/<version>` or `models:/<name>@<alias>` -> the registered version."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise LineageError(f"expected models:/<name>/<version> or models:/<name>@<alias>, got {uri!r}")
    name = match["name"]
    if match["version"] is not None:
        found = registry.get_version(settings, name, int(match["version"]))
    else:
        found = registry.alias_version(settings, name, match["alias"])
    if found is None:
        raise LineageError(f"{uri} is not registered")
    return found


def walk_lineage(settings: Settings, uri: str, max_depth: int = 8) -> list[LineageStep]:
    """The version behind `uri`, then its teacher, its teacher's teacher, ... (the FM last)."""
    steps = [LineageStep(resolve_model_uri(settings, uri), {})]
    while True:
        step = steps[-1] = LineageStep(steps[-1].ref, registry.version_tags(settings, steps[-1].ref))
        teacher = step.tags.get("teacher")
        if teacher is None:
            return steps
        match = _TEACHER_TAG.match(teacher)
        if match is None:
            raise LineageError(f"{step.ref.uri} has a malformed teacher tag {teacher!r}")
        if len(steps) >= max_depth:
            raise LineageError(f"lineage of {uri} is deeper than {max_depth}: a cycle?")
        found = registry.get_version(settings, match["name"], int(match["version"]))
        if found is None:
            raise LineageError(f"{step.ref.uri} names teacher {teacher}, which is not registered")
        steps.append(LineageStep(found, {}))


def format_lineage(steps: list[LineageStep]) -> list[str]:
    """One line per version, student first, each with its lineage tags."""
    lines = []
    for depth, step in enumerate(steps):
        arrow = "" if depth == 0 else "  " * (depth - 1) + "└─ taught by "
        tags = "  ".join(f"{k}={step.tags[k]}" for k in LINEAGE_TAGS if k in step.tags)
        lines.append(f"{arrow}{step.ref.uri}  {tags}")
    return lines
