"""A tiny factory-built model and an MLflow sandbox for the registry and gate tests.

The model is named by dotted paths `registry_models:...`, so tests put `tests/` on sys.path
(pytest runs with --import-mode=importlib, which does not) before importing this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from infra.settings import Settings

FEATURES = ["x0", "x1", "x2"]
FACTORY = "registry_models:build_linear"
PREDICTOR = "registry_models:predict_linear"


def build_linear(config: dict[str, Any]) -> torch.nn.Module:
    """Linear(n_features -> 1) followed by a sigmoid: a click probability."""
    torch.manual_seed(config.get("seed", 0))
    return torch.nn.Sequential(torch.nn.Linear(config["n_features"], 1), torch.nn.Sigmoid())


def predict_linear(module: torch.nn.Module, frame: pd.DataFrame) -> np.ndarray:
    """Probabilities (N,) for the rows of `frame` (columns FEATURES)."""
    # Contiguous: a column-major view takes another GEMM path and can differ in the last bit.
    inputs = torch.from_numpy(np.ascontiguousarray(frame[FEATURES].to_numpy(dtype=np.float32)))  # (N, F)
    return module(inputs).squeeze(-1).detach().numpy()


def example_frame(n: int = 8, seed: int = 0) -> pd.DataFrame:
    """`n` rows of float32 features."""
    values = np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)
    return pd.DataFrame(values, columns=FEATURES)


@contextmanager
def sandbox(root: Path) -> Iterator[Settings]:
    """Settings with lake and SQLite MLflow under `root`, cwd = `root/cwd`; MLflow reset after."""
    import mlflow

    settings = Settings(lake=str(root / "lake"), mlflow_uri=f"sqlite:///{root / 'mlflow.db'}")
    (root / "cwd").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root / "cwd")
        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: restore it on exit.
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            patch.delenv(variable, raising=False)
        try:
            yield settings
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
