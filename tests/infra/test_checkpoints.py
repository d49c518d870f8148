"""Checkpoints round-trip exactly, are keyed by day, and a missing day is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from infra.checkpoints import (
    checkpoint_days,
    checkpoint_exists,
    checkpoint_uri,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip_is_exact_and_replaces(tmp_path: Path) -> None:
    uri = checkpoint_uri(str(tmp_path), "gem-fm", "2026-01-02")
    assert uri.endswith("checkpoints/gem-fm/ds=2026-01-02/checkpoint.pt")
    model = torch.nn.Linear(4, 2)
    save_checkpoint(uri, {"model": model.state_dict(), "config": {"d": 4}, "ds": "2026-01-02"})
    save_checkpoint(uri, {"model": model.state_dict(), "config": {"d": 4}, "ds": "2026-01-02"})
    loaded = load_checkpoint(uri)
    assert loaded["config"] == {"d": 4}
    assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())
    assert [p.name for p in Path(uri).parent.iterdir()] == ["checkpoint.pt"], "no temp files left"


def test_missing_day_names_the_uri(tmp_path: Path) -> None:
    uri = checkpoint_uri(str(tmp_path), "gem-fm", "2026-01-01")
    assert not checkpoint_exists(uri)
    with pytest.raises(FileNotFoundError, match="ds=2026-01-01"):
        load_checkpoint(uri)


def test_a_killed_writers_temp_file_is_no_checkpoint_and_goes_with_the_next_save(tmp_path: Path) -> None:
    uri = checkpoint_uri(str(tmp_path), "gem-fm", "2026-01-02")
    folder = Path(uri).parent
    folder.mkdir(parents=True)
    (folder / ".checkpoint.0123abcd.tmp").write_bytes(b"half a checkpoint")  # what a SIGKILL leaves

    assert not checkpoint_exists(uri)
    assert checkpoint_days(str(tmp_path), "gem-fm") == []
    save_checkpoint(uri, {"ds": "2026-01-02"})
    assert [p.name for p in folder.iterdir()] == ["checkpoint.pt"]
    assert checkpoint_days(str(tmp_path), "gem-fm") == ["2026-01-02"]
