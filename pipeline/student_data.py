"""The rows a student learns from: its surfaces' examples with its teacher's knowledge beside them.

Reads:  Delta `examples` (the day, and the day whose late conversions are now final,
        see `pipeline.fm_data`) and Delta `teacher_outputs` partitions (day, teacher).
Returns Arrow rows: the examples' columns, `label_*`/`mask_*`, and the knowledge
columns `students.knowledge_inputs` reads:
  - `teacher_logit_<task>`, `teacher_embedding`, `has_teacher`: the teacher's outputs
    for the row itself (null where the teacher has none, e.g. a caught-up row of a day
    before the teacher existed);
  - `past_embeddings`: for the "sequence" representation, the teacher embeddings of
    the same user's earlier examples (strictly earlier `ts`, never the row's own),
    most recent first, flattened, at most `sequence_length` of them.
Nothing is written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra.days import shift_day
from infra.delta import partitions, read_partition, table_version
from infra.settings import Settings
from pipeline.fm_data import labelled_day, training_rows
from pipeline.hierarchy import StudentSpec

OUTPUTS_TABLE = "teacher_outputs"
_TS_BITS = 42  # microseconds since the pool's first event: 2^42 us is ~50 days


class MissingKnowledgeError(LookupError):
    """The teacher has no outputs for the day: generate its knowledge first."""


@dataclass(frozen=True)
class StudentRows:
    """A student's rows for one day and the exact inputs they came from."""

    table: pa.Table
    teacher: str
    teacher_version: int
    teacher_trained_through: str
    examples_version: int
    outputs_version: int

    @property
    def teacher_ref(self) -> str:
        """`<name>/<version>`: the lineage tag value."""
        return f"{self.teacher}/{self.teacher_version}"


def in_scope(rows: pa.Table, surfaces: tuple[str, ...]) -> pa.Table:
    """The rows of `surfaces` only, in their order."""
    return rows.filter(pc.is_in(rows["surface"], value_set=pa.array(surfaces, pa.string())))


def _outputs(outputs_uri: str, ds: str, teacher: str) -> pa.Table:
    columns = ["example_id", "teacher_version", "teacher_trained_through", "logit_click", "logit_conversion"]
    return read_partition(outputs_uri, ds, [*columns, "embedding"], partition={"teacher": teacher})


def join_knowledge(rows: pa.Table, outputs: pa.Table, tasks: tuple[str, ...]) -> pa.Table:
    """`rows` with the teacher's logits and embedding of each row (by `example_id`), nulls where none."""
    position = pc.index_in(rows["example_id"], value_set=outputs["example_id"])  # null: no output
    taken = outputs.take(position)
    for task in tasks:
        rows = rows.append_column(f"teacher_logit_{task}", taken[f"logit_{task}"])
    rows = rows.append_column("teacher_embedding", taken["embedding"])
    return rows.append_column("has_teacher", pc.is_valid(position))


def _embedding_pool(examples_uri: str, outputs_uri: str, days: list[str], teacher: str) -> pa.Table:
    """(user_id, ts, embedding) of every example of `days` that has the teacher's output."""
    pieces = []
    for day in days:
        outputs = read_partition(
            outputs_uri, day, ["example_id", "embedding"], partition={"teacher": teacher}
        )
        if not outputs.num_rows:
            continue
        examples = read_partition(examples_uri, day, ["example_id", "user_id", "ts"])
        position = pc.index_in(outputs["example_id"], value_set=examples["example_id"])
        found = examples.take(position)
        pieces.append(
            pa.table({"user_id": found["user_id"], "ts": found["ts"], "embedding": outputs["embedding"]})
        )
    schema = pa.schema(
        [("user_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("embedding", pa.list_(pa.float32()))]
    )
    return pa.concat_tables([p.cast(schema) for p in pieces]) if pieces else schema.empty_table()


def past_embeddings(rows: pa.Table, pool: pa.Table, sequence_length: int) -> pa.ListArray:
    """Per row: the pool's embeddings of the same user with `ts` strictly before the row's, most
    recent first, at most `sequence_length`, flattened into one list<float32> per row."""
    n = rows.num_rows
    users = np.concatenate([pool["user_id"].to_numpy(), rows["user_id"].to_numpy()])
    _, rank = np.unique(users, return_inverse=True)
    ts = np.concatenate([_micros(pool["ts"]), _micros(rows["ts"])])
    offset = ts - ts.min() if len(ts) else ts
    if len(ts) and (offset.max() >= 1 << _TS_BITS or rank.max() >= 1 << (63 - _TS_BITS)):
        raise ValueError("embedding pool spans too many days or users for the (user, ts) key")
    key = (rank.astype(np.int64) << _TS_BITS) | offset
    pool_key, row_key = key[: pool.num_rows], key[pool.num_rows :]
    order = np.argsort(pool_key, kind="stable")
    sorted_key = pool_key[order]
    before = np.searchsorted(sorted_key, row_key, side="left")  # pool entries < (user, ts)
    user_start = np.searchsorted(sorted_key, (row_key >> _TS_BITS) << _TS_BITS, side="left")
    count = np.minimum(before - user_start, sequence_length)  # (N,)
    step = np.arange(sequence_length)
    index = before[:, None] - 1 - step[None, :]  # (N, K) most recent first
    valid = step[None, :] < count[:, None]
    width = len(pool["embedding"][0]) if pool.num_rows else 0
    flat = pool["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, width) if width else None
    picked = order[index[valid]]  # pool rows, row-major: row 0's past, then row 1's, ...
    values = flat[picked].reshape(-1) if flat is not None else np.zeros(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum(count * width)]).astype(np.int32)
    assert len(offsets) == n + 1
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.float32), pa.float32()))


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.timestamp("us", tz="UTC")).to_numpy().astype("datetime64[us]").astype(np.int64)


