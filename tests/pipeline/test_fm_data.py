"""Training and evaluation rows: time order, label masks and late-label catch-up."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from infra.delta import overwrite_partition
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.fm_data import labelled_day, training_rows

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04")


@pytest.fixture(scope="module")
def examples_uri(tmp_path_factory: pytest.TempPathFactory, as_examples) -> str:
    uri = str(tmp_path_factory.mktemp("lake") / "examples")
    world = SyntheticWorld(WorldConfig(seed=5, events_per_day=6_000, n_users=300))
    for ds in DAYS:
        shuffled = world.day_table(ds).take(np.random.default_rng(0).permutation(6_000))
        overwrite_partition(uri, as_examples(shuffled), ds)
    return uri


def test_a_day_is_time_ordered_with_pending_conversions_masked(examples_uri: str) -> None:
    day = labelled_day(examples_uri, "2026-01-01")
    ts = day["ts"].to_numpy()
    assert (np.diff(ts.astype(np.int64)) >= 0).all()
    click, mask = day["click"].to_numpy(), day["mask_conversion"].to_numpy()
    assert day["mask_click"].to_numpy().all()
    assert mask[click == 0].all(), "unclicked rows are final negatives"
    assert not mask[click == 1].all(), "some clicked rows are pending at the day's end"
    label = day["label_conversion"].to_numpy()
    assert label[~mask].sum() == 0 and label[mask & (click == 1)].all()


def test_catch_up_adds_the_pending_rows_of_the_window_start(examples_uri: str) -> None:
    first_day = labelled_day(examples_uri, "2026-01-01")
    pending = first_day.filter(pa.array(~first_day["mask_conversion"].to_numpy()))
    rows = training_rows(examples_uri, "2026-01-04", window_days=3)
    late = rows.slice(0, pending.num_rows)
    assert late["example_id"].to_pylist() == pending["example_id"].to_pylist()
    assert not late["mask_click"].to_numpy().any() and late["mask_conversion"].to_numpy().all()
    assert late["label_conversion"].to_numpy().tolist() == pending["conversion"].to_numpy().tolist()
    assert rows.num_rows == pending.num_rows + 6_000


def test_no_catch_up_before_the_window_has_passed(examples_uri: str) -> None:
    assert training_rows(examples_uri, "2026-01-03", window_days=3).num_rows == 6_000
