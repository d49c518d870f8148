"""NE, calibration and the per-slice evaluator against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from pipeline.metrics import Calibration, NormalizedEntropy, SliceEvaluator


def _labels(n: int, rate: float, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, generator=torch.Generator().manual_seed(seed)) < rate).float()


def test_base_rate_predictor_scores_one() -> None:
    target = _labels(10_000, 0.03)
    p = target.mean()
    ne = NormalizedEntropy()
    for chunk in torch.split(target, 999):  # streaming over uneven batches
        ne.update(torch.full_like(chunk, math.log(p / (1 - p))), chunk)
    assert float(ne.compute()) == pytest.approx(1.0, abs=1e-9)


def test_ne_matches_log_loss_over_entropy_and_rewards_signal() -> None:
    target = _labels(5_000, 0.1, seed=1)
    logits = torch.where(target > 0, 1.0, -3.0) + torch.randn(
        5_000, generator=torch.Generator().manual_seed(2)
    )
    ne = NormalizedEntropy()
    ne.update(logits, target)
    p = float(target.mean())
    expected = log_loss(target.numpy(), torch.sigmoid(logits).numpy()) / (
        -(p * math.log(p) + (1 - p) * math.log(1 - p))
    )
    assert float(ne.compute()) == pytest.approx(expected, rel=1e-6)
    assert float(ne.compute()) < 0.7


def test_ne_is_nan_on_a_single_class() -> None:
    ne = NormalizedEntropy()
    ne.update(torch.zeros(10), torch.zeros(10))
    assert math.isnan(float(ne.compute()))


def test_calibration_is_mean_prediction_over_rate() -> None:
    cal = Calibration()
    logits, target = torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    cal.update(logits, target)
    assert float(cal.compute()) == pytest.approx(0.5 / 0.25)


def test_slice_evaluator_per_surface_and_mask() -> None:
    n = 4_000
    gen = torch.Generator().manual_seed(3)
    surface = torch.randint(0, 2, (n,), generator=gen)
    labels = torch.stack([_labels(n, 0.2, 4), _labels(n, 0.05, 5)], dim=1)
    logits = 2.0 * labels - 1.5 + torch.randn(n, 2, generator=gen)
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[: n // 2, 1] = False  # half the conversion labels are not known yet
    evaluator = SliceEvaluator(["click", "conversion"], ["feed", "reels"])
    for rows in torch.split(torch.arange(n), 512):
        evaluator.update(logits[rows], labels[rows], mask[rows], surface[rows])
    metrics = evaluator.compute()

    feed = surface == 0
    assert metrics["click/auc/feed"] == pytest.approx(
        roc_auc_score(labels[feed, 0], logits[feed, 0]), rel=1e-6
    )
    known = mask[:, 1]
    assert metrics["conversion/auc"] == pytest.approx(
        roc_auc_score(labels[known, 1], logits[known, 1]), rel=1e-6
    )
    assert {"click/ne", "click/calibration/reels", "conversion/ne/feed"} <= set(metrics)
    assert evaluator.positives("click", "reels") == float(labels[surface == 1, 0].sum())
    assert evaluator.positives("conversion") == float(labels[known, 1].sum()), "unknown labels left out"
