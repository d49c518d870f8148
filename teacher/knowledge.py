"""A teacher's knowledge of a batch of examples: a logit per task and the `embed()` vector.

Pure: an Arrow batch of `EXAMPLES_SCHEMA` rows and a `GemFM` in, an Arrow batch of
`TEACHER_OUTPUTS_SCHEMA` rows out (same rows, same order). No Spark, no MLflow:
`pipeline.knowledge` runs it inside Spark's Python workers, and the parity test
runs the plain PyTorch forward beside it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from infra.schema import TEACHER_OUTPUTS_SCHEMA
from teacher.config import FMConfig
from teacher.features import slice_batch, table_to_features
from teacher.model import GemFM

# A Python worker serves many tasks (spark.python.worker.reuse): one model per
# key (the caller's: name, version and a token of the job) per worker, built on
# first use instead of once per batch.
_MODELS: dict[tuple[str, int, str], GemFM] = {}
_CACHE_SIZE = 4


@dataclass(frozen=True)
class TeacherIdentity:
    """The registered teacher version whose outputs a row carries."""

    name: str
    version: int
    trained_through: str


def state_to_bytes(model: GemFM) -> bytes:
    """The model's state dict, serialised (what the driver broadcasts)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def model_from_bytes(config: dict[str, Any], state: bytes) -> GemFM:
    """A `GemFM` in eval mode from `FMConfig.to_dict()` output and `state_to_bytes` output."""
    model = GemFM(FMConfig.from_dict(config))
    model.load_state_dict(torch.load(io.BytesIO(state), map_location="cpu", weights_only=True))
    return model.eval()


def cached_model(key: tuple[str, int, str], load: Callable[[], tuple[dict[str, Any], bytes]]) -> GemFM:
    """The model for `key` built once per process; `load` (config, state bytes) is called on a miss only.

    The oldest models are dropped beyond `_CACHE_SIZE`: a long-lived worker serves job after job.
    """
    model = _MODELS.get(key)
    if model is None:
        while len(_MODELS) >= _CACHE_SIZE:
            del _MODELS[next(iter(_MODELS))]
        model = _MODELS[key] = model_from_bytes(*load())
    return model


def _list_array(values: np.ndarray) -> pa.ListArray:
    """(N, E) float32 -> N lists of E float32."""
    n, width = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float32()))


@torch.no_grad()
def forward_outputs(model: GemFM, table: pa.Table, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, n_tasks) and embeddings (N, embed_dim), float32, `batch_size` rows per forward pass."""
    model.eval()
    n, config = table.num_rows, model.config
    features = table_to_features(table, config)  # numpy copies: Arrow's buffers stay untouched
    logits, embeddings = [], []
    for begin in range(0, n, batch_size):
        batch = slice_batch(features, slice(begin, min(begin + batch_size, n)))
        embedding = model.embed(batch)  # (B, E)
        logits.append(model.heads(embedding, batch["surface"]))  # (B, T), == model(batch)
        embeddings.append(embedding)
    if not logits:
        return np.zeros((0, len(config.tasks)), np.float32), np.zeros((0, config.embed_dim), np.float32)
    return torch.cat(logits).numpy(), torch.cat(embeddings).numpy()


def teacher_outputs(
    model: GemFM, examples: pa.RecordBatch | pa.Table, teacher: TeacherIdentity, batch_size: int
) -> pa.RecordBatch:
    """`TEACHER_OUTPUTS_SCHEMA` rows for `examples` (EXAMPLES_SCHEMA columns), in their order."""
    table = pa.Table.from_batches([examples]) if isinstance(examples, pa.RecordBatch) else examples
    logits, embeddings = forward_outputs(model, table, batch_size)
    n = table.num_rows
    columns: dict[str, pa.Array] = {
        "example_id": table.column("example_id"),
        "ds": table.column("ds"),
        "teacher": pa.array([teacher.name] * n, pa.string()),
        "teacher_version": pa.array(np.full(n, teacher.version, np.int32)),
        "teacher_trained_through": pa.array([teacher.trained_through] * n, pa.string()),
        "surface": table.column("surface"),
        **{f"logit_{task}": pa.array(logits[:, i]) for i, task in enumerate(model.config.tasks)},
        "embedding": _list_array(embeddings),
    }
    out = pa.Table.from_pydict(columns).select(TEACHER_OUTPUTS_SCHEMA.names).cast(TEACHER_OUTPUTS_SCHEMA)
    return (
        out.combine_chunks().to_batches()[0] if n else pa.RecordBatch.from_pylist([], TEACHER_OUTPUTS_SCHEMA)
    )
