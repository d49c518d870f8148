"""The FM's entry points for a registry: build from a stored config, predict on a frame.

MLflow's pyfunc wrapper (`infra.registry.TorchModule`) imports these by dotted path,
so loading `models:/gem-fm@champion` rebuilds exactly the trained model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from teacher.config import FMConfig
from teacher.features import table_to_features
from teacher.model import GemFM
from teacher.train import predict_logits

FACTORY = "teacher.predict:build_model"
PREDICTOR = "teacher.predict:predict_frame"


def build_model(config: dict[str, Any]) -> GemFM:
    """A `GemFM` from `FMConfig.to_dict()` output (weights are loaded by the caller)."""
    return GemFM(FMConfig.from_dict(config))


def predict_frame(model: GemFM, frame: pd.DataFrame) -> np.ndarray:
    """Logits (N, n_tasks) for examples given as a pandas frame of EXAMPLES_SCHEMA columns."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with torch.no_grad():
        return predict_logits(model, table_to_features(table, model.config)).numpy()
