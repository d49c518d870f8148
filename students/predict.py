"""A student's entry points for a registry: build from a stored config, predict on a frame.

Same contract as `teacher.predict`: the registry's pyfunc wrapper imports these by
dotted path. The frame holds EXAMPLES_SCHEMA columns and, when the student reads
teacher knowledge at serving time, the knowledge columns (`students.knowledge_inputs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from students.config import StudentConfig
from students.knowledge_inputs import empty_knowledge, knowledge_columns, table_to_knowledge
from students.model import Student
from students.train import predict_student
from teacher.features import table_to_features

FACTORY = "students.predict:build_model"
PREDICTOR = "students.predict:predict_frame"


def build_model(config: dict[str, Any]) -> Student:
    """A `Student` from `StudentConfig.to_dict()` output (weights are loaded by the caller)."""
    return Student(StudentConfig.from_dict(config))


def predict_frame(model: Student, frame: pd.DataFrame) -> np.ndarray:
    """Serving logits (N, n_tasks); without any knowledge column the student sees empty knowledge."""
    config = model.config
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sizes = (config.teacher_tasks, config.teacher_embed_dim, config.transfer.sequence_length)
    if set(knowledge_columns(config.teacher_tasks)) & set(table.column_names):
        knowledge = table_to_knowledge(table, *sizes)
    else:
        knowledge = empty_knowledge(table.num_rows, *sizes)
    return predict_student(model, table_to_features(table, config.backbone), knowledge).numpy()
