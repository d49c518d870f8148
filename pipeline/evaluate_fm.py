"""Progressive validation: a model trained through day d is measured on day d+1's examples.

Reads Delta `examples` for the evaluation day (labels as known at its end, see
`pipeline.fm_data`) and a model; returns NE, AUC and calibration per task, overall
and per surface (`pipeline.metrics.SliceEvaluator`). Nothing is written here.
"""

from __future__ import annotations

import pyarrow as pa
from torch import nn

from infra.schema import SURFACES
from pipeline.fm_data import labelled_day
from pipeline.metrics import SliceEvaluator
from pipeline.train_fm import labels_and_mask
from teacher.features import table_to_features
from teacher.train import predict_logits


class LeakageError(ValueError):
    """A model would be evaluated on a day it was trained on (or after)."""


def evaluate_model(model: nn.Module, rows: pa.Table) -> dict[str, float]:
    """Metrics of `model` on `rows` (examples with label and mask columns)."""
    config = model.config
    features = table_to_features(rows, config)
    labels, mask = labels_and_mask(rows, config.tasks)
    evaluator = SliceEvaluator(config.tasks, SURFACES)
    evaluator.update(predict_logits(model, features), labels, mask.bool(), features["surface"])
    return evaluator.compute()


def evaluate_on_day(model: nn.Module, trained_through: str, examples_uri: str, ds: str) -> dict[str, float]:
    """Metrics on day `ds` of a model trained through `trained_through`, which must be earlier."""
    if trained_through >= ds:
        raise LeakageError(
            f"a model trained through {trained_through} cannot be evaluated on {ds}: "
            "progressive validation tests on days after the training data"
        )
    return evaluate_model(model, labelled_day(examples_uri, ds))
