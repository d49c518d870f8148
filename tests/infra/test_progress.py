"""Progress: a bar on a terminal, log lines every N% elsewhere, and never a changed result."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from infra.progress import track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_logs_every_ten_percent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="distillery.progress"):
        assert list(track(range(20), "gem-fm 2026-01-02", stream=io.StringIO())) == list(range(20))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "gem-fm 2026-01-02: 2/20 batches (10%)"
    assert lines[-1] == "gem-fm 2026-01-02: 20/20 batches (100%)"
    assert len(lines) == 10


def test_a_short_loop_logs_each_step_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="distillery.progress"):
        list(track(range(3), "vm", stream=io.StringIO(), every_percent=25))
    assert [r.getMessage() for r in caplog.records] == [
        "vm: 1/3 batches (33%)",
        "vm: 2/3 batches (66%)",
        "vm: 3/3 batches (100%)",
    ]


def test_on_a_terminal_it_draws_a_bar(caplog: pytest.LogCaptureFixture) -> None:
    screen = Terminal()
    with caplog.at_level(logging.INFO, logger="distillery.progress"):
        assert list(track([1, 2, 3], "domain-fm-facebook 2026-01-03", stream=screen)) == [1, 2, 3]
    assert "domain-fm-facebook 2026-01-03" in screen.getvalue() and "3/3" in screen.getvalue()
    assert caplog.records == []


def test_progress_draws_no_random_number() -> None:
    torch.manual_seed(0)
    list(track(range(50), "x", stream=Terminal()))
    list(track(range(50), "x", stream=io.StringIO()))
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after)


def test_every_percent_is_checked() -> None:
    with pytest.raises(ValueError, match="every_percent"):
        list(track(range(3), "x", every_percent=0))
