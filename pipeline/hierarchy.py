"""The model hierarchy: which students exist, what each one covers and who teaches it.

`gem-fm` teaches one domain FM per domain (`domain-fm-<domain>`, trained on the
domain's surfaces). Each surface has a vertical model (`vm-<surface>`) taught by
its domain FM (the hierarchical path) or by `gem-fm` itself (the direct path),
chosen by `DISTILLERY_TRANSFER_PATH`. A student's teacher never changes over its
life: its adapter and representation inputs are fit to that teacher's outputs.
Light on purpose (no torch): the DAG file reads these names at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.schema import DOMAINS, SURFACE_DOMAINS, SURFACES

FM_NAME = "gem-fm"  # the foundation model at the top
DOMAIN_FM_PREFIX = "domain-fm-"
VM_PREFIX = "vm-"


@dataclass(frozen=True)
class StudentSpec:
    """One student model: its registered name, kind, the surfaces it learns and its teacher; and the name
    its random numbers (initial weights, each day's batch order) are drawn under, its own by default.
    Variants of one student that share `seed_name` differ only by what they learn, not by their luck."""

    name: str
    kind: str  # "domain" or "vm"
    surfaces: tuple[str, ...]
    teacher: str  # the registered name of the model whose knowledge it learns from
    seed_name: str = ""  # "": `name`

    @property
    def seed_key(self) -> str:
        """The name the student's random streams are seeded by."""
        return self.seed_name or self.name


def domain_fm_name(domain: str) -> str:
    """`domain-fm-<domain>`."""
    return f"{DOMAIN_FM_PREFIX}{domain}"


def vm_name(surface: str) -> str:
    """`vm-<surface>`."""
    return f"{VM_PREFIX}{surface}"


def domain_fm(domain: str) -> StudentSpec:
    """The domain FM of `domain`, taught by `gem-fm` on the domain's surfaces."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {DOMAINS}")
    surfaces = tuple(s for s in SURFACES if SURFACE_DOMAINS[s] == domain)
    return StudentSpec(domain_fm_name(domain), "domain", surfaces, FM_NAME)


def vertical_model(surface: str, path: str) -> StudentSpec:
    """The VM of `surface`; `path` "hierarchical" (its domain FM teaches) or "direct" (gem-fm does)."""
    if surface not in SURFACES:
        raise ValueError(f"unknown surface {surface!r}; known: {SURFACES}")
    if path not in ("hierarchical", "direct"):
        raise ValueError(f"transfer path must be 'hierarchical' or 'direct', got {path!r}")
    teacher = domain_fm_name(SURFACE_DOMAINS[surface]) if path == "hierarchical" else FM_NAME
    return StudentSpec(vm_name(surface), "vm", (surface,), teacher)


def student_spec(name: str, path: str) -> StudentSpec:
    """The spec of a registered student name (`domain-fm-<domain>` or `vm-<surface>`)."""
    if name.startswith(DOMAIN_FM_PREFIX):
        return domain_fm(name.removeprefix(DOMAIN_FM_PREFIX))
    if name.startswith(VM_PREFIX):
        return vertical_model(name.removeprefix(VM_PREFIX), path)
    raise ValueError(
        f"{name!r} is not a student: expected {DOMAIN_FM_PREFIX}<domain> or {VM_PREFIX}<surface>"
    )


def all_students(path: str) -> list[StudentSpec]:
    """Every domain FM, then every VM."""
    return [domain_fm(d) for d in DOMAINS] + [vertical_model(s, path) for s in SURFACES]
