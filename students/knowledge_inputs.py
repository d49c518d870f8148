"""Logged teacher knowledge (Arrow) to student tensors, vectorised with numpy.

Reads, per example row (extra columns ignored):
- `teacher_logit_<task>` float32, null where the row has no teacher output;
- `teacher_embedding` list<float32> of E_t values, null where none;
- `past_embeddings` list<float32>: the user's K_row earlier teacher embeddings,
  flattened (K_row * E_t values), most recent first; only the first K are kept;
- `has_teacher` bool.
A row has teacher outputs (`teacher_mask` 1) when `has_teacher` is true and its
logits and embedding are all present; other rows get zeros and mask 0, so their
distillation terms drop out. Past embeddings are read whatever the mask.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch


class Knowledge(TypedDict):
    """A batch's teacher knowledge; B rows, T teacher tasks, E_t embedding width, K past embeddings."""

    teacher_logits: torch.Tensor  # (B, T) float32, tasks in teacher_tasks order
    teacher_embedding: torch.Tensor  # (B, E_t) float32
    past_embeddings: torch.Tensor  # (B, K, E_t) float32, most recent first, zeros where padded
    past_mask: torch.Tensor  # (B, K) bool, True for real past embeddings
    teacher_mask: torch.Tensor  # (B,) float32, 1.0 where the row has teacher outputs


def knowledge_columns(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The Arrow columns `table_to_knowledge` reads for `tasks`."""
    return (*(f"teacher_logit_{t}" for t in tasks), "teacher_embedding", "past_embeddings", "has_teacher")


KNOWLEDGE_COLUMNS: tuple[str, ...] = knowledge_columns(("click", "conversion"))


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _valid(array: pa.Array) -> np.ndarray:
    """(B,) bool, True where not null."""
    return pc.is_valid(array).to_numpy(zero_copy_only=False)


def _list_values(lists: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((B,) start offsets into the flat values, (B,) lengths with nulls as 0, flat float32 values)."""
    offsets = lists.offsets.to_numpy().astype(np.int64)  # relative to `lists.values`, slices included
    lengths = np.where(_valid(lists), np.diff(offsets), 0)
    values = lists.values
    flat = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return offsets[:-1], lengths, flat


def _check_widths(name: str, bad: np.ndarray, lengths: np.ndarray, expected: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name}: row {row} holds {lengths[row]} values, expected {expected}")


def _gather(flat: np.ndarray, index: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """flat[index] where `keep`, else 0."""
    if not len(flat):
        return np.zeros(index.shape, np.float32)
    return np.where(keep, flat[np.where(keep, index, 0)], np.float32(0.0))


def table_to_knowledge(
    table: pa.Table, tasks: tuple[str, ...], embed_dim: int, sequence_length: int
) -> Knowledge:
    """The knowledge columns of `table` -> a `Knowledge` on CPU; ValueError on a wrong embedding width."""
    n, e, k = table.num_rows, embed_dim, sequence_length
    has = _column(table, "has_teacher").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    logit_columns = [_column(table, f"teacher_logit_{t}") for t in tasks]
    mask = has.copy()
    for column in logit_columns:
        mask &= _valid(column)
    logits = np.stack(
        [c.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float32) for c in logit_columns], axis=1
    ).reshape(n, len(tasks))

    start, lengths, flat = _list_values(_column(table, "teacher_embedding"))
    present = _valid(_column(table, "teacher_embedding"))
    _check_widths("teacher_embedding", present & (lengths != e), lengths, str(e))
    mask &= present
    index = start[:, None] + np.arange(e)[None, :]  # (B, E_t)
    embedding = _gather(flat, index, np.broadcast_to(mask[:, None], index.shape))

    start, lengths, flat = _list_values(_column(table, "past_embeddings"))
    _check_widths("past_embeddings", lengths % e != 0, lengths, f"a multiple of {e}")
    past_mask = np.arange(k)[None, :] < np.minimum(lengths // e, k)[:, None]  # (B, K)
    index = start[:, None, None] + (np.arange(k)[:, None] * e + np.arange(e))[None]  # (B, K, E_t)
    past = _gather(flat, index, np.broadcast_to(past_mask[:, :, None], index.shape))

    return Knowledge(
        teacher_logits=torch.from_numpy(np.where(mask[:, None], logits, np.float32(0.0))),
        teacher_embedding=torch.from_numpy(np.ascontiguousarray(embedding)),
        past_embeddings=torch.from_numpy(np.ascontiguousarray(past)),
        past_mask=torch.from_numpy(past_mask),
        teacher_mask=torch.from_numpy(mask.astype(np.float32)),
    )


def slice_knowledge(knowledge: Knowledge, index: torch.Tensor | slice) -> Knowledge:
    """Rows `index` of every tensor."""
    return Knowledge(**{k: v[index] for k, v in knowledge.items()})  # type: ignore[typeddict-item]


def empty_knowledge(n: int, tasks: tuple[str, ...], embed_dim: int, sequence_length: int) -> Knowledge:
    """No knowledge for `n` rows: all zeros, no past embeddings, teacher_mask 0."""
    return Knowledge(
        teacher_logits=torch.zeros(n, len(tasks)),
        teacher_embedding=torch.zeros(n, embed_dim),
        past_embeddings=torch.zeros(n, sequence_length, embed_dim),
        past_mask=torch.zeros(n, sequence_length, dtype=torch.bool),
        teacher_mask=torch.zeros(n),
    )


def random_knowledge(n: int, n_tasks: int, embed_dim: int, sequence_length: int, seed: int = 0) -> Knowledge:
    """Synthetic knowledge for tests: ~90% of rows with teacher outputs, 0..K past embeddings each."""
    g = torch.Generator().manual_seed(seed)
    teacher_mask = (torch.rand(n, generator=g) < 0.9).float()
    n_past = torch.randint(0, sequence_length + 1, (n,), generator=g)
    past_mask = torch.arange(sequence_length)[None, :] < n_past[:, None]  # (B, K)
    past = torch.randn(n, sequence_length, embed_dim, generator=g) * past_mask[:, :, None]
    return Knowledge(
        teacher_logits=torch.randn(n, n_tasks, generator=g) * teacher_mask[:, None],
        teacher_embedding=torch.randn(n, embed_dim, generator=g) * teacher_mask[:, None],
        past_embeddings=past,
        past_mask=past_mask,
        teacher_mask=teacher_mask,
    )
