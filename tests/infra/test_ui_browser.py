"""The UI tests' browser: Debian's Chromium under Playwright renders a loopback page and screenshots it.

A fast check of `make chromium` and the launch flags, before the slow UI tests of
`test_services.py` need them after a 15-40 minute backfill.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A static page served on 127.0.0.1 from a thread; yields its URL."""
    (tmp_path / "index.html").write_text("<title>models</title><h1>Registered</h1><p>gem-fm</p>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
        server.shutdown()


def test_chromium_renders_and_screenshots_a_loopback_page(page: Page, site: str, tmp_path: Path) -> None:
    page.goto(site, timeout=30_000)
    assert page.title() == "models"
    assert page.inner_text("h1") == "Registered"
    page.get_by_text("gem-fm", exact=True).wait_for(timeout=10_000)  # as the MLflow test waits
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