def _with_knowledge(
    settings: Settings,
    spec: StudentSpec,
    rows: pa.Table,
    ds: str,
    tasks: tuple[str, ...],
    sequence_length: int,
    lookback_days: int,
) -> StudentRows:
    """Join the teacher's outputs of every day the rows come from, plus past embeddings."""
    examples_uri, outputs_uri = settings.table_uri("examples"), settings.table_uri(OUTPUTS_TABLE)
    day_outputs = _outputs(outputs_uri, ds, spec.teacher) if ds in partitions(outputs_uri) else None
    if day_outputs is None or not day_outputs.num_rows:
        raise MissingKnowledgeError(
            f"{spec.name} on {ds}: {spec.teacher} has no outputs for {ds} in {outputs_uri}"
        )
    versions = pc.unique(day_outputs["teacher_version"]).to_pylist()
    if len(versions) != 1:
        raise ValueError(f"teacher_outputs ({ds}, {spec.teacher}) mixes versions {versions}")
    days = sorted(set(rows["ds"].to_pylist()))
    outputs = [day_outputs] + [_outputs(outputs_uri, d, spec.teacher) for d in days if d != ds]
    table = join_knowledge(rows, pa.concat_tables(outputs), tasks)
    if sequence_length:
        pool_days = [shift_day(days[0], -i) for i in range(lookback_days, 0, -1)] + days
        pool = _embedding_pool(examples_uri, outputs_uri, pool_days, spec.teacher)
        table = table.append_column("past_embeddings", past_embeddings(table, pool, sequence_length))
    else:
        table = table.append_column(
            "past_embeddings", pa.array([[]] * table.num_rows, pa.list_(pa.float32()))
        )
    return StudentRows(
        table=table,
        teacher=spec.teacher,
        teacher_version=int(versions[0]),
        teacher_trained_through=day_outputs["teacher_trained_through"][0].as_py(),
        examples_version=table_version(examples_uri),
        outputs_version=table_version(outputs_uri),
    )


def student_training_rows(
    settings: Settings,
    spec: StudentSpec,
    ds: str,
    tasks: tuple[str, ...],
    window_days: int,
    sequence_length: int = 0,
    lookback_days: int = 2,
) -> StudentRows:
    """What the student's run of `ds` learns from (caught-up rows first, then the day in time order)."""
    rows = in_scope(training_rows(settings.table_uri("examples"), ds, window_days), spec.surfaces)
    return _with_knowledge(settings, spec, rows, ds, tasks, sequence_length, lookback_days)


def student_evaluation_rows(
    settings: Settings,
    spec: StudentSpec,
    ds: str,
    tasks: tuple[str, ...],
    sequence_length: int = 0,
    lookback_days: int = 2,
) -> StudentRows:
    """Day `ds` of the student's surfaces, labelled as known at its end, with the teacher's knowledge."""
    rows = in_scope(labelled_day(settings.table_uri("examples"), ds), spec.surfaces)
    return _with_knowledge(settings, spec, rows, ds, tasks, sequence_length, lookback_days)
