"""The transfer benchmark's measurements on one lake: gem-fm trained day by day, its knowledge at
every staleness, the domain FMs and every VM trained and measured as they would serve.

`measure_dataset` returns a `Measured`: per (seed, staleness, method, surface) each VM's click
metrics pooled over its evaluation days, beside gem-fm's and the domain FMs' logged predictions on
the same slices, the clicks each slice gets at the click rate of the day before (`label_rate_clicks`)
and, in the synthetic worlds, each slice's expected clicks.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.days import shift_day
from infra.schema import SURFACE_DOMAINS, SURFACES
from infra.settings import Settings
from pipeline.bench_transfer_config import TransferBenchConfig
from pipeline.hierarchy import FM_NAME, StudentSpec, domain_fm, vertical_model
from teacher.train import TrainConfig

if TYPE_CHECKING:
    from infra.sources.synthetic import SyntheticWorld

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


def finite_mean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN if none is."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


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
    # surface -> its evaluation slice's clicks at the click rate of the day before each day
    label_rate_clicks: dict[str, float] = field(default_factory=dict)

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
    """`gem-fm`'s knowledge of each day that has a version trained through `ds-1-delay`; a day with no
    such version has none, as with a teacher `delay` days late in the product. Knowledge of another
    delay written before is removed there: a VM learns that day's caught-up rows (conversions that
    arrived late) beside its own, and they must not carry a fresher teacher's outputs."""
    from infra import registry
    from infra.delta import delete_partition, partitions
    from pipeline.knowledge import KnowledgeConfig, generate_teacher_knowledge
    from pipeline.student_data import OUTPUTS_TABLE

    outputs = settings.table_uri(OUTPUTS_TABLE)
    for ds in days:
        teacher = registry.find_version(settings, FM_NAME, "trained_through", shift_day(ds, -1 - delay))
        if teacher is not None:
            config = KnowledgeConfig(delay_days=delay)
            generate_teacher_knowledge(settings, FM_NAME, ds, config, version=teacher.version, spark=spark)
        elif ds in partitions(outputs):
            delete_partition(outputs, ds, {"teacher": FM_NAME})


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
    settings: Settings,
    spec: StudentSpec,
    method: str,
    days: list[str],
    train: TrainConfig,
    vm_batch_size: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Train the VM `spec` with `method` over `days` (`train`, in minibatches of `vm_batch_size`); its
    click metrics on its surface pooled over the day after each (by the version trained through the day
    before), and its NE on each of them. Beside them, `TARGET_METRICS`: how well its click distillation
    targets predicted the labels it trained on, the mean over `days` (NaN without distillation)."""
    from infra.checkpoints import checkpoint_uri
    from pipeline.student_data import student_evaluation_rows
    from pipeline.student_release import student_predictions
    from pipeline.train_student import TASKS, DistillConfig, load_student, sequence_length, train_student

    config = DistillConfig(
        vm_method="full" if method == "full" else method,
        train=train,
        vm_batch_size=vm_batch_size,
    )
    batches, trained = {}, []
    for ds in days:
        trained.append(train_student(settings, spec, ds, config))
        student, _ = load_student(checkpoint_uri(settings.lake, spec.name, ds))
        day = shift_day(ds, 1)
        rows = student_evaluation_rows(settings, spec, day, TASKS, sequence_length(student.config.transfer))
        batches[day] = student_predictions(student, rows)
    metrics, by_day = pooled_metrics(batches, spec.surfaces[0])
    targets = {m: finite_mean([t.get(f"{m}_click", math.nan) for t in trained]) for m in TARGET_METRICS}
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


def label_rate_clicks(settings: Settings, surfaces: tuple[str, ...], days: list[str]) -> dict[str, float]:
    """The clicks each surface's evaluation slice over `days` gets when each day is predicted at the
    click rate of the day before on that surface: all a served head that learns the rate from labels
    alone can know of it (`students.bias_refit` puts a VM alone there), so the floor of its calibration."""
    from pipeline.fm_data import labelled_day
    from pipeline.student_data import in_scope

    examples = settings.table_uri("examples")
    read = {ds: labelled_day(examples, ds) for ds in sorted({*days, *(shift_day(d, -1) for d in days)})}
    totals = dict.fromkeys(surfaces, 0.0)
    for day in days:
        today, before = read[day], read[shift_day(day, -1)]
        for surface in surfaces:
            known = in_scope(before, (surface,))["label_click"].to_numpy()
            if len(known):
                totals[surface] += float(known.mean()) * in_scope(today, (surface,)).num_rows
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
        if delay == 0:
            measured.label_rate_clicks = label_rate_clicks(settings, cfg.surfaces, evaluation)
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
                    metrics, by_day = train_and_measure_vm(
                        settings, spec, method, window, train, cfg.vm_batch_size
                    )
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
