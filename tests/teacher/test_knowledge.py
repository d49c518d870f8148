"""Teacher knowledge of a batch: the Arrow path equals the plain PyTorch forward and embed()."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from infra.schema import TEACHER_OUTPUTS_SCHEMA
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from teacher import knowledge
from teacher.config import config_for
from teacher.features import table_to_features
from teacher.model import GemFM

TEACHER = knowledge.TeacherIdentity("gem-fm", 3, "2026-01-01")


@pytest.fixture(scope="module")
def examples(as_examples, with_histories) -> pa.Table:
    world = SyntheticWorld(WorldConfig(seed=3, events_per_day=500, n_users=50))
    return with_histories(as_examples(world.day_table("2026-01-02")), seed=1)


@pytest.fixture(scope="module")
def model() -> GemFM:
    torch.manual_seed(0)
    return GemFM(config_for("tiny")).eval()


def test_outputs_equal_the_plain_forward(model: GemFM, examples: pa.Table) -> None:
    out = pa.Table.from_batches([knowledge.teacher_outputs(model, examples.to_batches()[0], TEACHER, 64)])

    assert out.schema == TEACHER_OUTPUTS_SCHEMA
    assert out["example_id"].to_pylist() == examples["example_id"].to_pylist()
    assert out["surface"].to_pylist() == examples["surface"].to_pylist()
    assert set(out["teacher_version"].to_pylist()) == {3} and set(out["ds"].to_pylist()) == {"2026-01-02"}
    with torch.no_grad():
        features = table_to_features(examples, model.config)
        logits, embedding = model(features).numpy(), model.embed(features).numpy()
    got = np.stack([out["logit_click"].to_numpy(), out["logit_conversion"].to_numpy()], axis=1)
    got_embedding = np.stack(out["embedding"].to_numpy(zero_copy_only=False))
    assert np.abs(got - logits).max() < 1e-5
    assert np.abs(got_embedding - embedding).max() < 1e-5
    assert got_embedding.shape == (examples.num_rows, model.config.embed_dim)


def test_batch_size_changes_nothing(model: GemFM, examples: pa.Table) -> None:
    small = knowledge.teacher_outputs(model, examples, TEACHER, 7)
    large = knowledge.teacher_outputs(model, examples, TEACHER, 10_000)
    assert np.abs(small["logit_click"].to_numpy() - large["logit_click"].to_numpy()).max() < 1e-5


def test_an_empty_batch_gives_an_empty_batch(model: GemFM, examples: pa.Table) -> None:
    out = knowledge.teacher_outputs(model, examples.slice(0, 0), TEACHER, 16)
    assert out.num_rows == 0 and out.schema == TEACHER_OUTPUTS_SCHEMA


def test_the_model_is_built_once_per_process(model: GemFM, examples: pa.Table) -> None:
    loads = []

    def load() -> tuple[dict, bytes]:
        loads.append(1)
        return model.config.to_dict(), knowledge.state_to_bytes(model)

    first = knowledge.cached_model(("test-fm", 1, "job-0"), load)
    assert knowledge.cached_model(("test-fm", 1, "job-0"), load) is first and len(loads) == 1
    rebuilt = knowledge.teacher_outputs(first, examples, TEACHER, 128)
    direct = knowledge.teacher_outputs(model, examples, TEACHER, 128)
    assert rebuilt["logit_click"].equals(direct["logit_click"])
    for job in range(1, 6):  # later jobs (other broadcasts): the cache stays bounded
        knowledge.cached_model(("test-fm", 1, f"job-{job}"), load)
    assert len(knowledge._MODELS) <= knowledge._CACHE_SIZE
    assert knowledge.cached_model(("test-fm", 1, "job-5"), load) is not first
