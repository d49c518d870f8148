"""The transfer benchmark's committed setup: which datasets, methods, seeds and staleness levels it
measures, how big the worlds and models are, and how fast the `synthetic_drift` world moves.

`SYNTHETIC` is the committed full run, `QUICK` the CI smoke test's. The worlds' settings are fixed
here, never tuned per run.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.schema import SURFACES
from students.config import VM_BATCH_SIZE

# The ladder (students.config.METHODS, each rung adding to the one before), then beside it
# `kd_adapter`, the adapter under single-head KD, where a stale teacher supervises the served head
# itself, and `representation_no_adapter`, the representation rung without its adapter, where a stale
# teacher's embedding is a served input. Last, `kd_scaled` and `aux_head_scaled`: the two heads on
# targets biased up by ExFM's label scaling, where the auxiliary head's calibration claim can be seen
# with a teacher as calibrated as gem-fm.
METHOD_NAMES: tuple[str, ...] = (
    "alone",
    "kd",
    "aux_head",
    "adapter",
    "representation",
    "sharing",
    "full",
    "kd_adapter",
    "representation_no_adapter",
    "kd_scaled",
    "aux_head_scaled",
)
DATASETS: tuple[str, ...] = ("synthetic", "synthetic_drift", "movielens")


@dataclass(frozen=True)
class WorldDrift:
    """How fast the synthetic world moves each day (`WorldConfig`'s drift knobs): the share of a
    user's interest variance, of an ad's own latent part and of its bias replaced, the share of
    active ads retired for new ids, and the share of the market-wide click level's variance replaced."""

    user_drift: float
    ad_drift: float
    ad_bias_drift: float
    ad_churn: float
    market_drift: float


# ExFM's staleness premise needs a world that moves. The default world replaces 5% a day of each of
# users, ads and biases, and its market stands still; `synthetic_drift` is the same world moving
# faster, never tuned on its results: a quarter of the ads are new each day (a mean life of 4 days, so
# a 2-day-stale teacher has never seen 44% of the ads it scores), ads' own latents and biases drift 4x
# as fast, users' 2x (fixed before its first run). Its market-wide click level walks too (a quarter
# of its variance replaced a day: about 10% click rate from one day to the next, within +-20%), the
# shift in rates that ExFM's adapter is fit on fresh labels to correct; added after the rest showed
# staleness costing ranking alone, and fixed before its first run.
FAST_DRIFT = WorldDrift(user_drift=0.1, ad_drift=0.2, ad_bias_drift=0.2, ad_churn=0.25, market_drift=0.25)


@dataclass(frozen=True)
class TransferBenchConfig:
    """The committed benchmark setup: world size, days, models, seeds, methods, staleness."""

    days: int = 10  # the last is the test day
    events_per_day: int = 20_000
    n_users: int = 2_000
    history_length: int = 100
    world_seed: int = 7
    fm_size: str = "base"
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHOD_NAMES
    staleness: tuple[int, ...] = (0, 1, 2, 4)
    surfaces: tuple[str, ...] = SURFACES
    batch_size: int = 256  # gem-fm's minibatch and the domain FMs'
    vm_batch_size: int = VM_BATCH_SIZE  # the VMs', the product's own
    student_window_days: int = 0  # 0: every day all staleness levels have knowledge for
    datasets: tuple[str, ...] = DATASETS
    movielens_days: int = 12  # weeks of MovieLens-100k, one logical day each (31 exist)
    fast_drift: WorldDrift = FAST_DRIFT  # the `synthetic_drift` world's

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHOD_NAMES)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHOD_NAMES}")
        if set(self.datasets) - set(DATASETS):
            raise ValueError(
                f"unknown datasets {sorted(set(self.datasets) - set(DATASETS))}; known: {DATASETS}"
            )
        if min(self.batch_size, self.vm_batch_size) < 1:
            raise ValueError(
                f"minibatches must hold a row: batch_size {self.batch_size}, "
                f"vm_batch_size {self.vm_batch_size}"
            )
        if 0 not in self.staleness:
            raise ValueError("staleness must include 0: the fresh teacher is the reference")
        if min(self.days, self.movielens_days) < max(self.staleness) + 4:
            raise ValueError(
                f"{self.days} days leave no student day for a teacher {max(self.staleness)} days stale"
            )

    def student_days(self, days: list[str]) -> list[str]:
        """The days every VM trains on: every teacher has knowledge for them at every staleness.

        The FM trained through day 1 teaches day 2 + k; the domain FM it taught on that day
        teaches day 3 + k: the first day the hierarchical VM can learn.
        """
        first = 3 + max(self.staleness)  # 1-based
        window = days[first - 1 : -1]
        return window[-self.student_window_days :] if self.student_window_days else window

    def evaluation_days(self, days: list[str]) -> list[str]:
        """The day after each student day (the last is the test day): each VM is measured on it by
        its version trained through the day before, as it would serve."""
        start = days.index(self.student_days(days)[0]) + 1
        return days[start:]


SYNTHETIC = TransferBenchConfig()
QUICK = TransferBenchConfig(
    days=5,
    events_per_day=3_000,
    n_users=300,
    history_length=20,
    fm_size="tiny",
    seeds=(0,),
    staleness=(0, 1),
    surfaces=("facebook_feed",),
    datasets=("synthetic", "movielens"),
    movielens_days=5,
)
