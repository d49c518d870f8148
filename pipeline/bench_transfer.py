"""`distillery bench transfer`: how much of the FM's advantage each transfer method carries into the VMs.

One temporary lake per dataset, built by the product's own steps (land, ingest,
examples; the last day is the test day). On it, with the product's functions:

1. `gem-fm` trained continually on every day but the last, each day registered;
2. for each teacher staleness k: `gem-fm`'s knowledge of every day from the version
   trained through `ds-1-k` (the Spark job, delay k);
3. for each seed: the domain FMs trained on that knowledge (for the hierarchical
   method), registered, and their knowledge of their domain; then one VM per
   (surface, method) trained over the same window of days (the days every staleness
   has knowledge for) and measured progressively, as it would serve: on the day after
   each window day by the version trained through that day, the window's last day
   being the test day. NE, AUC and calibration of the serving head's click predictions
   on its surface, pooled over those evaluation days. `alone` learns nothing from a
   teacher: it is trained once, fresh, and stands for itself at every staleness.

Transfer ratio (METHODS.md) = (NE_alone - NE_method) / (NE_alone - NE_teacher), all on
the VM's evaluation slice, NE_teacher being fresh `gem-fm`'s (k = 0) logged predictions.
The k-stale gem-fm's own logged predictions on the same slices are measured too: what
staleness costs the teacher itself (ExFM's premise), beside what it costs each VM.
Calibration over several VMs pools their clicks (predicted over observed, summed). In the
synthetic worlds every test row's true click probability is known (the one its label was drawn
with), so there calibration is also measured against the expected clicks (`true_calibration`),
free of the observed clicks' sampling noise.
Bench students get their own registered names (`<name>.<method>.s<seed>.k<k>`), so a
bench lake never mixes variants. Writes `transfer.json`, `transfer.md` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.days import shift_day
from infra.schema import SURFACE_DOMAINS, SURFACES
from infra.settings import Settings
from pipeline.hierarchy import FM_NAME, StudentSpec, domain_fm, vertical_model
from teacher.train import TrainConfig

if TYPE_CHECKING:
    from infra.sources.synthetic import SyntheticWorld

# The ladder (students.config.METHODS, each rung adding to the one before), then `kd_adapter` beside
# it: the adapter under single-head KD, where a stale teacher supervises the served head itself.
METHOD_NAMES: tuple[str, ...] = (
    "alone",
    "kd",
    "aux_head",
    "adapter",
    "representation",
    "sharing",
    "full",
    "kd_adapter",
)
METRICS: tuple[str, ...] = ("ne", "auc", "calibration")
# A VM's click distillation targets against the labels of its training rows (mean log loss): the
# targets it learned from (adapted, when it has an adapter) and its teacher's own.
TARGET_METRICS: tuple[str, ...] = ("target_log_loss", "teacher_log_loss")
# Where the world is synthetic: the evaluation slice's expected clicks (true probabilities summed) and
# the calibration against them (predicted over expected clicks).
TRUTH_METRICS: tuple[str, ...] = ("expected_clicks", "true_calibration")
# The serving head's predictions of one day, as `SliceEvaluator.update` takes them:
# logits (N, T), labels (N, T), label mask (N, T), surface codes (N,).
Batch = tuple[Any, Any, Any, Any]
DATASETS: tuple[str, ...] = ("synthetic", "synthetic_drift", "movielens")
MOVIELENS_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "recbole"


@dataclass(frozen=True)
class WorldDrift:
    """How fast the synthetic world moves each day (`WorldConfig`'s drift knobs): the share of a
    user's interest variance, of an ad's own latent part and of its bias replaced, and the share of
    active ads retired for new ids."""

    user_drift: float
    ad_drift: float
    ad_bias_drift: float
    ad_churn: float


# ExFM's staleness premise needs a world that moves. The default world replaces 5% a day of each;
# `synthetic_drift` is the same world moving faster, fixed here before its first run, never tuned on
# its results: a quarter of the ads are new each day (a mean life of 4 days, so a 2-day-stale teacher
# has never seen 44% of the ads it scores), ads' own latents and biases drift 4x as fast, users' 2x.
FAST_DRIFT = WorldDrift(user_drift=0.1, ad_drift=0.2, ad_bias_drift=0.2, ad_churn=0.25)


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
    batch_size: int = 256
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


@dataclass
class Measured:
    """Metrics over the evaluation days (with their clicks) per (seed, staleness, method, surface), and
    gem-fm's logged ones per (staleness, surface)."""

    students: dict[tuple[int, int, str, str], dict[str, float]] = field(default_factory=dict)
    teachers: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)
    domain_teacher: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)  # fresh, per seed
    seconds: dict[str, float] = field(default_factory=dict)
    ne_by_day: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> day -> click NE
    # surface -> its evaluation slice's expected clicks, in the synthetic worlds only
    expected_clicks: dict[str, float] = field(default_factory=dict)

    def with_truth(self, surface: str, metrics: dict[str, float]) -> dict[str, float]:
        """`metrics` on `surface`'s evaluation slice, with the slice's expected clicks where known."""
        if surface not in self.expected_clicks:
            return metrics
        return metrics | {"expected_clicks": self.expected_clicks[surface]}


