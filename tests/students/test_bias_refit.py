"""The served head's day-end bias refit: the day's own objective at its minimum, surface by surface."""

from __future__ import annotations

import dataclasses

import torch

from students.bias_refit import refit_bias_shift
from students.config import METHODS, TransferConfig

N, SURFACES, TASKS = 600, 4, 2


def _day(seed: int = 0) -> dict[str, torch.Tensor]:
    """Logits far off the labels' rates, surfaces 0-2 only (3 has no row), conversion partly unknown."""
    g = torch.Generator().manual_seed(seed)
    surface = torch.randint(0, 3, (N,), generator=g)
    labels = (torch.rand(N, TASKS, generator=g) < torch.tensor([0.1, 0.05])).float()
    mask = torch.ones(N, TASKS)
    mask[::3, 1] = 0.0
    mask[surface == 2, 1] = 0.0  # surface 2 never knows a conversion
    return {
        "logits": torch.randn(N, TASKS, generator=g) - 1.0,
        "surface": surface,
        "labels": labels,
        "mask": mask,
        "targets": torch.rand(N, TASKS, generator=g) * 0.3,
        "teacher_mask": (torch.rand(N, generator=g) < 0.8).float(),
    }


def _shift(day: dict[str, torch.Tensor], config: TransferConfig) -> torch.Tensor:
    return refit_bias_shift(
        day["logits"],
        day["surface"],
        day["labels"],
        day["mask"],
        day["targets"],
        day["teacher_mask"],
        config,
        SURFACES,
    )


def test_on_labels_alone_each_surface_predicts_its_own_clicks() -> None:
    day = _day()
    for method in ("alone", "aux_head"):  # the aux head's targets never reach the served head
        shift = _shift(day, METHODS[method])
        p = torch.sigmoid(day["logits"] + shift[day["surface"]])
        for s in range(3):
            rows = day["surface"] == s
            m = day["mask"][rows]
            clicks = (day["labels"][rows] * m).sum(0)
            assert torch.allclose((p[rows] * m).sum(0), clicks, rtol=1e-4, atol=1e-4)
            assert not torch.allclose((torch.sigmoid(day["logits"][rows]) * m).sum(0), clicks, rtol=0.05)


def test_kd_balances_labels_and_targets_as_training_does() -> None:
    day = _day()
    for weight in (1.0, 3.0):
        shift = _shift(day, dataclasses.replace(METHODS["kd"], kd_weight=weight))
        p = torch.sigmoid(day["logits"] + shift[day["surface"]])
        teacher = day["teacher_mask"][:, None].expand_as(p)
        rows = day["surface"] == 0
        label_pull = ((p - day["labels"]) * day["mask"])[rows].sum(0) / day["mask"].sum(0)
        target_pull = ((p - day["targets"]) * teacher)[rows].sum(0) / teacher.sum(0)
        assert torch.allclose(label_pull + weight * target_pull, torch.zeros(TASKS), atol=1e-6)
        known = day["teacher_mask"][rows]
        clicks = (p[rows, 0] * known).sum() / known.sum()
        label_rate = day["labels"][rows, 0].mean()
        target_rate = (day["targets"][rows, 0] * known).sum() / known.sum()
        assert min(label_rate, target_rate) < clicks < max(label_rate, target_rate)


def test_a_surface_or_task_with_nothing_to_learn_keeps_its_bias() -> None:
    shift = _shift(_day(), METHODS["alone"])
    assert torch.equal(shift[3], torch.zeros(TASKS))  # no row
    assert shift[2, 1] == 0.0  # no known conversion
    assert (shift[:3, 0] != 0).all()
