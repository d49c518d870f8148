"""The quality gate: a candidate version becomes `champion` only when its verdict passes.

Reads:  the current `champion` of the candidate's registered name and, unless the caller
        passes `champion_metrics`, the metrics logged in the champion's run.
Writes: tags `gate` (passed|failed), `gate_reasons`, `gate_champion` on the candidate
        version and on its run (visible in the MLflow UI), and the alias `champion`
        (moved to the candidate only when the verdict passes).

Lower is better for the gated metric (NE, normalised entropy: 1.0 = the base-rate
predictor). Two checks: the candidate's metric must be strictly below `max_ne`, and, when
a champion exists, at most `max_relative_regression` worse than the champion's.

Same slice: the candidate is trained through `ds` and evaluated on `ds+1`, while the
champion's logged metrics come from its own (earlier) evaluation day. NE drifts from day
to day, so the fair reference is the champion *re-evaluated on the candidate's slice*:
the caller passes it as `champion_metrics` when it has it. Without it the gate falls back
to the champion's logged metrics and says so in `gate_champion`; that is a cross-day
comparison, tolerable only because the relative threshold absorbs small drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra.settings import Settings

if TYPE_CHECKING:
    from infra.registry import ModelRef


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate on `metric` (lower is better)."""

    max_ne: float = 1.0  # absolute: the metric must be strictly below this
    max_relative_regression: float = 0.01  # candidate <= champion * (1 + this)
    metric: str = "click/ne"  # click NE over every surface of the evaluation day

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        """Thresholds from `DISTILLERY_GATE_MAX_NE` and `DISTILLERY_GATE_MAX_REGRESSION`."""
        return cls(max_ne=settings.gate_max_ne, max_relative_regression=settings.gate_max_regression)


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision, with one human-readable reason per check (numbers included)."""

    passed: bool
    reasons: list[str]
    metric: str
    candidate_value: float
    champion_value: float | None

    def summary(self, ds: str, candidate: ModelRef, champion_before: ModelRef | None) -> dict[str, Any]:
        """What a gate task returns (Airflow shows it): the day, both versions, the verdict, the metric."""
        return {
            "ds": ds,
            "candidate": candidate.uri,
            "champion_before": champion_before.uri if champion_before else None,
            "passed": self.passed,
            "reasons": self.reasons,
            self.metric: self.candidate_value,
        }


def _metric(metrics: Mapping[str, float], name: str, whose: str) -> float:
    """`metrics[name]` as a float; a clear error naming what is there when it is missing."""
    if name not in metrics:
        raise ValueError(f"the {whose}'s metrics have no {name!r} (found: {sorted(metrics)})")
    return float(metrics[name])


def judge(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    config: GateConfig,
) -> GateVerdict:
    """Pure verdict: absolute threshold always, relative regression when there is a champion.

    Raises ValueError when either side lacks `config.metric` or the champion's value is NaN
    (a broken reference must not be silently passed or failed).
    """
    name = config.metric
    candidate = _metric(candidate_metrics, name, "candidate")
    champion = None if champion_metrics is None else _metric(champion_metrics, name, "champion")
    if champion is not None and math.isnan(champion):
        raise ValueError(f"the champion's {name} is NaN: cannot compare against it")
    checks: list[tuple[bool, str]] = []
    below = candidate < config.max_ne  # False for NaN
    relation = "<" if below else "is not below"
    checks.append((below, f"{name} {candidate:.6g} {relation} max_ne {config.max_ne:.6g}"))
    if champion is None:
        checks.append((True, "no champion: relative check skipped"))
    else:
        bound = champion * (1.0 + config.max_relative_regression)
        within = candidate <= bound
        change = (candidate - champion) / champion if champion else math.inf
        verb = "within" if within else "exceeds"
        checks.append(
            (
                within,
                f"{name} {candidate:.6g} vs champion {champion:.6g}: {change:+.3%} {verb} "
                f"allowed +{config.max_relative_regression:.3%} (bound {bound:.6g})",
            )
        )
    return GateVerdict(
        passed=all(ok for ok, _ in checks),
        reasons=[text for _, text in checks],
        metric=name,
        candidate_value=candidate,
        champion_value=champion,
    )


def promote_if_blessed(
    settings: Settings,
    candidate: ModelRef,
    metrics: Mapping[str, float],
    config: GateConfig,
    champion_metrics: Mapping[str, float] | None = None,
) -> GateVerdict:
    """Judge `candidate` against the current champion; move `champion` only if it passes.

    `metrics`: the candidate's evaluation (trained through ds, evaluated on ds+1).
    `champion_metrics`: the champion re-evaluated on the same slice, if the caller has it;
    default: the metrics logged in the champion's run. Records the verdict as tags on the
    candidate version and run, and returns it: failing the task is the caller's decision.
    """
    from infra import registry

    current = registry.champion(settings, candidate.name)
    if current is not None and current.version == candidate.version:
        current = None  # a re-run of an already promoted version: judge it on its own
    if current is None:
        reference, source = None, "none"
    elif champion_metrics is not None:
        reference, source = champion_metrics, f"{current.uri} (re-evaluated on the candidate's slice)"
    else:
        reference = registry.run_metrics(settings, current)
        source = f"{current.uri} (its logged metrics, another evaluation day)"
    verdict = judge(metrics, reference, config)
    registry.set_version_tags(
        settings,
        candidate,
        {
            "gate": "passed" if verdict.passed else "failed",
            "gate_reasons": "; ".join(verdict.reasons),
            "gate_champion": source,
        },
    )
    if verdict.passed:
        registry.set_alias(settings, candidate, registry.CHAMPION)
    return verdict