def _slice_metrics(metrics: dict[str, float], surface: str) -> dict[str, float]:
    return {name: metrics.get(f"click/{name}/{surface}", math.nan) for name in METRICS}


def pooled_metrics(batches: dict[str, Batch], surface: str) -> tuple[dict[str, float], dict[str, float]]:
    """Click metrics on `surface` over every day's batch together, with its clicks; and each day's NE."""
    from pipeline.metrics import SliceEvaluator
    from pipeline.train_student import TASKS

    pooled, by_day = SliceEvaluator(TASKS, SURFACES), {}
    for day, batch in batches.items():
        daily = SliceEvaluator(TASKS, SURFACES)
        daily.update(*batch)
        pooled.update(*batch)
        by_day[day] = daily.compute().get(f"click/ne/{surface}", math.nan)
    clicks = pooled.positives("click", surface)
    return _slice_metrics(pooled.compute(), surface) | {"clicks": clicks}, by_day


def train_fm_days(settings: Settings, days: list[str], size: str, seed: int, batch_size: int) -> None:
    """`gem-fm` trained and registered through each of `days`."""
    from pipeline.fm_release import register_fm
    from pipeline.train_fm import FMTrainingConfig, train_fm

    config = FMTrainingConfig(size=size, train=TrainConfig.for_size(size, seed=seed, batch_size=batch_size))
    for ds in days:
        train_fm(settings, ds, config)
        register_fm(settings, ds)


def write_fm_knowledge(settings: Settings, days: list[str], delay: int, spark: Any) -> None:
    """`gem-fm`'s knowledge of each day that has a version trained through `ds-1-delay`."""
    from infra import registry
    from pipeline.knowledge import KnowledgeConfig, generate_teacher_knowledge

    for ds in days:
        teacher = registry.find_version(settings, FM_NAME, "trained_through", shift_day(ds, -1 - delay))
        if teacher is not None:
            config = KnowledgeConfig(delay_days=delay)
            generate_teacher_knowledge(settings, FM_NAME, ds, config, version=teacher.version, spark=spark)


def _variant(spec: StudentSpec, tag: str) -> StudentSpec:
    """`spec` under a bench name; it draws the same random numbers as every other variant of `spec`
    (common random numbers), so a seed's methods and staleness levels differ only by what they learn."""
    return dataclasses.replace(spec, name=f"{spec.name}.{tag}", seed_name=spec.seed_key)


def train_domain_fms(
    settings: Settings,
    days: list[str],
    domains: list[str],
    tag: str,
    train: TrainConfig,
    spark: Any,
    taught: list[str],
) -> dict[str, StudentSpec]:
    """Domain FMs (bench names) trained on every day but the last that has gem-fm's knowledge, registered;
    their knowledge of each day the VMs learn or are measured on (`taught`), from the version trained
    the day before."""
    from infra import registry
    from pipeline.knowledge import KnowledgeConfig, generate_teacher_knowledge
    from pipeline.student_data import MissingKnowledgeError
    from pipeline.student_release import distill_student
    from pipeline.train_student import DistillConfig

    config = DistillConfig(train=train)
    specs = {d: _variant(domain_fm(d), tag) for d in domains}
    for ds in days:
        for spec in specs.values():
            previous = (
                registry.find_version(settings, spec.name, "trained_through", shift_day(ds, -1))
                if ds in taught
                else None  # no VM learns or is measured on ds: its knowledge is not needed
            )
            if previous is not None:
                generate_teacher_knowledge(
                    settings,
                    spec.name,
                    ds,
                    KnowledgeConfig(),
                    version=previous.version,
                    spark=spark,
                    surfaces=spec.surfaces,
                )
            if ds != days[-1]:
                try:
                    distill_student(settings, spec, ds, config)
                except MissingKnowledgeError:
                    continue  # the first days: gem-fm teaches nothing yet at this staleness
    return specs


def train_and_measure_vm(
    settings: Settings, spec: StudentSpec, method: str, days: list[str], train: TrainConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """Train the VM `spec` with `method` over `days`; its click metrics on its surface pooled over the
    day after each (by the version trained through the day before), and its NE on each of them. Beside
    them, `TARGET_METRICS`: how well its click distillation targets predicted the labels it trained on,
    the mean over `days` (NaN without distillation)."""
    from infra.checkpoints import checkpoint_uri
    from pipeline.student_data import student_evaluation_rows
    from pipeline.student_release import student_predictions
    from pipeline.train_student import TASKS, DistillConfig, load_student, sequence_length, train_student

    config = DistillConfig(path="direct", vm_method="full" if method == "full" else method, train=train)
    batches, trained = {}, []
    for ds in days:
        trained.append(train_student(settings, spec, ds, config))
        student, _ = load_student(checkpoint_uri(settings.lake, spec.name, ds))
        day = shift_day(ds, 1)
        rows = student_evaluation_rows(settings, spec, day, TASKS, sequence_length(student.config.transfer))
        batches[day] = student_predictions(student, rows)
    metrics, by_day = pooled_metrics(batches, spec.surfaces[0])
    targets = {m: _mean([t.get(f"{m}_click", math.nan) for t in trained]) for m in TARGET_METRICS}
    return metrics | targets, by_day


def teacher_metrics(
    settings: Settings, surface: str, days: list[str], teacher: str = FM_NAME
) -> dict[str, float]:
    """Click metrics of `teacher`'s logged logits (the current knowledge) on `surface`, pooled over `days`."""
    import torch

    from pipeline.student_data import student_evaluation_rows
    from pipeline.train_fm import labels_and_mask
    from pipeline.train_student import TASKS

    spec = dataclasses.replace(vertical_model(surface, "direct"), teacher=teacher)
    batches = {}
    for day in days:
        table = student_evaluation_rows(settings, spec, day, TASKS).table
        logits = torch.stack([torch.tensor(table[f"teacher_logit_{t}"].to_numpy()) for t in TASKS], dim=1)
        labels, mask = labels_and_mask(table, TASKS)
        codes = torch.full((table.num_rows,), SURFACES.index(surface))
        batches[day] = (logits, labels, mask.bool(), codes)
    return pooled_metrics(batches, surface)[0]


def expected_clicks(
    settings: Settings, world: SyntheticWorld, surfaces: tuple[str, ...], days: list[str]
) -> dict[str, float]:
    """The clicks `world` expects on each surface's evaluation slice over `days`: the sum of the true
    click probabilities its labels were drawn with, over the rows the click metrics count. Each day
    is generated once for every surface."""
    import pyarrow.compute as pc

    from pipeline.student_data import student_evaluation_rows
    from pipeline.train_fm import labels_and_mask
    from pipeline.train_student import TASKS

    totals = dict.fromkeys(surfaces, 0.0)
    for day in days:
        truth = world.day_click_probabilities(day)
        p_click = truth["p_click"].to_numpy()
        for surface in surfaces:
            table = student_evaluation_rows(settings, vertical_model(surface, "direct"), day, TASKS).table
            at = pc.index_in(table["example_id"], value_set=truth["event_id"])
            if at.null_count:
                raise ValueError(
                    f"{day}: {at.null_count} {surface} rows are not events of the synthetic world"
                )
            counted = labels_and_mask(table, TASKS)[1][:, TASKS.index("click")].numpy() > 0
            totals[surface] += float(p_click[at.to_numpy()][counted].sum())
    return totals


def fm_ne_by_day(settings: Settings, days: list[str]) -> dict[str, float]:
    """Progressive click NE of gem-fm: the checkpoint trained through each day, on the next day."""
    from infra.checkpoints import checkpoint_uri
    from pipeline.evaluate_fm import evaluate_on_day
    from pipeline.train_fm import load_fm

    measured = {}
    for through, day in itertools.pairwise(days):
        model, _ = load_fm(checkpoint_uri(settings.lake, FM_NAME, through))
        measured[day] = evaluate_on_day(model, through, settings.table_uri("examples"), day)["click/ne"]
    return measured


def domain_fm_ne_by_day(settings: Settings, spec: StudentSpec, days: list[str]) -> dict[str, float]:
    """Progressive click NE of a domain FM on its surfaces: each version on the day after it was trained."""
    from infra.checkpoints import checkpoint_exists, checkpoint_uri
    from pipeline.student_data import student_evaluation_rows
    from pipeline.student_release import evaluate_student
    from pipeline.train_student import TASKS, load_student, sequence_length

    measured = {}
    for through, day in itertools.pairwise(days):
        uri = checkpoint_uri(settings.lake, spec.name, through)
        if not checkpoint_exists(uri):
            continue
        student, _ = load_student(uri)
        rows = student_evaluation_rows(settings, spec, day, TASKS, sequence_length(student.config.transfer))
        measured[day] = evaluate_student(student, rows)["click/ne"]
    return measured


def learns_from_teacher(method: str) -> bool:
    """Whether a VM of `method` reads anything of its teacher (outputs or weights), and so depends on
    the teacher's staleness."""
    from students.config import METHODS

    transfer = METHODS[method]
    return transfer.uses_teacher or bool(transfer.share)


def measure_dataset(
    settings: Settings, cfg: TransferBenchConfig, days: list[str], world: SyntheticWorld | None = None
) -> Measured:
    """Everything the report needs on one lake whose examples exist for `days`; with the synthetic
    `world` that generated them, each evaluation slice's expected clicks too."""
    from infra.spark import get_spark

    spark = get_spark(settings)
    measured = Measured()
    window, evaluation = cfg.student_days(days), cfg.evaluation_days(days)
    start = time.perf_counter()
    train_fm_days(settings, days[:-1], cfg.fm_size, cfg.seeds[0], cfg.batch_size)
    measured.seconds["fm"] = time.perf_counter() - start
    for delay in sorted(cfg.staleness):
        write_fm_knowledge(settings, days, delay, spark)
        if delay == 0 and world is not None:  # the slices' rows are read with the knowledge
            measured.expected_clicks = expected_clicks(settings, world, cfg.surfaces, evaluation)
        for surface in cfg.surfaces:
            measured.teachers[delay, surface] = measured.with_truth(
                surface, teacher_metrics(settings, surface, evaluation)
            )
        for seed in cfg.seeds:
            train = TrainConfig(seed=seed, batch_size=cfg.batch_size)
            tag = f"s{seed}.k{delay}"
            needed = sorted({SURFACE_DOMAINS[s] for s in cfg.surfaces}) if "full" in cfg.methods else []
            domains = train_domain_fms(settings, days, needed, tag, train, spark, window + evaluation)
            if delay == 0 and domains:
                for surface in cfg.surfaces:
                    teacher = domains[SURFACE_DOMAINS[surface]].name
                    measured.domain_teacher[seed, surface] = measured.with_truth(
                        surface, teacher_metrics(settings, surface, evaluation, teacher)
                    )
            for surface in cfg.surfaces:
                for method in cfg.methods:
                    if delay != 0 and not learns_from_teacher(method):
                        measured.students[seed, delay, method, surface] = measured.students[
                            seed, 0, method, surface
                        ]
                        continue
                    spec = _variant(vertical_model(surface, "direct"), f"{method}.{tag}")
                    if method == "full":
                        spec = dataclasses.replace(spec, teacher=domains[SURFACE_DOMAINS[surface]].name)
                    began = time.perf_counter()
                    metrics, by_day = train_and_measure_vm(settings, spec, method, window, train)
                    measured.students[seed, delay, method, surface] = measured.with_truth(surface, metrics)
                    measured.seconds[f"vm {method}"] = measured.seconds.get(f"vm {method}", 0.0) + (
                        time.perf_counter() - began
                    )
                    if delay == 0 and seed == cfg.seeds[0] and method in ("alone", "full"):
                        measured.ne_by_day[f"vm-{surface} ({method})"] = by_day
            if delay == 0 and seed == cfg.seeds[0]:
                for spec in domains.values():
                    measured.ne_by_day[spec.name.split(".")[0]] = domain_fm_ne_by_day(settings, spec, days)
    measured.ne_by_day[FM_NAME] = fm_ne_by_day(settings, days)
    return measured


def transfer_ratio(alone: float, student: float, teacher: float) -> float:
    """(NE_alone - NE_student) / (NE_alone - NE_teacher); NaN when the teacher has no advantage."""
    gap = alone - teacher
    return (alone - student) / gap if gap > 0 else math.nan


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _std(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.stdev(finite) if len(finite) > 1 else 0.0


def _over_surfaces(records: list[dict[str, float]], metric: str) -> float:
    """One seed's `metric` over its VMs: the mean; clicks add up, and calibration pools the clicks
    (every VM's predicted clicks over every VM's observed ones, or expected ones: `true_calibration`)."""
    if metric == "clicks":
        return sum(r["clicks"] for r in records)
    clicked = [r for r in records if r["clicks"] > 0]
    if metric in ("calibration", "true_calibration"):
        over = "clicks" if metric == "calibration" else "expected_clicks"
        total = sum(r[over] for r in clicked)
        return sum(r["calibration"] * r["clicks"] for r in clicked) / total if total else math.nan
    if metric == "expected_clicks":
        return sum(r["expected_clicks"] for r in clicked)
    return _mean([r[metric] for r in records])


def _ratio_to_alone(
    measured: Measured, cfg: TransferBenchConfig, seed: int, surface: str, model: dict[str, float]
) -> float:
    """`model`'s transfer ratio on `surface`: against the same seed's VM alone (fresh teacher) and gem-fm."""
    alone = measured.students[seed, 0, "alone", surface]["ne"] if "alone" in cfg.methods else math.nan
    return transfer_ratio(alone, model["ne"], measured.teachers[0, surface]["ne"])


def _over_seeds(
    measured: Measured, cfg: TransferBenchConfig, model: Callable[[int, str], dict[str, float]]
) -> dict[str, float]:
    """A model's metrics (`model(seed, surface)`): each seed's over the surfaces (`_over_surfaces`), then
    the mean and spread over seeds (and each seed's NE, for paired comparisons), with its transfer ratio
    against the same seed's VM alone; a VM's `TARGET_METRICS` likewise, and `TRUTH_METRICS` (with the
    spread of `true_calibration`) where the world is synthetic."""

    def per_seed(metric: str) -> list[float]:
        return [_over_surfaces([model(s, v) for v in cfg.surfaces], metric) for s in cfg.seeds]

    ratios = [
        _mean([_ratio_to_alone(measured, cfg, s, v, model(s, v)) for v in cfg.surfaces]) for s in cfg.seeds
    ]
    measured_here = set(model(cfg.seeds[0], cfg.surfaces[0]))
    truth = TRUTH_METRICS if "expected_clicks" in measured_here else ()
    metrics = (*METRICS, "clicks", *truth, *(m for m in TARGET_METRICS if m in measured_here))
    spread = {"true_calibration_std": _std(per_seed("true_calibration"))} if truth else {}
    return (
        {m: _mean(per_seed(m)) for m in metrics}
        | spread
        | {
            "ne_std": _std(per_seed("ne")),
            "ne_by_seed": per_seed("ne"),
            "transfer_ratio": _mean(ratios),
            "transfer_ratio_std": _std(ratios),
        }
    )


def summarise(measured: Measured, cfg: TransferBenchConfig) -> dict[str, Any]:
    """Per method (fresh teacher), then per staleness: over surfaces and seeds, the seeds' spread; and
    the hierarchy's first hop (`domain_teacher`: the fresh domain FMs' logged knowledge on each VM's
    slice, and the share of gem-fm's advantage over the VM alone it kept) when domain FMs were trained;
    gem-fm's own logged metrics, fresh (`teacher`) and per staleness (`teacher_by_staleness`)."""

    def student(method: str, delay: int = 0) -> Callable[[int, str], dict[str, float]]:
        return lambda seed, surface: measured.students[seed, delay, method, surface]

    methods: dict[str, Any] = {}
    for method in cfg.methods:
        model = student(method)
        vms = {
            v: {m: _mean([model(s, v)[m] for s in cfg.seeds]) for m in METRICS}
            | {
                "transfer_ratio": _mean(
                    [_ratio_to_alone(measured, cfg, s, v, model(s, v)) for s in cfg.seeds]
                )
            }
            for v in cfg.surfaces
        }
        methods[method] = _over_seeds(measured, cfg, model) | {"vms": vms}
    staleness = {
        str(k): {method: _over_seeds(measured, cfg, student(method, k)) for method in cfg.methods}
        for k in cfg.staleness
    }

    def teacher(delay: int) -> dict[str, float]:
        slices = [measured.teachers[delay, v] for v in cfg.surfaces]
        truth = TRUTH_METRICS if measured.expected_clicks else ()
        return {m: _over_surfaces(slices, m) for m in (*METRICS, "clicks", *truth)}

    summary = {
        "methods": methods,
        "staleness": staleness,
        "teacher": teacher(0) | {"vms": {v: measured.teachers[0, v] for v in cfg.surfaces}},
        "teacher_by_staleness": {str(k): teacher(k) for k in cfg.staleness},
    }
    if measured.domain_teacher:
        summary["domain_teacher"] = _over_seeds(measured, cfg, lambda s, v: measured.domain_teacher[s, v])
    return summary


def bench_settings(settings: Settings, root: str, cfg: TransferBenchConfig) -> Settings:
    """Settings of a temporary bench lake and MLflow store under `root`."""
    return dataclasses.replace(
        settings,
        lake=f"{root}/lake",
        mlflow_uri=f"sqlite:///{root}/mlruns.db",
        events_per_day=cfg.events_per_day,
        n_users=cfg.n_users,
        history_length=cfg.history_length,
        seed=cfg.world_seed,
        fm_size=cfg.fm_size,
        source="synthetic",
    )


def drifting_world(settings: Settings, cfg: TransferBenchConfig) -> SyntheticWorld:
    """The `synthetic_drift` world: the bench's synthetic world (`settings`) moving at `cfg.fast_drift`."""
    from infra.sources.select import world_config
    from infra.sources.synthetic import SyntheticWorld

    return SyntheticWorld(dataclasses.replace(world_config(settings), **dataclasses.asdict(cfg.fast_drift)))


def run_dataset(settings: Settings, cfg: TransferBenchConfig, dataset: str) -> dict[str, Any]:
    """One dataset's measurements in a temporary lake: the synthetic world; or, written as daily event
    files and read by the `files` source as users' own logs are, the drifting world or MovieLens-100k."""
    from infra.sources.movielens import write_movielens_events
    from infra.sources.select import world_config
    from infra.sources.synthetic import SyntheticWorld, write_world_events
    from pipeline.bench_teacher import bench_days, build_lake

    with tempfile.TemporaryDirectory(prefix=f"distillery-bench-transfer-{dataset}-") as root:
        lake = bench_settings(settings, root, cfg)
        world = None  # MovieLens: no hidden truth
        if dataset == "synthetic":
            days = bench_days(lake.start_date, cfg.days)
            world = SyntheticWorld(world_config(lake))
        else:
            lake = dataclasses.replace(lake, source="files", events_dir=f"{root}/events")
            if dataset == "movielens":
                days = write_movielens_events(
                    Path(lake.events_dir), lake.start_date, MOVIELENS_CACHE, cfg.movielens_days
                )
            else:
                days = bench_days(lake.start_date, cfg.days)
                world = drifting_world(lake, cfg)
                write_world_events(world, Path(lake.events_dir), days)
        build_lake(lake, days)
        measured = measure_dataset(lake, cfg, days, world)
    summary = summarise(measured, cfg)
    summary["setup"] = dataclasses.asdict(cfg) | {
        "days_list": days,
        "student_days": cfg.student_days(days),
        "evaluation_days": cfg.evaluation_days(days),
    }
    summary["seconds"] = measured.seconds
    summary["ne_by_day"] = measured.ne_by_day
    return summary


def run_datasets(settings: Settings, cfg: TransferBenchConfig) -> dict[str, dict[str, Any]]:
    """Every dataset's summary, one dataset after another, each with the whole machine (its own
    temporary lake and registry; torch and the Spark job both use every core). Side by side, one core
    each, took longer in all (docs/architecture.md, Benchmarks)."""
    return {name: run_dataset(settings, cfg, name) for name in cfg.datasets}


def model_sizes(cfg: TransferBenchConfig) -> dict[str, dict[str, float]]:
    """Parameters and forward FLOPs per example of gem-fm, a domain FM and each method's VM."""
    from pipeline.train_student import DOMAIN_TRANSFER
    from students.config import METHODS, StudentConfig, student_backbone
    from students.model import Student
    from teacher.config import config_for
    from teacher.model import GemFM, count_parameters, forward_flops_per_example

    fm = config_for(cfg.fm_size)
    sizes = {
        FM_NAME: {
            "parameters": count_parameters(GemFM(fm)),
            "flops_per_example": forward_flops_per_example(fm),
        }
    }
    students = {"domain-fm": ("domain", DOMAIN_TRANSFER)} | {
        f"vm ({m})": ("vm", METHODS[m]) for m in cfg.methods
    }
    for name, (kind, transfer) in students.items():
        backbone = student_backbone(kind, fm, transfer.share)
        student = Student(StudentConfig(backbone, transfer, fm.embed_dim))
        sizes[name] = {
            "parameters": count_parameters(student),
            "flops_per_example": forward_flops_per_example(backbone),
        }
    return sizes


def run_transfer_benchmark(settings: Settings, cfg: TransferBenchConfig, out_dir: str) -> dict[str, Any]:
    """Measure every dataset, check the claims, write `transfer.json`, `transfer.md`, plots; log to MLflow."""
    import os
    import platform

    import torch

    from infra.registry import git_sha
    from pipeline.bench_transfer_report import claims

    start, started = time.perf_counter(), _utc_now()
    datasets = run_datasets(settings, cfg)
    for data in datasets.values():
        data["claims"] = claims(data)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "code": git_sha(),  # the commit that measured it: a join refuses runs of different code
        "datasets": datasets,
        "models": model_sizes(cfg),
        "wall_seconds": time.perf_counter() - start,
        "started": started,  # UTC: a join of runs that overlapped tells their elapsed time from these
        "finished": _utc_now(),
    }
    write_transfer_report(settings, report, out_dir, dataclasses.asdict(cfg))
    return report


def _utc_now() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_transfer_report(
    settings: Settings, report: dict[str, Any], out_dir: str, params: dict[str, Any]
) -> list[Path]:
    """Write `transfer.json`, `transfer.md` and the plots into `out_dir`, log them with the headline
    numbers and `params` as one MLflow run, print the Markdown; returns the files."""
    import json

    from infra import registry
    from pipeline.bench_transfer_report import markdown, plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(_undefined_as_null(report), indent=2, allow_nan=False))
    text = markdown(report)
    (out / "transfer.md").write_text(text + "\n")
    files = [out / "transfer.json", out / "transfer.md", *plots(report, out)]
    headline = {
        f"{name}/{method}/{metric}": value
        for name, data in report["datasets"].items()
        for method, values in data["methods"].items()
        for metric, value in values.items()
        if metric in ("ne", "transfer_ratio")
    }
    registry.log_report(settings, "bench-transfer", files, headline, params)
    print(text)
    return files


def _undefined_as_null(value: Any) -> Any:
    """The report with NaN (an undefined ratio: no teacher advantage, one seed's spread) as JSON null."""
    if isinstance(value, dict):
        return {str(k): _undefined_as_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_undefined_as_null(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
